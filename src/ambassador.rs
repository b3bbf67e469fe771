//! What the sidecar knows about the pod (its token, its policy, its identity
//! files) and the requests waiting until it knows enough to serve them.
//!
//! Both hosts run this state machine and only feed it: the proxy-wasm adapter
//! (one per VM, reading the files through fetches from Envoy's internal file
//! listener) and the native adapter (one per Envoy, reading the files itself).
//! It decides when to read each file again, which content to keep, when to
//! rebuild the prepared identity, when a waiting request may go on or must be
//! given up, and what to log and count on the way.
//!
//! A host that loses its state (a wasm VM rebuilt after a crash) starts again
//! from [`Ambassador::new`]: requests it was holding are not known to the new
//! one, and Envoy's `request_timeout` answers them (see envoy/render.py).

use crate::config::{Config, PolicySource};
use crate::filter::Refusal;
use crate::identity::{self, Identity, Sources};
use crate::metrics::{Counter, Gauge, Level, Telemetry};
use crate::policy::Policy;
use crate::prelude::*;
use crate::refresh::{Outcome, Refresher, STARTUP_RETRY_MS};
use crate::status::Status;
use crate::token::{Freshness, Token};
use alloc::sync::Arc;
use core::mem::discriminant;

/// Everything a request needs, built when a source changes and shared by
/// every request until the next change.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub identity: Arc<Identity>,
    pub policy: Arc<Policy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Token,
    Policy,
    Identity,
}

/// What to do with a request that has just arrived.
#[derive(Debug)]
pub enum Admission {
    Serve(Prepared),
    /// Held until [`Ambassador::read_done`] releases it or [`Ambassador::tick`]
    /// gives it up. `start_reading`: this is the first request, and the files
    /// are due now.
    Wait {
        start_reading: bool,
    },
}

pub struct Ambassador<W> {
    config: Arc<Config>,
    /// The Downward API environment variables, (name, value): fixed for the
    /// pod's life, and read only when the identity is rebuilt.
    env: Vec<(String, String)>,
    refresher: Refresher,
    roles: Vec<Role>,
    token: Option<Token>,
    policy: Option<Arc<Policy>>,
    prepared: Option<Prepared>,
    /// Requests held for the first [`Prepared`], with the time to give up.
    waiting: Vec<(W, u64)>,
    /// Reading has started. A wasm VM starts on its first request: the VM on
    /// Envoy's main thread never serves one and cannot reach the file listener.
    active: bool,
    reported_freshness: Option<Freshness>,
}

impl<W: PartialEq> Ambassador<W> {
    pub fn new(config: Arc<Config>, env: Vec<(String, String)>) -> Ambassador<W> {
        let files = config.files();
        let roles: Vec<Role> = files
            .iter()
            .enumerate()
            .map(|(index, path)| match (&config.policy, index) {
                (_, 0) => Role::Token,
                (PolicySource::File(policy), _) if policy == path => Role::Policy,
                _ => Role::Identity,
            })
            .collect();
        let required: Vec<(&str, bool)> = files
            .iter()
            .zip(&roles)
            .map(|(path, role)| (*path, *role != Role::Identity))
            .collect();
        // A read gets its timeout plus a second of grace before it counts as lost.
        let lost_after_ms = config.file_source.timeout_ms + 1000;
        let refresher = Refresher::new(&required, config.refresh_interval_ms, lost_after_ms);
        let policy = match &config.policy {
            PolicySource::Inline(policy) => Some(Arc::new(policy.clone())),
            PolicySource::File(_) => None,
        };
        Ambassador {
            env,
            refresher,
            roles,
            token: None,
            policy,
            prepared: None,
            waiting: Vec::new(),
            active: false,
            reported_freshness: None,
            config,
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// How often the host should call [`Ambassador::tick`] and
    /// [`Ambassador::due`].
    pub fn tick_interval_ms(&self) -> u64 {
        self.config.refresh_interval_ms.min(STARTUP_RETRY_MS)
    }

    /// Start reading without waiting for a request (a probe, or a host that
    /// reads from the start); true if reading starts now.
    pub fn activate(&mut self) -> bool {
        !core::mem::replace(&mut self.active, true)
    }

    pub fn prepared(&self) -> Option<&Prepared> {
        self.prepared.as_ref()
    }

    /// Serve at once if everything is on hand, else hold the request.
    pub fn admit(&mut self, waiter: W, now_ms: u64) -> Admission {
        if let Some(prepared) = &self.prepared {
            return Admission::Serve(prepared.clone());
        }
        let give_up_at = now_ms.saturating_add(self.config.startup_wait_ms);
        self.waiting.push((waiter, give_up_at));
        Admission::Wait {
            start_reading: self.activate(),
        }
    }

    /// A held request went away (the client hung up).
    pub fn forget(&mut self, waiter: &W) {
        self.waiting.retain(|(held, _)| held != waiter);
    }

    /// The files to read now, as (index, path); each is in flight until
    /// [`Ambassador::read_done`] is called for it.
    pub fn due(&mut self, now_ms: u64) -> Vec<(usize, String)> {
        if !self.active {
            return Vec::new();
        }
        self.refresher.due(now_ms)
    }

    /// Takes a read's result: the file's content, or why there is none.
    /// Returns the requests that may go on now.
    pub fn read_done(
        &mut self,
        index: usize,
        read: Result<Vec<u8>, String>,
        now_s: u64,
        telemetry: &dyn Telemetry,
    ) -> Vec<W> {
        let Some(&role) = self.roles.get(index) else {
            return Vec::new();
        };
        let mut new_token = None;
        let mut new_policy = None;
        let outcome = self.refresher.complete(index, read, |content| match role {
            Role::Token => {
                new_token = Some(Token::parse(content).map_err(|e| e.to_string())?);
                Ok(())
            }
            Role::Policy => {
                new_policy = Some(Policy::parse(content).map_err(|e| e.to_string())?);
                Ok(())
            }
            Role::Identity => Ok(()),
        });
        let path = self.refresher.path(index).unwrap_or_default();
        match &outcome {
            Outcome::Unchanged => {}
            Outcome::Changed => {
                let counter = match role {
                    Role::Token => Counter::TokenRefreshes,
                    Role::Policy => Counter::PolicyReloads,
                    Role::Identity => Counter::FileRefreshes { file: path },
                };
                telemetry.count(counter);
                telemetry.log(Level::Info, &format!("podward: {path} changed"));
            }
            Outcome::Failed { message, repeated } => {
                let (counter, kept) = match role {
                    Role::Token => (Counter::TokenRefreshFailures, self.token.is_some()),
                    Role::Policy => (Counter::PolicyReloadFailures, self.policy.is_some()),
                    Role::Identity => (Counter::FileRefreshFailures { file: path }, true),
                };
                telemetry.count(counter);
                if !repeated {
                    let keeping = match (role, kept) {
                        (Role::Policy, true) => "the last good policy stays in force",
                        (_, true) => "keeping the last good content",
                        (_, false) => "nothing to fall back on yet",
                    };
                    telemetry.log(
                        Level::Warn,
                        &format!("podward: could not use {message}; {keeping}"),
                    );
                }
            }
        }
        if let Some(token) = new_token {
            warn_about_claims(&token, now_s, telemetry);
            self.token = Some(token);
        }
        if let Some(policy) = new_policy {
            self.policy = Some(Arc::new(policy));
        }
        // A last file's first read can make the pod's view complete without
        // changing anything, e.g. when an optional file is missing.
        if outcome == Outcome::Changed || self.prepared.is_none() {
            self.rebuild(telemetry);
        }
        if self.prepared.is_some() {
            self.waiting.drain(..).map(|(waiter, _)| waiter).collect()
        } else {
            Vec::new()
        }
    }

    /// Periodic work: requests that waited too long are given up (each with
    /// the reply to send), and the token's age is reported.
    pub fn tick(&mut self, now_ms: u64, telemetry: &dyn Telemetry) -> Vec<(W, Status)> {
        self.report_freshness(now_ms / 1000, telemetry);
        if !self
            .waiting
            .iter()
            .any(|(_, give_up_at)| *give_up_at <= now_ms)
        {
            return Vec::new();
        }
        let (late, still): (Vec<_>, Vec<_>) = core::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, give_up_at)| *give_up_at <= now_ms);
        self.waiting = still;
        let status = Status::unavailable(self.not_ready_reason(), 1);
        late.into_iter()
            .map(|(waiter, _)| {
                telemetry.count(Counter::LocalReplies {
                    reason: Refusal::NoToken,
                });
                (waiter, status.clone())
            })
            .collect()
    }

    /// Whether a request would be served now; if not, why (for a probe).
    pub fn readiness(&self) -> Result<(), String> {
        match self.prepared {
            Some(_) => Ok(()),
            None => Err(self.not_ready_reason()),
        }
    }

    fn not_ready_reason(&self) -> String {
        let failure = |role| {
            let index = self.roles.iter().position(|r| *r == role)?;
            self.refresher.failure(index)
        };
        let not_yet = "the file source has not answered yet";
        if self.token.is_none() {
            let why = failure(Role::Token).unwrap_or(not_yet);
            format!("podward has no service-account token to send: {why}")
        } else if self.policy.is_none() {
            let why = failure(Role::Policy).unwrap_or(not_yet);
            format!("podward has no policy to apply: {why}")
        } else {
            "podward has not read the pod's identity files yet".into()
        }
    }

    /// Rebuilt whenever a source changes, so requests only copy prepared headers.
    fn rebuild(&mut self, telemetry: &dyn Telemetry) {
        if !self.refresher.settled() {
            return;
        }
        let (Some(token), Some(policy)) = (&self.token, &self.policy) else {
            return;
        };
        let sources = PodView {
            refresher: &self.refresher,
            env: &self.env,
        };
        let (identity, omissions) = identity::build(&self.config, token.clone(), &sources);
        for omission in omissions {
            telemetry.log(
                Level::Warn,
                &format!(
                    "podward: header {} not sent: {}",
                    omission.header, omission.reason
                ),
            );
        }
        self.prepared = Some(Prepared {
            identity: Arc::new(identity),
            policy: policy.clone(),
        });
    }

    /// Logs when the token on hand crosses the kubelet's renewal point, its
    /// `warnafter` or its expiry without a new one arriving: the signs of a
    /// broken rotation.
    fn report_freshness(&mut self, now_s: u64, telemetry: &dyn Telemetry) {
        let Some(token) = &self.token else {
            return;
        };
        if let Some(end) = token.intended_end() {
            telemetry.gauge(Gauge::TokenExpirySeconds, end.saturating_sub(now_s));
        }
        let freshness = token.freshness(now_s, self.config.token.expiry_skew_seconds);
        let previous = self.reported_freshness.replace(freshness);
        let was = previous.unwrap_or(Freshness::Fresh);
        if discriminant(&was) == discriminant(&freshness) {
            return;
        }
        match freshness {
            Freshness::Fresh => telemetry.log(Level::Info, "podward: the token on hand is fresh"),
            Freshness::Stale { expires_in_s } => {
                telemetry.count(Counter::TokenStale);
                telemetry.log(
                    Level::Warn,
                    &format!(
                        "podward: the token is past its renewal point and ends in {expires_in_s}s; \
                         the kubelet has not replaced it"
                    ),
                );
            }
            Freshness::Overdue { overdue_for_s } => {
                if was == Freshness::Fresh {
                    telemetry.count(Counter::TokenStale);
                }
                telemetry.log(
                    Level::Error,
                    &format!(
                        "podward: the token is {overdue_for_s}s past its warnafter time; the API \
                         server still accepts it but flags every request as using a stale token; \
                         the kubelet has not replaced it"
                    ),
                );
            }
            Freshness::Expired { expired_for_s } => telemetry.log(
                Level::Error,
                &format!(
                    "podward: the token expired {expired_for_s}s ago; requests get 503 until a \
                     new one arrives"
                ),
            ),
        }
    }
}

/// Told once per token: what podward cannot judge about it.
fn warn_about_claims(token: &Token, now_s: u64, telemetry: &dyn Telemetry) {
    if !token.claims.unreadable.is_empty() {
        telemetry.log(
            Level::Warn,
            &format!(
                "podward: the token's {} claim is not a number; podward cannot tell its age",
                token.claims.unreadable.join(", ")
            ),
        );
    }
    if let Some(nbf) = token.claims.nbf.filter(|nbf| *nbf > now_s) {
        // Sent anyway: the API server judges nbf by its own clock.
        telemetry.log(
            Level::Warn,
            &format!(
                "podward: the token is not valid for another {}s by this node's clock (nbf); \
                 the clocks of the node and the API server may disagree",
                nbf - now_s
            ),
        );
    }
}

/// The environment plus the files on hand, as identity headers read them.
struct PodView<'a> {
    refresher: &'a Refresher,
    env: &'a [(String, String)],
}

impl Sources for PodView<'_> {
    fn env(&self, name: &str) -> Option<String> {
        let (_, value) = self.env.iter().find(|(n, _)| n == name)?;
        Some(value.clone())
    }

    fn file(&self, path: &str) -> Option<&[u8]> {
        self.refresher.content(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records what the core told the host.
    #[derive(Default)]
    struct Recorder {
        logs: RefCell<Vec<(Level, String)>>,
        counts: RefCell<Vec<String>>,
        gauges: RefCell<Vec<(Gauge, u64)>>,
    }

    impl Telemetry for Recorder {
        fn log(&self, level: Level, message: &str) {
            self.logs.borrow_mut().push((level, message.to_string()));
        }
        fn count(&self, counter: Counter<'_>) {
            self.counts.borrow_mut().push(counter.tagged_name());
        }
        fn gauge(&self, gauge: Gauge, value: u64) {
            self.gauges.borrow_mut().push((gauge, value));
        }
    }

    impl Recorder {
        fn logged(&self, text: &str) -> bool {
            self.logs.borrow().iter().any(|(_, m)| m.contains(text))
        }
        fn counted(&self, name: &str) -> usize {
            self.counts
                .borrow()
                .iter()
                .filter(|c| c.as_str() == name)
                .count()
        }
    }

    fn ambassador(config: &str) -> Ambassador<u32> {
        let config = Arc::new(Config::parse(config.as_bytes()).unwrap());
        let env = [("POD_NAME", "web-0"), ("POD_NAMESPACE", "team-a")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec();
        Ambassador::new(config, env)
    }

    fn jwt(claims: &str) -> Vec<u8> {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        format!("e30.{payload}.sig").into_bytes()
    }

    /// Reads every due file from `files` (path → content, missing → 404).
    fn read_all(
        ambassador: &mut Ambassador<u32>,
        files: &[(&str, &[u8])],
        now_ms: u64,
        telemetry: &Recorder,
    ) -> Vec<u32> {
        let mut released = Vec::new();
        for (index, path) in ambassador.due(now_ms) {
            let read = files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, content)| content.to_vec())
                .ok_or_else(|| "HTTP 404".to_string());
            released.extend(ambassador.read_done(index, read, now_ms / 1000, telemetry));
        }
        released
    }

    const POD_FILES: &[(&str, &[u8])] = &[
        ("/serviceaccount/token", b"token-1"),
        ("/podinfo/labels", b"app=\"web\""),
        ("/podinfo/annotations", b""),
    ];

    #[test]
    fn requests_wait_for_the_first_read_then_go_on() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador("");
        assert_eq!(
            ambassador.due(0),
            [],
            "nothing is read before the first request"
        );
        assert!(matches!(
            ambassador.admit(1, 0),
            Admission::Wait {
                start_reading: true
            }
        ));
        assert!(matches!(
            ambassador.admit(2, 10),
            Admission::Wait {
                start_reading: false
            }
        ));
        ambassador.forget(&2);
        assert_eq!(read_all(&mut ambassador, POD_FILES, 20, &telemetry), [1]);
        let Admission::Serve(prepared) = ambassador.admit(3, 30) else {
            panic!("prepared")
        };
        assert_eq!(prepared.identity.token.authorization(), "Bearer token-1");
        assert_eq!(ambassador.readiness(), Ok(()));
        assert_eq!(telemetry.counted("podward_token_refreshes_total"), 1);
    }

    #[test]
    fn late_requests_are_given_up_with_the_cause() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador(r#"{"startup_wait_ms": 500}"#);
        ambassador.admit(1, 0);
        ambassador.admit(2, 300);
        assert!(read_all(&mut ambassador, &POD_FILES[1..], 0, &telemetry).is_empty());
        assert_eq!(ambassador.tick(499, &telemetry), []);
        let given_up = ambassador.tick(500, &telemetry);
        assert_eq!(given_up.len(), 1);
        let (waiter, status) = &given_up[0];
        assert_eq!(*waiter, 1);
        assert_eq!(status.code, 503);
        assert_eq!(
            status.message,
            "podward has no service-account token to send: /serviceaccount/token: HTTP 404"
        );
        assert_eq!(
            telemetry.counted("reason=.=no_token;.;podward_local_replies_total"),
            1
        );
        assert_eq!(ambassador.tick(800, &telemetry).len(), 1);
        assert_eq!(
            ambassador.readiness(),
            Err(status.message.clone()),
            "the probe tells the same cause"
        );
    }

    #[test]
    fn a_missing_optional_file_does_not_hold_requests_but_its_header_is_reported() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador("");
        ambassador.admit(1, 0);
        assert_eq!(
            read_all(&mut ambassador, &POD_FILES[..2], 0, &telemetry),
            [1]
        );
        assert!(telemetry.logged(
            "header x-pod-annotations not sent: file /podinfo/annotations could not be read"
        ));
    }

    #[test]
    fn a_bad_token_read_keeps_the_last_good_token_and_warns_once() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador(r#"{"refresh_interval_ms": 10}"#);
        ambassador.activate();
        read_all(&mut ambassador, POD_FILES, 0, &telemetry);
        for now in [1000, 2000] {
            read_all(
                &mut ambassador,
                &[("/serviceaccount/token", b"two words")],
                now,
                &telemetry,
            );
        }
        let prepared = ambassador.prepared().unwrap();
        assert_eq!(prepared.identity.token.authorization(), "Bearer token-1");
        assert_eq!(telemetry.counted("podward_token_refresh_failures_total"), 2);
        let warnings: Vec<_> = telemetry
            .logs
            .borrow()
            .iter()
            .filter(|(level, _)| *level == Level::Warn)
            .map(|(_, m)| m.clone())
            .filter(|m| m.contains("token"))
            .collect();
        assert_eq!(
            warnings,
            ["podward: could not use /serviceaccount/token: the token holds characters a header \
              cannot carry; keeping the last good content"]
        );
        assert!(!telemetry.logged("two words"));
    }

    #[test]
    fn a_rotation_rebuilds_the_identity() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador(r#"{"refresh_interval_ms": 10}"#);
        ambassador.activate();
        read_all(&mut ambassador, POD_FILES, 0, &telemetry);
        let before = ambassador.prepared().unwrap().identity.clone();
        let mut rotated = POD_FILES.to_vec();
        rotated[0] = ("/serviceaccount/token", b"token-2");
        read_all(&mut ambassador, &rotated, 1000, &telemetry);
        let after = ambassador.prepared().unwrap().identity.clone();
        assert_eq!(before.token.authorization(), "Bearer token-1");
        assert_eq!(after.token.authorization(), "Bearer token-2");
        assert!(telemetry.logged("podward: /serviceaccount/token changed"));
    }

    const POLICY_FILE: &str =
        r#"{"policy_file": "/policy/policy.json", "refresh_interval_ms": 10}"#;

    fn with_policy(policy: &'static [u8]) -> Vec<(&'static str, &'static [u8])> {
        let mut files = POD_FILES.to_vec();
        files.push(("/policy/policy.json", policy));
        files
    }

    #[test]
    fn a_policy_file_is_required_and_applied_live() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador(POLICY_FILE);
        ambassador.admit(1, 0);
        assert!(read_all(&mut ambassador, POD_FILES, 0, &telemetry).is_empty());
        assert_eq!(
            ambassador.readiness(),
            Err("podward has no policy to apply: /policy/policy.json: HTTP 404".into())
        );
        let released = read_all(
            &mut ambassador,
            &with_policy(br#"{"preset": "read-only"}"#),
            100,
            &telemetry,
        );
        assert_eq!(released, [1]);
        let policy = ambassador.prepared().unwrap().policy.clone();
        assert!(policy
            .rule_refs()
            .any(|r| r.as_str() == "read-only/default"));

        read_all(
            &mut ambassador,
            &with_policy(br#"{"preset": "own-namespace"}"#),
            1000,
            &telemetry,
        );
        let policy = ambassador.prepared().unwrap().policy.clone();
        assert!(policy
            .rule_refs()
            .any(|r| r.as_str() == "own-namespace/default"));
        assert_eq!(telemetry.counted("podward_policy_reloads_total"), 2);
    }

    #[test]
    fn a_bad_policy_update_is_refused_and_the_last_good_stays() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador(POLICY_FILE);
        ambassador.activate();
        read_all(
            &mut ambassador,
            &with_policy(br#"{"preset": "read-only"}"#),
            0,
            &telemetry,
        );
        let bad: &[u8] = br#"{"preset": "read-only", "rules": [{"name": "x", "action": "allow", "verbs": ["fetch"], "nonResourceURLs": ["*"]}]}"#;
        read_all(&mut ambassador, &with_policy(bad), 1000, &telemetry);
        let policy = ambassador.prepared().unwrap().policy.clone();
        assert!(policy.rule_refs().all(|r| r.as_str() != "rules/x"));
        assert_eq!(telemetry.counted("podward_policy_reload_failures_total"), 1);
        assert!(telemetry.logged(
            "could not use /policy/policy.json: field `policy.rules[0].verbs`: unknown verb \"fetch\""
        ));
        assert!(telemetry.logged("the last good policy stays in force"));
    }

    #[test]
    fn freshness_changes_are_logged_and_counted_once() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador(r#"{"refresh_interval_ms": 10}"#);
        ambassador.activate();
        let extended = jwt(r#"{"iat":0,"exp":31536000,"kubernetes.io":{"warnafter":3600}}"#);
        let files = [("/serviceaccount/token", extended.as_slice())];
        read_all(&mut ambassador, &files, 0, &telemetry);
        for now_s in [0, 100, 2880, 2900, 3600, 4000, 31_536_000] {
            ambassador.tick(now_s * 1000, &telemetry);
        }
        let levels: Vec<Level> = telemetry
            .logs
            .borrow()
            .iter()
            .filter(|(_, m)| m.contains("the token"))
            .map(|(level, _)| *level)
            .collect();
        assert_eq!(levels, [Level::Warn, Level::Error, Level::Error]);
        assert!(telemetry.logged("past its renewal point and ends in 720s"));
        assert!(telemetry.logged("the token is 0s past its warnafter time"));
        assert!(telemetry.logged("the token expired 10s ago"));
        assert_eq!(telemetry.counted("podward_token_stale_total"), 1);
        let gauges = telemetry.gauges.borrow();
        assert_eq!(gauges.first(), Some(&(Gauge::TokenExpirySeconds, 3600)));
        assert_eq!(gauges.get(2), Some(&(Gauge::TokenExpirySeconds, 720)));
        assert_eq!(gauges.last(), Some(&(Gauge::TokenExpirySeconds, 0)));
    }

    #[test]
    fn odd_time_claims_are_reported_once_per_token() {
        let telemetry = Recorder::default();
        let mut ambassador = ambassador("");
        ambassador.activate();
        let odd = jwt(r#"{"exp":"soon","nbf":500}"#);
        read_all(
            &mut ambassador,
            &[("/serviceaccount/token", &odd)],
            100_000,
            &telemetry,
        );
        assert!(telemetry.logged("the token's exp claim is not a number"));
        assert!(telemetry.logged("not valid for another 400s by this node's clock"));
        assert!(
            ambassador.prepared().is_some(),
            "sent anyway: the API server decides"
        );
    }
}
