//! A Twilio-compatible SMS provider: `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded `To`, `From` (or `MessagingServiceSid`) and `Body`, HTTP basic auth with the
//! account sid and auth token; `201` with the message's `sid`, or an error
//! `{"code": 21211, "message": "…"}`.
//!
//! [`request`] builds the call (pure), [`classify`] reads the answer (pure), and the connector
//! does the I/O. Error codes read as an invalid address: 21211 (not a valid phone number),
//! 21614 (not a mobile number) and 21610 (the recipient replied STOP). An authentication
//! failure (401/403) is retried, not failed: it is the operator's configuration, and fixing it
//! lets the waiting messages through.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use herald_schemas::Dispatch;
use serde::Deserialize;

use super::{refuse_number, text};
use crate::setup::{Secret, SetupError, https_client, retry_after};
use crate::{Connector, Outcome};

/// The most of an answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `[provider.twilio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// The API's root.
    pub base_url: String,
    /// The account sid (`AC…`): the user of basic auth and part of the path.
    pub account_sid: String,
    /// The environment variable holding the auth token…
    pub auth_token_env: String,
    /// …or a file holding it; the file wins when both are set.
    pub auth_token_file: Option<PathBuf>,
    /// The sender number (E.164)…
    pub from: Option<String>,
    /// …or a messaging service sid (`MG…`), used instead of `from` when set.
    pub messaging_service_sid: Option<String>,
    /// How long one call may take, connecting included (milliseconds).
    pub timeout_ms: u64,
    /// A PEM file of CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token_env: "HERALD_TWILIO_AUTH_TOKEN".into(),
            auth_token_file: None,
            from: None,
            messaging_service_sid: None,
            timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Where to post.
    pub url: String,
    /// Headers, in order (the credentials are in `Authorization`).
    pub headers: Vec<(&'static str, String)>,
    /// The form-encoded body.
    pub body: String,
}

/// The sender: a number or a messaging service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// `From=<number>`.
    Number(String),
    /// `MessagingServiceSid=<sid>`.
    Service(String),
}

/// The call sending `d` from `sender` on `account_sid`'s behalf.
pub fn request(
    base_url: &str,
    account_sid: &str,
    auth_token: &[u8],
    sender: &Sender,
    d: &Dispatch,
) -> Request {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", &d.address);
    match sender {
        Sender::Number(number) => form.append_pair("From", number),
        Sender::Service(sid) => form.append_pair("MessagingServiceSid", sid),
    };
    form.append_pair("Body", &text(d));
    let mut credentials = account_sid.as_bytes().to_vec();
    credentials.push(b':');
    credentials.extend_from_slice(auth_token);
    let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
    Request {
        url: format!(
            "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
            base_url.trim_end_matches('/')
        ),
        headers: vec![
            ("Authorization", format!("Basic {basic}")),
            ("Content-Type", "application/x-www-form-urlencoded".into()),
        ],
        body: form.finish(),
    }
}

/// An error answer's body.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

/// A success's body.
#[derive(Debug, Default, Deserialize)]
struct Created {
    sid: Option<String>,
}

/// The outcome of an answer with `status`, `Retry-After` and `body`.
pub fn classify(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        let created: Created = serde_json::from_slice(body).unwrap_or_default();
        return Outcome::Delivered {
            provider_message_id: created.sid,
        };
    }
    let error: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let reason = match (&error.code, &error.message) {
        (Some(code), Some(message)) => format!("twilio answered {status}: {code} {message}"),
        (Some(code), None) => format!("twilio answered {status}: {code}"),
        _ => format!("twilio answered {status}"),
    };
    match (status, error.code) {
        (_, Some(21211 | 21614 | 21610)) => Outcome::InvalidToken(reason),
        (429 | 500..=599, _) => Outcome::Retry {
            reason,
            after: retry_after(retry_after_header),
        },
        (401 | 403, _) => {
            Outcome::retry(format!("{reason} (check the account sid and auth token)"))
        }
        _ => Outcome::Failed(reason),
    }
}

/// Sends SMS through a Twilio-compatible API.
#[derive(Debug, Clone)]
pub struct TwilioConnector {
    client: reqwest::Client,
    base_url: String,
    account_sid: String,
    auth_token: Secret,
    sender: Sender,
}

impl TwilioConnector {
    /// A connector as `config` says, its auth token read now.
    pub fn new(config: &TwilioConfig) -> Result<TwilioConnector, SetupError> {
        if config.account_sid.is_empty() {
            return Err(SetupError::Config(
                "[provider.twilio] account_sid is not set".into(),
            ));
        }
        let sender = match (&config.messaging_service_sid, &config.from) {
            (Some(sid), _) => Sender::Service(sid.clone()),
            (None, Some(from)) if super::is_e164(from) => Sender::Number(from.clone()),
            (None, Some(from)) => {
                return Err(SetupError::Config(format!(
                    "[provider.twilio] from = {from:?} is not an E.164 number"
                )));
            }
            (None, None) => {
                return Err(SetupError::Config(
                    "[provider.twilio] needs from or messaging_service_sid".into(),
                ));
            }
        };
        let auth_token = Secret::load(
            "twilio auth token",
            &config.auth_token_env,
            config.auth_token_file.as_deref(),
        )?;
        Ok(TwilioConnector {
            client: https_client(
                Duration::from_millis(config.timeout_ms),
                config.ca_file.as_deref(),
            )?,
            base_url: config.base_url.clone(),
            account_sid: config.account_sid.clone(),
            auth_token,
            sender,
        })
    }
}

#[async_trait]
impl Connector for TwilioConnector {
    async fn send(&self, d: &Dispatch) -> Outcome {
        if let Some(reason) = refuse_number(&d.address) {
            return Outcome::InvalidToken(reason);
        }
        let call = request(
            &self.base_url,
            &self.account_sid,
            self.auth_token.expose(),
            &self.sender,
            d,
        );
        let mut builder = self.client.post(&call.url).body(call.body);
        for (name, value) in call.headers {
            builder = builder.header(name, value);
        }
        match crate::setup::call(builder, MAX_ANSWER_BYTES).await {
            Ok(answer) => classify(answer.status, answer.retry_after.as_deref(), &answer.body),
            Err(e) => Outcome::retry(format!("twilio call failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::test_dispatch;

    /// The exact call; `echo -n 'ACtest:s3cret' | base64` gives the credentials.
    #[test]
    fn the_request_is_this_form_with_basic_auth() {
        let sender = Sender::Number("+15550199000".into());
        let call = request(
            "https://api.example.com/",
            "ACtest",
            b"s3cret",
            &sender,
            &test_dispatch("+15550100000"),
        );
        assert_eq!(
            call.url,
            "https://api.example.com/2010-04-01/Accounts/ACtest/Messages.json"
        );
        assert_eq!(
            call.headers,
            vec![
                ("Authorization", "Basic QUN0ZXN0OnMzY3JldA==".to_owned()),
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded".to_owned()
                ),
            ]
        );
        assert_eq!(
            call.body,
            "To=%2B15550100000&From=%2B15550199000&Body=Your+code%0A123+456+%26+%3Cok%3E"
        );
        let service = Sender::Service("MG1".into());
        let call = request(
            "https://a",
            "AC",
            b"t",
            &service,
            &test_dispatch("+15550100000"),
        );
        assert!(
            call.body.contains("&MessagingServiceSid=MG1&"),
            "{}",
            call.body
        );
    }

    #[test]
    fn created_is_delivered_with_the_sid() {
        assert_eq!(
            classify(201, None, br#"{"sid":"SM123","status":"queued"}"#),
            Outcome::Delivered {
                provider_message_id: Some("SM123".into())
            }
        );
        assert_eq!(
            classify(200, None, b"not json"),
            Outcome::Delivered {
                provider_message_id: None
            }
        );
    }

    #[test]
    fn a_bad_number_an_unsubscribed_one_and_a_landline_are_invalid_addresses() {
        for code in [21211, 21614, 21610] {
            let body = format!(r#"{{"code":{code},"message":"m","status":400}}"#);
            assert_eq!(
                classify(400, None, body.as_bytes()),
                Outcome::InvalidToken(format!("twilio answered 400: {code} m"))
            );
        }
    }

    #[test]
    fn throttling_and_outages_retry_after_what_twilio_asked() {
        let body = br#"{"code":20429,"message":"Too Many Requests"}"#;
        assert_eq!(
            classify(429, Some("7"), body),
            Outcome::Retry {
                reason: "twilio answered 429: 20429 Too Many Requests".into(),
                after: Some(Duration::from_secs(7)),
            }
        );
        assert!(matches!(
            classify(503, None, b""),
            Outcome::Retry { after: None, .. }
        ));
    }

    #[test]
    fn bad_credentials_retry_and_other_client_errors_fail() {
        let body = br#"{"code":20003,"message":"Authenticate"}"#;
        assert!(
            matches!(classify(401, None, body), Outcome::Retry { reason, .. } if reason.contains("auth token"))
        );
        assert_eq!(
            classify(
                400,
                None,
                br#"{"code":21602,"message":"Message body is required."}"#
            ),
            Outcome::Failed("twilio answered 400: 21602 Message body is required.".into())
        );
        assert_eq!(
            classify(404, None, b""),
            Outcome::Failed("twilio answered 404".into())
        );
    }

    #[tokio::test]
    async fn a_number_that_is_not_e164_is_invalid_without_a_call() {
        let config = TwilioConfig {
            base_url: "https://127.0.0.1:9".into(),
            account_sid: "AC1".into(),
            from: Some("+15550199000".into()),
            ..TwilioConfig::default()
        };
        let dir = tempfile::tempdir().expect("dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken").expect("write");
        let config = TwilioConfig {
            auth_token_file: Some(token),
            ..config
        };
        let connector = TwilioConnector::new(&config).expect("connector");
        let outcome = connector.send(&test_dispatch("555-0100")).await;
        assert!(matches!(outcome, Outcome::InvalidToken(_)), "{outcome:?}");
        assert!(format!("{connector:?}").contains("Secret(…)"));
    }

    #[test]
    fn a_config_without_a_sender_or_with_a_bad_one_is_refused() {
        let base = TwilioConfig {
            account_sid: "AC1".into(),
            ..TwilioConfig::default()
        };
        assert!(matches!(
            TwilioConnector::new(&base),
            Err(SetupError::Config(_))
        ));
        let bad = TwilioConfig {
            from: Some("555".into()),
            ..base
        };
        assert!(matches!(
            TwilioConnector::new(&bad),
            Err(SetupError::Config(_))
        ));
    }
}
