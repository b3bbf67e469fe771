//! Host side of the metrics: defines podward's counters and gauges through
//! proxy-wasm and moves them. Names and tags come from [`crate::metrics`].

use crate::config::Config;
use crate::filter::Refusal;
use crate::metrics::{self, tagged, RequestSeries};
use crate::policy::RuleRef;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// Why podward answered a request itself, as a metric tag.
pub const NO_TOKEN: &str = "no_token";

pub struct Telemetry {
    token_refreshes: Option<u32>,
    token_refresh_failures: Option<u32>,
    token_expires_in: Option<u32>,
    token_stale: Option<u32>,
    /// Per file index (0 is the token, which has its own metrics).
    file_refreshes: Vec<Option<u32>>,
    file_refresh_failures: Vec<Option<u32>>,
    local_replies: HashMap<&'static str, u32>,
    denied: HashMap<String, u32>,
    requests: RequestSeries,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    hostcalls::define_metric(kind, name).ok()
}

fn add(metric: Option<u32>, value: i64) {
    if let Some(id) = metric {
        let _ = hostcalls::increment_metric(id, value);
    }
}

impl Telemetry {
    /// Defines every metric whose tags are known from the configuration, so
    /// that they are exported (at zero) before anything happens.
    pub fn new(config: &Config) -> Telemetry {
        let counter = |name: &str| define(MetricType::Counter, name);
        let files = config.files();
        // The token (index 0) is counted by its own metrics.
        let per_file = |name: &str| -> Vec<Option<u32>> {
            let identity_files = files.iter().skip(1);
            let ids = identity_files.map(|file| counter(&tagged(name, &[("file", file)])));
            std::iter::once(None).chain(ids).collect()
        };
        let reasons = [
            Refusal::HostNotAccepted,
            Refusal::Unclassifiable,
            Refusal::PolicyDenied,
            Refusal::TokenExpired,
        ]
        .map(Refusal::as_str);
        let local_replies = reasons
            .into_iter()
            .chain([NO_TOKEN])
            .filter_map(|reason| {
                let id = counter(&tagged(metrics::LOCAL_REPLIES, &[("reason", reason)]))?;
                Some((reason, id))
            })
            .collect();
        let denied = config
            .policy
            .rule_refs()
            .filter_map(|rule| {
                let id = counter(&tagged(metrics::DENIED, &[("rule", rule.as_str())]))?;
                Some((rule.to_string(), id))
            })
            .collect();
        Telemetry {
            token_refreshes: counter(metrics::TOKEN_REFRESHES),
            token_refresh_failures: counter(metrics::TOKEN_REFRESH_FAILURES),
            token_expires_in: define(MetricType::Gauge, metrics::TOKEN_EXPIRES_IN),
            token_stale: counter(metrics::TOKEN_STALE),
            file_refreshes: per_file(metrics::FILE_REFRESHES),
            file_refresh_failures: per_file(metrics::FILE_REFRESH_FAILURES),
            local_replies,
            denied,
            requests: RequestSeries::default(),
        }
    }

    /// A fetch of file `index` changed its content (`changed`) or failed.
    pub fn refreshed(&self, index: usize, changed: bool) {
        let (token, file) = if changed {
            (self.token_refreshes, &self.file_refreshes)
        } else {
            (self.token_refresh_failures, &self.file_refresh_failures)
        };
        if index == 0 {
            add(token, 1);
        } else {
            add(file.get(index).copied().flatten(), 1);
        }
    }

    pub fn token_expires_in(&self, seconds: u64) {
        if let Some(id) = self.token_expires_in {
            let _ = hostcalls::record_metric(id, seconds);
        }
    }

    pub fn token_went_stale(&self) {
        add(self.token_stale, 1);
    }

    pub fn local_reply(&self, reason: &str, rule: Option<&RuleRef>) {
        add(self.local_replies.get(reason).copied(), 1);
        if reason == Refusal::PolicyDenied.as_str() {
            if let Some(rule) = rule {
                add(self.denied.get(rule.as_str()).copied(), 1);
            }
        }
    }

    pub fn requests(&mut self) -> &mut RequestSeries {
        &mut self.requests
    }

    /// Counts a finished request of `series` with its response code.
    pub fn request_done(&mut self, series: usize, code: u64) {
        let id = self
            .requests
            .metric_id(series, code, |name| define(MetricType::Counter, name));
        add(id, 1);
    }
}
