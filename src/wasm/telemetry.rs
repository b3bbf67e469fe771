//! [`Telemetry`] through proxy-wasm: Envoy's log, and metrics defined by
//! their tagged names (see [`crate::metrics`]).

use super::abi::{self, LogLevel, MetricType};
use crate::config::{Config, PolicySource};
use crate::filter::Refusal;
use crate::metrics::{Counter, Gauge, Level, RequestSeries, Telemetry};
use crate::prelude::*;
use core::cell::RefCell;

pub struct WasmTelemetry {
    /// (tagged name, metric id), defined on first use: a few dozen at most.
    ids: RefCell<Vec<(String, u32)>>,
}

impl WasmTelemetry {
    /// Defines every counter whose tags the configuration already tells, so
    /// that they are exported (at zero) before anything happens.
    pub fn new(config: &Config) -> WasmTelemetry {
        let telemetry = WasmTelemetry {
            ids: RefCell::new(Vec::new()),
        };
        let mut known = vec![
            Counter::TokenRefreshes,
            Counter::TokenRefreshFailures,
            Counter::TokenStale,
        ];
        let files = config.files();
        match &config.policy {
            PolicySource::File(policy_file) => {
                known.extend([Counter::PolicyReloads, Counter::PolicyReloadFailures]);
                let identity_files = files.iter().skip(1).filter(|f| *f != policy_file);
                known.extend(identity_files.flat_map(|file| {
                    [
                        Counter::FileRefreshes { file },
                        Counter::FileRefreshFailures { file },
                    ]
                }));
                telemetry.define_all(&known);
            }
            PolicySource::Inline(policy) => {
                known.extend(files.iter().skip(1).flat_map(|file| {
                    [
                        Counter::FileRefreshes { file },
                        Counter::FileRefreshFailures { file },
                    ]
                }));
                known.extend(
                    policy
                        .rule_refs()
                        .map(|rule| Counter::PolicyDenied { rule }),
                );
                telemetry.define_all(&known);
            }
        }
        let replies = Refusal::ALL.map(|reason| Counter::LocalReplies { reason });
        telemetry.define_all(&replies);
        let expiry = Gauge::TokenExpirySeconds;
        telemetry.id(MetricType::Gauge, expiry.name().to_string());
        telemetry
    }

    fn define_all(&self, counters: &[Counter<'_>]) {
        for counter in counters {
            self.id(MetricType::Counter, counter.tagged_name());
        }
    }

    fn id(&self, kind: MetricType, name: String) -> Option<u32> {
        let mut ids = self.ids.borrow_mut();
        if let Some((_, id)) = ids.iter().find(|(known, _)| *known == name) {
            return Some(*id);
        }
        let id = abi::define_metric(kind, &name)?;
        ids.push((name, id));
        Some(id)
    }

    /// Counts a finished request of `series` with its response code.
    pub fn request_done(&self, series: &mut RequestSeries, index: usize, code: u64) {
        let id = series.metric_id(index, code, |name| {
            abi::define_metric(MetricType::Counter, name)
        });
        if let Some(id) = id {
            abi::increment_metric(id);
        }
    }
}

impl Telemetry for WasmTelemetry {
    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        abi::log(level, message);
    }

    fn count(&self, counter: Counter<'_>) {
        if let Some(id) = self.id(MetricType::Counter, counter.tagged_name()) {
            abi::increment_metric(id);
        }
    }

    fn gauge(&self, gauge: Gauge, value: u64) {
        if let Some(id) = self.id(MetricType::Gauge, gauge.name().to_string()) {
            abi::record_metric(id, value);
        }
    }
}
