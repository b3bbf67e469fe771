//! The engine: the whole lifecycle of podward's requests and of the sidecar,
//! one method per event a host reports, each returning what the host must do.
//!
//! - [`Engine::configure`] / [`Engine::reconfigure`]: a configuration arrives
//!   (a VM or module starts, or is given a new one);
//! - [`Engine::on_request_headers`]: serve, hold, or reply with a Status, and
//!   which files to start reading;
//! - [`Engine::on_read_done`]: a file's content (the first token releases
//!   the requests held for it);
//! - [`Engine::on_tick`]: which held requests to wake, a batch at a time, and
//!   which files to read; [`Engine::tick_interval_ms`] says when to tick next;
//! - [`Engine::on_wake`]: what a woken request gets: served, or the Status it
//!   was refused with when it was given up;
//! - [`Engine::on_stream_end`]: the request is counted and forgotten.
//!
//! A host acts on these answers and decides nothing itself. Requests are
//! known by the host's stream id `S`; a held one also by the waker `K` the
//! host gave for it, handed back when it may be woken. One list holds every
//! request the engine still has to do something for.
//!
//! A host that loses its state (a wasm VM rebuilt after a crash) starts again
//! from [`Engine::configure`]: requests it was holding are not known to the
//! new one, and Envoy's `request_timeout` answers them (see envoy/render.py).

use crate::ambassador::Ambassador;
use crate::config::Config;
use crate::filter::{self, Served};
use crate::headers::HeaderList;
use crate::host::{Level, Log, RequestHost};
use crate::metrics::{Counter, Counts, Gauge, Refusal, RequestSeries, Sample};
use crate::prelude::*;
use crate::status::{LocalReply, Status};
use alloc::sync::Arc;

/// What the host does with the request at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Let it go upstream: its headers are already edited.
    Forward,
    /// Answer it with this; it goes no further.
    Reply(LocalReply),
    /// Keep holding it: the engine hands its waker back when it may be woken.
    Wait,
}

/// The engine's answer to a request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub step: Step,
    /// Files to start reading now: the first request or probe starts reading.
    pub read: Vec<FileRead>,
}

/// A file the host is to read, and report with [`Engine::on_read_done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    pub path: String,
    file: usize,
    /// Reads started under a configuration since replaced are dropped.
    generation: u32,
}

/// What the host does on a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick<K> {
    /// Held requests to wake (through [`Engine::on_wake`]).
    pub wake: Vec<K>,
    /// Files to read now.
    pub read: Vec<FileRead>,
}

/// When the pod's files are first read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At once: a host that can read from the start.
    AtOnce,
    /// On the first request or probe. A wasm VM on Envoy's main thread never
    /// serves one, and cannot reach the file listener.
    OnFirstRequest,
}

/// At most this many held requests are woken per tick. A proxy-wasm host
/// carries out a callback's replies and resumptions after the callback
/// returns, and Envoy runs each one's stream end (`proxy_on_log`) from inside
/// the one before: one nested VM call per request woken, so a crowd woken at
/// once overflowed V8's stack (at ~290 in Envoy 1.40) and the VM was rebuilt.
pub const WAKE_BATCH: usize = 32;
/// How soon the next tick comes while requests wait for their batch.
pub const BATCH_TICK_MS: u64 = 1;

/// A request the engine still has something to do for.
#[derive(Debug)]
enum Held<K> {
    /// Waiting for the first prepared identity, until `give_up_at`.
    Waiting { give_up_at: u64, waker: K },
    /// Decided, and to be woken in a coming tick's batch: served, or answered
    /// with the Status it was given up with.
    Due { waker: K, refusal: Option<Status> },
    /// Woken to be served.
    Released { waker: K },
    /// Woken to be answered with this: it waited too long.
    Refused(Status),
    /// Served; counted under `series` when it ends.
    Served { series: usize },
}

pub struct Engine<S, K> {
    config: Arc<Config>,
    /// The Downward API environment variables, kept for a new configuration.
    env: Vec<(String, String)>,
    pod: Ambassador,
    generation: u32,
    reading: bool,
    requests: Vec<(S, Held<K>)>,
    series: RequestSeries,
    counts: Counts,
    /// When the host was last told to flush the counts.
    flushed_at_ms: Option<u64>,
    scratch: Scratch,
}

/// How often, at most, a host hands the counts to Envoy: each flush costs a
/// host call per series that changed, and a scrape reads them seconds apart.
/// (On every 100 ms tick, flushing cost a busy sidecar more than 1k
/// instructions a request.)
pub const FLUSH_INTERVAL_MS: u64 = 500;

/// Buffers the request path reuses: once they have grown to fit, a
/// forwarded request allocates nothing.
#[derive(Debug, Default)]
struct Scratch {
    headers: HeaderList,
    user_agent: Vec<u8>,
}

impl<S: Copy + PartialEq, K: Copy> Engine<S, K> {
    /// A configuration arrives for a new VM or module; `None` (logged, naming
    /// the field) if it is refused.
    pub fn configure(
        config: &[u8],
        env: Vec<(String, String)>,
        start: Start,
        log: &dyn Log,
    ) -> Option<Engine<S, K>> {
        let config = parse(config, &env, log)?;
        let mut counts = Counts::default();
        counts.declare(&config);
        // Exported from the start too: 0 until a token is read, as Envoy
        // shows a gauge defined and never set.
        counts.set(Gauge::TokenExpirySeconds, 0);
        Some(Engine {
            pod: Ambassador::new(config.clone(), env.clone()),
            config,
            env,
            generation: 0,
            reading: start == Start::AtOnce,
            requests: Vec::new(),
            series: RequestSeries::default(),
            counts,
            flushed_at_ms: None,
            scratch: Scratch::default(),
        })
    }

    /// A new configuration for a running engine; false (logged) if it is
    /// refused, and the old one stays. Files are read again under it; the
    /// requests already held stay held, with their deadlines.
    pub fn reconfigure(&mut self, config: &[u8], log: &dyn Log) -> bool {
        let Some(config) = parse(config, &self.env, log) else {
            return false;
        };
        self.counts.declare(&config);
        self.pod = Ambassador::new(config.clone(), self.env.clone());
        self.config = config;
        self.generation = self.generation.wrapping_add(1);
        true
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// When the host should call [`Engine::on_tick`] next: soon while held
    /// requests wait for their batch. Asked again after every tick and read.
    pub fn tick_interval_ms(&self) -> u64 {
        let due = |(_, held): &(S, Held<K>)| matches!(held, Held::Due { .. });
        if self.requests.iter().any(due) {
            BATCH_TICK_MS
        } else {
            self.pod.tick_interval_ms()
        }
    }

    /// A request's headers arrived.
    pub fn on_request_headers<H: RequestHost<Waker = K>>(
        &mut self,
        stream: S,
        now_ms: u64,
        host: &mut H,
    ) -> Answer {
        let Some(headers) = self.read_headers(host) else {
            return Answer {
                step: self.unreadable_headers(),
                read: Vec::new(),
            };
        };
        let answer = self.answer(stream, now_ms, host, &headers);
        self.scratch.headers = headers;
        answer
    }

    /// What a request with these headers gets.
    fn answer<H: RequestHost<Waker = K>>(
        &mut self,
        stream: S,
        now_ms: u64,
        host: &mut H,
        headers: &HeaderList,
    ) -> Answer {
        #[cfg(feature = "crash-drill")]
        crash_drill(headers);
        if filter::is_readiness_probe(headers) {
            // A probe starts the reading if no request has yet, and is told
            // at once whether a request would be served now.
            let read = self.start_reading(now_ms);
            let status = filter::readiness_reply(self.pod.readiness());
            return Answer {
                step: Step::Reply(status.local_reply()),
                read,
            };
        }
        if self.pod.prepared().is_some() {
            return Answer {
                step: self.serve(stream, headers, now_ms, host),
                read: Vec::new(),
            };
        }
        let give_up_at = now_ms.saturating_add(self.config.startup_wait_ms);
        let waker = host.waker();
        self.requests
            .push((stream, Held::Waiting { give_up_at, waker }));
        Answer {
            step: Step::Wait,
            read: self.start_reading(now_ms),
        }
    }

    /// A held request was woken: serve it, or answer it with the Status it
    /// was given up with. [`Step::Wait`] if there is nothing to do for it.
    pub fn on_wake<H: RequestHost<Waker = K>>(
        &mut self,
        stream: S,
        now_ms: u64,
        host: &mut H,
    ) -> Step {
        let Some(at) = self.position(stream) else {
            return Step::Wait;
        };
        let (_, held) = self.requests.swap_remove(at);
        let waker = match held {
            Held::Released { waker } => waker,
            Held::Refused(status) => return Step::Reply(status.local_reply()),
            Held::Waiting { .. } | Held::Due { .. } | Held::Served { .. } => {
                self.requests.push((stream, held));
                return Step::Wait;
            }
        };
        if self.pod.prepared().is_none() {
            // A new configuration came between the release and the wake:
            // wait for it like a request that has just arrived.
            let give_up_at = now_ms.saturating_add(self.config.startup_wait_ms);
            self.requests
                .push((stream, Held::Waiting { give_up_at, waker }));
            return Step::Wait;
        }
        let Some(headers) = self.read_headers(host) else {
            return self.unreadable_headers();
        };
        let step = self.serve(stream, &headers, now_ms, host);
        self.scratch.headers = headers;
        step
    }

    /// A read the engine asked for finished: the file's content, or why there
    /// is none. The requests it releases are woken from the next ticks.
    pub fn on_read_done(
        &mut self,
        read: &FileRead,
        result: Result<Vec<u8>, String>,
        now_ms: u64,
        log: &dyn Log,
    ) {
        if read.generation != self.generation {
            return;
        }
        self.pod
            .read_done(read.file, result, now_ms / 1000, log, &mut self.counts);
        if self.pod.prepared().is_none() {
            return;
        }
        for (_, held) in &mut self.requests {
            if let Held::Waiting { waker, .. } = *held {
                *held = Held::Due {
                    waker,
                    refusal: None,
                };
            }
        }
    }

    /// Periodic work: requests that waited too long are given up, the next
    /// batch of decided requests is woken, the token's age is reported, and
    /// the files due are read.
    pub fn on_tick(&mut self, now_ms: u64, log: &dyn Log) -> Tick<K> {
        self.pod
            .report_freshness(now_ms / 1000, log, &mut self.counts);
        let mut refusal = None;
        for (_, held) in &mut self.requests {
            let Held::Waiting { give_up_at, waker } = *held else {
                continue;
            };
            if give_up_at > now_ms {
                continue;
            }
            // One Status for all: why podward cannot serve yet.
            let status =
                refusal.get_or_insert_with(|| Status::unavailable(self.pod.not_ready_reason(), 1));
            *held = Held::Due {
                waker,
                refusal: Some(status.clone()),
            };
            self.counts.count(Counter::LocalReplies {
                reason: Refusal::NoToken,
            });
        }
        let wake = self.next_batch();
        let read = if self.reading {
            self.due(now_ms)
        } else {
            Vec::new()
        };
        Tick { wake, read }
    }

    /// The request ended (answered, or its client went away). A host may
    /// report an end more than once. `response_code` is asked only for a
    /// request that is counted: `None` if the host saw no response (a stream
    /// torn down without completing), and the request is not counted.
    pub fn on_stream_end(&mut self, stream: S, response_code: impl FnOnce() -> Option<u64>) {
        let Some(at) = self.position(stream) else {
            return;
        };
        if let (_, Held::Served { series }) = self.requests.swap_remove(at) {
            if let Some(code) = response_code() {
                self.series.count(series, code);
            }
        }
    }

    /// Whether the host is to hand the counts to Envoy now
    /// ([`Engine::flush_metrics`]): some are waiting, and the last time it was
    /// told to was [`FLUSH_INTERVAL_MS`] ago or more (this counts as telling).
    pub fn flush_due(&mut self, now_ms: u64) -> bool {
        let waiting = !self.counts.is_empty() || self.series.has_pending();
        let due = self
            .flushed_at_ms
            .is_none_or(|at| now_ms >= at.saturating_add(FLUSH_INTERVAL_MS));
        if waiting && due {
            self.flushed_at_ms = Some(now_ms);
        }
        waiting && due
    }

    /// Hands every count gathered since the last flush to `sink`.
    pub fn flush_metrics(&mut self, mut sink: impl FnMut(Sample<'_>)) {
        self.counts.drain(&mut sink);
        self.series.drain(&mut sink);
    }

    fn serve<H: RequestHost>(
        &mut self,
        stream: S,
        headers: &HeaderList,
        now_ms: u64,
        host: &mut H,
    ) -> Step {
        let Some(prepared) = self.pod.prepared() else {
            return Step::Wait;
        };
        let Served { reply, series } = filter::serve(
            host,
            headers,
            &self.config,
            prepared,
            now_ms / 1000,
            &mut self.series,
            &mut self.counts,
            &mut self.scratch.user_agent,
        );
        // Known before the host replies: a reply can end the stream at once.
        if let Some(series) = series {
            self.requests.push((stream, Held::Served { series }));
        }
        match reply {
            Some(status) => Step::Reply(status.local_reply()),
            None => Step::Forward,
        }
    }

    /// Up to [`WAKE_BATCH`] decided requests, now woken.
    fn next_batch(&mut self) -> Vec<K> {
        let mut wake = Vec::new();
        for (_, held) in &mut self.requests {
            if wake.len() == WAKE_BATCH {
                break;
            }
            let Held::Due { waker, refusal } = held else {
                continue;
            };
            let waker = *waker;
            *held = match refusal.take() {
                Some(status) => Held::Refused(status),
                None => Held::Released { waker },
            };
            wake.push(waker);
        }
        wake
    }

    /// The request's headers, in the scratch list (handed back to it after
    /// use); `None` if the host would not hand them over.
    fn read_headers<H: RequestHost>(&mut self, host: &mut H) -> Option<HeaderList> {
        let mut headers = core::mem::take(&mut self.scratch.headers);
        headers.clear();
        if host.request_headers(&mut headers) {
            return Some(headers);
        }
        self.scratch.headers = headers;
        None
    }

    fn unreadable_headers(&mut self) -> Step {
        self.counts.count(Counter::LocalReplies {
            reason: Refusal::HostError,
        });
        let status = Status::unavailable("podward could not read the request's headers".into(), 1);
        Step::Reply(status.local_reply())
    }

    fn start_reading(&mut self, now_ms: u64) -> Vec<FileRead> {
        if core::mem::replace(&mut self.reading, true) {
            return Vec::new();
        }
        self.due(now_ms)
    }

    fn due(&mut self, now_ms: u64) -> Vec<FileRead> {
        let generation = self.generation;
        self.pod
            .due(now_ms)
            .into_iter()
            .map(|(file, path)| FileRead {
                path,
                file,
                generation,
            })
            .collect()
    }

    fn position(&self, stream: S) -> Option<usize> {
        self.requests.iter().position(|(held, _)| *held == stream)
    }
}

/// What a request gets when its hook failed (a native hook's panic is
/// contained): it is never forwarded.
pub fn failed() -> LocalReply {
    let message = "podward failed on this request; see Envoy's log";
    Status::unavailable(message.into(), 1).local_reply()
}

fn parse(config: &[u8], env: &[(String, String)], log: &dyn Log) -> Option<Arc<Config>> {
    match Config::parse_in(config, env) {
        Ok(config) => Some(Arc::new(config)),
        Err(error) => {
            log.log(Level::Error, &format!("invalid podward config: {error}"));
            None
        }
    }
}

/// A test build's way to crash on demand (`--features crash-drill`, never
/// shipped): a request carrying `x-podward-crash-drill`. The wasm module
/// traps; the native library must contain the panic.
#[cfg(feature = "crash-drill")]
fn crash_drill(headers: &HeaderList) {
    #[allow(clippy::panic)]
    if headers.get("x-podward-crash-drill").is_some() {
        panic!("crash drill");
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
