//! The glue: one [`Plugin`] per filter config, shared by every worker, with
//! one engine behind a lock; a thread that reads the pod's files; and a
//! [`Stream`] per request. Each hook is handed to the engine and its answer
//! carried out through [`EnvoyHost`].
//!
//! Envoy can call back into a stream from inside a call the glue makes
//! (a local reply, or a resumed request, completes and destroys the stream at
//! once), so the engine's lock is never held across such a call, and a
//! stream is only ever reached through shared references.

use crate::host::EnvoyHost;
use podward::engine::{Engine, Start, Step};
use podward::headers::HeaderList;
use podward::host::{Level, RequestHost};
use podward::metrics::{Value, COUNTERS, REQUESTS, REQUEST_TAGS, TOKEN_EXPIRES_IN};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// What every worker, the reader and the main thread share.
pub struct Shared<A: EnvoyHost> {
    host: A,
    engine: Mutex<Engine<u64, A::Scheduler>>,
    metrics: MetricIds,
    next_stream: AtomicU64,
    /// The reader stops when this is set; the condvar wakes it at once.
    stopping: Mutex<bool>,
    wake: Condvar,
}

/// Metric ids as Envoy gave them when the config was created.
struct MetricIds {
    counters: Vec<(&'static str, usize)>,
    requests: usize,
    expiry: usize,
}

/// One filter config, as Envoy holds it.
pub struct Plugin<A: EnvoyHost> {
    shared: Arc<Shared<A>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

/// One request.
pub struct Stream<A: EnvoyHost> {
    shared: Arc<Shared<A>>,
    filter: A::Filter,
    id: u64,
    /// Made when the request must wait; deleted when the stream is.
    scheduler: Cell<Option<A::Scheduler>>,
}

/// What a request-headers hook tells Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    Continue,
    Stop,
    /// Holds the headers, and the body with flow control, until the request
    /// is resumed: a body chunk arriving meanwhile must not carry the request
    /// on without its credentials.
    StopAllAndWatermark,
}

/// Locks even after a panic poisoned the mutex: a contained panic happens
/// before the engine changes anything (the crash drill), or not at all.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<A: EnvoyHost> Shared<A> {
    /// The config is created: the engine, and every metric defined (Envoy
    /// allows that only now). `None`, logged, if either is refused.
    pub fn new(host: A, config: &[u8]) -> Option<Arc<Shared<A>>> {
        let env = host.environment();
        // Nothing stands in the way of reading at once, unlike a wasm VM.
        let engine = Engine::configure(config, env, Start::AtOnce, &host)?;
        let Some(metrics) = MetricIds::define(&host) else {
            host.log(Level::Error, "podward could not define its metrics");
            return None;
        };
        Some(Arc::new(Shared {
            host,
            engine: Mutex::new(engine),
            metrics,
            next_stream: AtomicU64::new(1),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
        }))
    }

    pub fn host(&self) -> &A {
        &self.host
    }

    pub fn stream(self: &Arc<Self>, filter: A::Filter) -> Stream<A> {
        Stream {
            shared: self.clone(),
            filter,
            id: self.next_stream.fetch_add(1, Ordering::Relaxed),
            scheduler: Cell::new(None),
        }
    }

    /// One round of the reader: the engine's tick, whose wakes are committed,
    /// then each file it asks for, read outside the lock.
    pub fn read_round(&self) {
        let now = self.host.now_ms();
        let (reads, source) = {
            let mut engine = lock(&self.engine);
            let tick = engine.on_tick(now, &self.host);
            self.wake(&engine, &tick.wake);
            (tick.read, engine.config().file_source.clone())
        };
        for read in reads {
            let result = match source.local_path(&read.path) {
                Some(local) => self.host.read_file(&local),
                None => Err("no directory is configured for it".into()),
            };
            lock(&self.engine).on_read_done(&read, result, now, &self.host);
        }
        if lock(&self.engine).flush_due(now) {
            self.host.schedule_flush();
        }
    }

    /// Commits each scheduler while the engine's lock is held (`_engine`): a
    /// stream deletes its scheduler only after the engine has forgotten it,
    /// under the same lock, so every scheduler committed here is alive.
    fn wake(&self, _engine: &Engine<u64, A::Scheduler>, schedulers: &[A::Scheduler]) {
        for scheduler in schedulers {
            self.host.scheduler_commit(*scheduler);
        }
    }

    /// Hands Envoy the counts gathered. On the main thread.
    pub fn flush_metrics(&self) {
        lock(&self.engine).flush_metrics(|sample| {
            let Some(id) = self.metrics.of(sample.name) else {
                return;
            };
            match sample.value {
                Value::Add(amount) => {
                    self.host
                        .increment_counter(id, &sample.label_values(), amount)
                }
                Value::Set(value) => self.host.set_gauge(id, value),
            }
        });
    }

    /// How long the reader waits before its next round, as the engine asks.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(lock(&self.engine).tick_interval_ms())
    }
}

impl MetricIds {
    fn define(host: &impl EnvoyHost) -> Option<MetricIds> {
        let mut counters = Vec::with_capacity(COUNTERS.len());
        for (name, key) in COUNTERS {
            let labels: &[&str] = match key {
                Some(key) => core::slice::from_ref(key),
                None => &[],
            };
            counters.push((*name, host.define_metric(name, labels, false)?));
        }
        Some(MetricIds {
            counters,
            requests: host.define_metric(REQUESTS, &REQUEST_TAGS, false)?,
            expiry: host.define_metric(TOKEN_EXPIRES_IN, &[], true)?,
        })
    }

    fn of(&self, name: &str) -> Option<usize> {
        match name {
            REQUESTS => Some(self.requests),
            TOKEN_EXPIRES_IN => Some(self.expiry),
            _ => self
                .counters
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, id)| *id),
        }
    }
}

impl<A: EnvoyHost> Plugin<A> {
    /// Starts the reader; `None`, logged, if the thread could not be made.
    pub fn start(shared: Arc<Shared<A>>) -> Option<Plugin<A>> {
        let reading = shared.clone();
        let reader = std::thread::Builder::new()
            .name("podward-files".into())
            .spawn(move || reading.read_until_stopped());
        let Ok(reader) = reader else {
            shared
                .host
                .log(Level::Error, "podward could not start its file reader");
            return None;
        };
        Some(Plugin {
            shared,
            reader: Mutex::new(Some(reader)),
        })
    }

    pub fn shared(&self) -> &Arc<Shared<A>> {
        &self.shared
    }

    /// Stops the reader and waits for it.
    pub fn stop(&self) {
        *lock(&self.shared.stopping) = true;
        self.shared.wake.notify_all();
        if let Some(reader) = lock(&self.reader).take() {
            let _ = reader.join();
        }
    }
}

impl<A: EnvoyHost> Shared<A> {
    fn read_until_stopped(&self) {
        loop {
            self.read_round();
            // Asked each round: short while held requests wait for a batch.
            let interval = self.tick_interval();
            let stopping = lock(&self.stopping);
            let (stopping, _) = self
                .wake
                .wait_timeout_while(stopping, interval, |stopping| !*stopping)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if *stopping {
                return;
            }
        }
    }
}

/// The request of one stream, as the engine sees it.
struct Request<'a, A: EnvoyHost>(&'a Stream<A>);

impl<A: EnvoyHost> RequestHost for Request<'_, A> {
    type Waker = A::Scheduler;

    fn request_headers(&mut self, into: &mut HeaderList) -> bool {
        self.0.shared.host.request_headers(self.0.filter, into)
    }

    fn remove_header(&mut self, name: &[u8]) -> bool {
        self.0.shared.host.remove_header(self.0.filter, name)
    }

    fn add_header(&mut self, name: &[u8], value: &[u8]) -> bool {
        self.0.shared.host.add_header(self.0.filter, name, value)
    }

    fn set_access_record(&mut self, record: &str) {
        let host = &self.0.shared.host;
        host.set_filter_state(self.0.filter, b"podward", record.as_bytes());
    }

    fn waker(&mut self) -> A::Scheduler {
        let scheduler = self.0.shared.host.scheduler_new(self.0.filter);
        self.0.scheduler.set(Some(scheduler));
        scheduler
    }
}

impl<A: EnvoyHost> Stream<A> {
    pub fn on_request_headers(&self) -> Headers {
        let now = self.shared.host.now_ms();
        // Start::AtOnce: the reader reads every file, so a request never
        // starts a read. The lock is let go before Envoy is called.
        let step = lock(&self.shared.engine)
            .on_request_headers(self.id, now, &mut Request(self))
            .step;
        match step {
            Step::Forward => Headers::Continue,
            Step::Reply(reply) => {
                self.shared.host.send_response(self.filter, &reply);
                Headers::Stop
            }
            Step::Wait => Headers::StopAllAndWatermark,
        }
    }

    /// The engine woke this held request: it goes on, or is answered.
    pub fn on_scheduled(&self) {
        let now = self.shared.host.now_ms();
        let step = lock(&self.shared.engine).on_wake(self.id, now, &mut Request(self));
        match step {
            Step::Forward => self.shared.host.continue_decoding(self.filter),
            Step::Reply(reply) => self.shared.host.send_response(self.filter, &reply),
            Step::Wait => {}
        }
    }

    pub fn on_complete(&self) {
        let host = &self.shared.host;
        let code = || Some(host.response_code(self.filter).unwrap_or(0));
        lock(&self.shared.engine).on_stream_end(self.id, code);
    }

    pub fn on_destroy(&self) {
        lock(&self.shared.engine).on_stream_end(self.id, || None);
        // Forgotten by the engine, so the reader can no longer commit to it.
        if let Some(scheduler) = self.scheduler.take() {
            self.shared.host.scheduler_delete(scheduler);
        }
    }

    /// A hook that panicked: the request is answered, never forwarded.
    pub fn on_panic(&self) -> Headers {
        let reply = podward::engine::failed();
        self.shared.host.send_response(self.filter, &reply);
        Headers::Stop
    }
}
