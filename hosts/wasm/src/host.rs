//! The proxy-wasm host calls the glue makes, as a trait: the ABI module
//! implements it over the host's imports, the tests with a recording fake.

use alloc::string::String;
use alloc::vec::Vec;
use podward::headers::HeaderList;
use podward::host::Log;
use podward::status::LocalReply;

/// The host calls the glue makes, for the effective context. The glue's
/// tests implement them with a recording fake.
pub trait ProxyWasm: Log {
    fn now_ms(&self) -> u64;
    fn set_tick_period_ms(&self, period_ms: u64);
    /// Makes later calls act on `context`; false if it no longer exists.
    fn set_effective_context(&self, context: u32) -> bool;
    fn plugin_configuration(&self, size: usize) -> Vec<u8>;
    /// The VM's environment (Envoy's `host_env_keys`), as `(name, value)`.
    fn environment(&self) -> Vec<(String, String)>;
    /// Puts the request's headers, every byte kept, into `into`; false if
    /// the host would not hand them over.
    fn request_headers(&self, into: &mut HeaderList) -> bool;
    /// Adds one value of `name`, beside any already there.
    fn add_request_header(&self, name: &[u8], value: &[u8]) -> bool;
    /// Removes every value of `name`.
    fn remove_request_header(&self, name: &[u8]) -> bool;
    fn set_property(&self, path: &[&str], value: &[u8]);
    /// The response code of the request that is ending, from its response's
    /// `:status`; 0 if there was none.
    fn response_code(&self) -> u64;
    /// Answers the request; it goes no further. Can run `proxy_on_log` at once.
    fn send_local_response(&self, reply: &LocalReply) -> bool;
    /// Lets the request, held by `Action::Pause`, go on.
    fn resume_request(&self);
    /// Starts an HTTP call; its answer arrives at `proxy_on_http_call_response`
    /// with the returned token. `Err`: the host's status.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&[u8], &[u8])],
        timeout_ms: u64,
    ) -> Result<u32, u32>;
    /// The answer to an HTTP call: its `:status` (`None`: no answer, a timeout
    /// or reset) and its body.
    fn http_call_response(&self, body_size: usize) -> (Option<Vec<u8>>, Vec<u8>);
    fn define_metric(&self, gauge: bool, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, amount: u64);
    fn record_metric(&self, id: u32, value: u64);
}
