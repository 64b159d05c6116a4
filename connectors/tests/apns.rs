//! The APNs connector against an APNs emulator in this process, speaking the real protocol:
//! HTTP/2 only, over TLS (ALPN `h2`) with a certificate signed by a CA made here. The emulator
//! checks every provider token's ES256 signature with the public half of a P-256 key made here
//! (the connector reads the private half from a `.p8` file), its key id and team, records every
//! request, and answers by device token:
//!
//! | device token | answer |
//! |---|---|
//! | `aa…`, `ab…` | 200 with an `apns-id` (the request's, else one of its own) |
//! | `10…` | 410 `Unregistered` |
//! | `40…` | 400 `BadDeviceToken` |
//! | `42…` | 429 `TooManyRequests`, `retry-after: 7` |
//! | `e0…` | 403 `ExpiredProviderToken` to the first token it sees there, and to that token again; 200 to any other |
//!
//! A token that fails the checks is answered 403 `InvalidProviderToken`, as APNs does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_connectors::apns::{ApnsConfig, ApnsConnector};
use herald_connectors::{Connector, Outcome};
use herald_schemas::{Channel, Dispatch, Priority};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const TOPIC: &str = "com.example.herald";
const TTL_S: u64 = 3_600;
/// The test's clock starts here (unix seconds).
const T0: i64 = 1_767_225_600;
/// The `apns-id` the emulator gives a request that has none.
const EMULATOR_ID: &str = "00000000-0000-4000-8000-000000000001";

fn device(prefix: &str) -> String {
    prefix.repeat(32)
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
    /// The provider token, from `authorization: bearer <jwt>`.
    jwt: String,
    /// The token's `iat`, if its signature, key id and team checked out.
    iat: Option<i64>,
    status: u16,
}

impl Seen {
    /// The `apns-*` headers.
    fn apns_headers(&self) -> BTreeMap<&str, &str> {
        self.headers
            .iter()
            .filter(|(name, _)| name.starts_with("apns-"))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }
}

struct State {
    public_key: DecodingKey,
    seen: Mutex<Vec<Seen>>,
    /// The provider token answered ExpiredProviderToken at `e0…`.
    expired: Mutex<Option<String>>,
}

/// The emulator; [`Emulator::stop`] stops it.
struct Emulator {
    addr: SocketAddr,
    state: Arc<State>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Emulator {
    /// An emulator on a free port of 127.0.0.1 with `server_config`, checking tokens with
    /// `public_key_pem`.
    async fn start(server_config: rustls::ServerConfig, public_key_pem: &str) -> Emulator {
        let state = Arc::new(State {
            public_key: DecodingKey::from_ec_pem(public_key_pem.as_bytes()).expect("public key"),
            seen: Mutex::default(),
            expired: Mutex::default(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let (stop, mut stopped) = oneshot::channel();
        let serving = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Dropped when the loop ends: that aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let tcp = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => break,
                    },
                };
                let (acceptor, state) = (acceptor.clone(), Arc::clone(&serving));
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Emulator {
            addr,
            state,
            stop,
            task,
        }
    }

    fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("the log").clone()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the emulator stops cleanly");
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let version = request.version();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("<not text>").to_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("bearer "))
        .unwrap_or_default()
        .to_owned();
    let iat = check(state, &jwt);
    let device = path.strip_prefix("/3/device/").unwrap_or_default();
    let (status, reason) = match (iat, device.get(..2)) {
        _ if version != Version::HTTP_2 || method != "POST" => (405, "MethodNotAllowed"),
        (None, _) => (403, "InvalidProviderToken"),
        (Some(_), Some("aa" | "ab")) => (200, ""),
        (Some(_), Some("10")) => (410, "Unregistered"),
        (Some(_), Some("40")) => (400, "BadDeviceToken"),
        (Some(_), Some("42")) => (429, "TooManyRequests"),
        (Some(_), Some("e0")) => {
            let mut expired = state.expired.lock().expect("the expired token");
            if expired.get_or_insert_with(|| jwt.clone()) == &jwt {
                (403, "ExpiredProviderToken")
            } else {
                (200, "")
            }
        }
        _ => (400, "BadDeviceToken"),
    };
    let apns_id = headers
        .get("apns-id")
        .cloned()
        .unwrap_or_else(|| EMULATOR_ID.to_owned());
    state.seen.lock().expect("the log").push(Seen {
        version,
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or_default(),
        jwt,
        iat,
        status,
    });
    let content = if reason.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(json!({"reason": reason, "timestamp": T0 * 1000}).to_string())
    };
    let mut response = Response::builder()
        .status(status)
        .header("apns-id", apns_id);
    if status == 429 {
        response = response.header("retry-after", "7");
    }
    response.body(Full::new(content)).expect("a response")
}

/// The token's `iat` if it is ES256 under the test key, with the test's key id and team.
fn check(state: &State, jwt: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        iat: i64,
    }
    let header = jsonwebtoken::decode_header(jwt).ok()?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(KEY_ID) {
        return None;
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Claims>(jwt, &state.public_key, &validation)
        .ok()?
        .claims;
    (claims.iss == TEAM_ID).then_some(claims.iat)
}

/// A CA (PEM), and a server config offering only HTTP/2 with a certificate for 127.0.0.1 that
/// the CA signed.
fn certificates() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("the CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("a key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("a certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("the certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    (ca.pem(), config)
}

/// An emulator, the files a connector needs (its CA, a `.p8` key the emulator trusts), and the
/// clock connectors are given.
struct Fixture {
    emulator: Emulator,
    dir: tempfile::TempDir,
    config: ApnsConfig,
    clock: Arc<AtomicI64>,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("a directory");
        let (ca_pem, server_config) = certificates();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write the CA");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
        let key_file = dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
        std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
        let emulator = Emulator::start(server_config, &key.public_key_pem()).await;
        let config = ApnsConfig {
            base_url: emulator.base_url(),
            key_file,
            key_id: KEY_ID.into(),
            team_id: TEAM_ID.into(),
            topic: TOPIC.into(),
            ttl_s: TTL_S,
            timeout_ms: 10_000,
            ca_file: Some(ca_file),
        };
        Fixture {
            emulator,
            dir,
            config,
            clock: Arc::new(AtomicI64::new(T0)),
        }
    }

    fn connector(&self, config: &ApnsConfig) -> ApnsConnector {
        let clock = Arc::clone(&self.clock);
        ApnsConnector::with_clock(config, Arc::new(move || clock.load(Ordering::SeqCst)))
            .expect("a connector")
    }
}

fn dispatch(address: &str, notification_id: &str, delivery_id: &str) -> Dispatch {
    Dispatch {
        delivery_id: delivery_id.into(),
        notification_id: notification_id.into(),
        attempt: 1,
        tenant: "acme".into(),
        recipient_user_id: "ana".into(),
        category: "billing".into(),
        priority: Priority::High,
        channel: Channel::PushApns,
        address: address.into(),
        title: "Invoice ready".into(),
        body: "Your invoice is ready".into(),
        action_url: Some("https://example.com/i/3".into()),
        requested_at_ms: (T0 - 10) * 1000 + 250,
        not_before_ms: None,
        last_error: None,
    }
}

async fn within_a_minute<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("the test finishes within a minute");
}

#[tokio::test]
async fn delivers_over_http2_with_apples_headers_and_payload_reusing_one_token() {
    within_a_minute(async {
        let fixture = Fixture::start().await;
        let connector = fixture.connector(&fixture.config);
        let uuid = "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11";
        let first = dispatch(&device("aa"), "5d1c0e2a-8f3b-4c6d-9e7f-0a1b2c3d4e5f", uuid);
        let second = Dispatch {
            priority: Priority::Low,
            action_url: None,
            ..dispatch(&device("ab"), "n-2", "not-a-uuid")
        };
        assert_eq!(
            connector.send(&first).await,
            Outcome::Delivered {
                provider_message_id: Some(uuid.into())
            }
        );
        fixture.clock.store(T0 + 49 * 60, Ordering::SeqCst);
        assert_eq!(
            connector.send(&second).await,
            Outcome::Delivered {
                provider_message_id: Some(EMULATOR_ID.into())
            }
        );

        let seen = fixture.emulator.seen();
        assert_eq!(seen.len(), 2, "{seen:#?}");
        let expiration = (T0 - 10 + 3_600).to_string();
        assert_eq!(
            seen[0].apns_headers(),
            BTreeMap::from([
                ("apns-topic", TOPIC),
                ("apns-push-type", "alert"),
                ("apns-priority", "10"),
                ("apns-expiration", expiration.as_str()),
                ("apns-collapse-id", "5d1c0e2a-8f3b-4c6d-9e7f-0a1b2c3d4e5f"),
                ("apns-id", uuid),
            ])
        );
        assert_eq!(
            seen[1].apns_headers(),
            BTreeMap::from([
                ("apns-topic", TOPIC),
                ("apns-push-type", "alert"),
                ("apns-priority", "5"),
                ("apns-expiration", expiration.as_str()),
                ("apns-collapse-id", "n-2"),
            ])
        );
        assert_eq!(
            seen[0].body,
            json!({
                "aps": {"alert": {"title": "Invoice ready", "body": "Your invoice is ready"},
                        "sound": "default"},
                "herald": {"notification_id": "5d1c0e2a-8f3b-4c6d-9e7f-0a1b2c3d4e5f",
                           "delivery_id": uuid, "action_url": "https://example.com/i/3"}
            })
        );
        assert_eq!(
            seen[1].body["herald"],
            json!({"notification_id": "n-2", "delivery_id": "not-a-uuid"})
        );
        for (request, token) in seen.iter().zip(["aa", "ab"]) {
            assert_eq!(request.version, Version::HTTP_2);
            assert_eq!(request.method, "POST");
            assert_eq!(request.path, format!("/3/device/{}", device(token)));
            // Signed at the first send, by the key the emulator trusts, and used for both.
            assert_eq!(request.iat, Some(T0));
            assert_eq!(request.jwt, seen[0].jwt);
        }
        fixture.emulator.stop().await;
    })
    .await;
}

#[tokio::test]
async fn apns_answers_become_invalid_tokens_and_retries() {
    within_a_minute(async {
        let fixture = Fixture::start().await;
        let connector = fixture.connector(&fixture.config);
        let send = |prefix: &'static str| {
            let d = dispatch(
                &device(prefix),
                "n-1",
                "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11",
            );
            let connector = &connector;
            async move { connector.send(&d).await }
        };
        assert_eq!(
            send("10").await,
            Outcome::InvalidToken("APNs answered 410 Unregistered".into())
        );
        match send("40").await {
            Outcome::InvalidToken(reason) => {
                assert!(
                    reason.starts_with("APNs answered 400 BadDeviceToken"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            send("42").await,
            Outcome::Retry {
                reason: "APNs answered 429 TooManyRequests".into(),
                after: Some(Duration::from_secs(7)),
            }
        );
        let statuses: Vec<u16> = fixture.emulator.seen().iter().map(|s| s.status).collect();
        assert_eq!(statuses, [410, 400, 429]);
        fixture.emulator.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_apns_calls_expired_is_replaced_by_a_new_one() {
    within_a_minute(async {
        let fixture = Fixture::start().await;
        let connector = fixture.connector(&fixture.config);
        let d = dispatch(&device("e0"), "n-1", "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11");
        match connector.send(&d).await {
            Outcome::Retry { reason, after } => {
                assert!(reason.contains("403 ExpiredProviderToken"), "{reason}");
                assert_eq!(after, None);
            }
            other => panic!("{other:?}"),
        }
        // The retry comes later (the retry policy's backoff).
        fixture.clock.store(T0 + 30, Ordering::SeqCst);
        assert!(matches!(
            connector.send(&d).await,
            Outcome::Delivered { .. }
        ));
        fixture.clock.store(T0 + 60, Ordering::SeqCst);
        let other = dispatch(&device("aa"), "n-2", "1b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11");
        assert!(matches!(
            connector.send(&other).await,
            Outcome::Delivered { .. }
        ));

        let seen = fixture.emulator.seen();
        let iats: Vec<Option<i64>> = seen.iter().map(|s| s.iat).collect();
        assert_eq!(iats, [Some(T0), Some(T0 + 30), Some(T0 + 30)]);
        assert_ne!(
            seen[1].jwt, seen[0].jwt,
            "a new token after ExpiredProviderToken"
        );
        assert_eq!(seen[2].jwt, seen[1].jwt, "the new token is reused");
        fixture.emulator.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_key_apns_does_not_know_is_retried_naming_the_settings() {
    within_a_minute(async {
        let fixture = Fixture::start().await;
        let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let other_file = fixture.dir.path().join("other.p8");
        std::fs::write(&other_file, other_key.serialize_pem()).expect("write the key");
        let wrong_team = ApnsConfig {
            team_id: "ZZZ999ZZZZ".into(),
            ..fixture.config.clone()
        };
        let wrong_key = ApnsConfig {
            key_file: other_file,
            ..fixture.config.clone()
        };
        for config in [wrong_team, wrong_key] {
            let connector = fixture.connector(&config);
            let d = dispatch(&device("aa"), "n-1", "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11");
            match connector.send(&d).await {
                Outcome::Retry { reason, .. } => {
                    assert!(reason.contains("403 InvalidProviderToken"), "{reason}");
                    assert!(reason.contains("key_file, key_id and team_id"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(fixture.emulator.seen().len(), 2);
        fixture.emulator.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_device_tokens_and_oversized_payloads_are_refused_without_a_call() {
    within_a_minute(async {
        let fixture = Fixture::start().await;
        let connector = fixture.connector(&fixture.config);
        let uuid = "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11";
        for address in ["", "not-hex", &"a".repeat(63), &"a".repeat(201), "../../x"] {
            let outcome = connector.send(&dispatch(address, "n-1", uuid)).await;
            assert!(
                matches!(outcome, Outcome::InvalidToken(_)),
                "{address}: {outcome:?}"
            );
        }
        let huge = Dispatch {
            body: "x".repeat(5_000),
            ..dispatch(&device("aa"), "n-1", uuid)
        };
        match connector.send(&huge).await {
            Outcome::Failed(reason) => assert!(reason.contains("4096"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(fixture.emulator.seen().is_empty());

        // With APNs gone, a delivery is retried.
        fixture.emulator.stop().await;
        let outcome = connector.send(&dispatch(&device("aa"), "n-1", uuid)).await;
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    })
    .await;
}
