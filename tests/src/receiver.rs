//! A webhook receiver for the tests, speaking the real protocol: HTTPS with a certificate made
//! here (signed by a CA made here, which the platform is told to trust), HTTP/1.1, answering by
//! path — `/ok`: 200; `/flaky/<n>`: 503 with `Retry-After: 1` to the first `n` requests for each
//! notification, then 200; `/down`: 503 always. It checks every request's signature with the
//! secret and records every request. Dropping it stops it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the receiver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The path posted to.
    pub path: String,
    /// `notification_id` from the body.
    pub notification_id: String,
    /// `attempt` from the body.
    pub attempt: i64,
    /// The `Idempotency-Key` header.
    pub idempotency_key: String,
    /// Whether `Herald-Signature` matched the timestamp and body under the secret.
    pub signed: bool,
    /// The status it answered.
    pub status: u16,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA certificate (PEM) that signed its certificate.
    pub ca_pem: String,
    requests: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    secret: Vec<u8>,
    requests: Arc<Mutex<Vec<Received>>>,
    seen: Mutex<HashMap<String, u32>>,
}

impl Receiver {
    /// Starts a receiver on a free port of 127.0.0.1 checking signatures with `secret`.
    pub async fn start(secret: &[u8]) -> anyhow::Result<Receiver> {
        let (ca_pem, server_config) = certificates()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            secret: secret.to_vec(),
            requests: Arc::clone(&requests),
            seen: Mutex::default(),
        });
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            addr,
            ca_pem,
            requests,
            task,
        })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (key, timestamp, signature) = (
        header("idempotency-key"),
        header("herald-timestamp"),
        header("herald-signature"),
    );
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let notification_id = json["notification_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let signed = timestamp.parse::<i64>().is_ok_and(|ts| {
        herald_connectors::webhook::request::signature(&state.secret, ts, &body) == signature
    });
    let count = {
        let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(notification_id.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match path.split('/').collect::<Vec<_>>()[..] {
        ["", "ok"] => 200,
        ["", "down"] => 503,
        ["", "flaky", n] if n.parse::<u32>().is_ok_and(|n| count <= n) => 503,
        ["", "flaky", _] => 200,
        _ => 404,
    };
    let status = if signed { status } else { 401 };
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(Received {
            path,
            notification_id,
            attempt: json["attempt"].as_i64().unwrap_or_default(),
            idempotency_key: key,
            signed,
            status,
        });
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if status == 503 {
        response
            .headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    }
    response
}

/// A CA, and a server config with a certificate for 127.0.0.1 that it signed.
fn certificates() -> anyhow::Result<(String, rustls::ServerConfig)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .context("the receiver's certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca.pem(), config))
}
