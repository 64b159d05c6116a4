//! Every query RPC observed on its way through: a span (child of the caller's `traceparent`)
//! and `herald_query_requests_total` / `herald_query_request_duration_seconds` by RPC and gRPC
//! code. One wrapper around the generated service instead of a line in every handler.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use herald_telemetry::metrics::{QUERY_REQUESTS, QUERY_SECONDS, RequestMeters};
use herald_telemetry::trace;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tracing::Instrument;

/// The RPCs measured by name; any other path counts as `other` (label values stay bounded).
const RPCS: &[&str] = &[
    "GetNotification",
    "ListInbox",
    "ListFailures",
    "UnreadCount",
    "MarkRead",
    "MarkAllRead",
    "WatchInbox",
    "RecordOpened",
    "PutContact",
    "RemoveContact",
    "SetPreference",
    "ExportRecipient",
    "EraseRecipient",
    "PutTemplate",
    "other",
];

/// A gRPC service wrapped so that each call is traced and counted.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    meters: Arc<Vec<RequestMeters>>,
}

impl<S> Observed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Observed<S> {
        let meters = RPCS
            .iter()
            .map(|rpc| RequestMeters::new(QUERY_REQUESTS, QUERY_SECONDS, rpc))
            .collect();
        Observed {
            inner,
            meters: Arc::new(meters),
        }
    }
}

/// The index in [`RPCS`] of the method a request path names.
fn rpc_of(path: &str) -> usize {
    let method = path.rsplit('/').next().unwrap_or_default();
    RPCS.iter()
        .position(|rpc| *rpc == method)
        .unwrap_or(RPCS.len() - 1)
}

impl<S, B, R> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = rpc_of(request.uri().path());
        let parent = request
            .headers()
            .get(trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let span = trace::request_span(RPCS[rpc], parent);
        let meters = Arc::clone(&self.meters);
        let began = Instant::now();
        let call = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let response = call.await?;
            // An error travels in the headers (trailers-only); a success's status in trailers.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            if let Some(m) = meters.get(rpc) {
                m.observe(code, began.elapsed());
            }
            Ok(response)
        })
    }
}

impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_and_anything_else_is_other() {
        assert_eq!(
            RPCS[rpc_of("/herald.v1.QueryService/ListInbox")],
            "ListInbox"
        );
        assert_eq!(RPCS[rpc_of("/herald.v1.QueryService/Nope")], "other");
        assert_eq!(RPCS[rpc_of("")], "other");
    }
}
