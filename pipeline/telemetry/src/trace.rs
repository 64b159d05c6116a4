//! Traces: one span per request (ingress, query service) and per record (each stage), joined
//! into one trace per notification by the W3C `traceparent` carried in Kafka headers; the
//! connectors' provider calls and the store writes are children of their record's span.
//!
//! Spans are only made when an exporter is configured ([`enabled`]): without one, records carry
//! their input's `traceparent` on unchanged and no span costs anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{TelemetryConfig, TelemetryError};

/// The target of Herald's spans: exported, kept out of log lines.
pub const SPANS: &str = "herald_spans";

/// The W3C trace-context header (in gRPC metadata and Kafka headers).
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are recorded and exported in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The OTLP exporter of one process.
pub(crate) struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    pub(crate) fn new(
        service: &str,
        endpoint: &str,
        config: &TelemetryConfig,
    ) -> Result<Exporter, TelemetryError> {
        let built = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_millis(config.export_timeout_ms))
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(built).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(format!("herald-{service}"))
                    .build(),
            )
            .build();
        Ok(Exporter { provider })
    }

    pub(crate) fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer("herald")
    }

    /// Flushes what is buffered (bounded by the export timeout) and stops.
    pub(crate) fn shutdown(self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

/// Makes `span` a child of the remote span named by `traceparent` (a malformed or absent one
/// leaves it the root of a new trace).
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` naming `span`, to carry to the records and calls it causes; `None` when
/// the span is not recorded (no exporter, or not sampled).
pub fn traceparent(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The span of one record in stage `stage`, child of the record's `traceparent`; disabled when
/// spans are off.
pub fn record_span(
    stage: &str,
    traceparent: Option<&str>,
    tenant: &str,
    notification_id: &str,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPANS,
        "record",
        otel.name = stage,
        otel.kind = "consumer",
        herald.tenant = tenant,
        herald.notification_id = notification_id,
    );
    set_remote_parent(&span, traceparent);
    span
}

/// A span for work done inside the current span (a provider call, a store write).
pub fn child_span(name: &'static str, what: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: SPANS, "step", otel.name = name, herald.what = what)
}

/// A span for work on a record's behalf done outside its span, under the record's
/// `traceparent` (a provider call made on a lane of its own).
pub fn child_of(name: &'static str, what: &str, traceparent: Option<&str>) -> Span {
    let span = child_span(name, what);
    if !span.is_disabled() {
        set_remote_parent(&span, traceparent);
    }
    span
}

/// The span of one gRPC request, child of the caller's `traceparent` if it sent one.
pub fn request_span(rpc: &'static str, traceparent: Option<&str>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPANS,
        "request",
        otel.name = rpc,
        otel.kind = "server",
        herald.tenant = tracing::field::Empty,
        herald.notification_id = tracing::field::Empty,
    );
    set_remote_parent(&span, traceparent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_spans_are_disabled_and_carry_nothing() {
        let span = record_span(
            "enrich",
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            "t",
            "n",
        );
        assert!(span.is_disabled());
        assert_eq!(traceparent(&span), None);
    }
}
