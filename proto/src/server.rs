//! The gRPC server settings both Herald servers share: bounded streams per connection, HTTP/2
//! and TCP keepalive (dead clients are noticed and their connections closed), a timeout for
//! answering a request (streams count until their first response), no Nagle, and a cap on open
//! connections — at the cap the server stops accepting until one closes, so the excess waits in
//! the kernel's backlog instead of costing memory.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// HTTP/2 streams one client connection may have open at once; excess streams wait in the
/// client.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;
/// Open connections a server serves at once.
pub const MAX_CONNECTIONS: usize = 10_000;
/// How often an idle connection is pinged (HTTP/2), and TCP keepalive's idle time.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request may take to be answered (a client's shorter `grpc-timeout` wins); a
/// request past it is answered CANCELLED.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A server builder with the shared settings.
pub fn builder() -> Server {
    Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .timeout(REQUEST_TIMEOUT)
}

/// The connections `listener` accepts, at most `max_connections` open at once, with no Nagle (a
/// small answer must not wait for a delayed ACK, ~40 ms) and TCP keepalive.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
) -> impl Stream<Item = io::Result<Limited>> + Send {
    let accepted = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(KEEPALIVE_INTERVAL));
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    futures::stream::unfold((accepted, open), |(mut accepted, open)| async move {
        // A place first, then the next connection: at the cap nothing more is accepted.
        let permit = Arc::clone(&open).acquire_owned().await.ok()?;
        let next = accepted.next().await?;
        let connection = next.map(|io| Limited { io, _open: permit });
        Some((connection, (accepted, open)))
    })
}

/// An accepted connection holding its place among the open ones until it closes.
pub struct Limited {
    io: TcpStream,
    _open: OwnedSemaphorePermit,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    async fn check(addr: std::net::SocketAddr) -> Result<(), tonic::Status> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn at_the_connection_cap_a_new_client_waits_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let stop = CancellationToken::new();
        let server =
            tokio::spawn(builder().add_service(health).serve_with_incoming_shutdown(
                incoming(listener, 2),
                stop.clone().cancelled_owned(),
            ));
        // Two clients, each holding a connection.
        let first = tokio::net::TcpStream::connect(addr).await.expect("first");
        let second = tokio::net::TcpStream::connect(addr).await.expect("second");
        // The third is not served while both are open…
        let third = tokio::spawn(check(addr));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!third.is_finished(), "served past the cap");
        // …and is as soon as one of them closes.
        drop(first);
        let answered = tokio::time::timeout(Duration::from_secs(20), third)
            .await
            .expect("the third client was never served")
            .expect("task");
        assert!(answered.is_ok(), "{answered:?}");
        drop(second);
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    }
}
