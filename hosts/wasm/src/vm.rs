//! One VM's glue: the root contexts (one [`Engine`] per plugin) and the
//! streams, each callback handed to the engine and its answer carried out
//! through [`ProxyWasm`].
//!
//! A VM runs on one thread. Its state is never borrowed across a host call
//! that can call back into the VM (sending a local reply can run
//! `proxy_on_log` at once; resuming a request can too): the engine has
//! answered, and the borrow has ended, before such a call is made.

use crate::host::ProxyWasm;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use podward::config::FileSource;
use podward::engine::{Engine, FileRead, Start, Step};
use podward::headers::HeaderList;
use podward::host::{Level, RequestHost};
use podward::metrics::Value;
use podward::status::LocalReply;

/// What a stream callback tells the host to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

pub struct Vm<A> {
    abi: A,
    state: RefCell<State>,
}

struct State {
    roots: Vec<Root>,
    /// Each request in flight and the root it belongs to. A list: one VM
    /// serves one app's few concurrent requests.
    streams: Vec<(u32, u32)>,
}

struct Root {
    id: u32,
    /// Set by a successful `proxy_on_configure`.
    engine: Option<Engine<u32, u32>>,
    /// Reads in flight as fetches from the file listener: (call token, read).
    fetches: Vec<(u32, FileRead)>,
    /// Metric ids by tagged name, defined on first use: a few dozen at most.
    metric_ids: Vec<(String, u32)>,
    /// The tick period last set: the engine's, changed only when it changes.
    tick_period_ms: u64,
}

/// The request of the effective context, as the engine sees it.
struct Request<'a, A> {
    abi: &'a A,
    context: u32,
}

impl<A: ProxyWasm> RequestHost for Request<'_, A> {
    type Waker = u32;

    fn request_headers(&mut self, into: &mut HeaderList) -> bool {
        self.abi.request_headers(into)
    }

    fn remove_header(&mut self, name: &[u8]) -> bool {
        self.abi.remove_request_header(name)
    }

    fn add_header(&mut self, name: &[u8], value: &[u8]) -> bool {
        self.abi.add_request_header(name, value)
    }

    fn set_access_record(&mut self, record: &str) {
        // Filter state `wasm.podward`, printed by the access log.
        self.abi.set_property(&["podward"], record.as_bytes());
    }

    fn waker(&mut self) -> u32 {
        self.context
    }
}

impl<A: ProxyWasm> Vm<A> {
    pub const fn new(abi: A) -> Vm<A> {
        Vm {
            abi,
            state: RefCell::new(State {
                roots: Vec::new(),
                streams: Vec::new(),
            }),
        }
    }

    pub fn abi(&self) -> &A {
        &self.abi
    }

    pub fn on_context_create(&self, context: u32, parent: u32) {
        let mut state = self.state.borrow_mut();
        if parent == 0 {
            state.roots.push(Root {
                id: context,
                engine: None,
                fetches: Vec::new(),
                metric_ids: Vec::new(),
                tick_period_ms: 0,
            });
        } else {
            state.streams.push((context, parent));
        }
    }

    pub fn on_configure(&self, root: u32, size: usize) -> bool {
        let config = self.abi.plugin_configuration(size);
        let reconfigured = self.with_root(root, |root| {
            let engine = root.engine.as_mut()?;
            Some(engine.reconfigure(&config, &self.abi))
        });
        if let Some(accepted) = reconfigured.flatten() {
            return accepted;
        }
        // host_env_keys hands the Downward API variables to the VM at start.
        let env = self.abi.environment();
        let Some(engine) = Engine::configure(&config, env, Start::OnFirstRequest, &self.abi) else {
            return false;
        };
        self.with_root(root, |root| root.engine = Some(engine));
        self.schedule_ticks(root);
        // The series the configuration tells are exported at zero at once.
        self.flush_metrics(root);
        true
    }

    pub fn on_tick(&self, root: u32) {
        let now = self.abi.now_ms();
        let Some(tick) = self.with_engine(root, |engine| engine.on_tick(now, &self.abi)) else {
            return;
        };
        self.wake(root, tick.wake);
        self.start_reads(root, tick.read);
        self.schedule_ticks(root);
        if self.with_engine(root, |engine| engine.flush_due(now)) == Some(true) {
            self.flush_metrics(root);
        }
    }

    pub fn on_request_headers(&self, context: u32) -> Action {
        let Some(root) = self.root_of(context) else {
            return Action::Continue;
        };
        let now = self.abi.now_ms();
        let mut request = Request {
            abi: &self.abi,
            context,
        };
        let answer = self.with_engine(root, |engine| {
            engine.on_request_headers(context, now, &mut request)
        });
        // Not configured: Envoy refused the plugin and never gets here.
        let Some(answer) = answer else {
            return Action::Continue;
        };
        if !answer.read.is_empty() {
            self.start_reads(root, answer.read);
            self.abi.set_effective_context(context);
        }
        self.carry_out(answer.step, false)
    }

    pub fn on_http_call_response(&self, context: u32, token: u32, body_size: usize) {
        let Some(root) = self.root_of(context) else {
            return;
        };
        let read = self.with_root(root, |root| {
            let at = root.fetches.iter().position(|(t, _)| *t == token)?;
            Some(root.fetches.swap_remove(at).1)
        });
        let Some(read) = read.flatten() else {
            return;
        };
        let (status, body) = self.abi.http_call_response(body_size);
        let result = FileSource::fetched(status.as_deref(), body);
        self.read_done(root, &read, result);
    }

    pub fn on_log(&self, context: u32) {
        self.stream_end(context, || Some(self.abi.response_code()));
    }

    pub fn on_delete(&self, context: u32) {
        // A stream that ended without a log callback: forgotten, not counted.
        if !self.stream_end(context, || None) {
            let mut state = self.state.borrow_mut();
            state.roots.retain(|root| root.id != context);
        }
    }

    /// Reports a stream's end; false if `context` is no stream.
    fn stream_end(&self, context: u32, response_code: impl FnOnce() -> Option<u64>) -> bool {
        let root = {
            let mut state = self.state.borrow_mut();
            let Some(at) = state.streams.iter().position(|(id, _)| *id == context) else {
                return false;
            };
            state.streams.swap_remove(at).1
        };
        self.with_engine(root, |engine| engine.on_stream_end(context, response_code));
        true
    }

    /// Wakes each held request of a batch: the engine says whether it is
    /// served or answered. The state is not borrowed while the host acts.
    fn wake(&self, root: u32, contexts: Vec<u32>) {
        for context in contexts {
            // The client may have gone away while it waited.
            if !self.abi.set_effective_context(context) {
                continue;
            }
            let now = self.abi.now_ms();
            let mut request = Request {
                abi: &self.abi,
                context,
            };
            let step = self.with_engine(root, |engine| engine.on_wake(context, now, &mut request));
            if let Some(step) = step {
                self.carry_out(step, true);
            }
        }
    }

    /// Starts the reads as fetches from the file listener. They belong to
    /// the root context, so a request that goes away does not take them along.
    fn start_reads(&self, root: u32, reads: Vec<FileRead>) {
        if reads.is_empty() {
            return;
        }
        let Some(source) = self.with_engine(root, |engine| engine.config().file_source.clone())
        else {
            return;
        };
        self.abi.set_effective_context(root);
        for read in reads {
            let headers: [(&[u8], &[u8]); 3] = [
                (b":method", b"GET"),
                (b":path", read.path.as_bytes()),
                (b":authority", source.authority.as_bytes()),
            ];
            match self
                .abi
                .http_call(&source.cluster, &headers, source.timeout_ms)
            {
                Ok(token) => {
                    self.with_root(root, |root| root.fetches.push((token, read)));
                }
                Err(status) => {
                    let cluster = &source.cluster;
                    let why =
                        alloc::format!("could not call cluster {cluster} (host status {status})");
                    self.read_done(root, &read, Err(why));
                }
            }
        }
    }

    fn read_done(&self, root: u32, read: &FileRead, result: Result<Vec<u8>, String>) {
        let now = self.abi.now_ms();
        self.with_engine(root, |engine| {
            engine.on_read_done(read, result, now, &self.abi)
        });
        self.schedule_ticks(root);
    }

    /// Sets the tick period the engine asks for, if it changed: short while
    /// held requests wait for their batch.
    fn schedule_ticks(&self, root: u32) {
        let changed = self.with_root(root, |root| {
            let period = root.engine.as_ref()?.tick_interval_ms();
            let last = core::mem::replace(&mut root.tick_period_ms, period);
            (last != period).then_some(period)
        });
        if let Some(period) = changed.flatten() {
            self.abi.set_tick_period_ms(period);
        }
    }

    /// Carries out the engine's answer for the effective context's request.
    /// `held`: the request is paused, and must be resumed to go on.
    fn carry_out(&self, step: Step, held: bool) -> Action {
        match step {
            Step::Forward => {
                if held {
                    self.abi.resume_request();
                }
                Action::Continue
            }
            Step::Reply(reply) => {
                self.reply(&reply);
                Action::Pause
            }
            Step::Wait => Action::Pause,
        }
    }

    fn reply(&self, reply: &LocalReply) {
        if !self.abi.send_local_response(reply) {
            let message = alloc::format!("podward: could not send a {} reply", reply.code);
            self.abi.log(Level::Warn, &message);
        }
    }

    /// Hands the counts gathered to Envoy, defining each metric on first use.
    fn flush_metrics(&self, root: u32) {
        self.with_root(root, |root| {
            let Some(engine) = root.engine.as_mut() else {
                return;
            };
            let ids = &mut root.metric_ids;
            engine.flush_metrics(|sample| {
                let name = sample.tagged_name();
                let gauge = matches!(sample.value, Value::Set(_));
                let id = match ids.iter().find(|(known, _)| *known == name) {
                    Some((_, id)) => *id,
                    None => {
                        let Some(id) = self.abi.define_metric(gauge, &name) else {
                            return;
                        };
                        ids.push((name, id));
                        id
                    }
                };
                match sample.value {
                    Value::Add(0) => {}
                    Value::Add(amount) => self.abi.increment_metric(id, amount),
                    Value::Set(value) => self.abi.record_metric(id, value),
                }
            });
        });
    }

    /// The root a context belongs to: itself, or the root of its stream.
    fn root_of(&self, context: u32) -> Option<u32> {
        let state = self.state.borrow();
        if state.roots.iter().any(|root| root.id == context) {
            return Some(context);
        }
        let (_, root) = state.streams.iter().find(|(id, _)| *id == context)?;
        Some(*root)
    }

    fn with_root<R>(&self, root: u32, f: impl FnOnce(&mut Root) -> R) -> Option<R> {
        let mut state = self.state.borrow_mut();
        state.roots.iter_mut().find(|r| r.id == root).map(f)
    }

    /// Runs `f` on the engine of `root`, if that root is configured.
    fn with_engine<R>(&self, root: u32, f: impl FnOnce(&mut Engine<u32, u32>) -> R) -> Option<R> {
        self.with_root(root, |root| root.engine.as_mut().map(f))
            .flatten()
    }
}
