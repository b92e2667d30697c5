//! The root context every filter has. On configure: parse → compile → build what the streams share,
//! once, behind an `Rc`; then one stream context per request made from it; and the root's own
//! background work (its tick, answers to calls it made) handed to the same value. A filter states
//! only what differs, by implementing [`Filter`], and registers with [`main`].

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

pub trait Filter: Sized + 'static {
    /// Builds everything one configuration needs from the plugin configuration (typically through
    /// [`crate::config::load`], which logs why a configuration is refused). `None` refuses it and
    /// Envoy rejects the configuration.
    fn configure(root_id: u32) -> Option<Self>;

    /// The stream context of one request.
    fn http_context(filter: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext>;

    /// The root's timer fired (see [`crate::root::set_tick_period`] and [`crate::root::wake`]).
    fn on_tick(_filter: &Rc<Self>) {}

    /// The answer to a gRPC call the root context made.
    fn on_grpc_call_response(_filter: &Rc<Self>, _token: u32, _status_code: u32, _response_size: usize) {}

    /// The answer to an HTTP call the root context made.
    fn on_http_call_response(
        _filter: &Rc<Self>,
        _token: u32,
        _headers: usize,
        _body_size: usize,
        _trailers: usize,
    ) {
    }
}

/// The root context of filter `F`.
pub struct Root<F> {
    id: u32,
    filter: Option<Rc<F>>,
}

impl<F: Filter> Root<F> {
    pub const fn new(id: u32) -> Self {
        Self { id, filter: None }
    }
}

impl<F: Filter> Context for Root<F> {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        if let Some(f) = &self.filter {
            F::on_grpc_call_response(f, token, status_code, response_size);
        }
    }

    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, trailers: usize) {
        if let Some(f) = &self.filter {
            F::on_http_call_response(f, token, headers, body_size, trailers);
        }
    }
}

impl<F: Filter> RootContext for Root<F> {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.filter = F::configure(self.id).map(Rc::new);
        self.filter.is_some()
    }

    fn on_tick(&mut self) {
        if let Some(f) = &self.filter {
            F::on_tick(f);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.filter.as_ref().map(|f| F::http_context(f, context_id))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Call from `proxy_wasm::main!`: names the filter in log lines, installs the panic hook, and
/// registers `F`'s root context.
pub fn main<F: Filter>(name: &'static str) {
    crate::init(name);
    proxy_wasm::set_root_context(|id| Box::new(Root::<F>::new(id)));
}
