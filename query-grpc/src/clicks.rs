//! The click redirect: `GET /c/<token>` on `[links] listen`. A signed, unexpired link
//! ([`herald_auth::links`]) records a CLICKED engagement event and answers `302 Found` to its
//! target; a tampered, expired or malformed one answers `400 Bad Request` and records nothing.
//! Plain HTTP/1.1 (put TLS in front, as for any public redirector); slow clients are cut off.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_auth::links::Links;
use herald_schemas::{Channel, EngagementKind};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engagement::{Engaged, EngagementSink};

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

struct Redirector {
    links: Links,
    sink: Option<EngagementSink>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn answer(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Redirector {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return answer(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        }
        let Some(token) = request.uri().path().strip_prefix("/c/") else {
            return answer(StatusCode::NOT_FOUND, "no such page");
        };
        let click = match self.links.verify(token, now_ms()) {
            Ok(click) => click,
            Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let Ok(location) = header::HeaderValue::from_str(&click.target) else {
            return answer(
                StatusCode::BAD_REQUEST,
                "the link's target is not a valid URL",
            );
        };
        if let Some(sink) = &self.sink {
            let event = Engaged {
                kind: EngagementKind::Clicked,
                notification_id: &click.notification_id,
                tenant: &click.tenant,
                recipient_user_id: &click.recipient_user_id,
                channel: Channel::parse(&click.channel),
                at_ms: now_ms(),
            };
            // The user is sent on either way; a click neither Kafka nor the store took is logged.
            if let Err(e) = sink.emit(event).await {
                warn!(error = %e, "a click could not be recorded");
            }
        }
        let mut response = answer(StatusCode::FOUND, "redirecting");
        let headers = response.headers_mut();
        headers.insert(header::LOCATION, location);
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            header::HeaderValue::from_static("no-referrer"),
        );
        response
    }
}

/// Serves the redirect on `listener` until `shutdown`, recording clicks through `sink`.
pub async fn serve(
    listener: TcpListener,
    links: Links,
    sink: Option<EngagementSink>,
    shutdown: CancellationToken,
) {
    info!(addr = ?listener.local_addr().ok(), "click redirect listening");
    let redirector = Arc::new(Redirector { links, sink });
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let redirector = Arc::clone(&redirector);
        let service = hyper::service::service_fn(move |request| {
            let redirector = Arc::clone(&redirector);
            async move { Ok::<_, Infallible>(redirector.handle(request).await) }
        });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "a click connection ended with an error");
            }
        });
    }
}
