//! Heap allocations per forwarded request, once the pod's identity is
//! prepared: none, in the core (the engine's request and stream-end events)
//! and in each build's glue (the proxy-wasm VM's, the dynamic module's),
//! counted by a global allocator that counts only outside the host. The
//! hosts' own allocations (Envoy's, here the fakes') are not podward's.
//!
//! What the glue cannot show: podward.wasm lends the request's own buffers
//! to the host for the header map and the `:status` it reads (abi.rs,
//! `fetch_into`), so the VM allocates nothing either; libpodward.so's one
//! allocation per request is the stream object Envoy holds (abi.rs,
//! `envoy_dynamic_module_on_http_filter_new`).

use podward::engine::{Engine, Start, Step};
use podward::headers::HeaderList;
use podward::host::{Level, Log, RequestHost};
use podward::status::LocalReply;
use podward_native::{EnvoyHost, Headers, Shared};
use podward_wasm::{Action, ProxyWasm, Vm};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counts the allocations (and reallocations) of the thread that asked for
/// counting, outside [`host_side`].
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNTED: Cell<u64> = const { Cell::new(0) };
}

fn counted() {
    // `try_with`: a thread being torn down has no locals left.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            COUNTED.with(|counted| counted.set(counted.get() + 1));
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged; counting
// touches only const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The allocations `run` makes, the host's left out.
fn allocations(run: impl FnOnce()) -> u64 {
    COUNTED.with(|counted| counted.set(0));
    COUNTING.with(|counting| counting.set(true));
    run();
    COUNTING.with(|counting| counting.set(false));
    COUNTED.with(Cell::get)
}

/// Runs a host call uncounted: the host's allocations are not podward's.
fn host_side<R>(call: impl FnOnce() -> R) -> R {
    let was = COUNTING.with(|counting| counting.replace(false));
    let result = call();
    COUNTING.with(|counting| counting.set(was));
    result
}

#[test]
fn the_count_is_podwards_own() {
    let counted = allocations(|| {
        let kept: Vec<u8> = Vec::with_capacity(8);
        host_side(|| drop(Vec::<u8>::with_capacity(8)));
        drop(kept);
    });
    assert_eq!(counted, 1);
}

const WARM_UP: u64 = 20;
const COUNTED_REQUESTS: u64 = 200;

/// The Downward API environment of a standard pod: every default identity
/// header has a value.
fn env() -> Vec<(String, String)> {
    [
        ("POD_NAME", "web-0"),
        ("POD_NAMESPACE", "team-a"),
        ("POD_UID", "3b0c6a9e-1f0e-4c4e-9d8b-0f1e2d3c4b5a"),
        ("POD_IP", "10.244.0.7"),
        ("HOST_IP", "192.168.1.10"),
        ("NODE_NAME", "node-1"),
        ("SERVICE_ACCOUNT", "reader"),
        ("CPU_REQUEST", "250"),
        ("CPU_LIMIT", "1"),
        ("MEMORY_REQUEST", "67108864"),
        ("MEMORY_LIMIT", "134217728"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// The pod's files by the end of their path, as either build asks for them.
fn file(path: &str) -> Option<Vec<u8>> {
    let content: &[u8] = if path.ends_with("/token") {
        b"pod-token"
    } else if path.ends_with("/labels") {
        b"app=\"web\"\ntier=\"front end\""
    } else if path.ends_with("/annotations") {
        b"note=\"line1\\nline2\""
    } else {
        return None;
    };
    Some(content.to_vec())
}

/// What kubectl sends through the sidecar: a list, with its own User-Agent.
fn request() -> HeaderList {
    let pairs: [(&[u8], &[u8]); 7] = [
        (b":authority", b"localhost:8001"),
        (b":path", b"/api/v1/namespaces/team-a/pods?limit=500"),
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (
            b"user-agent",
            b"kubectl/v1.37.0 (linux/amd64) kubernetes/0000000",
        ),
        (b"accept", b"application/json"),
        (b"x-request-id", b"4a4e0c2e-3f5d-4bb1-9a6e-0d7f6b1c2a3e"),
    ];
    HeaderList::from_pairs(pairs)
}

/// The headers a forwarded request gets on top of the app's: Authorization,
/// 13 identity headers, User-Agent.
const ADDED: usize = 15;

struct Quiet;

impl Log for Quiet {
    fn log(&self, _: Level, _: &str) {}
}

// ---------------------------------------------------------------------------
// The core alone.

/// A request as a host holds it: the app's headers, and the edits made.
struct CoreRequest<'a> {
    headers: &'a HeaderList,
    removed: usize,
    added: usize,
}

impl RequestHost for CoreRequest<'_> {
    type Waker = ();
    fn request_headers(&mut self, into: &mut HeaderList) -> bool {
        // Written into the engine's buffer, as a host does.
        for (name, value) in self.headers.iter() {
            into.push(name, value);
        }
        true
    }
    fn remove_header(&mut self, _: &[u8]) -> bool {
        self.removed += 1;
        true
    }
    fn add_header(&mut self, _: &[u8], _: &[u8]) -> bool {
        self.added += 1;
        true
    }
    fn set_access_record(&mut self, _: &str) {
        unreachable!("a forwarded request is recorded only when configured")
    }
    fn waker(&mut self) {}
}

#[test]
fn the_core_allocates_nothing_per_forwarded_request() {
    let mut engine: Engine<u64, ()> =
        Engine::configure(b"", env(), Start::AtOnce, &Quiet).expect("the default config");
    for read in engine.on_tick(0, &Quiet).read {
        let content = file(&read.path).ok_or("no such file");
        engine.on_read_done(&read, content.map_err(String::from), 0, &Quiet);
    }
    let headers = request();
    let mut serve = |stream: u64| {
        let mut request = CoreRequest {
            headers: &headers,
            removed: 0,
            added: 0,
        };
        let answer = engine.on_request_headers(stream, 1000, &mut request);
        assert_eq!(answer.step, Step::Forward);
        assert_eq!((request.removed, request.added), (1, ADDED));
        engine.on_stream_end(stream, || Some(200));
    };
    (0..WARM_UP).for_each(&mut serve);
    let counted = allocations(|| (WARM_UP..WARM_UP + COUNTED_REQUESTS).for_each(&mut serve));
    assert_eq!(counted, 0, "allocations in {COUNTED_REQUESTS} requests");
}

// ---------------------------------------------------------------------------
// The proxy-wasm build's glue, against a fake VM host.

#[derive(Default)]
struct FakeVmHost {
    effective: Cell<u32>,
    headers: RefCell<HeaderList>,
    added: Cell<usize>,
    /// Fetches made and not yet answered: (token, path).
    calls: RefCell<Vec<(u32, String)>>,
    answer: RefCell<Vec<u8>>,
    resumed: Cell<bool>,
}

impl Log for FakeVmHost {
    fn log(&self, _: Level, _: &str) {}
}

impl ProxyWasm for FakeVmHost {
    fn now_ms(&self) -> u64 {
        1000
    }
    fn set_tick_period_ms(&self, _: u64) {}
    fn set_effective_context(&self, context: u32) -> bool {
        self.effective.set(context);
        true
    }
    fn plugin_configuration(&self, _: usize) -> Vec<u8> {
        host_side(Vec::new)
    }
    fn environment(&self) -> Vec<(String, String)> {
        host_side(env)
    }
    fn request_headers(&self, into: &mut HeaderList) -> bool {
        // The VM's buffer, which the host writes into (abi.rs lends it).
        for (name, value) in self.headers.borrow().iter() {
            into.push(name, value);
        }
        true
    }
    fn add_request_header(&self, _: &[u8], _: &[u8]) -> bool {
        self.added.set(self.added.get() + 1);
        true
    }
    fn remove_request_header(&self, _: &[u8]) -> bool {
        true
    }
    fn set_property(&self, _: &[&str], _: &[u8]) {
        unreachable!("a forwarded request is recorded only when configured")
    }
    fn response_code(&self) -> u64 {
        200
    }
    fn send_local_response(&self, reply: &LocalReply) -> bool {
        panic!("replied {}: {}", reply.code, reply.body)
    }
    fn resume_request(&self) {
        self.resumed.set(true);
    }
    fn http_call(&self, _: &str, headers: &[(&[u8], &[u8])], _: u64) -> Result<u32, u32> {
        host_side(|| {
            let path = headers.iter().find(|(name, _)| *name == b":path");
            let path = String::from_utf8_lossy(path.expect(":path").1).into_owned();
            let mut calls = self.calls.borrow_mut();
            let token = u32::try_from(calls.len()).unwrap() + 1;
            calls.push((token, path));
            Ok(token)
        })
    }
    fn http_call_response(&self, _: usize) -> (Option<Vec<u8>>, Vec<u8>) {
        host_side(|| (Some(b"200".to_vec()), self.answer.borrow().clone()))
    }
    fn define_metric(&self, _: bool, _: &str) -> Option<u32> {
        Some(1)
    }
    fn increment_metric(&self, _: u32, _: u64) {}
    fn record_metric(&self, _: u32, _: u64) {}
}

const ROOT: u32 = 1;

#[test]
fn the_wasm_glue_allocates_nothing_per_forwarded_request() {
    let vm = Vm::new(FakeVmHost::default());
    *vm.abi().headers.borrow_mut() = request();
    vm.on_context_create(ROOT, 0);
    assert!(vm.on_configure(ROOT, 0));
    // The first request starts the reads and waits for the identity.
    let first = 2;
    vm.on_context_create(first, ROOT);
    assert_eq!(vm.on_request_headers(first), Action::Pause);
    let calls = std::mem::take(&mut *vm.abi().calls.borrow_mut());
    for (token, path) in calls {
        *vm.abi().answer.borrow_mut() = file(&path).expect("a pod file");
        vm.on_http_call_response(ROOT, token, 0);
    }
    // Held requests are woken a batch per tick.
    vm.on_tick(ROOT);
    assert!(vm.abi().resumed.get(), "the identity is prepared");
    vm.on_log(first);
    vm.on_delete(first);

    let serve = |context: u32| {
        vm.abi().added.set(0);
        vm.on_context_create(context, ROOT);
        assert_eq!(vm.on_request_headers(context), Action::Continue);
        assert_eq!(vm.abi().added.get(), ADDED);
        vm.on_log(context);
        vm.on_delete(context);
    };
    let from = 3;
    let warm = from + u32::try_from(WARM_UP).unwrap();
    (from..warm).for_each(serve);
    let counted =
        allocations(|| (warm..warm + u32::try_from(COUNTED_REQUESTS).unwrap()).for_each(serve));
    assert_eq!(counted, 0, "allocations in {COUNTED_REQUESTS} requests");
}

// ---------------------------------------------------------------------------
// The dynamic module's glue, against a fake Envoy.

#[derive(Default)]
struct FakeEnvoy {
    headers: Mutex<HeaderList>,
    added: AtomicU64,
}

impl Log for FakeEnvoy {
    fn log(&self, _: Level, _: &str) {}
}

impl EnvoyHost for FakeEnvoy {
    type Filter = u64;
    type Scheduler = u64;

    fn now_ms(&self) -> u64 {
        1000
    }
    fn environment(&self) -> Vec<(String, String)> {
        host_side(env)
    }
    fn read_file(&self, path: &str) -> Result<Vec<u8>, String> {
        host_side(|| file(path).ok_or_else(|| "no such file".into()))
    }
    fn define_metric(&self, _: &str, _: &[&str], _: bool) -> Option<usize> {
        Some(0)
    }
    fn increment_counter(&self, _: usize, _: &[String], _: u64) {}
    fn set_gauge(&self, _: usize, _: u64) {}
    fn schedule_flush(&self) {}
    fn request_headers(&self, _: u64, into: &mut HeaderList) -> bool {
        for (name, value) in self.headers.lock().unwrap().iter() {
            into.push(name, value);
        }
        true
    }
    fn remove_header(&self, _: u64, _: &[u8]) -> bool {
        true
    }
    fn add_header(&self, _: u64, _: &[u8], _: &[u8]) -> bool {
        self.added.fetch_add(1, Ordering::Relaxed);
        true
    }
    fn set_filter_state(&self, _: u64, _: &[u8], _: &[u8]) {
        unreachable!("a forwarded request is recorded only when configured")
    }
    fn send_response(&self, _: u64, reply: &LocalReply) {
        panic!("replied {}: {}", reply.code, reply.body)
    }
    fn continue_decoding(&self, _: u64) {}
    fn response_code(&self, _: u64) -> Option<u64> {
        Some(200)
    }
    fn scheduler_new(&self, filter: u64) -> u64 {
        filter
    }
    fn scheduler_commit(&self, _: u64) {}
    fn scheduler_delete(&self, _: u64) {}
}

#[test]
fn the_native_glue_allocates_nothing_per_forwarded_request() {
    let host = FakeEnvoy::default();
    *host.headers.lock().unwrap() = request();
    let shared = Shared::new(host, b"").expect("the default config");
    // The reader's round: every file read, the identity prepared.
    shared.read_round();
    let serve = |filter: u64| {
        shared.host().added.store(0, Ordering::Relaxed);
        let stream = shared.stream(filter);
        assert_eq!(stream.on_request_headers(), Headers::Continue);
        assert_eq!(shared.host().added.load(Ordering::Relaxed), ADDED as u64);
        stream.on_complete();
        stream.on_destroy();
    };
    (0..WARM_UP).for_each(serve);
    let counted = allocations(|| (WARM_UP..WARM_UP + COUNTED_REQUESTS).for_each(serve));
    assert_eq!(counted, 0, "allocations in {COUNTED_REQUESTS} requests");
}
