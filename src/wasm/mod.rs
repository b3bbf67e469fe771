//! The proxy-wasm adapter: the callbacks Envoy calls, and host calls only.
//! Each VM (one per Envoy worker, one on the main thread) runs one
//! [`Ambassador`] per plugin, feeds it the files fetched from the internal
//! file listener on a tick, and runs [`filter::serve`] for each request.
//!
//! The VM runs on one thread and its state lives in [`PLUGIN`]. The state is
//! never borrowed across a host call that can call back into the VM
//! (`proxy_send_local_response`, `proxy_continue_stream`): such calls are
//! made once the borrow has ended.

mod abi;
mod host;
mod telemetry;

use crate::ambassador::{Admission, Ambassador};
use crate::config::Config;
use crate::filter;
use crate::headers::HeaderList;
use crate::metrics::RequestSeries;
use crate::prelude::*;
use crate::status::Status;
use abi::Action;
use alloc::sync::Arc;
use core::cell::RefCell;
use host::{read_fetched_file, reply, request_headers, start_fetch, ContextRequest};
use telemetry::WasmTelemetry;

#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// Byte comparison, which the compiler emits calls to and which, without
/// `std`, no C library provides.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees `n` readable bytes at both.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// A panic traps: Envoy then answers 503 and rebuilds the VM (FAIL_RELOAD).
#[panic_handler]
fn on_panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// Everything the VM holds: its root contexts (one per plugin) and streams.
#[derive(Default)]
struct Plugin {
    roots: Vec<Root>,
    /// Each request in flight: the root it belongs to, its metric series.
    /// A list: one VM serves one app's few concurrent requests.
    streams: Vec<Stream>,
}

struct Root {
    id: u32,
    /// Set by a successful `proxy_on_configure`.
    vm: Option<Vm>,
}

struct Stream {
    id: u32,
    root: u32,
    series: Option<usize>,
}

impl Plugin {
    fn stream(&mut self, id: u32) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|stream| stream.id == id)
    }

    fn remove_stream(&mut self, id: u32) -> Option<Stream> {
        let at = self.streams.iter().position(|stream| stream.id == id)?;
        Some(self.streams.swap_remove(at))
    }
}

struct Vm {
    ambassador: Ambassador<u32>,
    /// Outstanding fetches: (call token, file index).
    fetches: Vec<(u32, usize)>,
    telemetry: WasmTelemetry,
    series: RequestSeries,
}

/// The VM's one thread is the only one that ever touches the state.
struct SingleThreaded<T>(T);

// SAFETY: a wasm VM runs on a single thread; nothing is shared across threads.
unsafe impl<T> Sync for SingleThreaded<T> {}

static PLUGIN: SingleThreaded<RefCell<Option<Plugin>>> = SingleThreaded(RefCell::new(None));

/// Runs `f` on the VM state of `root`, if that root is configured.
fn with_vm<R>(root: u32, f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    let mut plugin = PLUGIN.0.borrow_mut();
    let root = plugin.as_mut()?.roots.iter_mut().find(|r| r.id == root)?;
    root.vm.as_mut().map(f)
}

fn with_plugin<R>(f: impl FnOnce(&mut Plugin) -> R) -> R {
    let mut plugin = PLUGIN.0.borrow_mut();
    f(plugin.get_or_insert_with(Plugin::default))
}

/// The root a context belongs to: itself, or the root of its stream.
fn root_of(context_id: u32) -> Option<u32> {
    let plugin = PLUGIN.0.borrow();
    let plugin = plugin.as_ref()?;
    if plugin.roots.iter().any(|root| root.id == context_id) {
        return Some(context_id);
    }
    let stream = plugin
        .streams
        .iter()
        .find(|stream| stream.id == context_id)?;
    Some(stream.root)
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    with_plugin(|plugin| {
        if parent_id == 0 {
            plugin.roots.push(Root {
                id: context_id,
                vm: None,
            });
        } else {
            plugin.streams.push(Stream {
                id: context_id,
                root: parent_id,
                series: None,
            });
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_: u32, _: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, size: usize) -> bool {
    let bytes = abi::buffer(abi::BufferType::PluginConfiguration, size).unwrap_or_default();
    let config = match Config::parse(&bytes) {
        Ok(config) => Arc::new(config),
        Err(error) => {
            abi::log(
                abi::LogLevel::Error,
                &format!("invalid podward config: {error}"),
            );
            return false;
        }
    };
    // host_env_keys hands the Downward API variables to the VM at start.
    let ambassador = Ambassador::new(config.clone(), abi::environment());
    abi::set_tick_period_ms(ambassador.tick_interval_ms());
    let vm = Vm {
        ambassador,
        fetches: Vec::new(),
        telemetry: WasmTelemetry::new(&config),
        series: RequestSeries::default(),
    };
    with_plugin(|plugin| {
        if let Some(root) = plugin.roots.iter_mut().find(|r| r.id == root_id) {
            root.vm = Some(vm);
        }
    });
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    let now = abi::now_ms();
    let given_up = with_vm(root_id, |vm| vm.ambassador.tick(now, &vm.telemetry));
    for (context_id, status) in given_up.unwrap_or_default() {
        if abi::set_effective_context(context_id) {
            reply(&status);
        }
    }
    start_due_fetches(root_id);
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _: usize, _: bool) -> Action {
    let Some(root_id) = root_of(context_id) else {
        return Action::Continue;
    };
    let Some(headers) = request_headers() else {
        reply(&Status::unavailable(
            "podward could not read the request's headers".into(),
            1,
        ));
        return Action::Pause;
    };
    #[cfg(feature = "crash-drill")]
    crash_drill(&headers);
    if filter::is_readiness_probe(&headers) {
        answer_probe(root_id, context_id);
        return Action::Pause;
    }
    let now = abi::now_ms();
    let admission = with_vm(root_id, |vm| vm.ambassador.admit(context_id, now));
    match admission {
        // Not configured: Envoy refused the plugin and never gets here.
        None => Action::Continue,
        Some(Admission::Serve(_)) => {
            if serve(root_id, context_id, &headers, now) {
                Action::Continue
            } else {
                Action::Pause
            }
        }
        Some(Admission::Wait { start_reading }) => {
            if start_reading {
                start_due_fetches(root_id);
                abi::set_effective_context(context_id);
            }
            Action::Pause
        }
    }
}

/// A probe starts the reading if no request has yet, and is told at once
/// whether a request would be served now.
fn answer_probe(root_id: u32, context_id: u32) {
    let probed = with_vm(root_id, |vm| {
        (vm.ambassador.activate(), vm.ambassador.readiness())
    });
    let Some((start_reading, readiness)) = probed else {
        return;
    };
    if start_reading {
        start_due_fetches(root_id);
        abi::set_effective_context(context_id);
    }
    reply(&filter::readiness_reply(readiness));
}

/// A test build's way to crash the VM on demand (`--features crash-drill`,
/// never in the shipped module): a request carrying `x-podward-crash-drill`.
#[cfg(feature = "crash-drill")]
fn crash_drill(headers: &crate::headers::HeaderList) {
    #[allow(clippy::panic)]
    if headers.get("x-podward-crash-drill").is_some() {
        panic!("crash drill");
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    _: usize,
    body_size: usize,
    _: usize,
) {
    let Some(root_id) = root_of(context_id) else {
        return;
    };
    let read = read_fetched_file(body_size);
    let released = with_vm(root_id, |vm| {
        let at = vm.fetches.iter().position(|(t, _)| *t == token)?;
        let (_, index) = vm.fetches.swap_remove(at);
        let now_s = abi::now_ms() / 1000;
        Some(vm.ambassador.read_done(index, read, now_s, &vm.telemetry))
    });
    serve_released(root_id, released.flatten().unwrap_or_default());
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    let stream = with_plugin(|plugin| plugin.remove_stream(context_id));
    let Some(stream) = stream else {
        return;
    };
    let code = stream.series.map(|_| host::response_code());
    with_vm(stream.root, |vm| {
        vm.ambassador.forget(&context_id);
        if let (Some(series), Some(code)) = (stream.series, code) {
            vm.telemetry.request_done(&mut vm.series, series, code);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_: u32) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    let stream = with_plugin(|plugin| {
        let stream = plugin.remove_stream(context_id);
        if stream.is_none() {
            plugin.roots.retain(|root| root.id != context_id);
        }
        stream
    });
    // A stream that ended without a log callback.
    if let Some(stream) = stream {
        with_vm(stream.root, |vm| vm.ambassador.forget(&context_id));
    }
}

/// Starts the fetches that are due. They belong to the root context, so a
/// request that goes away does not take them with it.
fn start_due_fetches(root_id: u32) {
    let now = abi::now_ms();
    let due = with_vm(root_id, |vm| {
        let source = vm.ambassador.config().file_source.clone();
        (vm.ambassador.due(now), source)
    });
    let Some((due, source)) = due else {
        return;
    };
    if due.is_empty() {
        return;
    }
    abi::set_effective_context(root_id);
    for (index, path) in due {
        let dispatched = start_fetch(&source, &path);
        let released = with_vm(root_id, |vm| match dispatched {
            Ok(token) => {
                vm.fetches.push((token, index));
                Vec::new()
            }
            Err(error) => vm
                .ambassador
                .read_done(index, Err(error), now / 1000, &vm.telemetry),
        });
        serve_released(root_id, released.unwrap_or_default());
    }
}

fn serve_released(root_id: u32, released: Vec<u32>) {
    for context_id in released {
        // The client may have gone away while it waited.
        if !abi::set_effective_context(context_id) {
            continue;
        }
        let Some(headers) = request_headers() else {
            continue;
        };
        if serve(root_id, context_id, &headers, abi::now_ms()) {
            abi::resume_request();
        }
    }
}

/// Runs the request path for the effective context; true if the request
/// goes on upstream. A reply is sent once the state is no longer borrowed.
fn serve(root_id: u32, context_id: u32, headers: &HeaderList, now_ms: u64) -> bool {
    let mut request = ContextRequest::default();
    let served = with_vm(root_id, |vm| {
        let prepared = vm.ambassador.prepared()?.clone();
        let config = vm.ambassador.config().clone();
        Some(filter::serve(
            &mut request,
            headers,
            &config,
            &prepared,
            now_ms / 1000,
            &mut vm.series,
            &vm.telemetry,
        ))
    })
    .flatten();
    if let Some(series) = served.and_then(|served| served.series) {
        with_plugin(|plugin| {
            if let Some(stream) = plugin.stream(context_id) {
                stream.series = Some(series);
            }
        });
    }
    let reply_with = match served {
        Some(_) => request.reply,
        None => Some(Status::unavailable("podward is not configured".into(), 1)),
    };
    if let Some(status) = reply_with {
        reply(&status);
    }
    served.is_some_and(|served| served.forwarded)
}
