//! TLS for both gRPC servers (`[ingress.tls]`, `[query.tls]`: a [`TlsConfig`]): rustls on ring,
//! ALPN `h2`, the certificate chain and key read from PEM files and reloaded when either file
//! changes (e.g. renewed by cert-manager) — checked at most every `reload_check_ms`, on a
//! handshake; a reload that fails keeps serving the previous certificate. With `client_ca_file`,
//! mutual TLS: callers must present a certificate that CA signed.
//!
//! [`incoming_tls`] accepts exactly as [`incoming`] does (connection cap, no Nagle, keepalive)
//! and runs each handshake on its own task with a timeout, so a slow client never holds up the
//! accept loop; a failed handshake is logged at debug and dropped. [`serve`] serves a router
//! over TLS or, without settings, in plaintext.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, Router, TcpConnectInfo};
use tracing::debug;

use crate::server::{Limited, MAX_CONNECTIONS, incoming};
use reload::{ReloadingCert, read_certificates};

mod reload;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's TLS settings; without them it serves plaintext (the `make run` default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM), the server's own certificate first; reloaded when it changes.
    pub cert_file: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, RSA or EC); reloaded when it changes.
    pub key_file: PathBuf,
    /// When set, mutual TLS: callers must present a client certificate signed by a CA in this
    /// PEM file (read at start-up). Unset, callers need no certificate.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// How often, at most, the certificate and key files are checked for a change (on a
    /// handshake), in milliseconds.
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
}

/// Once a second.
fn default_reload_check_ms() -> u64 {
    1_000
}

/// Why TLS settings could not be loaded; each names the file at fault (never a key's content).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A file holds no PEM certificate, or a malformed one.
    #[error("{}: no usable PEM certificate: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file holds no usable private key.
    #[error("{}: no usable PEM private key (PKCS#8, RSA or EC): {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the key in {} is not the certificate's in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The client CA file cannot verify client certificates.
    #[error("client CA file {}: {reason}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// A server's loaded TLS side: what a handshake needs.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate, key and client CA that `config` names; fails naming the file at
    /// fault.
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificates = ReloadingCert::load(config, Arc::clone(&provider))?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match &config.client_ca_file {
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::new(certificates));
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    /// `tcp` after its handshake, or `None` (logged) if the handshake failed or took too long.
    async fn handshake(self, tcp: Limited) -> Option<TlsConnection> {
        let peer = tcp.connect_info().remote_addr();
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(io)) => Some(TlsConnection { io }),
            Ok(Err(error)) => {
                debug!(?peer, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(?peer, timeout = ?self.handshake_timeout, "TLS handshake timed out");
                None
            }
        }
    }
}

/// Verifies client certificates against the CAs in `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certificates(path)? {
        roots.add(ca).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// The connections `listener` accepts (as [`incoming`] does: at most `max_connections` open,
/// handshakes included), each after its TLS handshake. Handshakes run on their own tasks, so
/// accepting goes on meanwhile; failed ones are dropped (logged at debug).
pub fn incoming_tls(
    listener: TcpListener,
    max_connections: usize,
    tls: Arc<ServerTls>,
) -> impl Stream<Item = io::Result<TlsConnection>> + Send {
    incoming(listener, max_connections)
        .map(move |accepted| {
            let tls = ServerTls::clone(&tls);
            async move {
                let tcp = match accepted {
                    Ok(tcp) => tcp,
                    Err(error) => return Some(Err(error)),
                };
                match tokio::spawn(tls.handshake(tcp)).await {
                    Ok(connection) => connection.map(Ok),
                    Err(error) => {
                        debug!(%error, "TLS handshake task failed");
                        None
                    }
                }
            }
        })
        .buffer_unordered(max_connections.max(1))
        .filter_map(std::future::ready)
}

/// Serves `router` on `listener` until `shutdown`: over TLS with `tls`, in plaintext without.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    incoming_tls(listener, MAX_CONNECTIONS, tls),
                    shutdown,
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(incoming(listener, MAX_CONNECTIONS), shutdown)
                .await
        }
    }
}

/// An accepted connection after its TLS handshake, holding its place among the open ones.
pub struct TlsConnection {
    io: tokio_rustls::server::TlsStream<Limited>,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
