//! The Envoy dynamic-module adapter (`--features native`): the hooks Envoy
//! calls, and host calls only. One [`Plugin`] per filter config is shared by
//! every worker: one [`Ambassador`], fed by a thread that reads the pod's
//! files itself, and one prepared identity for all workers.
//!
//! A panic must not take Envoy down (a panic unwinding out of a hook aborts
//! the process): every hook runs inside `catch_unwind`, and a request whose
//! hook panicked is answered 503, never forwarded.

mod abi;
mod reader;
mod telemetry;

use crate::ambassador::{Admission, Ambassador, Prepared};
use crate::config::Config;
use crate::filter::{self, RequestHost, Rewrite};
use crate::headers::HeaderList;
use crate::metrics::RequestSeries;
use crate::prelude::*;
use crate::status::Status;
use abi::{EnvoyBuffer, EnvoyConfig, EnvoyFilter, Header, LogLevel, ModuleBuffer, Scheduler};
use alloc::boxed::Box;
use core::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use telemetry::{lock, NativeTelemetry};

/// The ABI version Envoy 1.40 expects.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

/// The filter-state key of podward's access-log record.
const RECORD_KEY: &[u8] = b"podward";

/// A pointer Envoy lets the module use from another thread: schedulers and
/// the config (the ABI documents which calls any thread may make).
#[derive(Clone, Copy, PartialEq, Eq)]
struct SendPtr(*mut c_void);

// SAFETY: only passed to the calls Envoy allows from any thread.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// What every worker and the reader thread share.
struct Shared {
    config: Arc<Config>,
    ambassador: Mutex<Ambassador<u64>>,
    /// A copy of the ambassador's prepared state, read by every request.
    prepared: RwLock<Option<Prepared>>,
    /// Requests held for the first token: (stream id, its scheduler).
    waiters: Mutex<Vec<(u64, SendPtr)>>,
    series: Mutex<RequestSeries>,
    telemetry: NativeTelemetry,
    next_stream: AtomicU64,
    /// The reader stops when this is set; the condvar wakes it at once.
    stopping: Mutex<bool>,
    wake: Condvar,
    config_scheduler: SendPtr,
}

impl Shared {
    fn prepared(&self) -> Option<Prepared> {
        self.prepared
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// One filter config, as Envoy holds it.
pub struct Plugin {
    shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a hook, containing any panic; `on_panic` is the hook's answer then.
fn contained<R>(hook: impl FnOnce() -> R, on_panic: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(hook)).unwrap_or_else(|_| on_panic())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    // The default hook writes to stderr; Envoy's log is where operators look.
    std::panic::set_hook(Box::new(|info| {
        abi::log(LogLevel::Error, &format!("podward panicked: {info}"));
    }));
    ABI_VERSION.as_ptr().cast()
}

/// # Safety
/// Called by Envoy on the main thread with the buffers abi.h documents.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: EnvoyConfig,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    // SAFETY: Envoy's buffer, valid during this hook.
    let bytes = unsafe { config.bytes() };
    let created = contained(|| Plugin::new(envoy, bytes), || None);
    match created {
        Some(plugin) => Box::into_raw(Box::new(plugin)).cast_const().cast(),
        // A null config makes Envoy refuse the filter, as wasm's on_configure does.
        None => core::ptr::null(),
    }
}

impl Plugin {
    fn new(envoy: EnvoyConfig, bytes: &[u8]) -> Option<Plugin> {
        let config = match Config::parse(bytes) {
            Ok(config) => Arc::new(config),
            Err(error) => {
                abi::log(LogLevel::Error, &format!("invalid podward config: {error}"));
                return None;
            }
        };
        let Some(telemetry) = NativeTelemetry::new(envoy, &config) else {
            abi::log(LogLevel::Error, "podward could not define its metrics");
            return None;
        };
        let mut ambassador = Ambassador::new(config.clone(), std::env::vars().collect());
        // Nothing stands in the way of reading at once, unlike a wasm VM.
        ambassador.activate();
        // SAFETY: on the main thread, during config creation.
        let config_scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(envoy) };
        let shared = Arc::new(Shared {
            config,
            ambassador: Mutex::new(ambassador),
            prepared: RwLock::new(None),
            waiters: Mutex::new(Vec::new()),
            series: Mutex::new(RequestSeries::default()),
            telemetry,
            next_stream: AtomicU64::new(1),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
            config_scheduler: SendPtr(config_scheduler),
        });
        let Some(reader) = reader::start(shared.clone()) else {
            abi::log(LogLevel::Error, "podward could not start its file reader");
            return None;
        };
        Some(Plugin {
            shared,
            reader: Mutex::new(Some(reader)),
        })
    }
}

/// # Safety
/// `plugin` is what config_new returned; Envoy destroys it once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(plugin: *const c_void) {
    // SAFETY: created by Box::into_raw in config_new, destroyed once.
    let plugin = unsafe { Box::from_raw(plugin.cast_mut().cast::<Plugin>()) };
    contained(
        || {
            *lock(&plugin.shared.stopping) = true;
            plugin.shared.wake.notify_all();
            if let Some(reader) = lock(&plugin.reader).take() {
                let _ = reader.join();
            }
            // SAFETY: the reader, the only other user, has stopped.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                    plugin.shared.config_scheduler.0,
                );
            }
        },
        || (),
    );
}

/// The reader asks for this on the main thread: hand Envoy the counts.
///
/// # Safety
/// `plugin` is what config_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    envoy: EnvoyConfig,
    plugin: *const c_void,
    _event: u64,
) {
    // SAFETY: alive until config_destroy, which runs on this same thread.
    let plugin = unsafe { &*plugin.cast::<Plugin>() };
    contained(|| plugin.shared.telemetry.flush(envoy), || ());
}

/// One stream.
struct Stream {
    shared: Arc<Shared>,
    envoy: EnvoyFilter,
    id: u64,
    scheduler: Option<Scheduler>,
    series: Option<usize>,
}

/// # Safety
/// `plugin` is what config_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    plugin: *const c_void,
    envoy: EnvoyFilter,
) -> *const c_void {
    // SAFETY: alive while any of its streams is.
    let plugin = unsafe { &*plugin.cast::<Plugin>() };
    let shared = plugin.shared.clone();
    let id = shared.next_stream.fetch_add(1, Ordering::Relaxed);
    // Never null: Envoy would answer an empty 500 instead of podward's Status.
    let stream = Stream {
        shared,
        envoy,
        id,
        scheduler: None,
        series: None,
    };
    Box::into_raw(Box::new(stream)).cast_const().cast()
}

/// # Safety
/// `stream` is what filter_new returned; Envoy destroys it once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    // SAFETY: created by Box::into_raw in filter_new, destroyed once.
    let mut stream = unsafe { Box::from_raw(stream.cast_mut().cast::<Stream>()) };
    contained(|| stream.release_scheduler(), || ());
}

/// # Safety
/// Envoy passes the stream filter_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _envoy: EnvoyFilter,
    stream: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: each stream's hooks run on one worker, never at once.
    let stream = unsafe { &mut *stream.cast_mut().cast::<Stream>() };
    let envoy = stream.envoy;
    contained(|| stream.on_request_headers(), || answer_panic(envoy))
}

/// A waiting request may go on, or must be given up.
///
/// # Safety
/// Envoy passes the stream filter_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _envoy: EnvoyFilter,
    stream: *const c_void,
    _event: u64,
) {
    // SAFETY: as in request_headers.
    let stream = unsafe { &mut *stream.cast_mut().cast::<Stream>() };
    let envoy = stream.envoy;
    contained(
        || stream.on_scheduled(),
        || {
            answer_panic(envoy);
        },
    );
}

/// # Safety
/// Envoy passes the stream filter_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: EnvoyFilter,
    stream: *const c_void,
) {
    // SAFETY: as in request_headers.
    let stream = unsafe { &mut *stream.cast_mut().cast::<Stream>() };
    contained(|| stream.on_complete(), || ());
}

/// A test build's way to panic on demand (`--features crash-drill`, never in
/// the shipped library): a request carrying `x-podward-crash-drill`.
#[cfg(feature = "crash-drill")]
fn crash_drill(headers: &HeaderList) {
    #[allow(clippy::panic)]
    if headers.get("x-podward-crash-drill").is_some() {
        panic!("crash drill");
    }
}

/// A hook that panicked: 503, and the request goes no further.
fn answer_panic(envoy: EnvoyFilter) -> u32 {
    let status = Status::unavailable("podward failed on this request; see Envoy's log".into(), 1);
    reply(envoy, &status);
    abi::HEADERS_STOP_ITERATION
}

impl Stream {
    fn on_request_headers(&mut self) -> u32 {
        let headers = request_headers(self.envoy);
        #[cfg(feature = "crash-drill")]
        crash_drill(&headers);
        if filter::is_readiness_probe(&headers) {
            let readiness = lock(&self.shared.ambassador).readiness();
            reply(self.envoy, &filter::readiness_reply(readiness));
            return abi::HEADERS_STOP_ITERATION;
        }
        let now = now_ms();
        let prepared = match self.shared.prepared() {
            Some(prepared) => prepared,
            None => match self.admit(now) {
                Some(prepared) => prepared,
                None => return abi::HEADERS_STOP_ALL_AND_WATERMARK,
            },
        };
        if self.serve(&headers, &prepared, now) {
            abi::HEADERS_CONTINUE
        } else {
            abi::HEADERS_STOP_ITERATION
        }
    }

    /// Asks the ambassador; if the request must wait, it goes on the waiting
    /// list (with a scheduler to wake it) before the ambassador's lock is
    /// let go, so the reader cannot release it unseen.
    fn admit(&mut self, now_ms: u64) -> Option<Prepared> {
        // SAFETY: on the stream's worker, inside a hook.
        let scheduler =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(self.envoy) };
        let mut ambassador = lock(&self.shared.ambassador);
        match ambassador.admit(self.id, now_ms) {
            Admission::Serve(prepared) => {
                drop(ambassador);
                // SAFETY: never on the waiting list.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler)
                };
                Some(prepared)
            }
            Admission::Wait { .. } => {
                lock(&self.shared.waiters).push((self.id, SendPtr(scheduler)));
                self.scheduler = Some(scheduler);
                None
            }
        }
    }

    fn on_scheduled(&mut self) {
        self.release_scheduler();
        match self.shared.prepared() {
            Some(prepared) => {
                let headers = request_headers(self.envoy);
                if self.serve(&headers, &prepared, now_ms()) {
                    // SAFETY: on the worker, for this paused stream.
                    unsafe {
                        abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.envoy)
                    };
                }
            }
            None => {
                let readiness = lock(&self.shared.ambassador).readiness();
                let why = readiness.err().unwrap_or_default();
                reply(self.envoy, &Status::unavailable(why, 1));
            }
        }
    }

    fn serve(&mut self, headers: &HeaderList, prepared: &Prepared, now_ms: u64) -> bool {
        let mut request = EnvoyRequest(self.envoy);
        let served = {
            let mut series = lock(&self.shared.series);
            filter::serve(
                &mut request,
                headers,
                &self.shared.config,
                prepared,
                now_ms / 1000,
                &mut series,
                &self.shared.telemetry,
            )
        };
        self.series = served.series;
        served.forwarded
    }

    fn on_complete(&mut self) {
        let Some(series) = self.series.take() else {
            return;
        };
        let mut code = 0;
        // SAFETY: on the worker, during a hook of this stream.
        let known = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(
                self.envoy,
                abi::ATTRIBUTE_RESPONSE_CODE,
                &mut code,
            )
        };
        let series_list = lock(&self.shared.series);
        let code = if known { code } else { 0 };
        self.shared
            .telemetry
            .request_done(&series_list, series, code);
    }

    /// Takes this stream off the waiting list and deletes its scheduler, once,
    /// under the same lock the reader commits under.
    fn release_scheduler(&mut self) {
        let Some(scheduler) = self.scheduler.take() else {
            return;
        };
        {
            let mut ambassador = lock(&self.shared.ambassador);
            ambassador.forget(&self.id);
            lock(&self.shared.waiters).retain(|(id, _)| *id != self.id);
        }
        // SAFETY: no longer on the waiting list, so the reader cannot commit to it.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler) };
    }
}

/// Every request header, copied out of Envoy's map before anything changes it.
fn request_headers(envoy: EnvoyFilter) -> HeaderList {
    // SAFETY: on the stream's worker, inside a hook; the buffers stay valid
    // until the map changes, and they are copied before that.
    unsafe {
        let count =
            abi::envoy_dynamic_module_callback_http_get_headers_size(envoy, abi::REQUEST_HEADERS);
        let mut raw = vec![Header::EMPTY; count];
        if !abi::envoy_dynamic_module_callback_http_get_headers(
            envoy,
            abi::REQUEST_HEADERS,
            raw.as_mut_ptr(),
        ) {
            return HeaderList::default();
        }
        let buffer = |ptr, length| EnvoyBuffer { ptr, length }.bytes();
        HeaderList::from_pairs(raw.iter().map(|h| {
            (
                buffer(h.name, h.name_length),
                buffer(h.value, h.value_length),
            )
        }))
    }
}

/// Answers the stream's request with a Status.
fn reply(envoy: EnvoyFilter, status: &Status) {
    let retry_after = status.details.retry_after_seconds.map(|s| s.to_string());
    let mut headers = vec![Header::of(b"content-type", b"application/json")];
    if let Some(seconds) = &retry_after {
        headers.push(Header::of(b"retry-after", seconds.as_bytes()));
    }
    let body = status.to_json();
    // SAFETY: on the worker, inside a hook; Envoy copies every buffer.
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            envoy,
            status.code,
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(body.as_bytes()),
            ModuleBuffer::of(b"podward"),
        );
    }
}

/// The request of one stream, as the request path changes it.
struct EnvoyRequest(EnvoyFilter);

impl RequestHost for EnvoyRequest {
    fn forward(&mut self, rewrite: &Rewrite, original: &HeaderList) -> Result<(), String> {
        let edits = rewrite.edits(original);
        let mut ok = true;
        // SAFETY: on the worker, inside a hook; Envoy copies the buffers.
        unsafe {
            for name in edits.removals {
                ok &= abi::envoy_dynamic_module_callback_http_set_header(
                    self.0,
                    abi::REQUEST_HEADERS,
                    ModuleBuffer::of(name),
                    ModuleBuffer::NULL,
                );
            }
            // Every name added was removed first: adding is Envoy's cheaper call.
            for (name, value) in edits.additions {
                ok &= abi::envoy_dynamic_module_callback_http_add_header(
                    self.0,
                    abi::REQUEST_HEADERS,
                    ModuleBuffer::of(name),
                    ModuleBuffer::of(value),
                );
            }
        }
        if ok {
            Ok(())
        } else {
            Err("Envoy refused a header change".into())
        }
    }

    fn reply(&mut self, status: &Status) {
        reply(self.0, status);
    }

    fn record(&mut self, access_record: &str) {
        // SAFETY: on the worker, inside a hook; Envoy copies the buffers.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(RECORD_KEY),
                ModuleBuffer::of(access_record.as_bytes()),
            );
        }
    }
}

/// The hooks Envoy requires of every HTTP filter module (one missing fails
/// the load) that podward has nothing to do in: they let everything through.
mod unused_hooks {
    use super::abi::{EnvoyBuffer, EnvoyFilter, Header, CONTINUE};
    use core::ffi::c_void;

    type Stream = *const c_void;

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
        _: EnvoyFilter,
        _: Stream,
        _end_of_stream: bool,
    ) -> u32 {
        CONTINUE
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
        _: EnvoyFilter,
        _: Stream,
    ) -> u32 {
        CONTINUE
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
        _: EnvoyFilter,
        _: Stream,
        _end_of_stream: bool,
    ) -> u32 {
        CONTINUE
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
        _: EnvoyFilter,
        _: Stream,
        _end_of_stream: bool,
    ) -> u32 {
        CONTINUE
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
        _: EnvoyFilter,
        _: Stream,
    ) -> u32 {
        CONTINUE
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
        _: EnvoyFilter,
        _: Stream,
        _callout_id: u64,
        _result: u32,
        _headers: *const Header,
        _headers_size: usize,
        _body_chunks: *const EnvoyBuffer,
        _body_chunks_size: usize,
    ) {
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
        _: EnvoyFilter,
        _: Stream,
        _stream_id: u64,
        _headers: *const Header,
        _headers_size: usize,
        _end_stream: bool,
    ) {
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
        _: EnvoyFilter,
        _: Stream,
        _stream_id: u64,
        _data: *const EnvoyBuffer,
        _data_count: usize,
        _end_stream: bool,
    ) {
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
        _: EnvoyFilter,
        _: Stream,
        _stream_id: u64,
        _trailers: *const Header,
        _trailers_size: usize,
    ) {
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
        _: EnvoyFilter,
        _: Stream,
        _stream_id: u64,
    ) {
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
        _: EnvoyFilter,
        _: Stream,
        _stream_id: u64,
        _reason: u32,
    ) {
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
        _: EnvoyFilter,
        _: Stream,
    ) {
    }

    #[no_mangle]
    pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
        _: EnvoyFilter,
        _: Stream,
    ) {
    }
}
