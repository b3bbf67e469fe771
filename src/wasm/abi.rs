//! The proxy-wasm ABI (0.2.1), as much of it as podward uses: the host's
//! functions, each behind a wrapper that never panics, and the memory export
//! the host allocates through. The callbacks the host calls are in
//! [`super`]. Written here rather than taken from the Rust SDK: the SDK's
//! header helpers panic on bytes that are not UTF-8, its wrappers panic on
//! unexpected statuses, and its dispatcher and `std` roughly doubled the
//! module, whose size sets V8's memory for every VM.

use crate::headers::{encode_proxy_wasm_map, HeaderList};
use crate::prelude::*;
use alloc::boxed::Box;
use core::ptr::{null, null_mut, NonNull};

/// Host statuses; only `OK` is told apart.
const OK: u32 = 0;

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum MapType {
    RequestHeaders = 0,
    HttpCallResponseHeaders = 6,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum BufferType {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
}

/// What a stream callback tells the host to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// `proxy_continue_stream`'s stream type for a request.
const HTTP_REQUEST_STREAM: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: LogLevel, message: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: BufferType,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: MapType, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_add_header_map_value(
        map: MapType,
        name: *const u8,
        name_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: MapType, name: *const u8, name_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, data: *const u8, size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(kind: MetricType, name: *const u8, size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn environ_sizes_get(count: *mut usize, buffer_size: *mut usize) -> u16;
    fn environ_get(entries: *mut *mut u8, buffer: *mut u8) -> u16;
}

/// The host writes into memory it asks the module for. Each allocation is
/// a boxed byte slice of exactly `size`, taken back by [`owned`].
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let buffer: Box<[u8]> = vec![0; size].into_boxed_slice();
    Box::into_raw(buffer).cast::<u8>()
}

/// Marks the module as speaking ABI 0.2.1.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Takes back a buffer the host filled through [`proxy_on_memory_allocate`].
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    match NonNull::new(data) {
        // SAFETY: a non-null `data` came from proxy_on_memory_allocate(size):
        // a boxed slice of exactly `size` bytes, handed over to us.
        Some(data) => unsafe { Vec::from_raw_parts(data.as_ptr(), size, size) },
        None => Vec::new(),
    }
}

/// Calls a host function that hands back a buffer; `None` unless it succeeds.
fn fetch_buffer(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0);
    (call(&mut data, &mut size) == OK).then(|| owned(data, size))
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the host reads `message` during the call.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

pub fn now_ms() -> u64 {
    let mut nanos = 0;
    // SAFETY: the host writes one u64.
    unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    nanos / 1_000_000
}

pub fn set_tick_period_ms(period_ms: u64) {
    let period = u32::try_from(period_ms).unwrap_or(u32::MAX);
    // SAFETY: plain value.
    unsafe { proxy_set_tick_period_milliseconds(period) };
}

/// Makes later calls act on `context_id`; false if it no longer exists.
pub fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: plain value.
    unsafe { proxy_set_effective_context(context_id) == OK }
}

pub fn buffer(kind: BufferType, size: usize) -> Option<Vec<u8>> {
    // SAFETY: the host writes a pointer and length it allocated through us.
    fetch_buffer(|data, len| unsafe { proxy_get_buffer_bytes(kind, 0, size, data, len) })
}

/// A header map, every byte kept.
pub fn header_map(map: MapType) -> Option<HeaderList> {
    // SAFETY: as in `buffer`.
    let bytes = fetch_buffer(|data, len| unsafe { proxy_get_header_map_pairs(map, data, len) })?;
    HeaderList::from_proxy_wasm_map(bytes)
}

/// Adds one value of `name`, beside any already there.
pub fn add_header(map: MapType, name: &[u8], value: &[u8]) -> bool {
    // SAFETY: the host copies both buffers during the call.
    let status = unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    };
    status == OK
}

/// Removes every value of `name`.
pub fn remove_header(map: MapType, name: &[u8]) -> bool {
    // SAFETY: the host reads `name` during the call.
    unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) == OK }
}

/// A property path's parts are joined by NUL bytes.
fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let path = property_path(path);
    // SAFETY: as in `buffer`; the host reads `path` during the call.
    fetch_buffer(|data, len| unsafe { proxy_get_property(path.as_ptr(), path.len(), data, len) })
}

pub fn set_property(path: &[&str], value: &[u8]) {
    let path = property_path(path);
    // SAFETY: the host copies both buffers during the call.
    unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
}

/// Answers the current request; it goes no further.
pub fn send_local_response(code: u32, headers: &[(&[u8], &[u8])], body: &[u8]) -> bool {
    let headers = encode_proxy_wasm_map(headers);
    // SAFETY: the host copies every buffer during the call.
    let status = unsafe {
        proxy_send_local_response(
            code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    status == OK
}

/// Lets the current request, held by `Action::Pause`, go on.
pub fn resume_request() {
    // SAFETY: plain value.
    unsafe { proxy_continue_stream(HTTP_REQUEST_STREAM) };
}

/// Starts an HTTP call to `cluster`; its answer arrives at
/// `proxy_on_http_call_response` with the returned token.
pub fn http_call(cluster: &str, headers: &[(&[u8], &[u8])], timeout_ms: u64) -> Result<u32, u32> {
    let headers = encode_proxy_wasm_map(headers);
    let trailers = encode_proxy_wasm_map(&[]);
    let timeout = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
    let mut token = 0;
    // SAFETY: the host copies every buffer during the call and writes one u32.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            null(),
            0,
            trailers.as_ptr(),
            trailers.len(),
            timeout,
            &mut token,
        )
    };
    if status == OK {
        Ok(token)
    } else {
        Err(status)
    }
}

pub fn define_metric(kind: MetricType, name: &str) -> Option<u32> {
    let mut id = 0;
    // SAFETY: the host reads `name` and writes one u32.
    let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32) {
    // SAFETY: plain values.
    unsafe { proxy_increment_metric(id, 1) };
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: plain values.
    unsafe { proxy_record_metric(id, value) };
}

/// The VM's environment (Envoy's `host_env_keys`), as `(name, value)`.
pub fn environment() -> Vec<(String, String)> {
    let (mut count, mut size) = (0, 0);
    // SAFETY: WASI writes two sizes.
    if unsafe { environ_sizes_get(&mut count, &mut size) } != 0 {
        return Vec::new();
    }
    let mut entries: Vec<*mut u8> = vec![null_mut(); count];
    let mut buffer: Vec<u8> = vec![0; size];
    // SAFETY: WASI fills `count` pointers into `buffer`, which holds `size` bytes.
    if unsafe { environ_get(entries.as_mut_ptr(), buffer.as_mut_ptr()) } != 0 {
        return Vec::new();
    }
    // Entries are `NAME=value\0`, one after another in `buffer`.
    buffer
        .split(|&byte| byte == 0)
        .filter_map(|entry| {
            let entry = core::str::from_utf8(entry).ok()?;
            let (name, value) = entry.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}
