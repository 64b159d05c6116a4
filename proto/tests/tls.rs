//! The gRPC servers' TLS, end to end: `grpc.health.v1` served by [`herald_proto::tls::serve`]
//! on port 0, asked by tonic clients over TLS (CA and certificates made here with rcgen); and
//! the settings' loading errors and defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use herald_proto::tls::{ServerTls, TlsConfig, TlsError};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The longest a test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A certificate authority.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("CA").pem();
        Authority {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and its key, both PEM.
    fn issue(&self) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate this authority signs to `config`'s files, replacing them at
    /// once (as a renewal does).
    fn install(&self, config: &TlsConfig) {
        let (cert, key) = self.issue();
        replace(&config.cert_file, &cert);
        replace(&config.key_file, &key);
    }

    /// A client trusting this authority, with `identity` as its certificate if given.
    fn client(&self, identity: Option<(String, String)>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pem))
            .domain_name("localhost");
        match identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

/// Writes `text` next to `path` and renames it over `path`.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

/// A server's certificate files in `dir`, `authority`'s certificate installed.
fn config(dir: &Path, authority: &Authority, reload_check_ms: u64) -> TlsConfig {
    let config = TlsConfig {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        client_ca_file: None,
        reload_check_ms,
    };
    authority.install(&config);
    config
}

/// A health server on port 0 over TLS.
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    async fn start(config: &TlsConfig) -> Self {
        let tls = Arc::new(ServerTls::load(config).expect("TLS settings"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let router = herald_proto::server::builder().add_service(health);
        let stop = CancellationToken::new();
        let task = tokio::spawn(herald_proto::tls::serve(
            router,
            listener,
            Some(tls),
            stop.clone().cancelled_owned(),
        ));
        Server { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server did not stop");
        assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    }

    /// The health status, asked over TLS with `tls` or in plaintext without.
    async fn check(&self, tls: Option<ClientTlsConfig>) -> Result<ServingStatus, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", self.addr))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .status;
        ServingStatus::try_from(status).map_err(|e| e.to_string())
    }

    /// Waits until a client with `tls` is served, or the deadline.
    async fn served_eventually(&self, tls: &ClientTlsConfig) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.check(Some(tls.clone())).await {
                Ok(_) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

#[tokio::test]
async fn a_client_trusting_the_ca_is_served_and_a_plaintext_one_is_not() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("dir");
        let ca = Authority::new();
        let server = Server::start(&config(dir.path(), &ca, 1_000)).await;

        assert_eq!(
            server.check(Some(ca.client(None))).await,
            Ok(ServingStatus::Serving)
        );
        assert!(server.check(None).await.is_err(), "served in plaintext");
        let stranger = Authority::new();
        assert!(server.check(Some(stranger.client(None))).await.is_err());
        // Failed handshakes do not stop the server.
        assert_eq!(
            server.check(Some(ca.client(None))).await,
            Ok(ServingStatus::Serving)
        );
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn a_replaced_certificate_is_served_after_the_reload_check() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("dir");
        let old = Authority::new();
        let config = config(dir.path(), &old, 100);
        let server = Server::start(&config).await;
        assert_eq!(
            server.check(Some(old.client(None))).await,
            Ok(ServingStatus::Serving)
        );

        let new = Authority::new();
        new.install(&config);
        server
            .served_eventually(&new.client(None))
            .await
            .expect("the new certificate was never served");
        assert!(
            server.check(Some(old.client(None))).await.is_err(),
            "still the old one"
        );
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn a_slow_handshake_does_not_hold_up_other_clients() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("dir");
        let ca = Authority::new();
        let server = Server::start(&config(dir.path(), &ca, 1_000)).await;
        // Connected, but never says hello.
        let _silent = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        assert_eq!(
            server.check(Some(ca.client(None))).await,
            Ok(ServingStatus::Serving)
        );
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificate_are_served() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("dir");
        let server_ca = Authority::new();
        let client_ca = Authority::new();
        let client_ca_file = dir.path().join("clients.pem");
        std::fs::write(&client_ca_file, &client_ca.pem).expect("write");
        let config = TlsConfig {
            client_ca_file: Some(client_ca_file),
            ..config(dir.path(), &server_ca, 1_000)
        };
        let server = Server::start(&config).await;

        let anonymous = server.check(Some(server_ca.client(None))).await;
        assert!(anonymous.is_err(), "served without a client certificate");
        let foreign = server.check(Some(server_ca.client(Some(server_ca.issue()))));
        assert!(foreign.await.is_err(), "served a certificate of another CA");
        let known = server_ca.client(Some(client_ca.issue()));
        assert_eq!(server.check(Some(known)).await, Ok(ServingStatus::Serving));
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[test]
fn a_missing_or_broken_file_is_named_and_the_key_never_quoted() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = config(dir.path(), &Authority::new(), 1_000);
    assert!(ServerTls::load(&settings).is_ok());

    let missing = TlsConfig {
        cert_file: dir.path().join("nope.pem"),
        ..settings.clone()
    };
    let error = ServerTls::load(&missing).expect_err("missing").to_string();
    assert!(error.contains("nope.pem"), "{error}");

    std::fs::write(
        &settings.key_file,
        "-----BEGIN PRIVATE KEY-----\nsecret!!\n",
    )
    .expect("write");
    let error = ServerTls::load(&settings)
        .expect_err("broken key")
        .to_string();
    assert!(
        error.contains("key.pem") && !error.contains("secret"),
        "{error}"
    );

    let other = tempfile::tempdir().expect("dir");
    let other = config(other.path(), &Authority::new(), 1_000);
    let mismatched = TlsConfig {
        key_file: other.key_file,
        ..settings.clone()
    };
    let error = ServerTls::load(&mismatched).expect_err("mismatch");
    assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");

    let ca = TlsConfig {
        client_ca_file: Some(settings.key_file.clone()),
        ..config(dir.path(), &Authority::new(), 1_000)
    };
    let error = ServerTls::load(&ca).expect_err("not a CA").to_string();
    assert!(error.contains("key.pem"), "{error}");
}

#[test]
fn config_defaults_and_refuses_unknown_fields() {
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error, MapDeserializer};

    let parse = |fields: Vec<(&'static str, &'static str)>| {
        <TlsConfig as serde::Deserialize>::deserialize(MapDeserializer::<_, Error>::new(
            fields.into_iter().map(|(k, v)| (k, v.into_deserializer())),
        ))
    };
    let config = parse(vec![("cert_file", "c.pem"), ("key_file", "k.pem")]).expect("parse");
    assert_eq!(config.reload_check_ms, 1_000);
    assert_eq!(config.client_ca_file, None);
    assert!(parse(vec![("cert_file", "c"), ("key_file", "k"), ("cert", "c")]).is_err());
}
