//! The FCM channel: one Firebase Cloud Messaging HTTP v1 call per device token, authorised by
//! an OAuth2 access token got with the project's service-account key.
//!
//! [`oauth`] gets and caches the access token, [`request`] builds the message, [`classify`]
//! reads FCM's answer; this module holds the configuration and does the I/O.
//!
//! A refused credential (FCM's 401 or 403, or the token endpoint refusing the key) is retried,
//! not failed: it is the configuration that is wrong, not the delivery, so fixing the key file
//! or the service account's role lets the deliveries waiting to be retried through.

pub mod classify;
pub mod oauth;
pub mod request;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_schemas::Dispatch;
use serde::Deserialize;

use crate::setup::{SetupError, https_client};
use crate::{Connector, Outcome};

use oauth::{AccessTokens, ServiceAccount};

/// The longest FCM answer read: more is ignored (an error body is a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A 2048-bit RSA key made for the tests only (PKCS#8 PEM, as Google's key files hold).
#[cfg(test)]
pub(crate) const TEST_KEY_PEM: &str = include_str!("test_key.pem");

/// FCM's longest time to live: 28 days.
pub const MAX_TTL_S: u64 = 2_419_200;

/// `[provider.fcm]`: present, the FCM channel sends through Firebase Cloud Messaging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FcmConfig {
    /// FCM's address (a test server's in tests).
    pub base_url: String,
    /// The service account's JSON key file (Firebase console → Project settings → Service
    /// accounts → Generate new private key); messages go to its `project_id`. Required.
    pub key_file: Option<PathBuf>,
    /// Where to get access tokens, instead of the key file's `token_uri` (a test server's).
    pub token_uri: Option<String>,
    /// How long FCM keeps a message for a device that is offline (seconds, at most 28 days).
    pub ttl_s: u64,
    /// How long one call may take, connecting included (milliseconds).
    pub timeout_ms: u64,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for FcmConfig {
    fn default() -> Self {
        FcmConfig {
            base_url: "https://fcm.googleapis.com".into(),
            key_file: None,
            token_uri: None,
            ttl_s: 86_400,
            timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

/// Sends dispatches to FCM. Clones share the client and the access token.
#[derive(Debug, Clone)]
pub struct FcmConnector {
    client: reqwest::Client,
    tokens: Arc<AccessTokens>,
    messages_url: String,
    ttl_s: u64,
}

/// `url` if it is an https:// URL; else why not, naming `what`.
fn https_url(what: &str, url: &str) -> Result<String, SetupError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => Ok(url.to_owned()),
        _ => Err(SetupError::Config(format!(
            "{what} {url:?} is not an https:// URL"
        ))),
    }
}

impl FcmConnector {
    /// A connector as `config` says, its key file read and checked.
    pub fn new(config: &FcmConfig) -> Result<FcmConnector, SetupError> {
        let base_url = https_url("[provider.fcm] base_url", &config.base_url)?;
        if config.ttl_s > MAX_TTL_S {
            return Err(SetupError::Config(format!(
                "[provider.fcm] ttl_s = {} is longer than FCM's 28 days ({MAX_TTL_S})",
                config.ttl_s
            )));
        }
        if config.timeout_ms == 0 {
            return Err(SetupError::Config(
                "[provider.fcm] timeout_ms must be more than 0".into(),
            ));
        }
        let key_file = config.key_file.as_deref().ok_or_else(|| {
            SetupError::Credential(
                "[provider.fcm] key_file: set it to the service account's JSON key file".into(),
            )
        })?;
        let account = ServiceAccount::load(key_file)?;
        let token_uri = match &config.token_uri {
            Some(uri) => https_url("[provider.fcm] token_uri", uri)?,
            None => https_url(
                &format!("token_uri in {}", key_file.display()),
                &account.token_uri,
            )?,
        };
        let client = https_client(
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_deref(),
        )?;
        let messages_url = request::messages_url(&base_url, &account.project_id);
        let tokens = AccessTokens::new(account, token_uri, client.clone(), oauth::system_clock());
        Ok(FcmConnector {
            client,
            tokens: Arc::new(tokens),
            messages_url,
            ttl_s: config.ttl_s,
        })
    }

    /// The Firebase project messages are sent for.
    pub fn project_id(&self) -> &str {
        &self.tokens.account().project_id
    }
}

#[async_trait]
impl Connector for FcmConnector {
    async fn send(&self, d: &Dispatch) -> Outcome {
        if let Err(why) = request::check_token(&d.address) {
            return Outcome::InvalidToken(why);
        }
        let token = match self.tokens.get().await {
            Ok(token) => token,
            Err(e) => return Outcome::retry(e.to_string()),
        };
        let message = request::build(d, &self.messages_url, self.ttl_s);
        let call = self
            .client
            .post(&message.url)
            .bearer_auth(token.secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(message.body);
        match call.send().await {
            Ok(answer) => {
                let status = answer.status().as_u16();
                let retry_after = answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = crate::setup::read_capped(answer, MAX_ANSWER_BYTES).await;
                if classify::access_token_refused(status, &body) {
                    self.tokens.forget(&token).await;
                }
                classify::classify(status, retry_after.as_deref(), &body)
            }
            // No answer (refused, reset, timed out): FCM may come back.
            Err(e) => Outcome::retry(format!("FCM call failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    fn key_file(dir: &std::path::Path, token_uri: &str) -> PathBuf {
        let path = dir.join("key.json");
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "kid-1",
            "private_key": TEST_KEY_PEM,
            "client_email": "herald@test-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        });
        std::fs::write(&path, json.to_string()).expect("write");
        path
    }

    fn config(key_file: PathBuf) -> FcmConfig {
        FcmConfig {
            key_file: Some(key_file),
            ..FcmConfig::default()
        }
    }

    #[test]
    fn the_config_has_working_defaults_and_refuses_unknown_fields() {
        let parsed: FcmConfig =
            serde_json::from_value(serde_json::json!({"key_file": "/k.json"})).expect("parses");
        assert_eq!(parsed.base_url, "https://fcm.googleapis.com");
        assert_eq!((parsed.ttl_s, parsed.timeout_ms), (86_400, 10_000));
        let unknown = serde_json::from_value::<FcmConfig>(serde_json::json!({"keyfile": "/k"}));
        assert!(unknown.is_err());
    }

    #[test]
    fn a_good_key_starts_the_connector_for_its_project() {
        let dir = tempfile::tempdir().expect("dir");
        let key = key_file(dir.path(), "https://oauth2.googleapis.com/token");
        let connector = FcmConnector::new(&config(key)).expect("starts");
        assert_eq!(connector.project_id(), "test-project");
        assert_eq!(
            connector.messages_url,
            "https://fcm.googleapis.com/v1/projects/test-project/messages:send"
        );
        let printed = format!("{connector:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    }

    #[test]
    fn a_bad_setting_is_a_clear_setup_error() {
        let dir = tempfile::tempdir().expect("dir");
        let key = key_file(dir.path(), "https://oauth2.googleapis.com/token");
        let http_key = {
            let sub = dir.path().join("http");
            std::fs::create_dir(&sub).expect("dir");
            key_file(&sub, "http://oauth2.googleapis.com/token")
        };
        std::fs::write(dir.path().join("bad.json"), r#"{"type":"service_account"}"#)
            .expect("write");
        let cases = [
            (FcmConfig::default(), "key_file: set it"),
            (config(dir.path().join("absent.json")), "absent.json"),
            (config(dir.path().join("bad.json")), "is missing"),
            (config(http_key), "token_uri in"),
            (
                FcmConfig {
                    base_url: "http://fcm.googleapis.com".into(),
                    ..config(key.clone())
                },
                "base_url",
            ),
            (
                FcmConfig {
                    token_uri: Some("not a url".into()),
                    ..config(key.clone())
                },
                "token_uri",
            ),
            (
                FcmConfig {
                    ttl_s: MAX_TTL_S + 1,
                    ..config(key.clone())
                },
                "ttl_s",
            ),
            (
                FcmConfig {
                    timeout_ms: 0,
                    ..config(key.clone())
                },
                "timeout_ms",
            ),
        ];
        for (config, expected) in cases {
            let error = FcmConnector::new(&config).expect_err(expected).to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[tokio::test]
    async fn a_malformed_device_token_is_invalid_without_a_call() {
        let dir = tempfile::tempdir().expect("dir");
        // Nothing listens there: a call would come back as a retry.
        let key = key_file(dir.path(), "https://127.0.0.1:1/token");
        let connector = FcmConnector::new(&FcmConfig {
            base_url: "https://127.0.0.1:1".into(),
            timeout_ms: 2_000,
            ..config(key)
        })
        .expect("starts");
        let mut d = crate::test_dispatch(Channel::PushFcm, "token");
        for address in [String::new(), "a b".into(), "x".repeat(5_000), "t\n".into()] {
            d.address = address;
            let outcome = connector.send(&d).await;
            assert!(matches!(outcome, Outcome::InvalidToken(_)), "{outcome:?}");
        }
        d.address = "plausible".into();
        let outcome = connector.send(&d).await;
        assert!(
            matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("token endpoint")),
            "{outcome:?}"
        );
    }
}
