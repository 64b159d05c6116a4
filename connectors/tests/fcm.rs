//! The FCM connector against a real HTTPS server (rustls, a CA and certificate made here)
//! playing both Google endpoints: the OAuth token endpoint, which checks each assertion's RS256
//! signature with the service account's public key and its claims, and FCM's send endpoint,
//! which accepts only the access tokens it issued and answers by device token.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_connectors::fcm::{FcmConfig, FcmConnector};
use herald_connectors::{Connector, Outcome};
use herald_schemas::{Channel, Dispatch, Priority};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The service account's private key: a 2048-bit RSA key made for the tests only.
const KEY_PEM: &str = include_str!("../src/fcm/test_key.pem");

/// The public half of another key, which did not sign Herald's assertions.
const OTHER_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvhgWDYd/PvAlPFC40msD
21gMiqX3iugJ3y6d4ahDFxfIoN1RfTukPxkCQrxNwa9GxQJ3F78kspB5vfoo6L9G
vahNgaZ+TZRlFu2iRwMwkII4e3p9NIURxmLdfsb08yyUCuyoBTebsbXFnHZXLOeQ
UBGcpwd1fhJJWNF+IijmUduZC0BbTtVIHX+8Xmpk2uzME2+VZE0mnws574LPK+hI
uHl3BqHpoNiCglyuRkdlg8xfwUh+sgZ8lCykORyZdE3NsMe2YUBv3S9G8uvINQDH
oOLWUN5VEic5dqX8cGsB53FA3BoIkDeSzsbtxKAMSjZJySdz/m5JfdBY8oxW/Zer
UwIDAQAB
-----END PUBLIC KEY-----
";

const PROJECT: &str = "test-project";
const CLIENT_EMAIL: &str = "herald@test-project.iam.gserviceaccount.com";
const KEY_ID: &str = "kid-1";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// One send as the server saw it.
#[derive(Debug, Clone)]
struct Sent {
    bearer: String,
    device: String,
    body: String,
    status: u16,
}

#[derive(Debug, Clone, Default)]
struct Log {
    /// Access tokens issued, in order.
    issued: Vec<String>,
    /// Access tokens no longer accepted.
    revoked: HashSet<String>,
    /// Why assertions were refused.
    refused: Vec<String>,
    sent: Vec<Sent>,
    /// Whether the device answered 401 once already.
    revoked_once: bool,
}

struct State {
    public_key: RsaPublicKey,
    token_url: String,
    log: Mutex<Log>,
}

impl State {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake Google; [`FakeGoogle::stop`] stops it.
struct FakeGoogle {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FakeGoogle {
    /// Listens on a free port of 127.0.0.1, trusting assertions signed by `public_key`'s key.
    async fn start(public_key: RsaPublicKey) -> BoxResult<FakeGoogle> {
        let (ca_pem, server_config) = certificates()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            public_key,
            token_url: format!("https://127.0.0.1:{}/token", addr.port()),
            log: Mutex::default(),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Aborting the accept loop drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let (acceptor, state) = (acceptor.clone(), Arc::clone(&shared));
                connections.spawn(async move {
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
        Ok(FakeGoogle {
            addr,
            ca_pem,
            state,
            task,
        })
    }

    fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// What happened so far.
    fn log(&self) -> Log {
        self.state.log().clone()
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// What can go wrong starting the fake.
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn json_response(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn fcm_error(code: u16, status: &str, message: &str, fcm_code: Option<&str>) -> String {
    let details = fcm_code.map_or_else(String::new, |c| {
        format!(
            r#"{{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{c}"}}"#
        )
    });
    format!(
        r#"{{"error":{{"code":{code},"message":"{message}","status":"{status}","details":[{details}]}}}}"#
    )
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
    let (content_type, authorization) = (header("content-type"), header("authorization"));
    let received = match request.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    if path == "/token" {
        return grant(state, &content_type, &received);
    }
    if path != format!("/v1/projects/{PROJECT}/messages:send") || content_type != "application/json"
    {
        return json_response(404, &fcm_error(404, "NOT_FOUND", "no such method", None));
    }
    let bearer = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_owned();
    let json: serde_json::Value = serde_json::from_str(&received).unwrap_or_default();
    let device = json["message"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut log = state.log();
    let n = log.sent.len() + 1;
    let valid = log.issued.contains(&bearer) && !log.revoked.contains(&bearer);
    let (status, body, retry_after) = match device.as_str() {
        _ if !valid => (
            401,
            fcm_error(401, "UNAUTHENTICATED", "invalid credentials", None),
            None,
        ),
        "unregistered-device" => (
            404,
            fcm_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            ),
            None,
        ),
        "throttled-device" => (
            429,
            fcm_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded.",
                Some("QUOTA_EXCEEDED"),
            ),
            Some("7"),
        ),
        // The access token is revoked under this send: a connector that kept it would fail on.
        "revoking-device" if !log.revoked_once => {
            log.revoked_once = true;
            log.revoked.insert(bearer.clone());
            (
                401,
                fcm_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                    None,
                ),
                None,
            )
        }
        _ => (
            200,
            format!(r#"{{"name":"projects/{PROJECT}/messages/{n}"}}"#),
            None,
        ),
    };
    log.sent.push(Sent {
        bearer,
        device,
        body: received,
        status,
    });
    let mut response = json_response(status, &body);
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(
            "retry-after",
            hyper::header::HeaderValue::from_static(seconds),
        );
    }
    response
}

/// The token endpoint: an access token for a valid assertion, 400 invalid_grant otherwise.
fn grant(state: &State, content_type: &str, form: &str) -> Response<Full<Bytes>> {
    let checked = if content_type == "application/x-www-form-urlencoded" {
        check_grant(state, form)
    } else {
        Err(format!("content type {content_type:?}"))
    };
    let mut log = state.log();
    match checked {
        Ok(()) => {
            let token = format!("access-{}", log.issued.len() + 1);
            log.issued.push(token.clone());
            json_response(
                200,
                &format!(r#"{{"access_token":"{token}","expires_in":3599,"token_type":"Bearer"}}"#),
            )
        }
        Err(why) => {
            log.refused.push(why.clone());
            json_response(
                400,
                &serde_json::json!({"error": "invalid_grant", "error_description": why})
                    .to_string(),
            )
        }
    }
}

/// Whether `form` is a JWT bearer grant whose assertion this service account signed, with
/// the right claims; else why not.
fn check_grant(state: &State, form: &str) -> Result<(), String> {
    let fields: Vec<(&str, &str)> = form.split('&').filter_map(|f| f.split_once('=')).collect();
    let grant_type = fields
        .iter()
        .find(|(k, _)| *k == "grant_type")
        .map(|(_, v)| percent_decode(v));
    if grant_type.as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err(format!("grant_type {grant_type:?}"));
    }
    let assertion = fields
        .iter()
        .find(|(k, _)| *k == "assertion")
        .map(|(_, v)| percent_decode(v))
        .ok_or("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not a JWT".into());
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string());
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" || header["kid"] != KEY_ID {
        return Err(format!("header {header}"));
    }
    let signature =
        Signature::try_from(decode(signature)?.as_slice()).map_err(|e| e.to_string())?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    VerifyingKey::<Sha256>::new(state.public_key.clone())
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.".to_owned())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let iat = claims["iat"].as_u64().unwrap_or_default();
    let fresh = iat.abs_diff(now) <= 300 && claims["exp"].as_u64() == Some(iat + 3_600);
    if claims["iss"] != CLIENT_EMAIL
        || claims["scope"] != SCOPE
        || claims["aud"] != state.token_url.as_str()
        || !fresh
    {
        return Err(format!("claims {claims}"));
    }
    Ok(())
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CA, and a server config with a certificate for 127.0.0.1 that it signed.
fn certificates() -> BoxResult<(String, rustls::ServerConfig)> {
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
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca.pem(), config))
}

/// A key file for the test service account, its `token_uri` the fake's, and the fake's CA.
fn files(dir: &Path, server: &FakeGoogle) -> FcmConfig {
    let key_file = dir.join("service-account.json");
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": KEY_PEM,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": server.state.token_url,
    });
    std::fs::write(&key_file, key.to_string()).expect("write the key file");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &server.ca_pem).expect("write the CA");
    FcmConfig {
        base_url: server.base_url(),
        key_file: Some(key_file),
        token_uri: None,
        ttl_s: 3_600,
        timeout_ms: 10_000,
        ca_file: Some(ca_file),
    }
}

fn dispatch(device: &str, priority: Priority, action_url: Option<&str>) -> Dispatch {
    Dispatch {
        delivery_id: format!("delivery-{device}"),
        notification_id: format!("n-{device}"),
        attempt: 1,
        tenant: "acme".into(),
        recipient_user_id: "ana".into(),
        category: "billing".into(),
        priority,
        channel: Channel::PushFcm,
        address: device.into(),
        title: "Invoice ready".into(),
        body: "Your \"March\" invoice is ready".into(),
        action_url: action_url.map(Into::into),
        requested_at_ms: 1_767_225_600_000,
        not_before_ms: None,
        last_error: None,
    }
}

fn public_key() -> RsaPublicKey {
    RsaPrivateKey::from_pkcs8_pem(KEY_PEM)
        .expect("the test key")
        .to_public_key()
}

fn delivered_as(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Delivered {
            provider_message_id,
        } => provider_message_id.as_deref(),
        _ => None,
    }
}

#[tokio::test]
async fn sends_share_a_token_and_a_refused_token_is_fetched_again() {
    tokio::time::timeout(Duration::from_secs(60), sends_and_refusals())
        .await
        .expect("the scenario finishes within a minute");
}

async fn sends_and_refusals() {
    let server = FakeGoogle::start(public_key())
        .await
        .expect("the fake starts");
    let dir = tempfile::tempdir().expect("a directory");
    let connector = FcmConnector::new(&files(dir.path(), &server)).expect("the connector starts");

    // Two sends at once: one token fetch between them.
    let (to_a, to_b) = (
        dispatch("device-a", Priority::High, Some("https://example.com/i/3")),
        dispatch("device-b", Priority::Low, None),
    );
    let (a, b) = tokio::join!(connector.send(&to_a), connector.send(&to_b));
    let mut names = [delivered_as(&a), delivered_as(&b)];
    names.sort();
    assert_eq!(
        names,
        [
            Some("projects/test-project/messages/1"),
            Some("projects/test-project/messages/2")
        ],
        "{a:?} {b:?}"
    );
    assert_eq!(server.log().issued, ["access-1"]);
    {
        let log = server.log();
        let body = |device: &str| {
            log.sent
                .iter()
                .find(|s| s.device == device)
                .map(|s| s.body.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            body("device-a"),
            r#"{"message":{"token":"device-a","notification":{"title":"Invoice ready","body":"Your \"March\" invoice is ready"},"data":{"notification_id":"n-device-a","delivery_id":"delivery-device-a","action_url":"https://example.com/i/3"},"android":{"priority":"HIGH","collapse_key":"n-device-a","ttl":"3600s"}}}"#
        );
        assert_eq!(
            body("device-b"),
            r#"{"message":{"token":"device-b","notification":{"title":"Invoice ready","body":"Your \"March\" invoice is ready"},"data":{"notification_id":"n-device-b","delivery_id":"delivery-device-b"},"android":{"priority":"NORMAL","collapse_key":"n-device-b","ttl":"3600s"}}}"#
        );
    }

    // FCM's refusals, each with the token already held.
    let unregistered = connector
        .send(&dispatch("unregistered-device", Priority::Normal, None))
        .await;
    assert!(
        matches!(&unregistered, Outcome::InvalidToken(why) if why.contains("UNREGISTERED")),
        "{unregistered:?}"
    );
    let throttled = connector
        .send(&dispatch("throttled-device", Priority::Normal, None))
        .await;
    assert!(
        matches!(&throttled, Outcome::Retry { reason, after: Some(after) }
            if reason.contains("QUOTA_EXCEEDED") && *after == Duration::from_secs(7)),
        "{throttled:?}"
    );
    assert_eq!(server.log().issued, ["access-1"]);

    // A 401: retried, naming the credentials; the next send fetches a new token and succeeds.
    let refused = connector
        .send(&dispatch("revoking-device", Priority::Normal, None))
        .await;
    assert!(
        matches!(&refused, Outcome::Retry { reason, after: None } if reason.contains("service-account key")),
        "{refused:?}"
    );
    assert_eq!(server.log().issued, ["access-1"]);
    let again = connector
        .send(&dispatch("revoking-device", Priority::Normal, None))
        .await;
    assert_eq!(
        delivered_as(&again),
        Some("projects/test-project/messages/6")
    );
    assert_eq!(server.log().issued, ["access-1", "access-2"]);

    // A malformed device token never reaches FCM.
    let calls = server.log().sent.len();
    let malformed = connector
        .send(&dispatch("not a token", Priority::Normal, None))
        .await;
    assert!(
        matches!(malformed, Outcome::InvalidToken(_)),
        "{malformed:?}"
    );

    let log = server.log();
    assert_eq!(log.sent.len(), calls);
    assert!(
        log.refused.is_empty(),
        "assertions refused: {:?}",
        log.refused
    );
    let seen: Vec<(&str, &str, u16)> = log
        .sent
        .iter()
        .skip(2)
        .map(|s| (s.device.as_str(), s.bearer.as_str(), s.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("unregistered-device", "access-1", 404),
            ("throttled-device", "access-1", 429),
            ("revoking-device", "access-1", 401),
            ("revoking-device", "access-2", 200),
        ]
    );
    assert!(log.sent.iter().take(2).all(|s| s.bearer == "access-1"));
    server.stop().await;
}

#[tokio::test]
async fn an_assertion_signed_by_another_key_is_refused_and_nothing_is_sent() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let other = RsaPublicKey::from_public_key_pem(OTHER_PUBLIC_KEY_PEM).expect("a key");
        let server = FakeGoogle::start(other).await.expect("the fake starts");
        let dir = tempfile::tempdir().expect("a directory");
        let connector =
            FcmConnector::new(&files(dir.path(), &server)).expect("the connector starts");
        for _ in 0..2 {
            let outcome = connector
                .send(&dispatch("device-a", Priority::Normal, None))
                .await;
            assert!(
                matches!(&outcome, Outcome::Retry { reason, .. }
                    if reason.contains("invalid_grant Invalid JWT Signature.")
                        && reason.contains("check the service-account key")),
                "{outcome:?}"
            );
        }
        // Nothing cached from a refusal: each send asked again, and FCM was never called.
        let log = server.log();
        assert_eq!(
            log.refused,
            ["Invalid JWT Signature.", "Invalid JWT Signature."]
        );
        assert!(log.sent.is_empty() && log.issued.is_empty());
        server.stop().await;
    })
    .await
    .expect("the scenario finishes within a minute");
}
