//! Stand-ins for the two SMS providers, speaking their real APIs over HTTPS: a Twilio-compatible
//! one (form-encoded, basic auth, `201` + sid; error `{"code": …}`) and Vonage's (JSON with the
//! credentials in the body, `200` with a status per part). Each checks the credentials, records
//! what it accepted, can be taken down (then answers 503) and refuses one number as invalid:
//! [`INVALID_NUMBER`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;

use crate::https::{HttpsServer, Reply, Seen};

/// The number both providers refuse as invalid (Twilio: code 21211; Vonage: status 7).
pub const INVALID_NUMBER: &str = "+15550000000";

/// Which API a stand-in speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Twilio-compatible: account `ACtest`, auth token [`Provider::secret`].
    Twilio,
    /// Vonage: api key `key-test`, secret [`Provider::secret`].
    Vonage,
}

/// One message a provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The recipient's number as the API carries it.
    pub to: String,
    /// The text.
    pub text: String,
}

struct State {
    api: Api,
    down: AtomicBool,
    calls: AtomicU64,
    sent: Mutex<Vec<Sent>>,
    /// When each message in `sent` was accepted.
    accepted_at: Mutex<Vec<Instant>>,
}

/// A running stand-in; stops when dropped.
pub struct Provider {
    /// The server (its URL and CA).
    pub server: HttpsServer,
    state: Arc<State>,
}

impl Provider {
    /// The credential both stand-ins expect.
    pub const SECRET: &'static str = "sms-test-secret";

    /// Starts a stand-in speaking `api`.
    pub async fn start(api: Api) -> anyhow::Result<Provider> {
        let state = Arc::new(State {
            api,
            down: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            sent: Mutex::default(),
            accepted_at: Mutex::default(),
        });
        let handler = Arc::clone(&state);
        let server =
            HttpsServer::start(Arc::new(move |seen: &Seen| answer(&handler, seen))).await?;
        Ok(Provider { server, state })
    }

    /// Takes the provider down (every call answered 503) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Calls received, answered or not.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Messages accepted, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state
            .sent
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// When each accepted message was accepted, in order (as [`Provider::sent`]).
    pub fn accepted_at(&self) -> Vec<Instant> {
        self.state
            .accepted_at
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// How many messages were accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted_at.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// The `[provider.<api>]` table pointing at this stand-in, the secret in `secret_file`
    /// and its CA in `ca_file`.
    pub fn config(&self, secret_file: &std::path::Path, ca_file: &std::path::Path) -> String {
        let (secret, ca) = (secret_file.display(), ca_file.display());
        let base = self.server.url("");
        match self.state.api {
            Api::Twilio => format!(
                "[provider.twilio]\nbase_url = \"{base}\"\naccount_sid = \"ACtest\"\n\
                 auth_token_file = \"{secret}\"\nfrom = \"+15550199000\"\nca_file = \"{ca}\"\n\
                 timeout_ms = 5000\n"
            ),
            Api::Vonage => format!(
                "[provider.vonage]\nbase_url = \"{base}\"\napi_key = \"key-test\"\n\
                 api_secret_file = \"{secret}\"\nfrom = \"Herald\"\nca_file = \"{ca}\"\n\
                 timeout_ms = 5000\n"
            ),
        }
    }
}

fn answer(state: &State, seen: &Seen) -> Reply {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return Reply::json(503, r#"{"message":"down for the test"}"#);
    }
    match state.api {
        Api::Twilio => twilio(state, seen),
        Api::Vonage => vonage(state, seen),
    }
}

/// Records `message` as accepted now; returns how many were accepted so far.
fn accept(state: &State, message: Sent) -> usize {
    let mut sent = state.sent.lock().unwrap_or_else(|e| e.into_inner());
    sent.push(message);
    if let Ok(mut at) = state.accepted_at.lock() {
        at.push(Instant::now());
    }
    sent.len()
}

fn twilio(state: &State, seen: &Seen) -> Reply {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("ACtest:{}", Provider::SECRET));
    if seen.header("authorization") != format!("Basic {basic}") {
        return Reply::json(401, r#"{"code":20003,"message":"Authenticate"}"#);
    }
    if seen.method != "POST" || seen.path != "/2010-04-01/Accounts/ACtest/Messages.json" {
        return Reply::json(404, r#"{"code":20404,"message":"not found"}"#);
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&seen.body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let to = field("To");
    if to == INVALID_NUMBER {
        return Reply::json(
            400,
            r#"{"code":21211,"message":"Invalid 'To' Phone Number"}"#,
        );
    }
    let n = accept(
        state,
        Sent {
            to,
            text: field("Body"),
        },
    );
    Reply::json(201, format!(r#"{{"sid":"SM{n}","status":"queued"}}"#))
}

fn vonage(state: &State, seen: &Seen) -> Reply {
    if seen.method != "POST" || seen.path != "/sms/json" {
        return Reply::json(404, "{}");
    }
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap_or_default();
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
    let status = |status: &str, text: &str| {
        Reply::json(
            200,
            format!(
                r#"{{"message-count":"1","messages":[{{"status":"{status}","error-text":"{text}"}}]}}"#
            ),
        )
    };
    if field("api_key") != "key-test" || field("api_secret") != Provider::SECRET {
        return status("4", "Bad Credentials");
    }
    let to = field("to");
    if format!("+{to}") == INVALID_NUMBER {
        return status("7", "Number barred");
    }
    let n = accept(
        state,
        Sent {
            to,
            text: field("text"),
        },
    );
    Reply::json(
        200,
        format!(r#"{{"message-count":"1","messages":[{{"status":"0","message-id":"v{n}"}}]}}"#),
    )
}
