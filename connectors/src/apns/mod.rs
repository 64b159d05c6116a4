//! The iOS push channel: Apple Push Notification service over HTTP/2, authorised by a provider
//! token (an ES256 JWT signed with the team's `.p8` key, reused for 50 minutes).
//! [`request`] builds the request, [`classify`] reads the answer, [`token`] signs and renews
//! the token; this module reads the settings and does the I/O.
//!
//! ```toml
//! [provider.apns]
//! key_file = "/run/secrets/AuthKey_ABC123DEFG.p8"
//! key_id = "ABC123DEFG"
//! team_id = "DEF123GHIJ"
//! topic = "com.example.app"
//! # base_url = "https://api.sandbox.push.apple.com"   # for development builds of the app
//! ```
//!
//! The client offers HTTP/2 by ALPN, which APNs requires and chooses. If APNs refuses the
//! provider token for any reason but its age (a wrong key, key id or team), the deliveries are
//! retried, not failed: fix the settings and restart, and they are delivered (within the retry
//! policy's attempts).

pub mod classify;
pub mod request;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use herald_schemas::Dispatch;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::setup::{SetupError, https_client};
use crate::{Connector, Outcome};
use token::ProviderToken;

/// The most of an error answer read (bytes): APNs's are a short JSON object.
const MAX_ANSWER: usize = 4096;

/// `[provider.apns]`: present, the iOS push channel sends through APNs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// APNs's address: `https://api.push.apple.com` (production, the default) or
    /// `https://api.sandbox.push.apple.com` (apps built for development; their device tokens
    /// are refused by production as `BadDeviceToken`, and the reverse).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The `.p8` file of the APNs authentication key (Apple's developer account, Keys); read at
    /// start-up.
    pub key_file: PathBuf,
    /// The key's 10-character id, shown beside it in the developer account.
    pub key_id: String,
    /// The 10-character id of the team that owns the key and the app.
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// How long APNs keeps trying a device that is offline, counted from the notification's
    /// request time (seconds); 0: deliver now or never.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// How long one call may take, connecting included (milliseconds).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A PEM file of CA certificates trusted besides the system's (a proxy or a test server).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_base_url() -> String {
    "https://api.push.apple.com".into()
}

fn default_ttl_s() -> u64 {
    86_400
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// The time in unix seconds; a test passes its own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system's time in unix seconds.
pub fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Sends dispatches to iOS devices through APNs.
pub struct ApnsConnector {
    client: reqwest::Client,
    base_url: String,
    topic: String,
    ttl_s: u64,
    timeout_ms: u64,
    token: ProviderToken,
    clock: Clock,
}

impl std::fmt::Debug for ApnsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsConnector")
            .field("base_url", &self.base_url)
            .field("topic", &self.topic)
            .field("ttl_s", &self.ttl_s)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ApnsConnector {
    /// A connector as `config` says, on the system's clock. Refuses settings it could not send
    /// with: an unreadable or unusable key, an empty id or topic, a base URL that is not https.
    pub fn new(config: &ApnsConfig) -> Result<ApnsConnector, SetupError> {
        ApnsConnector::with_clock(config, Arc::new(unix_seconds))
    }

    /// A connector as `config` says, reading the time (for the provider token) from `clock`.
    pub fn with_clock(config: &ApnsConfig, clock: Clock) -> Result<ApnsConnector, SetupError> {
        let base_url = base_url(&config.base_url)?;
        for (name, value) in [
            ("key_id", &config.key_id),
            ("team_id", &config.team_id),
            ("topic", &config.topic),
        ] {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(SetupError::Config(format!(
                    "[provider.apns] {name} {value:?}: expected printable ASCII without spaces"
                )));
            }
        }
        let pem = std::fs::read(&config.key_file).map_err(|e| {
            SetupError::Credential(format!(
                "[provider.apns] key_file {}: {e}",
                config.key_file.display()
            ))
        })?;
        let token = ProviderToken::new(&pem, &config.key_id, &config.team_id)?;
        let client = https_client(
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_deref(),
        )?;
        Ok(ApnsConnector {
            client,
            base_url,
            topic: config.topic.clone(),
            ttl_s: config.ttl_s,
            timeout_ms: config.timeout_ms,
            token,
            clock,
        })
    }

    fn target(&self) -> request::Target<'_> {
        request::Target {
            base_url: &self.base_url,
            topic: &self.topic,
            ttl_s: self.ttl_s,
        }
    }

    /// Why a call got no answer, without the URL (it holds the device token).
    fn failed_call(&self, e: reqwest::Error) -> Outcome {
        if e.is_timeout() {
            return Outcome::retry(format!("APNs did not answer within {} ms", self.timeout_ms));
        }
        let e = e.without_url();
        let mut reason = format!("APNs call failed: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        Outcome::retry(reason)
    }
}

/// `value` as a base URL: https, with a host, without a trailing slash.
fn base_url(value: &str) -> Result<String, SetupError> {
    let bad = |why: &str| SetupError::Config(format!("[provider.apns] base_url {value:?}: {why}"));
    let url = reqwest::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(bad("expected an https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("expected no query or fragment"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[async_trait]
impl Connector for ApnsConnector {
    async fn send(&self, d: &Dispatch) -> Outcome {
        let jwt = match self.token.get((self.clock)()) {
            Ok(jwt) => jwt,
            Err(e) => return Outcome::retry(e.to_string()),
        };
        let request = match request::build(d, self.target(), &jwt) {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        let mut call = self.client.post(&request.url).body(request.body);
        for (name, value) in request.headers {
            let Ok(mut value) = HeaderValue::from_str(&value) else {
                return Outcome::Failed(format!("APNs header {name}: not a header value"));
            };
            value.set_sensitive(name == "authorization");
            call = call.header(HeaderName::from_static(name), value);
        }
        let answer = match call.send().await {
            Ok(answer) => answer,
            // No answer (refused, reset, timed out): APNs, or the way to it, may come back.
            Err(e) => return self.failed_call(e),
        };
        let status = answer.status().as_u16();
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (apns_id, retry_after) = (header("apns-id"), header("retry-after"));
        let reason = if status == 200 {
            None
        } else {
            classify::reason(&crate::setup::read_capped(answer, MAX_ANSWER).await)
        };
        if classify::token_expired(status, reason.as_deref()) {
            self.token.expire(&jwt);
        }
        classify::classify(
            status,
            reason.as_deref(),
            apns_id.as_deref(),
            retry_after.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    /// A usable config with a fresh P-256 key in `dir`.
    fn config(dir: &tempfile::TempDir) -> ApnsConfig {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
        let key_file = dir.path().join("AuthKey.p8");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
        serde_json::from_value(serde_json::json!({
            "key_file": key_file,
            "key_id": "ABC123DEFG",
            "team_id": "DEF123GHIJ",
            "topic": "com.example.app",
        }))
        .expect("a config")
    }

    fn dispatch(address: &str) -> Dispatch {
        crate::test_dispatch(Channel::PushApns, address)
    }

    #[test]
    fn the_defaults_are_production_a_day_and_ten_seconds() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(&dir);
        assert_eq!(config.base_url, "https://api.push.apple.com");
        assert_eq!(config.ttl_s, 86_400);
        assert_eq!(config.timeout_ms, 10_000);
        assert_eq!(config.ca_file, None);
        let unknown = serde_json::json!({
            "key_file": "k", "key_id": "k", "team_id": "t", "topic": "t", "sandbox": true
        });
        assert!(serde_json::from_value::<ApnsConfig>(unknown).is_err());
    }

    #[test]
    fn settings_it_cannot_send_with_are_refused_at_start_naming_the_setting() {
        let dir = tempfile::tempdir().expect("dir");
        let good = config(&dir);
        assert!(ApnsConnector::new(&good).is_ok());
        let cases = [
            (
                ApnsConfig {
                    key_file: dir.path().join("absent.p8"),
                    ..good.clone()
                },
                "key_file",
            ),
            (
                ApnsConfig {
                    base_url: "http://api.push.apple.com".into(),
                    ..good.clone()
                },
                "base_url",
            ),
            (
                ApnsConfig {
                    base_url: "api.push.apple.com".into(),
                    ..good.clone()
                },
                "base_url",
            ),
            (
                ApnsConfig {
                    topic: String::new(),
                    ..good.clone()
                },
                "topic",
            ),
            (
                ApnsConfig {
                    key_id: "ABC 123".into(),
                    ..good.clone()
                },
                "key_id",
            ),
        ];
        for (config, named) in cases {
            let error = ApnsConnector::new(&config).expect_err(named).to_string();
            assert!(error.contains(named), "{named}: {error}");
        }
        let not_a_key = dir.path().join("not-a-key.p8");
        std::fs::write(
            &not_a_key,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = ApnsConnector::new(&ApnsConfig {
            key_file: not_a_key,
            ..good
        })
        .expect_err("not a key");
        assert!(matches!(error, SetupError::Credential(_)), "{error}");
    }

    #[test]
    fn a_trailing_slash_of_the_base_url_is_dropped() {
        assert_eq!(
            base_url("https://api.sandbox.push.apple.com/").expect("a URL"),
            "https://api.sandbox.push.apple.com"
        );
        assert!(base_url("https://api.push.apple.com/?x=1").is_err());
    }

    #[tokio::test]
    async fn debug_shows_no_credential() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(&dir);
        let key = std::fs::read_to_string(&config.key_file).expect("the key");
        let connector =
            ApnsConnector::with_clock(&config, Arc::new(|| 1_767_225_600)).expect("a connector");
        let jwt = connector.token.get(1_767_225_600).expect("a token");
        let debug = format!("{connector:?}");
        assert!(
            debug.contains("ABC123DEFG") && debug.contains("com.example.app"),
            "{debug}"
        );
        let key_body = key.lines().nth(1).expect("a base64 line");
        assert!(
            !debug.contains(key_body) && !debug.contains(&jwt),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn no_answer_is_a_retry_without_the_device_token_in_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let config = ApnsConfig {
            base_url: format!("https://127.0.0.1:{port}"),
            ..config(&dir)
        };
        let connector = ApnsConnector::new(&config).expect("a connector");
        let device = "ab".repeat(32);
        match connector.send(&dispatch(&device)).await {
            Outcome::Retry { reason, after } => {
                assert!(reason.starts_with("APNs call failed"), "{reason}");
                assert!(!reason.contains(&device), "{reason}");
                assert_eq!(after, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
