//! Prometheus metrics: each component serves `/metrics` (classic text format, histograms with
//! buckets) on its own address from `[telemetry.metrics]`, and records the metrics named here.
//! Label values are bounded: stage and runner names, channels, providers (from the config),
//! gRPC codes, outcomes — never a user, tenant or notification id.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;
use serde::Deserialize;

use crate::TelemetryError;

/// Ingress requests, by gRPC code (`code`: `OK`, `INVALID_ARGUMENT`, …). Counter.
pub const INGRESS_REQUESTS: &str = "herald_ingress_requests_total";
/// Ingress request latency in seconds, by code. Histogram.
pub const INGRESS_SECONDS: &str = "herald_ingress_request_duration_seconds";
/// Query service requests by RPC (`rpc`) and code. Counter.
pub const QUERY_REQUESTS: &str = "herald_query_requests_total";
/// Query service request latency in seconds, by RPC and code. Histogram.
pub const QUERY_SECONDS: &str = "herald_query_request_duration_seconds";
/// Records a runner (`stage`: its name, e.g. `enrich`, `deliver.sms`) consumed. Counter.
pub const STAGE_IN: &str = "herald_stage_records_in_total";
/// Records a runner produced (acknowledged, or committed with its transaction). Counter.
pub const STAGE_OUT: &str = "herald_stage_records_out_total";
/// Records a runner sent to the dead-letter topic. Counter.
pub const STAGE_DEAD_LETTERS: &str = "herald_stage_dead_letters_total";
/// Retries of failed processing. Counter.
pub const STAGE_RETRIES: &str = "herald_stage_retries_total";
/// Transactions committed (exactly-once). Counter.
pub const STAGE_COMMITS: &str = "herald_stage_commits_total";
/// Transactions aborted (exactly-once). Counter.
pub const STAGE_ABORTS: &str = "herald_stage_aborts_total";
/// Time to process one batch of records handed over together, in seconds. Histogram.
pub const STAGE_BATCH_SECONDS: &str = "herald_stage_batch_duration_seconds";
/// Time to commit (exactly-once: the transaction; at-least-once: acknowledgements and offsets),
/// in seconds. The stage reads nothing meanwhile. Histogram.
pub const STAGE_COMMIT_SECONDS: &str = "herald_stage_commit_duration_seconds";
/// From acceptance by the ingress to a delivery's final outcome, in seconds, by `channel` and
/// `outcome` (`delivered`, `failed`, `invalid_token`, …). Histogram.
pub const DELIVERY_SECONDS: &str = "herald_delivery_latency_seconds";
/// Calls to providers by `provider` and `outcome` (`sent`, `retry`, `invalid`, `failed`).
/// Counter.
pub const PROVIDER_CALLS: &str = "herald_provider_calls_total";
/// Records waiting in an outbox (`outbox`: `ingress`, `query-engagement`). Gauge.
pub const OUTBOX_RECORDS: &str = "herald_outbox_records";
/// Age in seconds of the oldest record waiting in an outbox (0 when empty). Gauge.
pub const OUTBOX_OLDEST_SECONDS: &str = "herald_outbox_oldest_age_seconds";
/// Records of a partition not yet consumed by a group: high watermark − committed offset
/// (`group`, `topic`, `partition`). Gauge, from the lag exporter.
pub const CONSUMER_LAG: &str = "herald_consumer_lag";
/// Unix time of the lag exporter's last complete collection. Gauge.
pub const LAG_COLLECTED_AT: &str = "herald_consumer_lag_collected_timestamp_seconds";
/// Lag collections that failed (the broker did not answer). Counter.
pub const LAG_ERRORS: &str = "herald_consumer_lag_errors_total";

/// Every metric Herald exports, for documentation and the dashboards' check.
pub const ALL: &[&str] = &[
    INGRESS_REQUESTS,
    INGRESS_SECONDS,
    QUERY_REQUESTS,
    QUERY_SECONDS,
    STAGE_IN,
    STAGE_OUT,
    STAGE_DEAD_LETTERS,
    STAGE_RETRIES,
    STAGE_COMMITS,
    STAGE_ABORTS,
    STAGE_BATCH_SECONDS,
    STAGE_COMMIT_SECONDS,
    DELIVERY_SECONDS,
    PROVIDER_CALLS,
    OUTBOX_RECORDS,
    OUTBOX_OLDEST_SECONDS,
    CONSUMER_LAG,
    LAG_COLLECTED_AT,
    LAG_ERRORS,
];

/// Histogram buckets in seconds: 1 ms to 10 min, for request latencies and end-to-end delays.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// `[telemetry.metrics]`: the `host:port` each component serves `/metrics` on; `""` for none.
/// A component that cannot bind its address says so in its log and runs on without metrics
/// (metrics never stop deliveries).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct MetricsListen {
    pub ingress: String,
    pub query: String,
    pub enrich: String,
    pub rate_limit: String,
    pub fan_out: String,
    pub deliver: String,
    pub store_writer: String,
    pub lag_exporter: String,
}

impl Default for MetricsListen {
    fn default() -> Self {
        let at = |port: u16| format!("127.0.0.1:{port}");
        MetricsListen {
            ingress: at(9461),
            query: at(9462),
            enrich: at(9463),
            rate_limit: at(9464),
            fan_out: at(9465),
            deliver: at(9466),
            store_writer: at(9467),
            lag_exporter: at(9468),
        }
    }
}

impl MetricsListen {
    /// Every component's (name, address), `""` included.
    pub fn all(&self) -> [(&'static str, &str); 8] {
        [
            ("ingress", &self.ingress),
            ("query", &self.query),
            ("enrich", &self.enrich),
            ("rate-limit", &self.rate_limit),
            ("fan-out", &self.fan_out),
            ("deliver", &self.deliver),
            ("store-writer", &self.store_writer),
            ("lag-exporter", &self.lag_exporter),
        ]
    }

    /// The address of `component` (named as in [`MetricsListen::all`]), unless it has none.
    pub fn of(&self, component: &str) -> Option<&str> {
        self.all()
            .into_iter()
            .find(|(name, _)| *name == component)
            .map(|(_, addr)| addr)
            .filter(|addr| !addr.is_empty())
    }

    pub(crate) fn validate(&self) -> Result<(), TelemetryError> {
        for (name, addr) in self.all() {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                return Err(TelemetryError::Invalid(format!(
                    "metrics.{} = {addr:?} is not host:port",
                    name.replace('-', "_")
                )));
            }
        }
        Ok(())
    }
}

/// Serves this process's metrics as `component` on its configured address (if any); returns
/// the address served. Must run inside the Tokio runtime.
pub fn serve(component: &str, listen: &MetricsListen) -> Option<SocketAddr> {
    let addr: SocketAddr = listen.of(component)?.parse().ok()?;
    let builder = match PrometheusBuilder::new()
        .with_http_listener(addr)
        .add_global_label("component", component)
        // Histogram observations wait in memory until an upkeep folds them in: keep that short.
        .upkeep_timeout(std::time::Duration::from_secs(1))
        .set_buckets(BUCKETS)
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%e, "metrics are not served");
            return None;
        }
    };
    match builder.install() {
        Ok(()) => {
            tracing::info!(%addr, "metrics served at http://{addr}/metrics");
            Some(addr)
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "metrics are not served (the address is taken?); running on without them");
            None
        }
    }
}

/// The gRPC status codes' names, by number.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// One RPC's request counter and latency histogram per gRPC code, registered once (the
/// ingress's hot path looks nothing up).
pub struct RequestMeters {
    by_code: Vec<(::metrics::Counter, ::metrics::Histogram)>,
}

impl RequestMeters {
    /// Meters named `requests` and `seconds`, labelled with `rpc` and the code.
    pub fn new(requests: &'static str, seconds: &'static str, rpc: &'static str) -> Self {
        let by_code = GRPC_CODES
            .iter()
            .map(|code| {
                (
                    ::metrics::counter!(requests, "rpc" => rpc, "code" => *code),
                    ::metrics::histogram!(seconds, "rpc" => rpc, "code" => *code),
                )
            })
            .collect();
        RequestMeters { by_code }
    }

    /// Counts one request that ended with gRPC code `code` (a number) after `took`.
    pub fn observe(&self, code: i32, took: std::time::Duration) {
        let at = usize::try_from(code).unwrap_or(2).min(GRPC_CODES.len() - 1);
        if let Some((count, time)) = self.by_code.get(at) {
            count.increment(1);
            time.record(took.as_secs_f64());
        }
    }
}

/// The cumulative counts of one runner, published as its `herald_stage_*` counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StageCounts {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_letters: u64,
    pub retries: u64,
    pub commits: u64,
    pub aborts: u64,
}

/// The handles of one runner's counters, registered once.
pub struct StageMeters {
    counters: [::metrics::Counter; 6],
    batch: ::metrics::Histogram,
    commit: ::metrics::Histogram,
}

impl StageMeters {
    /// The meters of the runner named `stage`.
    pub fn new(stage: &str) -> StageMeters {
        let stage = stage.to_owned();
        let c = |name: &'static str| ::metrics::counter!(name, "stage" => stage.clone());
        StageMeters {
            counters: [
                c(STAGE_IN),
                c(STAGE_OUT),
                c(STAGE_DEAD_LETTERS),
                c(STAGE_RETRIES),
                c(STAGE_COMMITS),
                c(STAGE_ABORTS),
            ],
            batch: ::metrics::histogram!(STAGE_BATCH_SECONDS, "stage" => stage.clone()),
            commit: ::metrics::histogram!(STAGE_COMMIT_SECONDS, "stage" => stage),
        }
    }

    /// Publishes the runner's counts so far.
    pub fn publish(&self, counts: StageCounts) {
        let values = [
            counts.records_in,
            counts.records_out,
            counts.dead_letters,
            counts.retries,
            counts.commits,
            counts.aborts,
        ];
        for (counter, value) in self.counters.iter().zip(values) {
            counter.absolute(value);
        }
    }

    /// Records the time one batch took.
    pub fn batch_took(&self, took: std::time::Duration) {
        self.batch.record(took.as_secs_f64());
    }

    /// Records the time one commit took.
    pub fn commit_took(&self, took: std::time::Duration) {
        self.commit.record(took.as_secs_f64());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_component_has_its_own_default_port_and_bad_addresses_are_refused() {
        let listen = MetricsListen::default();
        let mut ports: Vec<&str> = listen.all().iter().map(|(_, a)| *a).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8);
        assert_eq!(listen.of("rate-limit"), Some("127.0.0.1:9464"));
        assert_eq!(listen.of("nope"), None);
        let off = MetricsListen {
            deliver: String::new(),
            ..MetricsListen::default()
        };
        assert_eq!(off.of("deliver"), None);
        let bad = MetricsListen {
            fan_out: "localhost".into(),
            ..MetricsListen::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("metrics.fan_out"), "{e}");
    }
}
