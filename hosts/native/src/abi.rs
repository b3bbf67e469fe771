//! Envoy's dynamic-module ABI (`source/extensions/dynamic_modules/abi/abi.h`),
//! as much of it as podward uses, declared here by hand: the hooks Envoy
//! calls, each handed to the glue inside `catch_unwind`, and the calls into
//! Envoy, each behind a safe wrapper ([`Envoy`]). All of the crate's `unsafe`
//! is here, each block with the reason it holds.
//!
//! Envoy 1.40 expects the version string `v0.2.0`; every call below has the
//! signature of the v0.1.0 header (the ABI only grows by new functions), and
//! each was checked against the arguments the 1.40.0 binary's exported
//! function reads. C enums cross as 32-bit integers. Buffers are (pointer,
//! length) pairs, never NUL-terminated. Pointers called `Envoy*` are Envoy's;
//! the module's own objects cross as `*const c_void`.
//!
//! A panic must not take Envoy down (a panic unwinding out of a hook aborts
//! the process): every hook runs inside `catch_unwind`, and a request whose
//! hook panicked is answered 503, never forwarded.

use crate::host::EnvoyHost;
use crate::plugin::{Headers, Plugin, Shared, Stream};
use core::ffi::{c_char, c_void};
use core::ptr::null;
use podward::headers::HeaderList;
use podward::host::{Level, Log};
use podward::status::LocalReply;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

type EnvoyConfig = *mut c_void;
type EnvoyFilter = *mut c_void;

/// Bytes owned by Envoy, valid until the hook returns or, for a header map,
/// until the module first changes that map.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    length: usize,
}

impl EnvoyBuffer {
    /// # Safety
    /// Envoy's guarantee above must hold for as long as the slice is used.
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller's guarantee.
        unsafe { core::slice::from_raw_parts(self.ptr, self.length) }
    }
}

/// Bytes owned by the module; Envoy copies what it keeps.
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleBuffer {
    ptr: *const u8,
    length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// `set_header` with a null value removes every value of the header.
    const NULL: ModuleBuffer = ModuleBuffer {
        ptr: null(),
        length: 0,
    };
}

/// A header as Envoy hands it over (`envoy_http_header`) or takes it
/// (`module_http_header`): the same layout.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    name: *const u8,
    name_length: usize,
    value: *const u8,
    value_length: usize,
}

impl Header {
    const EMPTY: Header = Header {
        name: null(),
        name_length: 0,
        value: null(),
        value_length: 0,
    };

    fn of(name: &[u8], value: &[u8]) -> Header {
        Header {
            name: name.as_ptr(),
            name_length: name.len(),
            value: value.as_ptr(),
            value_length: value.len(),
        }
    }
}

/// The ABI version Envoy 1.40 expects.
static ABI_VERSION: &[u8] = b"v0.2.0\0";
/// `envoy_dynamic_module_type_http_header_type`
const REQUEST_HEADERS: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result`
const METRICS_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_attribute_id` of `response.code`.
const ATTRIBUTE_RESPONSE_CODE: u32 = 15;
/// Request headers read without allocating; a request with more takes a
/// vector (Envoy's limit is `max_headers_count`, envoy/render.py).
const HEADERS_ON_STACK: usize = 32;
/// Continue, for the body, trailer and response hooks.
const CONTINUE: u32 = 0;

impl Headers {
    /// Envoy's `FilterHeadersStatus`, which the hook's status is cast to.
    fn code(self) -> u32 {
        match self {
            Headers::Continue => 0,
            Headers::Stop => 1,
            Headers::StopAllAndWatermark => 4,
        }
    }
}

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: EnvoyFilter,
        header_type: u32,
    ) -> usize;
    /// Fills `headers`, which has room for `get_headers_size` entries.
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: EnvoyFilter,
        header_type: u32,
        headers: *mut Header,
    ) -> bool;
    /// Replaces every value of `name`; a null `value` removes the header.
    fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyFilter,
        header_type: u32,
        name: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// Appends one value of `name`.
    fn envoy_dynamic_module_callback_http_add_header(
        filter: EnvoyFilter,
        header_type: u32,
        name: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// A local reply; the hook then returns a stop status.
    fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyFilter,
        status_code: u32,
        headers: *mut Header,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: EnvoyFilter);
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: EnvoyFilter,
        attribute: u32,
        value: *mut u64,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: EnvoyFilter,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// On the stream's worker, inside a hook. The scheduler holds a weak
    /// reference: a commit after the stream is gone does nothing.
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: EnvoyFilter) -> *mut c_void;
    /// From any thread: runs `on_http_filter_scheduled` on the worker.
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);

    /// From any thread: runs `on_http_filter_config_scheduled` on the main thread.
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: EnvoyConfig,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);

    /// Only while the config is created. Ids start at 1.
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyConfig,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: EnvoyConfig,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    /// On the main thread; as many label values as names were defined.
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: EnvoyConfig,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: EnvoyConfig,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

/// A pointer Envoy lets the module use from another thread: schedulers and
/// the config (the ABI documents which calls any thread may make).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendPtr(*mut c_void);

// SAFETY: only passed to the calls Envoy allows from any thread.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Envoy's handle of one stream's filter, used on its worker only.
#[derive(Clone, Copy)]
pub struct FilterPtr(EnvoyFilter);

/// Envoy, as one filter config sees it.
pub struct Envoy {
    config: SendPtr,
    /// Runs the config's scheduled hook, where counts are flushed.
    flush: SendPtr,
}

impl Envoy {
    /// On the main thread, while the config is created.
    fn new(config: EnvoyConfig) -> Envoy {
        // SAFETY: on the main thread, during config creation.
        let flush =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        Envoy {
            config: SendPtr(config),
            flush: SendPtr(flush),
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // SAFETY: dropped once, with the plugin, after its reader (the only
        // other user of the scheduler) has stopped.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.flush.0) };
    }
}

impl Log for Envoy {
    fn log(&self, level: Level, message: &str) {
        log(level, message);
    }
}

fn log(level: Level, message: &str) {
    let message = ModuleBuffer::of(message.as_bytes());
    // SAFETY: Envoy reads the message during the call; any thread may log.
    unsafe { envoy_dynamic_module_callback_log(level.envoy(), message) }
}

impl EnvoyHost for Envoy {
    type Filter = FilterPtr;
    type Scheduler = SendPtr;

    fn now_ms(&self) -> u64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    }

    fn environment(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }

    fn read_file(&self, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => format!("{path} does not exist"),
            _ => format!("could not read {path}: {error}"),
        })
    }

    fn define_metric(&self, name: &str, labels: &[&str], gauge: bool) -> Option<usize> {
        let labels: Vec<ModuleBuffer> = labels
            .iter()
            .map(|l| ModuleBuffer::of(l.as_bytes()))
            .collect();
        let mut id = 0;
        let name = ModuleBuffer::of(name.as_bytes());
        let (config, count) = (self.config.0, labels.len());
        // SAFETY: inside config creation, with buffers Envoy copies during the call.
        let result = unsafe {
            if gauge {
                envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    config,
                    name,
                    labels.as_ptr(),
                    count,
                    &mut id,
                )
            } else {
                envoy_dynamic_module_callback_http_filter_config_define_counter(
                    config,
                    name,
                    labels.as_ptr(),
                    count,
                    &mut id,
                )
            }
        };
        (result == METRICS_SUCCESS).then_some(id)
    }

    fn increment_counter(&self, id: usize, labels: &[String], amount: u64) {
        let values: Vec<ModuleBuffer> = labels
            .iter()
            .map(|l| ModuleBuffer::of(l.as_bytes()))
            .collect();
        // SAFETY: on the main thread, with buffers Envoy copies during the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.config.0,
                id,
                values.as_ptr(),
                values.len(),
                amount,
            );
        }
    }

    fn set_gauge(&self, id: usize, value: u64) {
        // SAFETY: on the main thread; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.config.0,
                id,
                null(),
                0,
                value,
            );
        }
    }

    fn schedule_flush(&self) {
        // SAFETY: committing is allowed from any thread; the scheduler lives
        // until this `Envoy` is dropped, after the reader has stopped.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.flush.0, 0)
        };
    }

    fn request_headers(&self, filter: FilterPtr, into: &mut HeaderList) -> bool {
        // Envoy's array of (pointer, length) pairs: on the stack for a usual
        // request, so that reading one allocates nothing.
        let mut on_stack = [Header::EMPTY; HEADERS_ON_STACK];
        let mut on_heap = Vec::new();
        // SAFETY: on the stream's worker, inside a hook.
        let count = unsafe {
            envoy_dynamic_module_callback_http_get_headers_size(filter.0, REQUEST_HEADERS)
        };
        let raw = match on_stack.get_mut(..count) {
            Some(raw) => raw,
            None => {
                on_heap.resize(count, Header::EMPTY);
                &mut on_heap[..]
            }
        };
        // SAFETY: Envoy writes `count` headers into `raw`, which holds as many.
        if !unsafe {
            envoy_dynamic_module_callback_http_get_headers(
                filter.0,
                REQUEST_HEADERS,
                raw.as_mut_ptr(),
            )
        } {
            return false;
        }
        for header in raw.iter() {
            // SAFETY: the buffers stay valid until the map changes, and
            // they are copied before that.
            let (name, value) = unsafe {
                (
                    EnvoyBuffer {
                        ptr: header.name,
                        length: header.name_length,
                    }
                    .bytes(),
                    EnvoyBuffer {
                        ptr: header.value,
                        length: header.value_length,
                    }
                    .bytes(),
                )
            };
            into.push(name, value);
        }
        true
    }

    fn remove_header(&self, filter: FilterPtr, name: &[u8]) -> bool {
        // SAFETY: on the worker, inside a hook; Envoy copies the buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                filter.0,
                REQUEST_HEADERS,
                ModuleBuffer::of(name),
                ModuleBuffer::NULL,
            )
        }
    }

    fn add_header(&self, filter: FilterPtr, name: &[u8], value: &[u8]) -> bool {
        // SAFETY: on the worker, inside a hook; Envoy copies the buffers.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                filter.0,
                REQUEST_HEADERS,
                ModuleBuffer::of(name),
                ModuleBuffer::of(value),
            )
        }
    }

    fn set_filter_state(&self, filter: FilterPtr, key: &[u8], value: &[u8]) {
        // SAFETY: on the worker, inside a hook; Envoy copies the buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                filter.0,
                ModuleBuffer::of(key),
                ModuleBuffer::of(value),
            );
        }
    }

    fn send_response(&self, filter: FilterPtr, reply: &LocalReply) {
        let mut headers: Vec<Header> = reply
            .headers
            .iter()
            .map(|(name, value)| Header::of(name, value))
            .collect();
        // SAFETY: on the worker, inside a hook; Envoy copies every buffer.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                filter.0,
                reply.code,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(reply.body.as_bytes()),
                ModuleBuffer::of(b"podward"),
            );
        }
    }

    fn continue_decoding(&self, filter: FilterPtr) {
        // SAFETY: on the worker, for this paused stream.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(filter.0) };
    }

    fn response_code(&self, filter: FilterPtr) -> Option<u64> {
        let mut code = 0;
        // SAFETY: on the worker, during a hook of this stream; Envoy writes one u64.
        let known = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(
                filter.0,
                ATTRIBUTE_RESPONSE_CODE,
                &mut code,
            )
        };
        known.then_some(code)
    }

    fn scheduler_new(&self, filter: FilterPtr) -> SendPtr {
        // SAFETY: on the stream's worker, inside a hook.
        SendPtr(unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(filter.0) })
    }

    fn scheduler_commit(&self, scheduler: SendPtr) {
        // SAFETY: from any thread; the glue commits only schedulers not yet
        // deleted (see `Shared::wake`).
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler.0, 0) };
    }

    fn scheduler_delete(&self, scheduler: SendPtr) {
        // SAFETY: deleted once, by its stream, after the engine forgot it.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler.0) };
    }
}

/// Runs a hook, containing any panic; `on_panic` is the hook's answer then.
fn contained<R>(hook: impl FnOnce() -> R, on_panic: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(hook)).unwrap_or_else(|_| on_panic())
}

type NativePlugin = Plugin<Envoy>;
type NativeStream = Stream<Envoy>;

/// Another count of a stream for the length of a hook. Envoy completes and
/// destroys a stream from inside a local reply or a resumed request, that
/// is, inside the hook that makes the call; the stream outlives the hook all
/// the same, and is only ever reached through shared references.
///
/// # Safety
/// `stream` is what filter_new returned, and filter_destroy has not run.
unsafe fn held(stream: *const c_void) -> Rc<NativeStream> {
    let stream = stream.cast::<NativeStream>();
    // SAFETY: the caller's guarantee: the count Envoy holds is alive, so the
    // pointer came from `Rc::into_raw` and may take one more.
    unsafe {
        Rc::increment_strong_count(stream);
        Rc::from_raw(stream)
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    // The default hook writes to stderr; Envoy's log is where operators look.
    std::panic::set_hook(Box::new(|info| {
        log(Level::Error, &format!("podward panicked: {info}"));
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
    let created = contained(
        || Plugin::start(Shared::new(Envoy::new(envoy), bytes)?),
        || None,
    );
    match created {
        Some(plugin) => Box::into_raw(Box::new(plugin)).cast_const().cast(),
        // A null config makes Envoy refuse the filter, as wasm's on_configure does.
        None => null(),
    }
}

/// # Safety
/// `plugin` is what config_new returned; Envoy destroys it once, after every
/// stream of it.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(plugin: *const c_void) {
    // SAFETY: created by Box::into_raw in config_new, destroyed once.
    let plugin = unsafe { Box::from_raw(plugin.cast_mut().cast::<NativePlugin>()) };
    contained(|| plugin.stop(), || ());
}

/// The reader asks for this on the main thread: hand Envoy the counts.
///
/// # Safety
/// `plugin` is what config_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _envoy: EnvoyConfig,
    plugin: *const c_void,
    _event: u64,
) {
    // SAFETY: alive until config_destroy, which runs on this same thread.
    let plugin = unsafe { &*plugin.cast::<NativePlugin>() };
    contained(|| plugin.shared().flush_metrics(), || ());
}

/// # Safety
/// `plugin` is what config_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    plugin: *const c_void,
    envoy: EnvoyFilter,
) -> *const c_void {
    // SAFETY: alive while any of its streams is.
    let plugin = unsafe { &*plugin.cast::<NativePlugin>() };
    // Never null: Envoy would answer an empty 500 instead of podward's Status.
    let stream = Rc::new(plugin.shared().stream(FilterPtr(envoy)));
    Rc::into_raw(stream).cast()
}

/// # Safety
/// `stream` is what filter_new returned; Envoy destroys it once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    // SAFETY: created by Rc::into_raw in filter_new; this drops Envoy's count,
    // once. A hook running around this call holds its own.
    let stream = unsafe { Rc::from_raw(stream.cast::<NativeStream>()) };
    contained(|| stream.on_destroy(), || ());
}

/// # Safety
/// Envoy passes the stream filter_new returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _envoy: EnvoyFilter,
    stream: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: Envoy's stream, not destroyed before its hooks end.
    let stream = unsafe { held(stream) };
    contained(|| stream.on_request_headers(), || stream.on_panic()).code()
}

/// A held request may go on, or must be answered.
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
    let stream = unsafe { held(stream) };
    contained(
        || stream.on_scheduled(),
        || {
            stream.on_panic();
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
    let stream = unsafe { held(stream) };
    contained(|| stream.on_complete(), || ());
}

/// The hooks Envoy requires of every HTTP filter module (one missing fails
/// the load) that podward has nothing to do in: they let everything through.
mod unused_hooks {
    use super::{EnvoyBuffer, EnvoyFilter, Header, CONTINUE};
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
