//! What one configuration builds, shared by every request, and the root context's work: loading
//! the routes' example vectors (`super::examples`) before and while requests arrive.

use super::metrics::Metrics;
use super::{Http, Shared, examples};
use crate::config;
use crate::decide;
use filter_core::Shape;
use filter_host::configured::Filter;
use filter_host::proxy_wasm::traits::HttpContext;
use filter_host::root;
use filter_host::sidecar::Sidecar;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

impl Filter for Shared {
    fn configure(root_id: u32) -> Option<Self> {
        let config = filter_host::config::load(config::compile)?;
        let ready = config.pending.is_empty();
        let shared = Self {
            metrics: RefCell::new(Metrics::new(&config)),
            sidecar: Sidecar::new(config.sidecar.clone()),
            index: RefCell::new(None),
            scratch: RefCell::new(decide::Scratch::default()),
            broken: Cell::new(false),
            root_id,
            loading: Cell::new(false),
            loader: RefCell::new(examples::Loader::default()),
            last_attempt: Cell::new(root::now()),
            config,
        };
        if ready {
            shared.ready(shared.config.index.clone());
        } else {
            // The first tick starts the calls: a root context's calls must start from a root callback.
            let _ = root::set_tick_period(Duration::from_millis(1));
        }
        Some(shared)
    }

    fn http_context(shared: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        Box::new(Http {
            id: context_id,
            shared: shared.clone(),
            provider: None,
            shape: Shape::OpenAi,
            body: Vec::new(),
            embedding: None,
            done: false,
        })
    }

    fn on_tick(shared: &Rc<Self>) {
        let waiting = shared.index.borrow().is_none() && !shared.broken.get();
        let mut loader = shared.loader.borrow_mut();
        if waiting && loader.idle() {
            loader.load_examples(shared);
        } else {
            let _ = root::set_tick_period(Duration::ZERO);
        }
    }

    fn on_grpc_call_response(shared: &Rc<Self>, token: u32, status_code: u32, size: usize) {
        shared
            .loader
            .borrow_mut()
            .on_reply(shared, token, status_code, size);
    }
}
