//! What the core needs from a host, as small traits: the request at hand
//! (its headers as bytes, header edits, the access record, a way to wake it
//! later) and the log. Each adapter implements them with real host calls,
//! the tests with a recording mock; nothing else of the host reaches the core.

use crate::headers::HeaderList;

/// The request the engine is deciding about. None of these calls may call
/// back into the engine: a host that answers or resumes a request does so
/// after the engine has returned (see [`crate::engine::Step`]).
pub trait RequestHost {
    /// What the host gives the engine to hold a request by, and hands back
    /// to the host when the request may be woken.
    type Waker;
    /// Puts the request's headers, every byte kept, into `into` (empty, its
    /// storage kept from the request before); false if the host would not
    /// hand them over.
    fn request_headers(&mut self, into: &mut HeaderList) -> bool;
    /// Removes every value of `name`; false if the host refused.
    fn remove_header(&mut self, name: &[u8]) -> bool;
    /// Adds one value of `name`; false if the host refused.
    fn add_header(&mut self, name: &[u8], value: &[u8]) -> bool;
    /// podward's reading of the request, for the access log.
    fn set_access_record(&mut self, record: &str);
    /// Prepares to wake this request later; called once, when it must wait.
    fn waker(&mut self) -> Self::Waker;
}

/// The host's log.
pub trait Log {
    fn log(&self, level: Level, message: &str);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    /// Envoy's log level number (spdlog's order: trace 0 … critical 5), which
    /// proxy-wasm's `proxy_log` and the dynamic modules' log callback both take.
    pub fn envoy(self) -> u32 {
        match self {
            Level::Info => 2,
            Level::Warn => 3,
            Level::Error => 4,
        }
    }
}
