//! What one configuration builds, shared by every request through an `Rc`, and the root
//! context's background work: the configure-time creation of the shared-data budget slots, and the
//! sidecar settlements that outlive their streams.

use super::metrics::Metrics;
use super::{Http, Shared, ledger};
use crate::config::{self, Backend};
use crate::count::Counter;
use filter_core::Shape;
use filter_host::configured::Filter;
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::traits::HttpContext;
use filter_host::sidecar::{Sidecar, reply, v1};
use filter_host::{log, root};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

impl Filter for Shared {
    fn configure(_root_id: u32) -> Option<Self> {
        let config = filter_host::config::load(config::compile)?;
        let rules = config.budgets.as_ref().map_or(0, |b| b.rules.len());
        let sidecar = config
            .budgets
            .as_ref()
            .filter(|b| b.backend == Backend::Sidecar)
            .map(|b| Sidecar::new(b.sidecar.clone()));
        if sidecar.is_some() {
            let _ = root::set_tick_period(Duration::from_millis(100));
        }
        if let Some(b) = config
            .budgets
            .as_ref()
            .filter(|b| b.backend == Backend::SharedData)
            && let Err(e) = ledger::create_slots(b)
        {
            log!(
                Critical,
                None,
                "budget slots could not be created in shared data: {e}"
            );
            return None;
        }
        Some(Self {
            counter: RefCell::new(Counter::new(config.count_cache_entries)),
            metrics: RefCell::new(Metrics::new(
                rules,
                config.tenant_metrics.as_ref().map_or(1, |t| t.max_tenants),
            )),
            config,
            sidecar,
            settle_queue: RefCell::new(Vec::new()),
        })
    }

    fn http_context(shared: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(Http {
            id: context_id,
            shared: shared.clone(),
            provider: None,
            shape: Shape::OpenAi,
            model: String::new(),
            price: None,
            counted: None,
            identity: None,
            tenant: None,
            request_id: String::new(),
            amount: 0,
            held: Vec::new(),
            pending: HashMap::new(),
            denied: None,
            remaining: None,
            drop_usage_chunk: false,
            tap: None,
            status: None,
            finished: false,
            replied: false,
            forwarded: false,
        })
    }

    /// Sends the sidecar settlements streams queued (theirs die with them).
    fn on_tick(this: &Rc<Self>) {
        let Some(sidecar) = &this.sidecar else { return };
        let queue = std::mem::take(&mut *this.settle_queue.borrow_mut());
        for req in &queue {
            if let Err(e) = sidecar.settle(req) {
                log!(Warn, None, "budget settle not sent: {e}");
                this.metrics.borrow().budget_errors.inc();
            }
        }
    }

    /// Settlements: the sidecar's answer only matters for the log.
    fn on_grpc_call_response(this: &Rc<Self>, _token: u32, status_code: u32, size: usize) {
        if let Err(e) = reply::<v1::SettleResponse>(status_code, size) {
            log!(Warn, None, "budget settle failed: {e}");
            this.metrics.borrow().budget_errors.inc();
        }
    }
}
