//! What Herald's processes tell their operators, set up once per process by [`init`]:
//! - logs (to stderr, filtered by `RUST_LOG`);
//! - traces ([`trace`]): a span per request and per record, joined across processes by the W3C
//!   trace context in Kafka headers, exported over OTLP when `[telemetry] otlp_endpoint` is set
//!   (off by default; batched on a background thread, so a missing collector costs nothing but
//!   a dropped batch);
//! - metrics ([`metrics`]): a Prometheus endpoint per component (`[telemetry.metrics]`), with
//!   the metric names every component records.

pub mod metrics;
pub mod scrape;
pub mod trace;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint, for instance).
    #[error("the OTLP trace exporter for {endpoint:?} cannot be built: {reason}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A setting is out of range.
    #[error("[telemetry] {0}")]
    Invalid(String),
}

/// `[telemetry]`: where traces go and where each component serves its metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC endpoint traces are exported to (e.g. `http://127.0.0.1:4317`, an
    /// OpenTelemetry Collector); unset (the default): spans are not recorded at all.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces kept (0.0–1.0); a trace begun upstream keeps its caller's choice.
    pub sample_ratio: f64,
    /// How long one export may take before its batch is dropped.
    pub export_timeout_ms: u64,
    /// `[telemetry.metrics]`: each component's Prometheus endpoint.
    pub metrics: metrics::MetricsListen,
    /// How often the lag exporter reads every group's lag.
    pub lag_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            export_timeout_ms: 3_000,
            metrics: metrics::MetricsListen::default(),
            lag_interval_ms: 5_000,
        }
    }
}

impl TelemetryConfig {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(TelemetryError::Invalid(format!(
                "sample_ratio must be within 0.0–1.0, not {}",
                self.sample_ratio
            )));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(TelemetryError::Invalid(format!(
                "otlp_endpoint must be an http:// or https:// URL, not {endpoint:?}"
            )));
        }
        self.metrics.validate()
    }
}

/// Keeps the trace exporter alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard stops the trace export"]
pub struct Telemetry {
    traces: Option<trace::Exporter>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take() {
            traces.shutdown();
        }
    }
}

/// The log filter: `RUST_LOG`, or `info` with librdkafka's chatter at `warn`.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"))
}

/// Logs only: for the client commands, which export nothing.
pub fn init_logs() {
    let _ = tracing_subscriber::registry().with(logs_layer()).try_init();
}

fn logs_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // The per-record and per-request spans are for the trace export: they stay out of log lines.
    let filter = log_filter().add_directive(
        format!("{}=off", trace::SPANS)
            .parse()
            .unwrap_or_else(|_| tracing_subscriber::filter::Directive::from(tracing::Level::INFO)),
    );
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter)
}

/// Sets up logs and, when configured, the trace export for the component `service` (its
/// `service.name` is `herald-<service>`). Must run inside the Tokio runtime (the OTLP exporter's
/// client lives there).
pub fn init(service: &str, config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    config.validate()?;
    let exporter = match &config.otlp_endpoint {
        Some(endpoint) => Some(trace::Exporter::new(service, endpoint, config)?),
        None => None,
    };
    let otel = exporter.as_ref().map(|e| {
        tracing_opentelemetry::layer()
            .with_tracer(e.tracer())
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(trace::SPANS, tracing::Level::INFO),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(logs_layer())
        .with(otel)
        .try_init();
    if exporter.is_some() {
        trace::enable();
    }
    Ok(Telemetry { traces: exporter })
}
