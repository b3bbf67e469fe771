//! The proxy-wasm adapter: the only code that calls the host. It keeps the
//! pod's sources fresh on a tick, holds requests that arrive before the first
//! token, and hands each request to [`filter::handle`].
//!
//! All contexts of one VM run on one thread and share [`Shared`]. A borrow of
//! it is never held across a host call that can call back into the VM
//! (`send_http_response`, `resume_http_request`).

use crate::config::Config;
use crate::filter::{self, Outcome};
use crate::headers::HeaderList;
use crate::identity::{self, Identity};
use crate::refresh::{self, PodSources, Refresher, STARTUP_RETRY_MS};
use crate::status::Status;
use crate::telemetry::{Telemetry, NO_TOKEN};
use crate::token::Freshness;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Debug);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

struct Shared {
    config: Config,
    refresher: Refresher,
    /// Outstanding fetches: dispatch token → file index.
    fetches: HashMap<u32, usize>,
    /// Set by the first request. The VM on Envoy's main thread never serves
    /// one and cannot reach the internal listener, so it never fetches.
    active: bool,
    identity: Option<Rc<Identity>>,
    /// Requests held until the first token: (context id, give-up time in ms).
    waiting: Vec<(u32, u64)>,
    /// Token-file freshness last reported, so each change is logged once.
    reported_freshness: Option<Freshness>,
    telemetry: Telemetry,
    /// The metric series of each request in flight, counted when it ends.
    request_series: HashMap<u32, usize>,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<RefCell<Shared>>>,
}

fn now_ms() -> u64 {
    let now = hostcalls::get_current_time().unwrap_or(UNIX_EPOCH);
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        if let Some(shared) = &self.shared {
            finish_fetch(shared, token_id, body_size);
        }
    }
}

/// Starts the fetches that are due, from the effective context: the root on a
/// tick, or the first request of a VM so that it need not wait for a tick.
/// No borrow is held while dispatching: a call can fail back into the VM at once.
fn start_due_fetches(shared: &RefCell<Shared>) {
    let (due, source) = {
        let mut state = shared.borrow_mut();
        (
            state.refresher.due(now_ms()),
            state.config.file_source.clone(),
        )
    };
    let timeout = Duration::from_millis(source.timeout_ms);
    for (index, path) in due {
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", source.authority.as_str()),
        ];
        let dispatched =
            hostcalls::dispatch_http_call(&source.cluster, headers, None, vec![], timeout);
        let mut state = shared.borrow_mut();
        match dispatched {
            Ok(token_id) => {
                state.fetches.insert(token_id, index);
            }
            Err(status) => {
                let failure = Err(format!(
                    "could not call cluster {}: {status:?}",
                    source.cluster
                ));
                let outcome = state.refresher.complete(index, failure);
                report(&state.telemetry, index, outcome);
            }
        }
    }
}

fn finish_fetch(shared: &Rc<RefCell<Shared>>, token_id: u32, body_size: usize) {
    let header = |name| {
        hostcalls::get_map_value(MapType::HttpCallResponseHeaders, name)
            .ok()
            .flatten()
    };
    let fetched = match header(":status").as_deref() {
        Some("200") => Ok(
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default(),
        ),
        Some(status) => Err(format!("file source answered HTTP {status}")),
        None => Err("file source did not answer (timeout or reset)".into()),
    };
    let ready = {
        let mut state = shared.borrow_mut();
        let Some(index) = state.fetches.remove(&token_id) else {
            return;
        };
        let outcome = state.refresher.complete(index, fetched);
        let changed = outcome == refresh::Outcome::Changed;
        if changed {
            log::info!(
                "podward: {} changed",
                state.refresher.path(index).unwrap_or_default()
            );
        }
        // The last file's first attempt can make the VM ready without
        // changing anything, e.g. when an optional file is missing.
        if changed || state.identity.is_none() {
            rebuild_identity(&mut state);
        }
        report(&state.telemetry, index, outcome);
        state.identity.is_some()
    };
    if ready {
        release_waiting(shared);
    }
}

/// Every refresh is counted; failures are logged when they start or change,
/// not on every retry.
fn report(telemetry: &Telemetry, index: usize, outcome: refresh::Outcome) {
    match outcome {
        refresh::Outcome::Unchanged => {}
        refresh::Outcome::Changed => telemetry.refreshed(index, true),
        refresh::Outcome::Failed { message, repeated } => {
            telemetry.refreshed(index, false);
            if !repeated {
                log::warn!("podward: keeping the last good content; could not refresh {message}");
            }
        }
    }
}

/// Rebuilt whenever a source changes, so requests only copy prepared headers.
fn rebuild_identity(state: &mut Shared) {
    if !state.refresher.is_ready() {
        return;
    }
    let Some(token) = state.refresher.token().cloned() else {
        return;
    };
    let sources = PodSources {
        refresher: &state.refresher,
        env: |name: &str| std::env::var(name).ok(),
    };
    let (identity, omissions) = identity::build(&state.config, token, &sources);
    for omission in omissions {
        log::warn!(
            "podward: header {} not sent: {}",
            omission.header,
            omission.reason
        );
    }
    state.identity = Some(Rc::new(identity));
}

fn release_waiting(shared: &Rc<RefCell<Shared>>) {
    let waiting = std::mem::take(&mut shared.borrow_mut().waiting);
    for (context_id, _) in waiting {
        // The client may have gone away while it waited.
        if hostcalls::set_effective_context(context_id).is_ok()
            && serve(shared, context_id) == Action::Continue
        {
            let _ = hostcalls::resume_http_request();
        }
    }
}

fn give_up_on_late_waiters(shared: &Rc<RefCell<Shared>>, now: u64) {
    let (late, reason) = {
        let mut state = shared.borrow_mut();
        let (late, still): (Vec<_>, Vec<_>) = state
            .waiting
            .iter()
            .partition(|(_, give_up)| *give_up <= now);
        state.waiting = still;
        let reason = state
            .refresher
            .token_failure()
            .unwrap_or("the file source has not answered yet")
            .to_string();
        (late, reason)
    };
    for (context_id, _) in late {
        if hostcalls::set_effective_context(context_id).is_ok() {
            shared.borrow().telemetry.local_reply(NO_TOKEN, None);
            let message = format!("podward has no service-account token to send: {reason}");
            reply(&Status::unavailable(message, 1));
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(error) => {
                log::error!("invalid podward config: {error}");
                return false;
            }
        };
        // A fetch gets its timeout plus a second of grace before it counts as lost.
        let lost_after_ms = config.file_source.timeout_ms + 1000;
        let refresher = Refresher::new(&config.files(), config.refresh_interval_ms, lost_after_ms);
        let telemetry = Telemetry::new(&config);
        let tick = config.refresh_interval_ms.min(STARTUP_RETRY_MS);
        self.shared = Some(Rc::new(RefCell::new(Shared {
            config,
            refresher,
            fetches: HashMap::new(),
            active: false,
            identity: None,
            waiting: Vec::new(),
            reported_freshness: None,
            telemetry,
            request_series: HashMap::new(),
        })));
        self.set_tick_period(Duration::from_millis(tick));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = now_ms();
        give_up_on_late_waiters(&shared, now);
        let active = {
            let mut state = shared.borrow_mut();
            report_freshness(&mut state, now / 1000);
            state.active
        };
        if active {
            start_due_fetches(&shared);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Request { context_id, shared }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Logs when the token on hand crosses the kubelet's renewal point or expires
/// without a new one arriving: the signs of a broken rotation.
fn report_freshness(state: &mut Shared, now_s: u64) {
    let skew = state.config.token.expiry_skew_seconds;
    let Some(token) = state.refresher.token() else {
        return;
    };
    if let Some(exp) = token.claims.exp {
        state.telemetry.token_expires_in(exp.saturating_sub(now_s));
    }
    let freshness = token.freshness(now_s, skew);
    let changed = std::mem::discriminant(&freshness)
        != state.reported_freshness.as_ref().map_or(
            std::mem::discriminant(&Freshness::Fresh),
            std::mem::discriminant,
        );
    state.reported_freshness = Some(freshness);
    if !changed {
        return;
    }
    match freshness {
        Freshness::Fresh => log::info!("podward: the token on hand is fresh"),
        Freshness::Stale { expires_in_s } => {
            state.telemetry.token_went_stale();
            log::warn!(
                "podward: the token expires in {expires_in_s}s and the kubelet has not replaced it"
            )
        }
        Freshness::Expired { expired_for_s } => log::error!(
            "podward: the token expired {expired_for_s}s ago; requests get 503 until a new one arrives"
        ),
    }
}

struct Request {
    context_id: u32,
    shared: Rc<RefCell<Shared>>,
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let first_request = {
            let mut state = self.shared.borrow_mut();
            if state.identity.is_some() {
                None
            } else {
                let give_up = now_ms() + state.config.startup_wait_ms;
                state.waiting.push((self.context_id, give_up));
                Some(!std::mem::replace(&mut state.active, true))
            }
        };
        match first_request {
            None => serve(&self.shared, self.context_id),
            Some(first) => {
                if first {
                    start_due_fetches(&self.shared);
                }
                Action::Pause
            }
        }
    }

    fn on_log(&mut self) {
        let mut state = self.shared.borrow_mut();
        let Some(series) = state.request_series.remove(&self.context_id) else {
            return;
        };
        // Envoy hands integer properties over as 8 little-endian bytes.
        let code = hostcalls::get_property(vec!["response", "code"])
            .ok()
            .flatten()
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        state.telemetry.request_done(series, code);
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, token_id: u32, _: usize, body_size: usize, _: usize) {
        finish_fetch(&self.shared, token_id, body_size);
    }
}

/// Runs the request path for the effective context and carries out its outcome.
fn serve(shared: &RefCell<Shared>, context_id: u32) -> Action {
    let reply_with = {
        let mut state = shared.borrow_mut();
        let Some(identity) = state.identity.clone() else {
            return Action::Pause;
        };
        let headers =
            HeaderList(hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default());
        let method = headers.get(":method").unwrap_or_default().to_owned();
        let path = headers.get(":path").unwrap_or_default().to_owned();
        let now_s = now_ms() / 1000;
        let Shared {
            config,
            telemetry,
            request_series,
            ..
        } = &mut *state;
        let handled = filter::handle(config, &identity, now_s, &method, &path, &headers);
        if let Some(request) = &handled.request {
            request_series.insert(context_id, telemetry.requests().series_for(request));
        }
        publish_for_access_log(&handled);
        match handled.outcome {
            Outcome::Forward(rewrite) => {
                let forwarded = rewrite.apply(&headers);
                if let Err(error) = hostcalls::set_map(MapType::HttpRequestHeaders, forwarded) {
                    // Never forward without the credentials just decided on.
                    let message = format!("podward could not set the request headers: {error:?}");
                    Some(Status::unavailable(message, 1))
                } else {
                    None
                }
            }
            Outcome::Reply(status) => {
                if let Some(refusal) = handled.refusal {
                    telemetry.local_reply(refusal.as_str(), handled.rule);
                }
                Some(status)
            }
        }
    };
    match reply_with {
        None => Action::Continue,
        Some(status) => {
            reply(&status);
            Action::Pause
        }
    }
}

/// What podward made of the request, as filter state `wasm.podward` (JSON),
/// for Envoy's access log: `%FILTER_STATE(wasm.podward:PLAIN)%`.
fn publish_for_access_log(handled: &filter::Handled) {
    let record = handled.access_record();
    let _ = hostcalls::set_property(vec!["podward"], Some(record.as_bytes()));
}

fn reply(status: &Status) {
    let retry_after = status.details.retry_after_seconds.map(|s| s.to_string());
    let mut headers = vec![("content-type", "application/json")];
    if let Some(seconds) = &retry_after {
        headers.push(("retry-after", seconds));
    }
    let body = status.to_json();
    if let Err(error) = hostcalls::send_http_response(status.code, headers, Some(body.as_bytes())) {
        log::warn!("podward: could not send a {} reply: {error:?}", status.code);
    }
}
