//! What podward counts: metric names and tags, the counts gathered between
//! two flushes, and keeping the number of series bounded.
//!
//! The core counts; a host only hands the counts to Envoy when it flushes
//! them (on its tick), so a request costs no metric host call. proxy-wasm
//! metrics are flat names: tags are written into the name the way Istio
//! writes them, `key=.=value;.;`, and the Envoy configs carry one
//! `stats_tags` regex per key that lifts them back out, so Prometheus sees
//! `podward_requests_total{verb="list",resource="pods",...}`. The native
//! module defines the same metrics with labels.

use crate::config::{Config, FileRole, PolicySource};
use crate::policy::{Policy, RuleRef};
use crate::prelude::*;
use crate::request_info::RequestInfo;

/// Why podward answered a request itself: a bounded set, for metrics and the
/// access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HostNotAccepted,
    Unclassifiable,
    PolicyDenied,
    TokenExpired,
    /// No token (or no policy) yet when the wait for it ran out.
    NoToken,
    /// The host would not hand over or take back the request's headers.
    HostError,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::HostNotAccepted,
        Refusal::Unclassifiable,
        Refusal::PolicyDenied,
        Refusal::TokenExpired,
        Refusal::NoToken,
        Refusal::HostError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HostNotAccepted => "host_not_accepted",
            Refusal::Unclassifiable => "unclassifiable",
            Refusal::PolicyDenied => "policy_denied",
            Refusal::TokenExpired => "token_expired",
            Refusal::NoToken => "no_token",
            Refusal::HostError => "host_error",
        }
    }
}

/// Every counter but the per-request series (see [`RequestSeries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter<'a> {
    TokenRefreshes,
    TokenRefreshFailures,
    TokenStale,
    PolicyReloads,
    PolicyReloadFailures,
    FileRefreshes {
        file: &'a str,
    },
    FileRefreshFailures {
        file: &'a str,
    },
    LocalReplies {
        reason: Refusal,
    },
    PolicyDenied {
        rule: &'a RuleRef,
    },
    /// Forwarded, but a dry-run deny rule would have refused it.
    PolicyDryRunDenied {
        rule: &'a RuleRef,
    },
}

/// Every counter but the request series: its name, and its tag key if it has one.
pub const COUNTERS: &[(&str, Option<&str>)] = &[
    (TOKEN_REFRESHES, None),
    (TOKEN_REFRESH_FAILURES, None),
    (TOKEN_STALE, None),
    (POLICY_RELOADS, None),
    (POLICY_RELOAD_FAILURES, None),
    (FILE_REFRESHES, Some("file")),
    (FILE_REFRESH_FAILURES, Some("file")),
    (LOCAL_REPLIES, Some("reason")),
    (DENIED, Some("rule")),
    (DRY_RUN_DENIED, Some("rule")),
];

impl Counter<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Counter::TokenRefreshes => TOKEN_REFRESHES,
            Counter::TokenRefreshFailures => TOKEN_REFRESH_FAILURES,
            Counter::TokenStale => TOKEN_STALE,
            Counter::PolicyReloads => POLICY_RELOADS,
            Counter::PolicyReloadFailures => POLICY_RELOAD_FAILURES,
            Counter::FileRefreshes { .. } => FILE_REFRESHES,
            Counter::FileRefreshFailures { .. } => FILE_REFRESH_FAILURES,
            Counter::LocalReplies { .. } => LOCAL_REPLIES,
            Counter::PolicyDenied { .. } => DENIED,
            Counter::PolicyDryRunDenied { .. } => DRY_RUN_DENIED,
        }
    }

    /// The tag, as [`COUNTERS`] names its key.
    pub fn tag(&self) -> Option<(&'static str, &str)> {
        let key = COUNTERS
            .iter()
            .find(|(name, _)| *name == self.name())
            .and_then(|(_, key)| *key)?;
        let value = match self {
            Counter::FileRefreshes { file } | Counter::FileRefreshFailures { file } => file,
            Counter::LocalReplies { reason } => reason.as_str(),
            Counter::PolicyDenied { rule } | Counter::PolicyDryRunDenied { rule } => rule.as_str(),
            _ => return None,
        };
        Some((key, value))
    }
}

/// A counter series: its name, and its tag as (key, value).
type Series = (&'static str, Option<(&'static str, String)>);

/// Counts gathered since the host last flushed them.
#[derive(Debug, Default)]
pub struct Counts {
    /// Each series and its amount; 0 declares a series before it counts.
    counters: Vec<(Series, u64)>,
    expiry: Option<u64>,
}

impl Counts {
    pub fn count(&mut self, counter: Counter<'_>) {
        self.add(counter, 1);
    }

    fn add(&mut self, counter: Counter<'_>, amount: u64) {
        let name = counter.name();
        let tag = counter.tag();
        let known = self
            .counters
            .iter_mut()
            .find(|((n, t), _)| *n == name && t.as_ref().map(|(k, v)| (*k, v.as_str())) == tag);
        match known {
            Some((_, total)) => *total += amount,
            None => {
                let tag = tag.map(|(key, value)| (key, value.to_string()));
                self.counters.push(((name, tag), amount));
            }
        }
    }

    pub fn set(&mut self, gauge: Gauge, value: u64) {
        match gauge {
            Gauge::TokenExpirySeconds => self.expiry = Some(value),
        }
    }

    /// Counts every series the configuration already tells at zero, so that
    /// each is exported before anything happens.
    pub fn declare(&mut self, config: &Config) {
        let mut known = vec![
            Counter::TokenRefreshes,
            Counter::TokenRefreshFailures,
            Counter::TokenStale,
        ];
        let files = config.files();
        for (role, file) in &files {
            match role {
                FileRole::Token => {}
                FileRole::Policy => {
                    known.extend([Counter::PolicyReloads, Counter::PolicyReloadFailures])
                }
                FileRole::Identity => known.extend([
                    Counter::FileRefreshes { file },
                    Counter::FileRefreshFailures { file },
                ]),
            }
        }
        known.extend(Refusal::ALL.map(|reason| Counter::LocalReplies { reason }));
        for counter in known {
            self.add(counter, 0);
        }
        if let PolicySource::Inline(policy) = &config.policy {
            self.declare_policy(policy);
        }
    }

    /// Counts at zero every series a policy's decisions can count under: a
    /// policy file's when it is taken.
    pub fn declare_policy(&mut self, policy: &Policy) {
        for rule in policy.rule_refs() {
            self.add(Counter::PolicyDenied { rule }, 0);
        }
        for rule in policy.dry_run_refs() {
            self.add(Counter::PolicyDryRunDenied { rule }, 0);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.expiry.is_none()
    }

    /// Hands every count gathered to `sink` and starts again from none.
    pub fn drain(&mut self, sink: &mut impl FnMut(Sample<'_>)) {
        for ((name, tag), amount) in core::mem::take(&mut self.counters) {
            let tags: Vec<(&str, &str)> = tag.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sink(Sample {
                name,
                tags: &tags,
                value: Value::Add(amount),
            });
        }
        if let Some(value) = self.expiry.take() {
            sink(Sample {
                name: TOKEN_EXPIRES_IN,
                tags: &[],
                value: Value::Set(value),
            });
        }
    }
}

/// One metric's change since the last flush, as a host hands it to Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample<'a> {
    pub name: &'static str,
    /// (key, value), in the order the metric's labels are defined.
    pub tags: &'a [(&'static str, &'a str)],
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A counter goes up by this much (0: it is only declared).
    Add(u64),
    /// A gauge is set to this.
    Set(u64),
}

impl Sample<'_> {
    /// The metric's name with its tags folded in (see [`tagged`]).
    pub fn tagged_name(&self) -> String {
        tagged(self.name, self.tags)
    }

    /// The tag values as labels carry them (see [`sanitized`]).
    pub fn label_values(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|(_, value)| sanitized(value))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Seconds until the token's intended end ([`crate::token::Token::intended_end`]).
    TokenExpirySeconds,
}

impl Gauge {
    pub fn name(self) -> &'static str {
        match self {
            Gauge::TokenExpirySeconds => TOKEN_EXPIRES_IN,
        }
    }
}

pub const REQUESTS: &str = "podward_requests_total";
pub const DENIED: &str = "podward_policy_denied_total";
pub const DRY_RUN_DENIED: &str = "podward_policy_dry_run_denied_total";
pub const LOCAL_REPLIES: &str = "podward_local_replies_total";
pub const TOKEN_REFRESHES: &str = "podward_token_refreshes_total";
pub const TOKEN_REFRESH_FAILURES: &str = "podward_token_refresh_failures_total";
pub const TOKEN_EXPIRES_IN: &str = "podward_token_expiry_seconds";
pub const TOKEN_STALE: &str = "podward_token_stale_total";
pub const FILE_REFRESHES: &str = "podward_file_refreshes_total";
pub const FILE_REFRESH_FAILURES: &str = "podward_file_refresh_failures_total";
pub const POLICY_RELOADS: &str = "podward_policy_reloads_total";
pub const POLICY_RELOAD_FAILURES: &str = "podward_policy_reload_failures_total";

/// The tags of [`REQUESTS`], in the order of their values.
pub const REQUEST_TAGS: [&str; 4] = ["verb", "group", "resource", "code"];

/// Every tag key podward uses; the Envoy configs get one extraction regex each.
pub const TAG_KEYS: &[&str] = &[
    "verb", "group", "resource", "code", "rule", "reason", "file",
];

/// Beyond this many (verb, group, resource) series, requests count as
/// `resource="other"`: an app requesting made-up paths must not grow Envoy's
/// stats without bound.
pub const MAX_REQUEST_SERIES: usize = 200;

/// A metric name with its tags folded in.
pub fn tagged(name: &str, tags: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in tags {
        out.push_str(key);
        out.push_str("=.=");
        push_sanitized(&mut out, value);
        out.push_str(";.;");
    }
    out.push_str(name);
    out
}

/// A tag value as podward exports it (see [`push_sanitized`]).
pub fn sanitized(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_sanitized(&mut out, value);
    out
}

/// Tag values keep only characters that cannot break the `=.=`/`;.;` framing.
fn push_sanitized(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    out.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || "-_./".contains(c) {
            c
        } else {
            '_'
        }
    }));
}

/// `2xx` and friends: the status code classes a request is counted under.
pub const CODE_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub fn code_class(code: u64) -> usize {
    match code {
        100..=599 => (code / 100 - 1) as usize,
        _ => CODE_CLASSES.len() - 1,
    }
}

/// The request series seen so far, each with its requests per code class
/// since the last flush.
#[derive(Debug, Default)]
pub struct RequestSeries {
    /// (key, series index), sorted by key for binary search.
    index: Vec<(String, usize)>,
    series: Vec<RequestCounts>,
    /// Reused for lookups so that a known series costs no allocation.
    key: String,
}

#[derive(Debug)]
struct RequestCounts {
    tags: [String; 3],
    pending: [u64; CODE_CLASSES.len()],
}

impl RequestSeries {
    /// The series a request belongs to.
    pub fn series_for(&mut self, request: &RequestInfo) -> usize {
        let group = if request.is_resource_request && request.api_group.is_empty() {
            "core"
        } else {
            request.api_group
        };
        self.key.clear();
        self.key.push_str(request.reported_verb());
        self.key.push(' ');
        self.key.push_str(group);
        self.key.push(' ');
        // Non-resource requests are one series per verb: paths are unbounded.
        if request.is_resource_request {
            self.key.push_str(request.resource);
            if !request.subresource.is_empty() {
                self.key.push('/');
                self.key.push_str(request.subresource);
            }
        }
        if let Some(index) = self.find(&self.key) {
            return index;
        }
        let mut parts = self.key.splitn(3, ' ').map(str::to_owned);
        let mut tags = [(); 3].map(|_| parts.next().unwrap_or_default());
        if self.series.len() >= MAX_REQUEST_SERIES {
            // Past the cap a new key gets no entry of its own: the map stays
            // bounded by the cap plus one `other` series per verb.
            tags[1] = "other".into();
            tags[2] = "other".into();
            let key = tags.join(" ");
            if let Some(index) = self.find(&key) {
                return index;
            }
            return self.push(key, tags);
        }
        let key = self.key.clone();
        self.push(key, tags)
    }

    fn find(&self, key: &str) -> Option<usize> {
        let at = self
            .index
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()?;
        self.index.get(at).map(|(_, index)| *index)
    }

    fn push(&mut self, key: String, tags: [String; 3]) -> usize {
        let index = self.series.len();
        self.series.push(RequestCounts {
            tags,
            pending: [0; CODE_CLASSES.len()],
        });
        if let Err(at) = self.index.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            self.index.insert(at, (key, index));
        }
        index
    }

    /// Counts a finished request of `series` with its response code.
    pub fn count(&mut self, series: usize, code: u64) {
        if let Some(entry) = self.series.get_mut(series) {
            entry.pending[code_class(code)] += 1;
        }
    }

    /// Hands the requests counted since the last drain to `sink`, one
    /// sample per series and code class.
    pub fn drain(&mut self, sink: &mut impl FnMut(Sample<'_>)) {
        for entry in &mut self.series {
            for (class, pending) in entry.pending.iter_mut().enumerate() {
                if *pending == 0 {
                    continue;
                }
                let [verb, group, resource] = &entry.tags;
                let tags = [
                    ("verb", verb.as_str()),
                    ("group", group.as_str()),
                    ("resource", resource.as_str()),
                    ("code", CODE_CLASSES[class]),
                ];
                sink(Sample {
                    name: REQUESTS,
                    tags: &tags,
                    value: Value::Add(core::mem::take(pending)),
                });
            }
        }
    }

    pub fn has_pending(&self) -> bool {
        self.series
            .iter()
            .any(|entry| entry.pending.iter().any(|n| *n > 0))
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Keys remembered, for the test that the map stays bounded.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::classify;

    #[test]
    fn tags_are_folded_into_the_name() {
        assert_eq!(
            tagged(
                REQUESTS,
                &[("verb", "list"), ("group", "core"), ("resource", "pods")]
            ),
            "verb=.=list;.;group=.=core;.;resource=.=pods;.;podward_requests_total"
        );
        assert_eq!(
            tagged("m", &[("rule", "rules/a;.;b c")]),
            "rule=.=rules/a_._b_c;.;m"
        );
        assert_eq!(tagged("m", &[("group", "")]), "group=.=-;.;m");
    }

    #[test]
    fn code_classes() {
        let cases = [
            (101, "1xx"),
            (200, "2xx"),
            (304, "3xx"),
            (403, "4xx"),
            (503, "5xx"),
            (0, "other"),
            (600, "other"),
        ];
        for (code, class) in cases {
            assert_eq!(CODE_CLASSES[code_class(code)], class, "{code}");
        }
    }

    fn series_of(series: &mut RequestSeries, method: &str, path: &str) -> usize {
        series.series_for(&classify(method, path).unwrap())
    }

    #[test]
    fn requests_share_a_series_per_verb_group_and_resource() {
        let mut series = RequestSeries::default();
        let pods = series_of(&mut series, "GET", "/api/v1/namespaces/a/pods");
        assert_eq!(
            series_of(&mut series, "GET", "/api/v1/namespaces/b/pods"),
            pods
        );
        assert_ne!(
            series_of(&mut series, "GET", "/api/v1/namespaces/b/pods/x"),
            pods
        );
        let exec = series_of(&mut series, "POST", "/api/v1/namespaces/a/pods/x/exec");
        // A WebSocket exec's GET counts as the create it is authorized as.
        assert_eq!(
            series_of(&mut series, "GET", "/api/v1/namespaces/b/pods/y/exec"),
            exec
        );
        let healthz = series_of(&mut series, "GET", "/healthz");
        assert_eq!(series_of(&mut series, "GET", "/version"), healthz);
        assert_eq!(series.len(), 4);

        series.count(exec, 403);
        series.count(exec, 404);
        series.count(healthz, 200);
        assert_eq!(
            drained(&mut series),
            [
                ("verb=.=create;.;group=.=core;.;resource=.=pods/exec;.;code=.=4xx;.;podward_requests_total".to_string(), Value::Add(2)),
                ("verb=.=get;.;group=.=-;.;resource=.=-;.;code=.=2xx;.;podward_requests_total".to_string(), Value::Add(1)),
            ]
        );
        assert!(!series.has_pending());
        assert_eq!(
            drained(&mut series),
            [],
            "a drain hands each count over once"
        );
    }

    fn drained(series: &mut RequestSeries) -> Vec<(String, Value)> {
        let mut samples = Vec::new();
        series.drain(&mut |sample| samples.push((sample.tagged_name(), sample.value)));
        samples
    }

    #[test]
    fn the_number_of_series_is_capped() {
        let mut series = RequestSeries::default();
        for i in 0..(MAX_REQUEST_SERIES + 50) {
            series_of(&mut series, "GET", &format!("/apis/made.up/v1/thing{i}"));
        }
        assert_eq!(series.len(), MAX_REQUEST_SERIES + 1);
        for i in 0..50_000 {
            series_of(&mut series, "GET", &format!("/apis/made.up/v1/more{i}"));
        }
        assert_eq!(series.len(), MAX_REQUEST_SERIES + 1);
        assert_eq!(
            series.keys(),
            MAX_REQUEST_SERIES + 1,
            "no alias per made-up key"
        );
        let other = series_of(&mut series, "GET", "/apis/made.up/v1/another");
        series.count(other, 404);
        let samples = drained(&mut series);
        assert_eq!(samples.len(), 1);
        assert!(
            samples[0].0.contains("group=.=other;.;resource=.=other;.;"),
            "{samples:?}"
        );
    }

    #[test]
    fn counts_gather_until_drained_and_declared_series_start_at_zero() {
        let config = Config::parse(br#"{"policy": {"preset": "read-only"}}"#).unwrap();
        let mut counts = Counts::default();
        counts.declare(&config);
        counts.count(Counter::LocalReplies {
            reason: Refusal::NoToken,
        });
        counts.count(Counter::LocalReplies {
            reason: Refusal::NoToken,
        });
        counts.set(Gauge::TokenExpirySeconds, 60);
        let mut samples = Vec::new();
        counts.drain(&mut |sample| {
            samples.push((sample.tagged_name(), sample.label_values(), sample.value))
        });
        let find = |name: &str| samples.iter().find(|(n, _, _)| n == name).cloned();
        assert_eq!(
            find("reason=.=no_token;.;podward_local_replies_total"),
            Some((
                "reason=.=no_token;.;podward_local_replies_total".into(),
                vec!["no_token".to_string()],
                Value::Add(2)
            ))
        );
        assert_eq!(
            find("podward_token_refreshes_total").map(|s| s.2),
            Some(Value::Add(0))
        );
        assert_eq!(
            find("rule=.=read-only/default;.;podward_policy_denied_total").map(|s| s.2),
            Some(Value::Add(0))
        );
        assert_eq!(
            find("podward_token_expiry_seconds").map(|s| s.2),
            Some(Value::Set(60))
        );
        assert!(counts.is_empty());
    }
}
