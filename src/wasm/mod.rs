//! The proxy-wasm adapter: host calls only. Each VM (one per Envoy worker) runs
//! one [`Ambassador`], feeds it the files fetched from the internal file
//! listener on a tick, and runs [`filter::serve`] for each request.
//!
//! All contexts of one VM run on one thread and share [`Vm`]. A borrow of it
//! is never held across a host call that can call back into the VM
//! (`send_http_response`, `resume_http_request`): replies are sent after the
//! borrow ends.

mod host;
mod telemetry;

use crate::ambassador::{Admission, Ambassador};
use crate::config::Config;
use crate::filter;
use crate::metrics::RequestSeries;
use host::{now_ms, read_fetched_file, reply, start_fetch, ContextRequest};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use telemetry::WasmTelemetry;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

struct Vm {
    ambassador: Ambassador<u32>,
    /// Outstanding fetches: dispatch token → file index.
    fetches: HashMap<u32, usize>,
    telemetry: WasmTelemetry,
    series: RequestSeries,
    /// The metric series of each request in flight, counted when it ends.
    request_series: HashMap<u32, usize>,
}

type SharedVm = Rc<RefCell<Vm>>;

#[derive(Default)]
struct Root {
    vm: Option<SharedVm>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        if let Some(vm) = &self.vm {
            finish_fetch(vm, token_id, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => Arc::new(config),
            Err(error) => {
                hostcalls::log(LogLevel::Error, &format!("invalid podward config: {error}")).ok();
                return false;
            }
        };
        // host_env_keys hands the Downward API variables to the VM at start.
        let ambassador = Ambassador::new(config.clone(), std::env::vars().collect());
        self.set_tick_period(Duration::from_millis(ambassador.tick_interval_ms()));
        self.vm = Some(Rc::new(RefCell::new(Vm {
            ambassador,
            fetches: HashMap::new(),
            telemetry: WasmTelemetry::new(&config),
            series: RequestSeries::default(),
            request_series: HashMap::new(),
        })));
        true
    }

    fn on_tick(&mut self) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        let given_up = {
            let vm = &mut *vm.borrow_mut();
            vm.ambassador.tick(now_ms(), &vm.telemetry)
        };
        for (context_id, status) in given_up {
            if hostcalls::set_effective_context(context_id).is_ok() {
                reply(&status);
            }
        }
        start_due_fetches(&vm);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.clone()?;
        Some(Box::new(Request { context_id, vm }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Starts the fetches that are due, from the effective context: the root on
/// a tick, or a VM's first request so that it need not wait for a tick. No
/// borrow is held while dispatching: a failed call can come back at once.
fn start_due_fetches(vm: &SharedVm) {
    let (due, source) = {
        let mut vm = vm.borrow_mut();
        let due = vm.ambassador.due(now_ms());
        (due, vm.ambassador.config().file_source.clone())
    };
    for (index, path) in due {
        let dispatched = start_fetch(&source, &path);
        let released = {
            let vm = &mut *vm.borrow_mut();
            match dispatched {
                Ok(token_id) => {
                    vm.fetches.insert(token_id, index);
                    Vec::new()
                }
                Err(error) => {
                    let now = now_ms() / 1000;
                    vm.ambassador
                        .read_done(index, Err(error), now, &vm.telemetry)
                }
            }
        };
        serve_released(vm, released);
    }
}

fn finish_fetch(vm: &SharedVm, token_id: u32, body_size: usize) {
    let read = read_fetched_file(body_size);
    let released = {
        let vm = &mut *vm.borrow_mut();
        let Some(index) = vm.fetches.remove(&token_id) else {
            return;
        };
        vm.ambassador
            .read_done(index, read, now_ms() / 1000, &vm.telemetry)
    };
    serve_released(vm, released);
}

fn serve_released(vm: &SharedVm, released: Vec<u32>) {
    for context_id in released {
        // The client may have gone away while it waited.
        if hostcalls::set_effective_context(context_id).is_ok() && serve(vm, context_id) {
            hostcalls::resume_http_request().ok();
        }
    }
}

struct Request {
    context_id: u32,
    vm: SharedVm,
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let admission = self
            .vm
            .borrow_mut()
            .ambassador
            .admit(self.context_id, now_ms());
        match admission {
            Admission::Serve(_) => {
                if serve(&self.vm, self.context_id) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
            Admission::Wait { start_reading } => {
                if start_reading {
                    start_due_fetches(&self.vm);
                }
                Action::Pause
            }
        }
    }

    fn on_log(&mut self) {
        let vm = &mut *self.vm.borrow_mut();
        vm.ambassador.forget(&self.context_id);
        if let Some(series) = vm.request_series.remove(&self.context_id) {
            vm.telemetry
                .request_done(&mut vm.series, series, host::response_code());
        }
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        finish_fetch(&self.vm, token_id, body_size);
    }
}

/// Runs the request path for the effective context; true if the request
/// goes on upstream. The reply, if any, is sent once the VM is no longer
/// borrowed.
fn serve(vm: &SharedVm, context_id: u32) -> bool {
    let mut request = ContextRequest::default();
    let served = {
        let vm = &mut *vm.borrow_mut();
        let Some(prepared) = vm.ambassador.prepared().cloned() else {
            return false;
        };
        let config = vm.ambassador.config().clone();
        let served = filter::serve(
            &mut request,
            &config,
            &prepared,
            now_ms() / 1000,
            &mut vm.series,
            &vm.telemetry,
        );
        if let Some(series) = served.series {
            vm.request_series.insert(context_id, series);
        }
        served
    };
    if let Some(status) = request.reply {
        reply(&status);
    }
    served.forwarded
}
