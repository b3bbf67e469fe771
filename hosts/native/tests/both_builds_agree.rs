//! The differential test: each script runs through both adapters' glue, the
//! proxy-wasm VM's and the dynamic module's, each against a fake of its own
//! ABI that records every host call, and both builds must answer every
//! request alike (the same forwarded headers, the same replies) and count
//! alike. The fakes call back into the glue where Envoy does: a local reply
//! ends the stream from inside the call that sends it (the dynamic module's),
//! or from inside the after-call actions of the VM callback that sent it,
//! nested as Envoy nests them (the proxy-wasm VM's; see [`FakeProxyWasm`]).
//!
//! The drift cases the two builds once had each have a script here: a
//! request given up for want of a token must get that Status even when the
//! token arrives before the host acts (the native build dropped it and
//! served); a request that ends while it waits must never be woken (the
//! native build kept a second waiting list); and a request answered after
//! waiting is counted when its stream ends inside the reply (the native
//! build aliased the stream and lost the count).

use podward::config::Config;
use podward::engine::BATCH_TICK_MS;
use podward::engine::FLUSH_INTERVAL_MS;
use podward::headers::HeaderList;
use podward::host::{Level, Log};
use podward::status::LocalReply;
use podward_native::{EnvoyHost, Headers, Shared, Stream};
use podward_wasm::{Action, ProxyWasm, Vm};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Still held.
    Held,
    /// Sent upstream with these headers.
    Forwarded(Vec<(String, String)>),
    /// Answered by podward.
    Replied(u32, Vec<(String, String)>, String),
}

/// Metric totals by (name, labels): what Prometheus would show.
type Metrics = BTreeMap<(String, Vec<(String, String)>), u64>;

fn pairs(headers: &HeaderList) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn replied(reply: &LocalReply) -> Outcome {
    let headers = reply
        .headers
        .iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    Outcome::Replied(reply.code, headers, reply.body.clone())
}

fn request_headers(method: &str, path: &str) -> HeaderList {
    let pairs: [(&[u8], &[u8]); 4] = [
        (b":method", method.as_bytes()),
        (b":path", path.as_bytes()),
        (b":authority", b"localhost:8001"),
        (b"user-agent", b"kubectl/v1.37.0"),
    ];
    HeaderList::from_pairs(pairs)
}

const ENV: [(&str, &str); 2] = [("POD_NAME", "web-0"), ("POD_NAMESPACE", "team-a")];

fn env() -> Vec<(String, String)> {
    ENV.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// A build as a script drives it.
trait Build {
    fn configure(&mut self, config: &str) -> bool;
    /// The file at `path` on the file source now holds `content`.
    fn write(&mut self, path: &str, content: &[u8]);
    fn remove(&mut self, path: &str);
    fn request(&mut self, id: u64, method: &str, path: &str);
    /// Time passes to `now_ms`; the host's periodic work runs, and every
    /// read and wake it starts is carried through.
    fn tick(&mut self, now_ms: u64);
    /// The client of a held request goes away.
    fn hang_up(&mut self, id: u64);
    /// A forwarded request's response arrives and its stream ends.
    fn finish(&mut self, id: u64);
    /// How soon the host ticks next, as the engine asked.
    fn tick_period_ms(&self) -> u64;
    /// Whether the reads a tick starts answer after it (proxy-wasm's
    /// `dispatch_http_call`), not within it.
    fn counts_reads_a_tick_late(&self) -> bool;
    fn outcome(&self, id: u64) -> Outcome;
    fn metrics(&mut self) -> Metrics;
}

// ---------------------------------------------------------------------------
// The proxy-wasm build: a fake VM host.

/// How deep VM calls may nest, callback within callback: the callback that
/// wakes a batch, then one `proxy_on_log` per request of the batch. Envoy's
/// V8 overflowed its stack at ~290.
const MAX_NESTED_VM_CALLS: usize = podward::engine::WAKE_BATCH + 1;

/// What proxy-wasm's host does after a VM callback returns, for what the
/// callback asked (Envoy's `addAfterVmCallAction`).
enum AfterCall {
    Reply(u32, Outcome),
    Resume(u32),
}

/// A fake of Envoy's proxy-wasm host. As in proxy-wasm-cpp-host, a local
/// reply or a resumption is carried out after the VM callback that asked for
/// it returns (`DeferAfterCallActions`); a reply ends the stream, which calls
/// `proxy_on_log`, and that callback's own end runs the remaining actions,
/// from inside it: one more nested VM call per action.
#[derive(Default)]
struct FakeProxyWasm {
    vm: RefCell<Weak<Vm<FakeProxyWasm>>>,
    now_ms: Cell<u64>,
    effective: Cell<u32>,
    config: RefCell<Vec<u8>>,
    /// Each live context's request headers.
    contexts: RefCell<BTreeMap<u32, HeaderList>>,
    outcomes: RefCell<BTreeMap<u32, Outcome>>,
    files: RefCell<BTreeMap<String, Vec<u8>>>,
    next_token: Cell<u32>,
    /// HTTP calls made and not yet answered: (token, path).
    calls: RefCell<Vec<(u32, String)>>,
    /// The answer being delivered: (:status, body).
    answer: RefCell<(Option<Vec<u8>>, Vec<u8>)>,
    metric_names: RefCell<Vec<(String, bool)>>,
    metric_values: RefCell<BTreeMap<u32, u64>>,
    logs: RefCell<Vec<String>>,
    tick_period_ms: Cell<u64>,
    after_call: RefCell<VecDeque<AfterCall>>,
    nested_vm_calls: Cell<usize>,
}

impl FakeProxyWasm {
    /// Calls into the VM, then carries out what the call asked for.
    fn call<R>(&self, callback: impl FnOnce(&Vm<FakeProxyWasm>) -> R) -> R {
        let vm = self.vm.borrow().upgrade().expect("the VM");
        let depth = self.nested_vm_calls.get() + 1;
        assert!(
            depth <= MAX_NESTED_VM_CALLS,
            "VM calls nested {depth} deep: the VM's stack would overflow"
        );
        self.nested_vm_calls.set(depth);
        let result = callback(&vm);
        self.after_call_actions();
        self.nested_vm_calls.set(depth - 1);
        result
    }

    fn after_call_actions(&self) {
        loop {
            let action = self.after_call.borrow_mut().pop_front();
            match action {
                Some(AfterCall::Reply(context, outcome)) => {
                    self.outcomes.borrow_mut().insert(context, outcome);
                    // The stream ends: its log callback, and the actions left.
                    self.effective.set(context);
                    self.call(|vm| vm.on_log(context));
                }
                Some(AfterCall::Resume(context)) => {
                    let headers = self.contexts.borrow()[&context].clone();
                    let forwarded = Outcome::Forwarded(pairs(&headers));
                    self.outcomes.borrow_mut().insert(context, forwarded);
                }
                None => return,
            }
        }
    }
}

impl Log for FakeProxyWasm {
    fn log(&self, _: Level, message: &str) {
        self.logs.borrow_mut().push(message.to_string());
    }
}

impl ProxyWasm for FakeProxyWasm {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }
    fn set_tick_period_ms(&self, period_ms: u64) {
        self.tick_period_ms.set(period_ms);
    }
    fn set_effective_context(&self, context: u32) -> bool {
        self.effective.set(context);
        context == 1 || self.contexts.borrow().contains_key(&context)
    }
    fn plugin_configuration(&self, _: usize) -> Vec<u8> {
        self.config.borrow().clone()
    }
    fn environment(&self) -> Vec<(String, String)> {
        env()
    }
    fn request_headers(&self, into: &mut HeaderList) -> bool {
        let contexts = self.contexts.borrow();
        let Some(headers) = contexts.get(&self.effective.get()) else {
            return false;
        };
        headers
            .iter()
            .for_each(|(name, value)| into.push(name, value));
        true
    }
    fn add_request_header(&self, name: &[u8], value: &[u8]) -> bool {
        let mut contexts = self.contexts.borrow_mut();
        let headers = contexts.get_mut(&self.effective.get()).expect("a request");
        headers.push(name, value);
        true
    }
    fn remove_request_header(&self, name: &[u8]) -> bool {
        let mut contexts = self.contexts.borrow_mut();
        let headers = contexts.get_mut(&self.effective.get()).expect("a request");
        *headers = HeaderList::from_pairs(headers.iter().filter(|(n, _)| *n != name));
        true
    }
    fn set_property(&self, _: &[&str], _: &[u8]) {}
    fn response_code(&self) -> u64 {
        match self.outcomes.borrow().get(&self.effective.get()) {
            Some(Outcome::Replied(code, ..)) => u64::from(*code),
            Some(Outcome::Forwarded(_)) => 200,
            _ => 0,
        }
    }
    fn send_local_response(&self, reply: &LocalReply) -> bool {
        let context = self.effective.get();
        let action = AfterCall::Reply(context, replied(reply));
        self.after_call.borrow_mut().push_back(action);
        true
    }
    fn resume_request(&self) {
        let context = self.effective.get();
        self.after_call
            .borrow_mut()
            .push_back(AfterCall::Resume(context));
    }
    fn http_call(&self, _: &str, headers: &[(&[u8], &[u8])], _: u64) -> Result<u32, u32> {
        assert_eq!(self.effective.get(), 1, "fetches belong to the root");
        let path = headers
            .iter()
            .find(|(n, _)| *n == b":path")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .expect(":path");
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        self.calls.borrow_mut().push((token, path));
        Ok(token)
    }
    fn http_call_response(&self, _: usize) -> (Option<Vec<u8>>, Vec<u8>) {
        self.answer.borrow().clone()
    }
    fn define_metric(&self, gauge: bool, name: &str) -> Option<u32> {
        let mut names = self.metric_names.borrow_mut();
        names.push((name.to_string(), gauge));
        Some(u32::try_from(names.len()).unwrap())
    }
    fn increment_metric(&self, id: u32, amount: u64) {
        *self.metric_values.borrow_mut().entry(id).or_default() += amount;
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.metric_values.borrow_mut().insert(id, value);
    }
}

struct WasmBuild {
    vm: Rc<Vm<FakeProxyWasm>>,
}

const ROOT: u32 = 1;

fn context(id: u64) -> u32 {
    100 + u32::try_from(id).unwrap()
}

impl WasmBuild {
    fn new() -> WasmBuild {
        let vm = Rc::new(Vm::new(FakeProxyWasm::default()));
        *vm.abi().vm.borrow_mut() = Rc::downgrade(&vm);
        vm.on_context_create(ROOT, 0);
        WasmBuild { vm }
    }

    fn fake(&self) -> &FakeProxyWasm {
        self.vm.abi()
    }

    /// Answers every fetch in flight from the files on hand.
    fn deliver(&self) {
        loop {
            let call = self.fake().calls.borrow_mut().pop();
            let Some((token, path)) = call else {
                return;
            };
            let answer = match self.fake().files.borrow().get(&path) {
                Some(content) => (Some(b"200".to_vec()), content.clone()),
                None => (Some(b"404".to_vec()), Vec::new()),
            };
            let size = answer.1.len();
            *self.fake().answer.borrow_mut() = answer;
            self.fake().effective.set(ROOT);
            self.fake()
                .call(|vm| vm.on_http_call_response(ROOT, token, size));
        }
    }

    fn end(&self, context: u32) {
        self.fake().effective.set(context);
        self.fake().call(|vm| vm.on_log(context));
        self.fake().call(|vm| vm.on_delete(context));
        self.fake().contexts.borrow_mut().remove(&context);
    }
}

impl Build for WasmBuild {
    fn configure(&mut self, config: &str) -> bool {
        *self.fake().config.borrow_mut() = config.as_bytes().to_vec();
        self.fake().call(|vm| vm.on_configure(ROOT, config.len()))
    }
    fn write(&mut self, path: &str, content: &[u8]) {
        let mut files = self.fake().files.borrow_mut();
        files.insert(path.to_string(), content.to_vec());
    }
    fn remove(&mut self, path: &str) {
        self.fake().files.borrow_mut().remove(path);
    }
    fn request(&mut self, id: u64, method: &str, path: &str) {
        let context = context(id);
        self.vm.on_context_create(context, ROOT);
        let headers = request_headers(method, path);
        self.fake().contexts.borrow_mut().insert(context, headers);
        self.fake().effective.set(context);
        if self.fake().call(|vm| vm.on_request_headers(context)) == Action::Continue {
            let headers = self.fake().contexts.borrow()[&context].clone();
            let forwarded = Outcome::Forwarded(pairs(&headers));
            self.fake().outcomes.borrow_mut().insert(context, forwarded);
        }
        self.deliver();
        if matches!(self.outcome(id), Outcome::Replied(..)) {
            self.end(context);
        }
    }
    fn tick(&mut self, now_ms: u64) {
        self.fake().now_ms.set(now_ms);
        self.fake().effective.set(ROOT);
        self.fake().call(|vm| vm.on_tick(ROOT));
        self.deliver();
        let answered: Vec<u32> = self
            .fake()
            .outcomes
            .borrow()
            .iter()
            .filter(|(_, outcome)| matches!(outcome, Outcome::Replied(..)))
            .map(|(context, _)| *context)
            .filter(|context| self.fake().contexts.borrow().contains_key(context))
            .collect();
        for context in answered {
            self.end(context);
        }
    }
    fn hang_up(&mut self, id: u64) {
        self.end(context(id));
    }
    fn finish(&mut self, id: u64) {
        self.end(context(id));
    }
    fn counts_reads_a_tick_late(&self) -> bool {
        true
    }
    fn tick_period_ms(&self) -> u64 {
        self.fake().tick_period_ms.get()
    }
    fn outcome(&self, id: u64) -> Outcome {
        let outcomes = self.fake().outcomes.borrow();
        outcomes.get(&context(id)).cloned().unwrap_or(Outcome::Held)
    }
    fn metrics(&mut self) -> Metrics {
        let names = self.fake().metric_names.borrow();
        let values = self.fake().metric_values.borrow();
        names
            .iter()
            .enumerate()
            .map(|(index, (tagged, _))| {
                let id = u32::try_from(index + 1).unwrap();
                (untagged(tagged), values.get(&id).copied().unwrap_or(0))
            })
            .collect()
    }
}

/// `key=.=value;.;…name` back into (name, labels).
fn untagged(tagged: &str) -> (String, Vec<(String, String)>) {
    let mut labels = Vec::new();
    let mut rest = tagged;
    while let Some((tag, after)) = rest.split_once(";.;") {
        let (key, value) = tag.split_once("=.=").expect("a tag");
        labels.push((key.to_string(), value.to_string()));
        rest = after;
    }
    (rest.to_string(), labels)
}

// ---------------------------------------------------------------------------
// The dynamic-module build: a fake Envoy.

thread_local! {
    /// The streams as Envoy holds them, by filter id: Envoy's own count of
    /// each, dropped when it destroys the stream.
    static STREAMS: RefCell<BTreeMap<u64, Rc<Stream<FakeEnvoy>>>> = RefCell::default();
}

#[derive(Default)]
struct FakeEnvoy {
    now_ms: AtomicU64,
    /// By local path, as the module reads them.
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    requests: Mutex<BTreeMap<u64, HeaderList>>,
    outcomes: Mutex<BTreeMap<u64, Outcome>>,
    committed: Mutex<Vec<u64>>,
    deleted: Mutex<Vec<u64>>,
    flush_asked: AtomicBool,
    metric_names: Mutex<Vec<(String, Vec<String>)>>,
    metric_values: Mutex<BTreeMap<(usize, Vec<String>), u64>>,
}

impl Log for FakeEnvoy {
    fn log(&self, _: Level, _: &str) {}
}

/// Runs a hook as Envoy does: on the stream it holds, which the hook keeps
/// alive for its length (the module's hooks take their own count).
fn hook(filter: u64, run: impl FnOnce(&Stream<FakeEnvoy>)) {
    let stream = STREAMS.with(|streams| streams.borrow().get(&filter).cloned());
    if let Some(stream) = stream {
        run(&stream);
    }
}

/// Envoy completes and destroys a stream, from wherever it is.
fn complete_and_destroy(filter: u64) {
    hook(filter, |stream| stream.on_complete());
    let stream = STREAMS.with(|streams| streams.borrow_mut().remove(&filter));
    if let Some(stream) = stream {
        stream.on_destroy();
    }
}

impl EnvoyHost for FakeEnvoy {
    type Filter = u64;
    type Scheduler = u64;

    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }
    fn environment(&self) -> Vec<(String, String)> {
        env()
    }
    fn read_file(&self, path: &str) -> Result<Vec<u8>, String> {
        let files = self.files.lock().unwrap();
        // The same words as the wasm build's file listener, so that the
        // Status bodies compare.
        files
            .get(path)
            .cloned()
            .ok_or_else(|| "file source answered HTTP 404".to_string())
    }
    fn define_metric(&self, name: &str, labels: &[&str], _gauge: bool) -> Option<usize> {
        let mut names = self.metric_names.lock().unwrap();
        let labels = labels.iter().map(|l| l.to_string()).collect();
        names.push((name.to_string(), labels));
        Some(names.len())
    }
    fn increment_counter(&self, id: usize, labels: &[String], amount: u64) {
        let mut values = self.metric_values.lock().unwrap();
        *values.entry((id, labels.to_vec())).or_default() += amount;
    }
    fn set_gauge(&self, id: usize, value: u64) {
        self.metric_values
            .lock()
            .unwrap()
            .insert((id, Vec::new()), value);
    }
    fn schedule_flush(&self) {
        self.flush_asked.store(true, Ordering::Relaxed);
    }
    fn request_headers(&self, filter: u64, into: &mut HeaderList) -> bool {
        let requests = self.requests.lock().unwrap();
        let Some(headers) = requests.get(&filter) else {
            return false;
        };
        headers
            .iter()
            .for_each(|(name, value)| into.push(name, value));
        true
    }
    fn remove_header(&self, filter: u64, name: &[u8]) -> bool {
        let mut requests = self.requests.lock().unwrap();
        let headers = requests.get_mut(&filter).expect("a request");
        *headers = HeaderList::from_pairs(headers.iter().filter(|(n, _)| *n != name));
        true
    }
    fn add_header(&self, filter: u64, name: &[u8], value: &[u8]) -> bool {
        let mut requests = self.requests.lock().unwrap();
        requests
            .get_mut(&filter)
            .expect("a request")
            .push(name, value);
        true
    }
    fn set_filter_state(&self, _: u64, _: &[u8], _: &[u8]) {}
    fn send_response(&self, filter: u64, reply: &LocalReply) {
        self.outcomes.lock().unwrap().insert(filter, replied(reply));
        // What Envoy does when a request is answered locally: the stream
        // completes, and is destroyed, inside this call.
        complete_and_destroy(filter);
    }
    fn continue_decoding(&self, filter: u64) {
        let headers = self.requests.lock().unwrap()[&filter].clone();
        let forwarded = Outcome::Forwarded(pairs(&headers));
        self.outcomes.lock().unwrap().insert(filter, forwarded);
    }
    fn response_code(&self, filter: u64) -> Option<u64> {
        match self.outcomes.lock().unwrap().get(&filter) {
            Some(Outcome::Replied(code, ..)) => Some(u64::from(*code)),
            Some(Outcome::Forwarded(_)) => Some(200),
            _ => None,
        }
    }
    fn scheduler_new(&self, filter: u64) -> u64 {
        filter
    }
    fn scheduler_commit(&self, scheduler: u64) {
        assert!(
            !self.deleted.lock().unwrap().contains(&scheduler),
            "a deleted scheduler was committed"
        );
        self.committed.lock().unwrap().push(scheduler);
    }
    fn scheduler_delete(&self, scheduler: u64) {
        let mut deleted = self.deleted.lock().unwrap();
        assert!(!deleted.contains(&scheduler), "a scheduler deleted twice");
        deleted.push(scheduler);
    }
}

struct NativeBuild {
    shared: Option<Arc<Shared<FakeEnvoy>>>,
    /// The fake before the config is created, then inside `shared`.
    pending: Option<FakeEnvoy>,
    config: Option<Config>,
}

impl NativeBuild {
    fn new() -> NativeBuild {
        STREAMS.with(|streams| streams.borrow_mut().clear());
        NativeBuild {
            shared: None,
            pending: Some(FakeEnvoy::default()),
            config: None,
        }
    }

    fn fake(&self) -> &FakeEnvoy {
        match (&self.shared, &self.pending) {
            (Some(shared), _) => shared.host(),
            (None, Some(fake)) => fake,
            (None, None) => unreachable!(),
        }
    }

    fn local(&self, path: &str) -> String {
        let config = self.config.as_ref().expect("configured");
        config.file_source.local_path(path).expect("a mapped path")
    }

    /// Runs the scheduled hooks Envoy's workers would, and the main thread's
    /// flush.
    fn dispatch(&self) {
        let committed = std::mem::take(&mut *self.fake().committed.lock().unwrap());
        for filter in committed {
            hook(filter, |stream| stream.on_scheduled());
        }
        if self.fake().flush_asked.swap(false, Ordering::Relaxed) {
            if let Some(shared) = &self.shared {
                shared.flush_metrics();
            }
        }
    }
}

impl Build for NativeBuild {
    fn configure(&mut self, config: &str) -> bool {
        self.config = Config::parse(config.as_bytes()).ok();
        let fake = self.pending.take().expect("configured once");
        self.shared = Shared::new(fake, config.as_bytes());
        self.shared.is_some()
    }
    fn write(&mut self, path: &str, content: &[u8]) {
        let local = self.local(path);
        self.fake()
            .files
            .lock()
            .unwrap()
            .insert(local, content.to_vec());
    }
    fn remove(&mut self, path: &str) {
        let local = self.local(path);
        self.fake().files.lock().unwrap().remove(&local);
    }
    fn request(&mut self, id: u64, method: &str, path: &str) {
        let shared = self.shared.as_ref().expect("configured");
        let headers = request_headers(method, path);
        self.fake().requests.lock().unwrap().insert(id, headers);
        let stream = Rc::new(shared.stream(id));
        STREAMS.with(|streams| streams.borrow_mut().insert(id, stream));
        let mut status = Headers::Stop;
        hook(id, |stream| status = stream.on_request_headers());
        if status == Headers::Continue {
            let headers = self.fake().requests.lock().unwrap()[&id].clone();
            let forwarded = Outcome::Forwarded(pairs(&headers));
            self.fake().outcomes.lock().unwrap().insert(id, forwarded);
        }
    }
    fn tick(&mut self, now_ms: u64) {
        self.fake().now_ms.store(now_ms, Ordering::Relaxed);
        if let Some(shared) = &self.shared {
            shared.read_round();
        }
        self.dispatch();
    }
    fn hang_up(&mut self, id: u64) {
        complete_and_destroy(id);
    }
    fn finish(&mut self, id: u64) {
        complete_and_destroy(id);
    }
    fn counts_reads_a_tick_late(&self) -> bool {
        false
    }
    fn tick_period_ms(&self) -> u64 {
        let shared = self.shared.as_ref().expect("configured");
        u64::try_from(shared.tick_interval().as_millis()).unwrap()
    }
    fn outcome(&self, id: u64) -> Outcome {
        let outcomes = self.fake().outcomes.lock().unwrap();
        outcomes.get(&id).cloned().unwrap_or(Outcome::Held)
    }
    fn metrics(&mut self) -> Metrics {
        let fake = self.fake();
        let names = fake.metric_names.lock().unwrap();
        let values = fake.metric_values.lock().unwrap();
        values
            .iter()
            .map(|((id, label_values), value)| {
                let (name, label_names) = &names[id - 1];
                let labels = label_names
                    .iter()
                    .cloned()
                    .zip(label_values.iter().cloned())
                    .collect();
                ((name.clone(), labels), *value)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The scripts.

/// One step of a script.
enum Event {
    Write(&'static str, &'static [u8]),
    Remove(&'static str),
    Request(u64, &'static str, &'static str),
    Tick(u64),
    /// Ticks as often as the engine asks, for as long as it asks for its
    /// short period: until every request it decided on is woken.
    Settle,
    HangUp(u64),
    Finish(u64),
}

use Event::*;

const TOKEN: &str = "/serviceaccount/token";
const LABELS: &str = "/podinfo/labels";
const POLICY: &str = "/policy/policy.json";
const PODS: &str = "/api/v1/namespaces/team-a/pods";
const EXEC: &str = "/api/v1/namespaces/team-a/pods/web-0/exec";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/team-a/deployments";

/// Runs `script` through both builds; returns each request's outcome and
/// the metrics, once both builds agree on them.
fn both(config: &str, script: &[Event]) -> (BTreeMap<u64, Outcome>, Metrics) {
    let mut builds: [Box<dyn Build>; 2] =
        [Box::new(WasmBuild::new()), Box::new(NativeBuild::new())];
    let mut results = Vec::new();
    for build in &mut builds {
        assert!(build.configure(config));
        let mut ids = Vec::new();
        let mut now = 0;
        for event in script {
            match *event {
                Write(path, content) => build.write(path, content),
                Remove(path) => build.remove(path),
                Request(id, method, path) => {
                    ids.push(id);
                    build.request(id, method, path);
                }
                Tick(now_ms) => {
                    now = now_ms;
                    build.tick(now_ms);
                }
                Settle => {
                    while build.tick_period_ms() == BATCH_TICK_MS {
                        now += BATCH_TICK_MS;
                        build.tick(now);
                    }
                }
                HangUp(id) => build.hang_up(id),
                Finish(id) => build.finish(id),
            }
        }
        // Let the counts reach Envoy. Both builds flush on their tick (at
        // most once a flush interval). The native build reads within the
        // tick; the wasm build's reads answer after it, so their counts reach
        // Envoy with the next flush: it ticks once more, a flush interval on.
        // That tick's own reads answer after its flush, so both builds hand
        // over the reads of the same ticks, whatever the retry pace.
        let last = 3_600_000 + FLUSH_INTERVAL_MS;
        build.tick(3_600_000);
        build.tick(last);
        if build.counts_reads_a_tick_late() {
            build.tick(last + FLUSH_INTERVAL_MS);
        }
        let outcomes: BTreeMap<u64, Outcome> =
            ids.iter().map(|id| (*id, build.outcome(*id))).collect();
        // The token's age depends on when each build last ticked with a
        // token on hand; it is compared by the engine's own tests.
        let mut metrics = build.metrics();
        metrics.retain(|(name, _), _| name != "podward_token_expiry_seconds");
        results.push((outcomes, metrics));
    }
    let (native_outcomes, native_metrics) = results.pop().unwrap();
    let (wasm_outcomes, wasm_metrics) = results.pop().unwrap();
    assert_eq!(wasm_outcomes, native_outcomes, "the builds answer alike");
    assert_eq!(wasm_metrics, native_metrics, "the builds count alike");
    (wasm_outcomes, wasm_metrics)
}

fn counted(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    metrics
        .get(&(name.to_string(), labels))
        .copied()
        .unwrap_or(0)
}

/// Requests given up for want of a token.
fn no_token(metrics: &Metrics) -> u64 {
    counted(
        metrics,
        "podward_local_replies_total",
        &[("reason", "no_token")],
    )
}

fn bearer(outcome: &Outcome) -> Option<&str> {
    header(outcome, "authorization")
}

fn code(outcome: &Outcome) -> u32 {
    match outcome {
        Outcome::Replied(code, ..) => *code,
        Outcome::Forwarded(_) => 0,
        Outcome::Held => u32::MAX,
    }
}

fn header<'a>(outcome: &'a Outcome, name: &str) -> Option<&'a str> {
    match outcome {
        Outcome::Forwarded(headers) => headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

#[test]
fn the_first_token_releases_the_waiting_requests_alike() {
    let (outcomes, metrics) = both(
        "",
        &[
            Tick(0),
            Request(1, "GET", PODS),
            Request(2, "POST", EXEC),
            Write(TOKEN, b"token-1"),
            Write(LABELS, b"app=\"web\""),
            Tick(100),
            Settle,
            Finish(1),
            Request(3, "GET", PODS),
            Finish(3),
        ],
    );
    assert_eq!(bearer(&outcomes[&1]), Some("Bearer token-1"));
    assert_eq!(header(&outcomes[&3], "x-pod-name"), Some("web-0"));
    assert_eq!(code(&outcomes[&2]), 403);
    let requests = "podward_requests_total";
    let pods = [
        ("verb", "list"),
        ("group", "core"),
        ("resource", "pods"),
        ("code", "2xx"),
    ];
    assert_eq!(counted(&metrics, requests, &pods), 2);
}

#[test]
fn a_request_answered_after_waiting_is_counted_when_the_reply_ends_it() {
    // The native build once lost this count: the stream's end ran inside the
    // reply, through a second `&mut` to the stream, before the request's
    // series was recorded.
    let (outcomes, metrics) = both(
        "",
        &[
            Tick(0),
            Request(1, "POST", EXEC),
            Request(2, "POST", EXEC),
            Write(TOKEN, b"token-1"),
            Tick(100),
        ],
    );
    assert_eq!(code(&outcomes[&1]), 403);
    let exec = [
        ("verb", "create"),
        ("group", "core"),
        ("resource", "pods/exec"),
        ("code", "4xx"),
    ];
    assert_eq!(counted(&metrics, "podward_requests_total", &exec), 2);
    let denied = [("reason", "policy_denied")];
    assert_eq!(counted(&metrics, "podward_local_replies_total", &denied), 2);
}

#[test]
fn a_request_given_up_gets_its_status_even_if_the_token_comes_before_it_is_woken() {
    // The native build once dropped the Status the engine gave up with, and
    // decided again when it woke the request: the token read in the same
    // round got a request counted as no_token served.
    let (outcomes, metrics) = both(
        r#"{"startup_wait_ms": 500}"#,
        &[
            Tick(0),
            Request(1, "GET", PODS),
            Tick(100),
            Tick(400),
            Write(TOKEN, b"token-1"),
            Tick(500),
            Request(2, "GET", PODS),
        ],
    );
    let Outcome::Replied(503, headers, body) = &outcomes[&1] else {
        panic!("given up: {:?}", outcomes[&1]);
    };
    assert!(headers.contains(&("retry-after".into(), "1".into())));
    assert!(
        body.contains("podward has no service-account token to send"),
        "{body}"
    );
    assert_eq!(bearer(&outcomes[&2]), Some("Bearer token-1"));
    assert_eq!(no_token(&metrics), 1);
}

#[test]
fn a_request_that_hangs_up_while_it_waits_is_never_woken() {
    // The native build once kept its own waiting list beside the engine's;
    // the fake Envoy fails the test if a deleted scheduler is committed.
    let (outcomes, metrics) = both(
        r#"{"startup_wait_ms": 500}"#,
        &[
            Tick(0),
            Request(1, "GET", PODS),
            Request(2, "GET", PODS),
            HangUp(1),
            Write(TOKEN, b"token-1"),
            Tick(100),
            Tick(1000),
        ],
    );
    assert_eq!(outcomes[&1], Outcome::Held);
    assert_eq!(bearer(&outcomes[&2]), Some("Bearer token-1"));
    assert_eq!(no_token(&metrics), 0);
}

#[test]
fn refresh_failures_and_a_policy_swap_mid_burst_are_handled_alike() {
    let (outcomes, metrics) = both(
        r#"{"policy_file": "/policy/policy.json", "refresh_interval_ms": 1000}"#,
        &[
            Tick(0),
            Request(1, "POST", DEPLOYMENTS),
            Write(TOKEN, b"token-1"),
            Write(POLICY, br#"{"preset": "read-only"}"#),
            Tick(100),
            Settle,
            Request(2, "GET", PODS),
            Finish(2),
            Write(TOKEN, b"two words"),
            Write(POLICY, br#"{"preset": "kubectl-proxy"}"#),
            Tick(1100),
            Request(3, "POST", DEPLOYMENTS),
            Remove(TOKEN),
            Tick(2100),
            Request(4, "POST", EXEC),
            Request(5, "GET", PODS),
        ],
    );
    assert_eq!(code(&outcomes[&1]), 403, "read-only");
    assert_eq!(bearer(&outcomes[&3]), Some("Bearer token-1"));
    assert_eq!(code(&outcomes[&4]), 403, "kubectl-proxy still denies exec");
    assert_eq!(bearer(&outcomes[&5]), Some("Bearer token-1"));
    assert_eq!(counted(&metrics, "podward_policy_reloads_total", &[]), 2);
    // Before the token arrived, the bad token, and twice while it is missing.
    assert_eq!(
        counted(&metrics, "podward_token_refresh_failures_total", &[]),
        4
    );
}

#[test]
fn probes_and_refusals_are_answered_alike() {
    let (outcomes, _) = both(
        "",
        &[
            Tick(0),
            // The wasm build starts reading on its first request, the native
            // one at once: a request first, so that both have tried.
            Request(9, "GET", PODS),
            Tick(100),
            Request(1, "GET", "/podward/ready"),
            Write(TOKEN, b"token-1"),
            Tick(200),
            Request(2, "GET", "/podward/ready"),
            Request(3, "GET", "/api/v1/namespaces/x/pods/%2e%2e/exec"),
        ],
    );
    let Outcome::Replied(503, _, body) = &outcomes[&1] else {
        panic!("not ready: {:?}", outcomes[&1]);
    };
    assert!(body.contains("file source answered HTTP 404"), "{body}");
    assert_eq!(bearer(&outcomes[&9]), Some("Bearer token-1"));
    assert_eq!(code(&outcomes[&2]), 200);
    assert_eq!(code(&outcomes[&3]), 400);
}

/// A crowd held for the first token: alternately allowed and denied.
fn crowd(size: u64) -> Vec<Event> {
    (1..=size)
        .map(|id| match id % 2 {
            0 => Request(id, "POST", EXEC),
            _ => Request(id, "GET", PODS),
        })
        .collect()
}

#[test]
fn a_crowd_released_at_once_is_answered_alike_without_nesting_the_vm_past_a_batch() {
    // Each wasm VM callback once woke every held request: 2,000 VM calls
    // nested, and Envoy's V8 overflowed its stack at ~290.
    let mut script = vec![Tick(0)];
    script.extend(crowd(2000));
    script.extend([Write(TOKEN, b"token-1"), Tick(100), Settle]);
    let (outcomes, metrics) = both("", &script);
    for (id, outcome) in &outcomes {
        match id % 2 {
            0 => assert_eq!(code(outcome), 403, "request {id}"),
            _ => assert_eq!(bearer(outcome), Some("Bearer token-1"), "request {id}"),
        }
    }
    let denied = [("reason", "policy_denied")];
    assert_eq!(
        counted(&metrics, "podward_local_replies_total", &denied),
        1000
    );
}

#[test]
fn a_crowd_given_up_is_answered_alike_without_nesting_the_vm_past_a_batch() {
    let mut script = vec![Tick(0)];
    script.extend(crowd(2000));
    script.extend([Tick(100), Tick(500), Settle]);
    let (outcomes, metrics) = both(r#"{"startup_wait_ms": 500}"#, &script);
    assert!(outcomes.values().all(|outcome| code(outcome) == 503));
    assert_eq!(no_token(&metrics), 2000);
}
