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
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, Router, TcpConnectInfo};
use tracing::{debug, info, warn};

use crate::server::{Limited, MAX_CONNECTIONS, incoming};

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
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
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

/// The certificates in the PEM file `path`, at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let malformed = |reason: String| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(e.to_string()))?;
    if chain.is_empty() {
        return Err(malformed("none found".into()));
    }
    Ok(chain)
}

/// The chain in `cert` with the key in `key`, checked to belong together.
fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(cert)?;
    let unusable = |reason: String| TlsError::Key {
        path: key.to_owned(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| unusable(key_reason(&e)))?;
    let signing_key = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| unusable(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(_) => Err(TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// Why a key file did not parse, without quoting any of it.
fn key_reason(error: &pem::Error) -> String {
    match error {
        pem::Error::NoItemsFound => "none found".into(),
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "invalid base64".into(),
        _ => "malformed".into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The server's certificate, reloaded when the certificate or key file's modification time
/// changes (looked at on a handshake, at most every `check_every`).
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    check_every: Duration,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

/// What is served now, and from which versions of the files.
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: Stamps,
    checked_at: Instant,
}

/// The files' modification times (`None`: unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamps {
    cert: Option<SystemTime>,
    key: Option<SystemTime>,
}

impl Stamps {
    fn of(cert: &Path, key: &Path) -> Self {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Stamps {
            cert: modified(cert),
            key: modified(key),
        }
    }
}

impl ReloadingCert {
    fn load(config: &TlsConfig, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        // The times first: a change while reading is seen at the next check.
        let stamps = Stamps::of(&config.cert_file, &config.key_file);
        let key = load_certified_key(&config.cert_file, &config.key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            check_every: Duration::from_millis(config.reload_check_ms),
            provider,
            state: Mutex::new(Loaded {
                key: Arc::new(key),
                stamps,
                checked_at: Instant::now(),
            }),
        })
    }

    /// The certificate to serve at `now`, reloaded first if it is time to check and a file
    /// changed. A failed reload is logged and retried when a file changes again.
    fn current(&self, now: Instant) -> Arc<CertifiedKey> {
        let mut loaded = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(loaded.checked_at) >= self.check_every {
            loaded.checked_at = now;
            let stamps = Stamps::of(&self.cert_file, &self.key_file);
            if stamps != loaded.stamps {
                loaded.stamps = stamps;
                match load_certified_key(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(key) => {
                        loaded.key = Arc::new(key);
                        info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                    }
                    Err(error) => {
                        warn!(%error, "TLS certificate not reloaded: serving the previous one");
                    }
                }
            }
        }
        Arc::clone(&loaded.key)
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("check_every", &self.check_every)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current(Instant::now()))
    }
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

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;

    /// Writes a new CA's certificate for `localhost` and its key to `dir`; returns the config.
    fn write_certificate(dir: &Path) -> TlsConfig {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("certificate");
        let config = TlsConfig {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_ca_file: None,
            reload_check_ms: 1_000,
        };
        std::fs::write(&config.cert_file, cert.pem()).expect("write cert");
        std::fs::write(&config.key_file, key.serialize_pem()).expect("write key");
        config
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_missing_or_broken_file_is_named_and_the_key_never_quoted() {
        let dir = tempfile::tempdir().expect("dir");
        let config = write_certificate(dir.path());
        assert!(ServerTls::load(&config).is_ok());

        let missing = TlsConfig {
            cert_file: dir.path().join("nope.pem"),
            ..config.clone()
        };
        let error = ServerTls::load(&missing).expect_err("missing").to_string();
        assert!(error.contains("nope.pem"), "{error}");

        std::fs::write(&config.key_file, "-----BEGIN PRIVATE KEY-----\nsecret!!\n")
            .expect("write");
        let error = ServerTls::load(&config).expect_err("broken key").to_string();
        assert!(error.contains("key.pem") && !error.contains("secret"), "{error}");

        let other = tempfile::tempdir().expect("dir");
        let other = write_certificate(other.path());
        let mismatched = TlsConfig {
            key_file: other.key_file,
            ..config.clone()
        };
        let error = ServerTls::load(&mismatched).expect_err("mismatch");
        assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");

        let ca = TlsConfig {
            client_ca_file: Some(config.key_file.clone()),
            ..write_certificate(dir.path())
        };
        let error = ServerTls::load(&ca).expect_err("not a CA").to_string();
        assert!(error.contains("key.pem"), "{error}");
    }

    #[test]
    fn a_changed_certificate_is_served_after_the_check_interval_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let config = write_certificate(dir.path());
        let resolver = ReloadingCert::load(&config, provider()).expect("load");
        let start = Instant::now();
        let first = resolver.current(start);

        write_certificate(dir.path());
        assert!(Arc::ptr_eq(&first, &resolver.current(start)), "checked too early");
        let second = resolver.current(start + Duration::from_secs(2));
        assert_ne!(first.cert, second.cert, "not reloaded");

        std::fs::write(&config.cert_file, "not a certificate").expect("write");
        let kept = resolver.current(start + Duration::from_secs(4));
        assert!(Arc::ptr_eq(&second, &kept), "a broken certificate replaced a good one");
    }

    #[test]
    fn config_defaults_and_refuses_unknown_fields() {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, MapDeserializer};

        let parse = |fields: Vec<(&'static str, &'static str)>| {
            TlsConfig::deserialize(MapDeserializer::<_, Error>::new(
                fields.into_iter().map(|(k, v)| (k, v.into_deserializer())),
            ))
        };
        let config = parse(vec![("cert_file", "c.pem"), ("key_file", "k.pem")]).expect("parse");
        assert_eq!(config.reload_check_ms, 1_000);
        assert_eq!(config.client_ca_file, None);
        assert!(parse(vec![("cert_file", "c"), ("key_file", "k"), ("cert", "c")]).is_err());
    }
}
