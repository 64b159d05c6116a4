//! Vonage's SMS API, a shape unlike Twilio's: `POST {base_url}/sms/json` with a JSON body that
//! carries the credentials (`api_key`, `api_secret`), the number without its `+`, and a
//! `client-ref` (the delivery id); the answer is `200` even for most failures, with a status
//! per message part: `{"message-count":"1","messages":[{"status":"0","message-id":"…"}]}`.
//!
//! [`request`] builds the call (pure) and [`classify`] reads the answer (pure). Statuses:
//! 0 sent; 1 throttled, 5 internal error and 9 quota exceeded are retried; 4 (bad credentials)
//! is retried, since fixing the configuration lets the messages through; 7 (number barred)
//! is an invalid address; any other is a permanent failure naming the provider's text.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use herald_schemas::Dispatch;
use serde::{Deserialize, Serialize};

use super::{refuse_number, text};
use crate::setup::{Secret, SetupError, https_client, retry_after};
use crate::{Connector, Outcome};

/// The most of an answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `[provider.vonage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VonageConfig {
    /// The API's root.
    pub base_url: String,
    /// The API key.
    pub api_key: String,
    /// The environment variable holding the API secret…
    pub api_secret_env: String,
    /// …or a file holding it; the file wins when both are set.
    pub api_secret_file: Option<PathBuf>,
    /// The sender: a number (E.164) or an alphanumeric sender id.
    pub from: String,
    /// How long one call may take, connecting included (milliseconds).
    pub timeout_ms: u64,
    /// A PEM file of CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for VonageConfig {
    fn default() -> Self {
        VonageConfig {
            base_url: "https://rest.nexmo.com".into(),
            api_key: String::new(),
            api_secret_env: "HERALD_VONAGE_API_SECRET".into(),
            api_secret_file: None,
            from: String::new(),
            timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

/// The JSON body.
#[derive(Debug, Serialize)]
struct Body<'a> {
    api_key: &'a str,
    api_secret: &'a str,
    from: &'a str,
    to: &'a str,
    text: &'a str,
    #[serde(rename = "client-ref")]
    client_ref: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A request ready to send: where, and the JSON body (which holds the secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// Where to post.
    pub url: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The call sending `d` from `from` with `api_key` and `api_secret`.
pub fn request(
    base_url: &str,
    api_key: &str,
    api_secret: &str,
    from: &str,
    d: &Dispatch,
) -> Request {
    let text = text(d);
    let body = Body {
        api_key,
        api_secret,
        from: from.strip_prefix('+').unwrap_or(from),
        to: d.address.strip_prefix('+').unwrap_or(&d.address),
        text: &text,
        client_ref: &d.delivery_id,
        kind: if text.is_ascii() { "text" } else { "unicode" },
    };
    Request {
        url: format!("{}/sms/json", base_url.trim_end_matches('/')),
        // A struct of strings always serialises.
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The answer's body.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    messages: Vec<Part>,
}

/// One message part's status.
#[derive(Debug, Default, Deserialize)]
struct Part {
    #[serde(default)]
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

/// The outcome of an answer with `status`, `Retry-After` and `body`: delivered when every
/// part was sent; otherwise by the first failed part's status.
pub fn classify(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => {}
        429 | 500..=599 => {
            return Outcome::Retry {
                reason: format!("vonage answered {status}"),
                after: retry_after(retry_after_header),
            };
        }
        401 | 403 => {
            return Outcome::retry(format!(
                "vonage answered {status} (check the API key and secret)"
            ));
        }
        _ => return Outcome::Failed(format!("vonage answered {status}")),
    }
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    let Some(first) = answer.messages.first() else {
        return Outcome::retry("vonage answered 200 without a message status");
    };
    let Some(failed) = answer.messages.iter().find(|p| p.status != "0") else {
        return Outcome::Delivered {
            provider_message_id: first.message_id.clone(),
        };
    };
    let reason = format!(
        "vonage status {}: {}",
        failed.status,
        failed.error_text.as_deref().unwrap_or("no text")
    );
    match failed.status.as_str() {
        "1" | "5" | "9" => Outcome::retry(reason),
        "4" => Outcome::retry(format!("{reason} (check the API key and secret)")),
        "7" => Outcome::InvalidToken(reason),
        _ => Outcome::Failed(reason),
    }
}

/// Sends SMS through Vonage's API.
#[derive(Debug, Clone)]
pub struct VonageConnector {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
    api_secret: Secret,
    from: String,
}

impl VonageConnector {
    /// A connector as `config` says, its API secret read now.
    pub fn new(config: &VonageConfig) -> Result<VonageConnector, SetupError> {
        if config.api_key.is_empty() || config.from.is_empty() {
            return Err(SetupError::Config(
                "[provider.vonage] needs api_key and from".into(),
            ));
        }
        let api_secret = Secret::load(
            "vonage API secret",
            &config.api_secret_env,
            config.api_secret_file.as_deref(),
        )?;
        if std::str::from_utf8(api_secret.expose()).is_err() {
            return Err(SetupError::Credential(
                "vonage API secret is not UTF-8".into(),
            ));
        }
        Ok(VonageConnector {
            client: https_client(
                Duration::from_millis(config.timeout_ms),
                config.ca_file.as_deref(),
            )?,
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
            api_secret,
            from: config.from.clone(),
        })
    }
}

#[async_trait]
impl Connector for VonageConnector {
    async fn send(&self, d: &Dispatch) -> Outcome {
        if let Some(reason) = refuse_number(&d.address) {
            return Outcome::InvalidToken(reason);
        }
        let secret = std::str::from_utf8(self.api_secret.expose()).unwrap_or_default();
        let call = request(&self.base_url, &self.api_key, secret, &self.from, d);
        let builder = self
            .client
            .post(&call.url)
            .header("Content-Type", "application/json")
            .body(call.body);
        match crate::setup::call(builder, MAX_ANSWER_BYTES).await {
            Ok(answer) => classify(answer.status, answer.retry_after.as_deref(), &answer.body),
            Err(e) => Outcome::retry(format!("vonage call failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::test_dispatch;

    #[test]
    fn the_request_is_this_json() {
        let call = request(
            "https://rest.example.com/",
            "key1",
            "s3cret",
            "+15550199000",
            &test_dispatch("+15550100000"),
        );
        assert_eq!(call.url, "https://rest.example.com/sms/json");
        assert_eq!(
            String::from_utf8(call.body.clone()).expect("utf-8"),
            r#"{"api_key":"key1","api_secret":"s3cret","from":"15550199000","to":"15550100000","text":"Your code\n123 456 & <ok>","client-ref":"0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11","type":"text"}"#
        );
        assert!(!format!("{call:?}").contains("s3cret"));
        let mut d = test_dispatch("+15550100000");
        d.body = "Grüße".into();
        let call = request("https://r", "k", "s", "Herald", &d);
        assert!(
            String::from_utf8(call.body)
                .expect("utf-8")
                .contains(r#""from":"Herald","#)
        );
    }

    #[test]
    fn every_part_sent_is_delivered_with_the_first_id() {
        let body = br#"{"message-count":"2","messages":[{"status":"0","message-id":"a1"},{"status":"0","message-id":"a2"}]}"#;
        assert_eq!(
            classify(200, None, body),
            Outcome::Delivered {
                provider_message_id: Some("a1".into())
            }
        );
    }

    #[test]
    fn statuses_in_a_200_are_classified() {
        let answer = |status: &str| {
            format!(
                r#"{{"message-count":"1","messages":[{{"status":"{status}","error-text":"t"}}]}}"#
            )
        };
        for status in ["1", "5", "9", "4"] {
            assert!(
                matches!(
                    classify(200, None, answer(status).as_bytes()),
                    Outcome::Retry { .. }
                ),
                "{status}"
            );
        }
        assert_eq!(
            classify(200, None, answer("7").as_bytes()),
            Outcome::InvalidToken("vonage status 7: t".into())
        );
        for status in ["2", "3", "6", "15", "29"] {
            assert_eq!(
                classify(200, None, answer(status).as_bytes()),
                Outcome::Failed(format!("vonage status {status}: t"))
            );
        }
        let mixed =
            br#"{"messages":[{"status":"0","message-id":"a1"},{"status":"6","error-text":"x"}]}"#;
        assert_eq!(
            classify(200, None, mixed),
            Outcome::Failed("vonage status 6: x".into())
        );
        assert!(matches!(classify(200, None, b"{}"), Outcome::Retry { .. }));
    }

    #[test]
    fn http_failures_are_classified() {
        assert_eq!(
            classify(429, Some("3"), b""),
            Outcome::Retry {
                reason: "vonage answered 429".into(),
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(classify(502, None, b""), Outcome::Retry { .. }));
        assert!(matches!(classify(401, None, b""), Outcome::Retry { .. }));
        assert_eq!(
            classify(400, None, b""),
            Outcome::Failed("vonage answered 400".into())
        );
    }
}
