//! The requests and files podward handles through the host: a request's
//! headers (as bytes), its replies and access-log record, and the fetches of
//! the pod's files from the internal file listener.

use super::abi::{self, BufferType, MapType};
use crate::config::FileSource;
use crate::filter::{RequestHost, Rewrite};
use crate::headers::HeaderList;
use crate::prelude::*;
use crate::status::Status;

/// The request of the effective context. A reply is kept, to be sent once
/// the VM state is no longer borrowed (sending it can call back into the VM).
#[derive(Default)]
pub struct ContextRequest {
    pub reply: Option<Status>,
}

/// The effective context's request headers.
pub fn request_headers() -> Option<HeaderList> {
    abi::header_map(MapType::RequestHeaders)
}

impl RequestHost for ContextRequest {
    /// Header by header: replacing the whole map makes Envoy remove and add
    /// back every header the app sent.
    fn forward(&mut self, rewrite: &Rewrite, original: &HeaderList) -> Result<(), String> {
        let edits = rewrite.edits(original);
        let removed = edits
            .removals
            .iter()
            .all(|name| abi::remove_header(MapType::RequestHeaders, name));
        let added = edits
            .additions
            .iter()
            .all(|(name, value)| abi::add_header(MapType::RequestHeaders, name, value));
        if removed && added {
            Ok(())
        } else {
            Err("the host refused a header change".into())
        }
    }

    fn reply(&mut self, status: &Status) {
        self.reply = Some(status.clone());
    }

    fn record(&mut self, access_record: &str) {
        // Filter state `wasm.podward`, printed by the access log.
        abi::set_property(&["podward"], access_record.as_bytes());
    }
}

/// Answers the effective context's request with a Status.
pub fn reply(status: &Status) {
    let retry_after = status.details.retry_after_seconds.map(|s| s.to_string());
    let mut headers: Vec<(&[u8], &[u8])> = vec![(b"content-type", b"application/json")];
    if let Some(seconds) = &retry_after {
        headers.push((b"retry-after", seconds.as_bytes()));
    }
    let body = status.to_json();
    if !abi::send_local_response(status.code, &headers, body.as_bytes()) {
        let message = format!("podward: could not send a {} reply", status.code);
        abi::log(abi::LogLevel::Warn, &message);
    }
}

/// Asks the file listener for `path`; the answer arrives as an HTTP call
/// response with the returned token.
pub fn start_fetch(source: &FileSource, path: &str) -> Result<u32, String> {
    let headers: [(&[u8], &[u8]); 3] = [
        (b":method", b"GET"),
        (b":path", path.as_bytes()),
        (b":authority", source.authority.as_bytes()),
    ];
    abi::http_call(&source.cluster, &headers, source.timeout_ms).map_err(|status| {
        format!(
            "could not call cluster {} (host status {status})",
            source.cluster
        )
    })
}

/// The file a fetch brought back, from the effective HTTP call response.
pub fn read_fetched_file(body_size: usize) -> Result<Vec<u8>, String> {
    let headers = abi::header_map(MapType::HttpCallResponseHeaders);
    match headers.as_ref().and_then(|headers| headers.get(":status")) {
        Some(b"200") => {
            Ok(abi::buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default())
        }
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
    abi::property(&["response", "code"])
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes)
}
