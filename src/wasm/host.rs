//! The host calls the adapter makes, each in one place. Request headers are
//! read and written with proxy-wasm's raw header-map calls and kept as bytes:
//! the SDK's string and byte map helpers both panic on a header that is not
//! UTF-8, and Envoy passes such bytes on from any client.

use crate::config::FileSource;
use crate::filter::{RequestHost, Rewrite};
use crate::headers::{encode_proxy_wasm_map, HeaderList};
use crate::status::Status;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status as HostStatus};
use std::time::{Duration, UNIX_EPOCH};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> HostStatus;
    fn proxy_set_header_map_pairs(
        map_type: MapType,
        map_data: *const u8,
        map_size: usize,
    ) -> HostStatus;
}

/// A header map as raw bytes. The host allocates the buffer through the SDK's
/// `proxy_on_memory_allocate`, which hands out a boxed slice of exactly the
/// requested size: that is what it is taken back as.
fn header_map(map_type: MapType) -> Option<HeaderList> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a length it allocated for us.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    if status != HostStatus::Ok {
        return None;
    }
    if data.is_null() {
        return Some(HeaderList::default());
    }
    // SAFETY: `data` is a live allocation of exactly `size` bytes, now ours.
    let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
    HeaderList::from_proxy_wasm_map(bytes)
}

fn set_header_map(map_type: MapType, pairs: &[(&[u8], &[u8])]) -> Result<(), String> {
    let bytes = encode_proxy_wasm_map(pairs);
    // SAFETY: the host copies `bytes` before the call returns.
    match unsafe { proxy_set_header_map_pairs(map_type, bytes.as_ptr(), bytes.len()) } {
        HostStatus::Ok => Ok(()),
        status => Err(format!("{status:?}")),
    }
}

/// The request of the effective context. A reply is kept, to be sent once the
/// VM state is no longer borrowed (sending it can call back into the VM).
#[derive(Default)]
pub struct ContextRequest {
    pub reply: Option<Status>,
}

impl RequestHost for ContextRequest {
    fn request_headers(&mut self) -> Option<HeaderList> {
        header_map(MapType::HttpRequestHeaders)
    }

    fn forward(&mut self, rewrite: &Rewrite, original: &HeaderList) -> Result<(), String> {
        set_header_map(MapType::HttpRequestHeaders, &rewrite.apply(original))
    }

    fn reply(&mut self, status: &Status) {
        self.reply = Some(status.clone());
    }

    fn record(&mut self, access_record: &str) {
        // Filter state `wasm.podward`, printed by the access log.
        hostcalls::set_property(vec!["podward"], Some(access_record.as_bytes())).ok();
    }
}

/// Answers the effective context's request with a Status.
pub fn reply(status: &Status) {
    let retry_after = status.details.retry_after_seconds.map(|s| s.to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(seconds) = &retry_after {
        headers.push(("retry-after", seconds));
    }
    let body = status.to_json();
    if let Err(error) = hostcalls::send_http_response(status.code, headers, Some(body.as_bytes())) {
        let message = format!("podward: could not send a {} reply: {error:?}", status.code);
        hostcalls::log(LogLevel::Warn, &message).ok();
    }
}

pub fn now_ms() -> u64 {
    let now = hostcalls::get_current_time().unwrap_or(UNIX_EPOCH);
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Asks the file listener for `path`; the answer arrives as an HTTP call
/// response with the returned token.
pub fn start_fetch(source: &FileSource, path: &str) -> Result<u32, String> {
    let headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", source.authority.as_str()),
    ];
    let timeout = Duration::from_millis(source.timeout_ms);
    hostcalls::dispatch_http_call(&source.cluster, headers, None, vec![], timeout)
        .map_err(|status| format!("could not call cluster {}: {status:?}", source.cluster))
}

/// The file a fetch brought back, from the effective HTTP call response.
pub fn read_fetched_file(body_size: usize) -> Result<Vec<u8>, String> {
    let status = header_map(MapType::HttpCallResponseHeaders)
        .and_then(|headers| headers.get(":status").map(<[u8]>::to_vec));
    match status.as_deref() {
        Some(b"200") => Ok(
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default(),
        ),
        Some(status) => Err(format!(
            "file source answered HTTP {}",
            String::from_utf8_lossy(status)
        )),
        None => Err("file source did not answer (timeout or reset)".into()),
    }
}

/// The response code of the request that is ending; 0 if there was none.
pub fn response_code() -> u64 {
    // Envoy hands integer properties over as 8 little-endian bytes.
    hostcalls::get_property(vec!["response", "code"])
        .ok()
        .flatten()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes)
}
