//! A webhook receiver for the tests, speaking the real protocol (HTTPS on [`HttpsServer`]),
//! answering by path — `/ok`: 200; `/flaky/<n>`: 503 with `Retry-After: 1` to the first `n`
//! requests for each notification, then 200; `/down`: 503 until [`Receiver::heal`]. It checks every request's
//! signature with the secret and records every request. Dropping it stops it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::https::{HttpsServer, Reply, Seen};

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
    state: Arc<State>,
    _server: HttpsServer,
}

struct State {
    secret: Vec<u8>,
    /// `/down` answers 200 once healed.
    healed: std::sync::atomic::AtomicBool,
    requests: Arc<Mutex<Vec<Received>>>,
    seen: Mutex<HashMap<String, u32>>,
}

impl Receiver {
    /// Starts a receiver on a free port of 127.0.0.1 checking signatures with `secret`.
    pub async fn start(secret: &[u8]) -> anyhow::Result<Receiver> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            secret: secret.to_vec(),
            healed: std::sync::atomic::AtomicBool::new(false),
            requests: Arc::clone(&requests),
            seen: Mutex::default(),
        });
        let handler = Arc::clone(&state);
        let server =
            HttpsServer::start(Arc::new(move |seen: &Seen| answer(&handler, seen))).await?;
        Ok(Receiver {
            addr: server.addr,
            ca_pem: server.ca_pem.clone(),
            requests,
            state,
            _server: server,
        })
    }

    /// From now on `/down` answers 200: the receiver's owner fixed it.
    pub fn heal(&self) {
        self.state
            .healed
            .store(true, std::sync::atomic::Ordering::SeqCst);
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

fn answer(state: &State, request: &Seen) -> Reply {
    let path = request.path.clone();
    let (key, timestamp, signature) = (
        request.header("idempotency-key").to_owned(),
        request.header("herald-timestamp"),
        request.header("herald-signature"),
    );
    let body = &request.body;
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let notification_id = json["notification_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let signed = timestamp.parse::<i64>().is_ok_and(|ts| {
        herald_connectors::webhook::request::signature(&state.secret, ts, body) == signature
    });
    let count = {
        let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(notification_id.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match path.split('/').collect::<Vec<_>>()[..] {
        ["", "ok"] => 200,
        ["", "down"] if !state.healed.load(std::sync::atomic::Ordering::SeqCst) => 503,
        ["", "down"] => 200,
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
    let mut reply = Reply {
        status,
        ..Reply::default()
    };
    if status == 503 {
        reply.headers.push(("retry-after", "1".into()));
    }
    reply
}
