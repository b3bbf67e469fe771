//! What the sidecar knows about the pod: its token, its policy, its identity
//! files, and the identity prepared from them for every request.
//!
//! It decides when to read each file again, which content to keep, when to
//! rebuild the prepared identity, and what to log and count on the way. The
//! engine ([`crate::engine`]) feeds it the reads a host made.

use crate::config::{Config, FileRole, PolicySource};
use crate::filter::Prepared;
use crate::host::{Level, Log};
use crate::identity::{self, Sources};
use crate::metrics::{Counter, Counts, Gauge};
use crate::policy::Policy;
use crate::prelude::*;
use crate::refresh::{Refreshed, Refresher, STARTUP_RETRY_MS};
use crate::token::{Freshness, Token};
use alloc::sync::Arc;
use core::mem::discriminant;

pub struct Ambassador {
    config: Arc<Config>,
    /// The Downward API environment variables, (name, value): fixed for the
    /// pod's life, and read only when the identity is rebuilt.
    env: Vec<(String, String)>,
    refresher: Refresher,
    roles: Vec<FileRole>,
    token: Option<Token>,
    policy: Option<Arc<Policy>>,
    prepared: Option<Prepared>,
    reported_freshness: Option<Freshness>,
}

impl Ambassador {
    pub fn new(config: Arc<Config>, env: Vec<(String, String)>) -> Ambassador {
        let files = config.files();
        let roles: Vec<FileRole> = files.iter().map(|(role, _)| *role).collect();
        let required: Vec<(&str, bool)> = files
            .iter()
            .map(|(role, path)| (*path, *role != FileRole::Identity))
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
            reported_freshness: None,
            config,
        }
    }

    /// How often the engine's tick should run.
    pub fn tick_interval_ms(&self) -> u64 {
        self.config.refresh_interval_ms.min(STARTUP_RETRY_MS)
    }

    pub fn prepared(&self) -> Option<&Prepared> {
        self.prepared.as_ref()
    }

    /// The files to read now, as (index, path); each is in flight until
    /// [`Ambassador::read_done`] is called for it.
    pub fn due(&mut self, now_ms: u64) -> Vec<(usize, String)> {
        self.refresher.due(now_ms)
    }

    /// Takes a read's result: the file's content, or why there is none.
    pub fn read_done(
        &mut self,
        index: usize,
        read: Result<Vec<u8>, String>,
        now_s: u64,
        log: &dyn Log,
        counts: &mut Counts,
    ) {
        let Some(&role) = self.roles.get(index) else {
            return;
        };
        let mut new_token = None;
        let mut new_policy = None;
        let outcome = self.refresher.complete(index, read, |content| match role {
            FileRole::Token => {
                new_token = Some(Token::parse(content).map_err(|e| e.to_string())?);
                Ok(())
            }
            FileRole::Policy => {
                let policy = Policy::parse_for(content, &self.config.sidecar_configmaps);
                new_policy = Some(policy.map_err(|e| e.to_string())?);
                Ok(())
            }
            FileRole::Identity => Ok(()),
        });
        let path = self.refresher.path(index).unwrap_or_default();
        match &outcome {
            Refreshed::Unchanged => {}
            Refreshed::Changed => {
                let counter = match role {
                    FileRole::Token => Counter::TokenRefreshes,
                    FileRole::Policy => Counter::PolicyReloads,
                    FileRole::Identity => Counter::FileRefreshes { file: path },
                };
                counts.count(counter);
                log.log(Level::Info, &format!("podward: {path} changed"));
            }
            Refreshed::Failed { message, repeated } => {
                let (counter, kept) = match role {
                    FileRole::Token => (Counter::TokenRefreshFailures, self.token.is_some()),
                    FileRole::Policy => (Counter::PolicyReloadFailures, self.policy.is_some()),
                    FileRole::Identity => (Counter::FileRefreshFailures { file: path }, true),
                };
                counts.count(counter);
                if !repeated {
                    let keeping = match (role, kept) {
                        (FileRole::Policy, true) => "the last good policy stays in force",
                        (_, true) => "keeping the last good content",
                        (_, false) => "nothing to fall back on yet",
                    };
                    log.log(
                        Level::Warn,
                        &format!("podward: could not use {message}; {keeping}"),
                    );
                }
            }
        }
        if let Some(token) = new_token {
            warn_about_claims(&token, now_s, log);
            self.token = Some(token);
        }
        if let Some(policy) = new_policy {
            counts.declare_policy(&policy);
            self.policy = Some(Arc::new(policy));
        }
        // A last file's first read can make the pod's view complete without
        // changing anything, e.g. when an optional file is missing.
        if outcome == Refreshed::Changed || self.prepared.is_none() {
            self.rebuild(log);
        }
    }

    /// Whether a request would be served now; if not, why (for a probe).
    pub fn readiness(&self) -> Result<(), String> {
        match self.prepared {
            Some(_) => Ok(()),
            None => Err(self.not_ready_reason()),
        }
    }

    /// Why a request cannot be served yet: the reply to one that waited too long.
    pub fn not_ready_reason(&self) -> String {
        let failure = |role| {
            let index = self.roles.iter().position(|r| *r == role)?;
            self.refresher.failure(index)
        };
        let not_yet = "the file source has not answered yet";
        if self.token.is_none() {
            let why = failure(FileRole::Token).unwrap_or(not_yet);
            format!("podward has no service-account token to send: {why}")
        } else if self.policy.is_none() {
            let why = failure(FileRole::Policy).unwrap_or(not_yet);
            format!("podward has no policy to apply: {why}")
        } else {
            "podward has not read the pod's identity files yet".into()
        }
    }

    /// Rebuilt whenever a source changes, so requests only copy prepared headers.
    fn rebuild(&mut self, log: &dyn Log) {
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
            log.log(
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
    pub fn report_freshness(&mut self, now_s: u64, log: &dyn Log, counts: &mut Counts) {
        let Some(token) = &self.token else {
            return;
        };
        if let Some(end) = token.intended_end() {
            counts.set(Gauge::TokenExpirySeconds, end.saturating_sub(now_s));
        }
        let freshness = token.freshness(now_s, self.config.token.expiry_skew_seconds);
        let previous = self.reported_freshness.replace(freshness);
        let was = previous.unwrap_or(Freshness::Fresh);
        if discriminant(&was) == discriminant(&freshness) {
            return;
        }
        match freshness {
            Freshness::Fresh => log.log(Level::Info, "podward: the token on hand is fresh"),
            Freshness::Stale { expires_in_s } => {
                counts.count(Counter::TokenStale);
                log.log(
                    Level::Warn,
                    &format!(
                        "podward: the token is past its renewal point and ends in {expires_in_s}s; \
                         the kubelet has not replaced it"
                    ),
                );
            }
            Freshness::Overdue { overdue_for_s } => {
                if was == Freshness::Fresh {
                    counts.count(Counter::TokenStale);
                }
                log.log(
                    Level::Error,
                    &format!(
                        "podward: the token is {overdue_for_s}s past its warnafter time; the API \
                         server still accepts it but flags every request as using a stale token; \
                         the kubelet has not replaced it"
                    ),
                );
            }
            Freshness::Expired { expired_for_s } => log.log(
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
fn warn_about_claims(token: &Token, now_s: u64, log: &dyn Log) {
    if !token.claims.unreadable.is_empty() {
        log.log(
            Level::Warn,
            &format!(
                "podward: the token's {} claim is not a number; podward cannot tell its age",
                token.claims.unreadable.join(", ")
            ),
        );
    }
    if let Some(nbf) = token.claims.nbf.filter(|nbf| *nbf > now_s) {
        // Sent anyway: the API server judges nbf by its own clock.
        log.log(
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
    use crate::metrics::Value;
    use std::cell::RefCell;

    /// Records what the core logged and counted.
    #[derive(Default)]
    struct Recorder {
        logs: RefCell<Vec<(Level, String)>>,
        counts: RefCell<Counts>,
        drained: RefCell<Vec<(String, Value)>>,
    }

    impl Log for Recorder {
        fn log(&self, level: Level, message: &str) {
            self.logs.borrow_mut().push((level, message.to_string()));
        }
    }

    impl Recorder {
        fn logged(&self, text: &str) -> bool {
            self.logs.borrow().iter().any(|(_, m)| m.contains(text))
        }
        /// Every count so far, as (tagged name, value).
        fn drained(&self) -> std::cell::RefMut<'_, Vec<(String, Value)>> {
            let mut drained = self.drained.borrow_mut();
            self.counts
                .borrow_mut()
                .drain(&mut |sample| drained.push((sample.tagged_name(), sample.value)));
            drained
        }
        /// The sum of every count of `name` (a tagged name) so far.
        fn counted(&self, name: &str) -> u64 {
            let drained = self.drained();
            let counts = drained.iter().filter(|(n, _)| n == name);
            counts
                .map(|(_, value)| match value {
                    Value::Add(n) => *n,
                    Value::Set(_) => 0,
                })
                .sum()
        }
        fn gauges(&self) -> Vec<u64> {
            let drained = self.drained();
            drained
                .iter()
                .filter_map(|(_, value)| match value {
                    Value::Set(n) => Some(*n),
                    Value::Add(_) => None,
                })
                .collect()
        }
    }

    fn ambassador(config: &str) -> Ambassador {
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
        ambassador: &mut Ambassador,
        files: &[(&str, &[u8])],
        now_ms: u64,
        recorder: &Recorder,
    ) {
        for (index, path) in ambassador.due(now_ms) {
            let read = files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, content)| content.to_vec())
                .ok_or_else(|| "HTTP 404".to_string());
            let mut counts = recorder.counts.borrow_mut();
            ambassador.read_done(index, read, now_ms / 1000, recorder, &mut counts);
        }
    }

    const POD_FILES: &[(&str, &[u8])] = &[
        ("/serviceaccount/token", b"token-1"),
        ("/podinfo/labels", b"app=\"web\""),
        ("/podinfo/annotations", b""),
    ];

    #[test]
    fn a_missing_optional_file_does_not_hold_requests_but_its_header_is_reported() {
        let recorder = Recorder::default();
        let mut ambassador = ambassador("");
        read_all(&mut ambassador, &POD_FILES[..2], 0, &recorder);
        assert!(ambassador.prepared().is_some());
        assert!(recorder.logged(
            "header x-pod-annotations not sent: file /podinfo/annotations could not be read"
        ));
    }

    #[test]
    fn a_bad_token_read_keeps_the_last_good_token_and_warns_once() {
        let recorder = Recorder::default();
        let mut ambassador = ambassador(r#"{"refresh_interval_ms": 10}"#);
        read_all(&mut ambassador, POD_FILES, 0, &recorder);
        for now in [1000, 2000] {
            read_all(
                &mut ambassador,
                &[("/serviceaccount/token", b"two words")],
                now,
                &recorder,
            );
        }
        let prepared = ambassador.prepared().unwrap();
        assert_eq!(prepared.identity.token.authorization(), "Bearer token-1");
        assert_eq!(recorder.counted("podward_token_refresh_failures_total"), 2);
        let warnings: Vec<_> = recorder
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
        assert!(!recorder.logged("two words"));
    }

    #[test]
    fn a_rotation_rebuilds_the_identity() {
        let recorder = Recorder::default();
        let mut ambassador = ambassador(r#"{"refresh_interval_ms": 10}"#);
        read_all(&mut ambassador, POD_FILES, 0, &recorder);
        let before = ambassador.prepared().unwrap().identity.clone();
        let mut rotated = POD_FILES.to_vec();
        rotated[0] = ("/serviceaccount/token", b"token-2");
        read_all(&mut ambassador, &rotated, 1000, &recorder);
        let after = ambassador.prepared().unwrap().identity.clone();
        assert_eq!(before.token.authorization(), "Bearer token-1");
        assert_eq!(after.token.authorization(), "Bearer token-2");
        assert!(recorder.logged("podward: /serviceaccount/token changed"));
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
        let recorder = Recorder::default();
        let mut ambassador = ambassador(POLICY_FILE);
        read_all(&mut ambassador, POD_FILES, 0, &recorder);
        assert!(ambassador.prepared().is_none());
        assert_eq!(
            ambassador.readiness(),
            Err("podward has no policy to apply: /policy/policy.json: HTTP 404".into())
        );
        read_all(
            &mut ambassador,
            &with_policy(br#"{"preset": "read-only"}"#),
            100,
            &recorder,
        );
        let policy = ambassador.prepared().unwrap().policy.clone();
        assert!(policy
            .rule_refs()
            .any(|r| r.as_str() == "read-only/default"));

        read_all(
            &mut ambassador,
            &with_policy(br#"{"preset": "own-namespace"}"#),
            1000,
            &recorder,
        );
        let policy = ambassador.prepared().unwrap().policy.clone();
        assert!(policy
            .rule_refs()
            .any(|r| r.as_str() == "own-namespace/default"));
        assert_eq!(recorder.counted("podward_policy_reloads_total"), 2);
    }

    #[test]
    fn a_bad_policy_update_is_refused_and_the_last_good_stays() {
        let recorder = Recorder::default();
        let mut ambassador = ambassador(POLICY_FILE);
        read_all(
            &mut ambassador,
            &with_policy(br#"{"preset": "read-only"}"#),
            0,
            &recorder,
        );
        let bad: &[u8] = br#"{"preset": "read-only", "rules": [{"name": "x", "action": "allow", "verbs": ["fetch"], "nonResourceURLs": ["*"]}]}"#;
        read_all(&mut ambassador, &with_policy(bad), 1000, &recorder);
        let policy = ambassador.prepared().unwrap().policy.clone();
        assert!(policy.rule_refs().all(|r| r.as_str() != "rules/x"));
        assert_eq!(recorder.counted("podward_policy_reload_failures_total"), 1);
        assert!(recorder.logged(
            "could not use /policy/policy.json: field `policy.rules[0].verbs`: unknown verb \"fetch\""
        ));
        assert!(recorder.logged("the last good policy stays in force"));
    }

    #[test]
    fn freshness_changes_are_logged_and_counted_once() {
        let recorder = Recorder::default();
        let mut ambassador = ambassador(r#"{"refresh_interval_ms": 10}"#);
        let extended = jwt(r#"{"iat":0,"exp":31536000,"kubernetes.io":{"warnafter":3600}}"#);
        let files = [("/serviceaccount/token", extended.as_slice())];
        read_all(&mut ambassador, &files, 0, &recorder);
        for now_s in [0, 100, 2880, 2900, 3600, 4000, 31_536_000] {
            let mut counts = recorder.counts.borrow_mut();
            ambassador.report_freshness(now_s, &recorder, &mut counts);
            drop(counts);
            recorder.counted("");
        }
        let levels: Vec<Level> = recorder
            .logs
            .borrow()
            .iter()
            .filter(|(_, m)| m.contains("the token"))
            .map(|(level, _)| *level)
            .collect();
        assert_eq!(levels, [Level::Warn, Level::Error, Level::Error]);
        assert!(recorder.logged("past its renewal point and ends in 720s"));
        assert!(recorder.logged("the token is 0s past its warnafter time"));
        assert!(recorder.logged("the token expired 10s ago"));
        assert_eq!(recorder.counted("podward_token_stale_total"), 1);
        let gauges = recorder.gauges();
        assert_eq!(gauges.first(), Some(&3600));
        assert_eq!(gauges.get(2), Some(&720));
        assert_eq!(gauges.last(), Some(&0));
    }

    #[test]
    fn odd_time_claims_are_reported_once_per_token() {
        let recorder = Recorder::default();
        let mut ambassador = ambassador("");
        let odd = jwt(r#"{"exp":"soon","nbf":500}"#);
        read_all(
            &mut ambassador,
            &[("/serviceaccount/token", &odd)],
            100_000,
            &recorder,
        );
        assert!(recorder.logged("the token's exp claim is not a number"));
        assert!(recorder.logged("not valid for another 400s by this node's clock"));
        assert!(
            ambassador.prepared().is_some(),
            "sent anyway: the API server decides"
        );
    }
}
