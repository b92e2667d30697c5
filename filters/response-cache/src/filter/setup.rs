//! What one configuration builds, shared by every request, and the root context's background
//! work: sending the sidecar stores that streams queued (a stream's own calls die with it).

use super::metrics::Metrics;
use super::{Http, Record, Shared};
use crate::config;
use crate::decide::ClientControl;
use filter_host::configured::Filter;
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::traits::HttpContext;
use filter_host::sidecar::{self, Sidecar, v1};
use filter_host::{log, root};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

impl Filter for Shared {
    fn configure(root_id: u32) -> Option<Self> {
        let config = filter_host::config::load(config::compile)?;
        Some(Self {
            sidecar: config
                .uses_sidecar()
                .then(|| Sidecar::new(config.sidecar.clone())),
            config,
            metrics: RefCell::new(Metrics::new()),
            root_id,
            stores: RefCell::new(Vec::new()),
        })
    }

    fn http_context(shared: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(Http {
            id: context_id,
            shared: shared.clone(),
            provider: None,
            scope: String::new(),
            semantic_scope: None,
            key_headers: Default::default(),
            keyed: None,
            status: None,
            client: ClientControl::default(),
            looking_up: false,
            served: false,
            record: Record::None,
        })
    }

    /// Sends the stores streams queued (a stream's own calls die with it).
    fn on_tick(this: &Rc<Self>) {
        let _ = root::set_tick_period(Duration::ZERO);
        let Some(sidecar) = &this.sidecar else { return };
        let queued = std::mem::take(&mut *this.stores.borrow_mut());
        for req in queued {
            if let Err(e) = sidecar.cache_store(&req) {
                this.metrics.borrow().sidecar_errors.inc();
                log!(Warn, None, "cache store in the sidecar not sent: {e}");
            }
        }
    }

    fn on_grpc_call_response(this: &Rc<Self>, _token: u32, status_code: u32, size: usize) {
        if let Err(e) = sidecar::reply::<v1::CacheStoreResponse>(status_code, size) {
            this.metrics.borrow().sidecar_errors.inc();
            log!(Warn, None, "cache store in the sidecar failed: {e}");
        }
    }
}
