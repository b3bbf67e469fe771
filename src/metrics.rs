//! What podward counts and logs ([`Telemetry`], implemented by each host),
//! metric names and tags, and keeping the number of series bounded.
//!
//! proxy-wasm metrics are flat names. Tags are written into the name the way
//! Istio writes them, `key=.=value;.;`, and the Envoy configs carry one
//! `stats_tags` regex per key that lifts them back out, so Prometheus sees
//! `podward_requests_total{verb="list",resource="pods",...}`.

use crate::filter::Refusal;
use crate::policy::RuleRef;
use crate::prelude::*;
use crate::request_info::RequestInfo;

/// The host's log and metrics, as the core uses them.
pub trait Telemetry {
    fn log(&self, level: Level, message: &str);
    fn count(&self, counter: Counter<'_>);
    fn gauge(&self, gauge: Gauge, value: u64);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Every counter but the per-request series (see [`RequestSeries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter<'a> {
    TokenRefreshes,
    TokenRefreshFailures,
    TokenStale,
    PolicyReloads,
    PolicyReloadFailures,
    FileRefreshes { file: &'a str },
    FileRefreshFailures { file: &'a str },
    LocalReplies { reason: Refusal },
    PolicyDenied { rule: &'a RuleRef },
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
        }
    }

    /// The tag's value, as [`COUNTERS`] names its key.
    pub fn tag_value(&self) -> Option<&str> {
        match self {
            Counter::FileRefreshes { file } | Counter::FileRefreshFailures { file } => Some(file),
            Counter::LocalReplies { reason } => Some(reason.as_str()),
            Counter::PolicyDenied { rule } => Some(rule.as_str()),
            _ => None,
        }
    }

    /// The metric's name with its tag folded in (see [`tagged`]).
    pub fn tagged_name(&self) -> String {
        let key = COUNTERS
            .iter()
            .find(|(name, _)| *name == self.name())
            .and_then(|(_, key)| *key);
        match (key, self.tag_value()) {
            (Some(key), Some(value)) => tagged(self.name(), &[(key, value)]),
            _ => self.name().into(),
        }
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

/// The request series seen so far, each with a metric id per code class,
/// defined on first use.
#[derive(Debug, Default)]
pub struct RequestSeries {
    /// (key, series index), sorted by key for binary search.
    index: Vec<(String, usize)>,
    series: Vec<Series>,
    /// Reused for lookups so that a known series costs no allocation.
    key: String,
}

#[derive(Debug)]
struct Series {
    tags: [String; 3],
    ids: [Option<u32>; CODE_CLASSES.len()],
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
        self.key.push_str(request.verb);
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
        self.series.push(Series {
            tags,
            ids: [None; CODE_CLASSES.len()],
        });
        if let Err(at) = self.index.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            self.index.insert(at, (key, index));
        }
        index
    }

    /// The (verb, group, resource) tags of a series.
    pub fn tags(&self, series: usize) -> Option<&[String; 3]> {
        self.series.get(series).map(|entry| &entry.tags)
    }

    /// The metric id of a series in one code class, defining it with
    /// `define(name)` the first time.
    pub fn metric_id(
        &mut self,
        series: usize,
        code: u64,
        define: impl FnOnce(&str) -> Option<u32>,
    ) -> Option<u32> {
        let class = code_class(code);
        let entry = self.series.get_mut(series)?;
        if let Some(id) = entry.ids.get(class).copied().flatten() {
            return Some(id);
        }
        let [verb, group, resource] = &entry.tags;
        let name = tagged(
            REQUESTS,
            &[
                ("verb", verb),
                ("group", group),
                ("resource", resource),
                ("code", CODE_CLASSES.get(class)?),
            ],
        );
        let id = define(&name)?;
        if let Some(slot) = entry.ids.get_mut(class) {
            *slot = Some(id);
        }
        Some(id)
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
        let healthz = series_of(&mut series, "GET", "/healthz");
        assert_eq!(series_of(&mut series, "GET", "/version"), healthz);
        assert_eq!(series.len(), 4);

        let mut defined = Vec::new();
        let mut define = |name: &str| {
            defined.push(name.to_string());
            Some(defined.len() as u32)
        };
        assert_eq!(series.metric_id(exec, 403, &mut define), Some(1));
        assert_eq!(
            series.metric_id(exec, 404, |_| panic!("already defined")),
            Some(1)
        );
        assert_eq!(series.metric_id(healthz, 200, &mut define), Some(2));
        assert_eq!(
            defined,
            [
                "verb=.=create;.;group=.=core;.;resource=.=pods/exec;.;code=.=4xx;.;podward_requests_total",
                "verb=.=get;.;group=.=-;.;resource=.=-;.;code=.=2xx;.;podward_requests_total",
            ]
        );
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
        let name = series.metric_id(other, 404, |name| {
            assert!(
                name.contains("group=.=other;.;resource=.=other;.;"),
                "{name}"
            );
            Some(7)
        });
        assert_eq!(name, Some(7));
    }
}
