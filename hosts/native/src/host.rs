//! The calls into Envoy that the glue makes, as a trait: Envoy's ABI
//! implements it (`abi`, feature `module`), the tests a recording fake.

use podward::headers::HeaderList;
use podward::host::Log;
use podward::status::LocalReply;

/// One filter config's view of Envoy. `Filter` is Envoy's handle of one
/// stream's filter, used on that stream's worker only; `Scheduler` wakes one
/// stream from any thread, and is deleted once.
pub trait EnvoyHost: Log + Send + Sync + 'static {
    type Filter: Copy;
    type Scheduler: Copy + Send;

    fn now_ms(&self) -> u64;
    /// The process's environment: the Downward API variables.
    fn environment(&self) -> Vec<(String, String)>;
    /// A file from disk; `Err` says why not, for the log.
    fn read_file(&self, path: &str) -> Result<Vec<u8>, String>;

    /// Only while the config is created. `None`: Envoy refused it.
    fn define_metric(&self, name: &str, labels: &[&str], gauge: bool) -> Option<usize>;
    /// On the main thread, in the config's scheduled hook.
    fn increment_counter(&self, id: usize, labels: &[String], amount: u64);
    /// Likewise.
    fn set_gauge(&self, id: usize, value: u64);
    /// From any thread: runs the config's scheduled hook on the main thread.
    fn schedule_flush(&self);

    /// Puts the request's headers, every byte kept, into `into`; false if
    /// Envoy would not hand them over.
    fn request_headers(&self, filter: Self::Filter, into: &mut HeaderList) -> bool;
    /// Removes every value of `name`.
    fn remove_header(&self, filter: Self::Filter, name: &[u8]) -> bool;
    /// Appends one value of `name`.
    fn add_header(&self, filter: Self::Filter, name: &[u8], value: &[u8]) -> bool;
    /// A string filter state, printed by `%FILTER_STATE(key:PLAIN)%`.
    fn set_filter_state(&self, filter: Self::Filter, key: &[u8], value: &[u8]);
    /// Answers the request. Envoy can complete and destroy the stream inside
    /// this call.
    fn send_response(&self, filter: Self::Filter, reply: &LocalReply);
    /// Lets a held request go on. Likewise, the stream can end inside it.
    fn continue_decoding(&self, filter: Self::Filter);
    /// The response code, once the stream is complete.
    fn response_code(&self, filter: Self::Filter) -> Option<u64>;
    /// On the stream's worker, inside a hook.
    fn scheduler_new(&self, filter: Self::Filter) -> Self::Scheduler;
    /// From any thread: runs the stream's scheduled hook on its worker.
    fn scheduler_commit(&self, scheduler: Self::Scheduler);
    fn scheduler_delete(&self, scheduler: Self::Scheduler);
}
