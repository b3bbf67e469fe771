//! [`Telemetry`] through the dynamic-module ABI. Metrics are defined once,
//! with labels, when the config is created; counts gather here from every
//! thread and reach Envoy from the main thread, where a labelled increment
//! is cheapest to make and allowed at any time.

use super::abi::{self, EnvoyConfig, LogLevel, ModuleBuffer};
use crate::config::{Config, PolicySource};
use crate::filter::Refusal;
use crate::metrics::{
    sanitized, Counter, Gauge, Level, RequestSeries, Telemetry, CODE_CLASSES, COUNTERS, REQUESTS,
    REQUEST_TAGS,
};
use crate::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// Metric ids as Envoy gave them: (name, id).
struct Ids {
    counters: Vec<(&'static str, usize)>,
    requests: usize,
    expiry: usize,
}

/// Counts not yet handed to Envoy: (metric id, label values) → amount.
#[derive(Default)]
struct Pending {
    counts: Vec<((usize, Vec<String>), u64)>,
    expiry: Option<u64>,
}

impl Pending {
    fn add(&mut self, id: usize, labels: Vec<String>, amount: u64) {
        match self
            .counts
            .iter_mut()
            .find(|((i, l), _)| *i == id && *l == labels)
        {
            Some((_, total)) => *total += amount,
            None => self.counts.push(((id, labels), amount)),
        }
    }
}

pub struct NativeTelemetry {
    ids: Ids,
    pending: Mutex<Pending>,
}

/// Locks even after a panic poisoned the mutex: what it guards stays valid.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn define(config: EnvoyConfig, name: &str, labels: &[&str], gauge: bool) -> Option<usize> {
    let labels: Vec<ModuleBuffer> = labels
        .iter()
        .map(|l| ModuleBuffer::of(l.as_bytes()))
        .collect();
    let mut id = 0;
    let name = ModuleBuffer::of(name.as_bytes());
    // SAFETY: inside config creation, with buffers Envoy copies during the call.
    let result = unsafe {
        if gauge {
            abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                config,
                name,
                labels.as_ptr(),
                labels.len(),
                &mut id,
            )
        } else {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                name,
                labels.as_ptr(),
                labels.len(),
                &mut id,
            )
        }
    };
    (result == abi::METRICS_SUCCESS).then_some(id)
}

impl NativeTelemetry {
    /// Defines every metric; `None` if Envoy refuses one. The series the
    /// configuration already tells are counted at zero, so that they are
    /// exported before anything happens.
    pub fn new(envoy: EnvoyConfig, config: &Config) -> Option<NativeTelemetry> {
        let mut counters = Vec::with_capacity(COUNTERS.len());
        for (name, key) in COUNTERS {
            let labels: &[&str] = match key {
                Some(key) => core::slice::from_ref(key),
                None => &[],
            };
            counters.push((*name, define(envoy, name, labels, false)?));
        }
        let ids = Ids {
            counters,
            requests: define(envoy, REQUESTS, &REQUEST_TAGS, false)?,
            expiry: define(envoy, Gauge::TokenExpirySeconds.name(), &[], true)?,
        };
        let telemetry = NativeTelemetry {
            ids,
            pending: Mutex::new(Pending::default()),
        };
        let mut known = vec![
            Counter::TokenRefreshes,
            Counter::TokenRefreshFailures,
            Counter::TokenStale,
        ];
        let files = config.files();
        let policy_file = match &config.policy {
            PolicySource::File(path) => {
                known.extend([Counter::PolicyReloads, Counter::PolicyReloadFailures]);
                Some(path.as_str())
            }
            PolicySource::Inline(policy) => {
                known.extend(
                    policy
                        .rule_refs()
                        .map(|rule| Counter::PolicyDenied { rule }),
                );
                None
            }
        };
        for file in files.iter().skip(1).filter(|f| Some(**f) != policy_file) {
            known.extend([
                Counter::FileRefreshes { file },
                Counter::FileRefreshFailures { file },
            ]);
        }
        known.extend(Refusal::ALL.map(|reason| Counter::LocalReplies { reason }));
        for counter in known {
            telemetry.add(counter, 0);
        }
        Some(telemetry)
    }

    fn add(&self, counter: Counter<'_>, amount: u64) {
        let Some((_, id)) = self.ids.counters.iter().find(|(n, _)| *n == counter.name()) else {
            return;
        };
        let labels = counter.tag_value().map(sanitized).into_iter().collect();
        lock(&self.pending).add(*id, labels, amount);
    }

    /// Counts a finished request of `series` with its response code.
    pub fn request_done(&self, series: &RequestSeries, index: usize, code: u64) {
        let Some(tags) = series.tags(index) else {
            return;
        };
        let class = CODE_CLASSES[crate::metrics::code_class(code)];
        let labels = vec![
            sanitized(&tags[0]),
            sanitized(&tags[1]),
            sanitized(&tags[2]),
            class.to_string(),
        ];
        lock(&self.pending).add(self.ids.requests, labels, 1);
    }

    pub fn has_pending(&self) -> bool {
        let pending = lock(&self.pending);
        !pending.counts.is_empty() || pending.expiry.is_some()
    }

    /// Hands the counts gathered so far to Envoy. Main thread only.
    pub fn flush(&self, envoy: EnvoyConfig) {
        let pending = core::mem::take(&mut *lock(&self.pending));
        for ((id, labels), amount) in pending.counts {
            let values: Vec<ModuleBuffer> = labels
                .iter()
                .map(|l| ModuleBuffer::of(l.as_bytes()))
                .collect();
            // SAFETY: on the main thread, with buffers Envoy copies during the call.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    envoy,
                    id,
                    values.as_ptr(),
                    values.len(),
                    amount,
                );
            }
        }
        if let Some(value) = pending.expiry {
            // SAFETY: as above.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    envoy,
                    self.ids.expiry,
                    core::ptr::null(),
                    0,
                    value,
                );
            }
        }
    }
}

impl Telemetry for NativeTelemetry {
    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        abi::log(level, message);
    }

    fn count(&self, counter: Counter<'_>) {
        self.add(counter, 1);
    }

    fn gauge(&self, gauge: Gauge, value: u64) {
        match gauge {
            Gauge::TokenExpirySeconds => lock(&self.pending).expiry = Some(value),
        }
    }
}
