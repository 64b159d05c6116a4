//! The webhook channel: an HTTPS POST of a documented JSON body to the recipient's URL, signed
//! with HMAC-SHA256 over timestamp and body, with the delivery id as `Idempotency-Key`
//! ([`request`] builds it, [`classify`] reads the answer; this module does the I/O).

pub mod classify;
pub mod request;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use herald_schemas::Dispatch;
use serde::Deserialize;

use crate::setup::{Secret, SetupError, https_client};
use crate::{Connector, Outcome};

/// `[provider.webhook]`: present, the webhook channel posts to the recipients' URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The environment variable holding the signing secret…
    pub secret_env: String,
    /// …or a file holding it (trailing whitespace is ignored); the file wins when both are set.
    pub secret_file: Option<PathBuf>,
    /// How long one call may take, connecting included (milliseconds).
    pub timeout_ms: u64,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret_env: "HERALD_WEBHOOK_SECRET".into(),
            secret_file: None,
            timeout_ms: 10_000,
            ca_file: None,
        }
    }
}

/// The signing secret as `config` says: at least 16 characters.
pub fn load_secret(config: &WebhookConfig) -> Result<Secret, SetupError> {
    let secret = Secret::load(
        "webhook signing secret",
        &config.secret_env,
        config.secret_file.as_deref(),
    )?;
    if secret.expose().len() < 16 {
        return Err(SetupError::Credential(
            "webhook signing secret: shorter than 16 characters; use a long random value".into(),
        ));
    }
    Ok(secret)
}

/// Posts dispatches to webhook URLs.
#[derive(Debug, Clone)]
pub struct WebhookConnector {
    client: reqwest::Client,
    secret: Secret,
}

impl WebhookConnector {
    /// A connector as `config` says, signing with `secret`.
    pub fn new(config: &WebhookConfig, secret: Secret) -> Result<WebhookConnector, SetupError> {
        let client = https_client(
            Duration::from_millis(config.timeout_ms),
            config.ca_file.as_deref(),
        )?;
        Ok(WebhookConnector { client, secret })
    }
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[async_trait]
impl Connector for WebhookConnector {
    async fn send(&self, d: &Dispatch) -> Outcome {
        if !d.address.starts_with("https://") {
            return Outcome::InvalidToken(format!(
                "the webhook address {:?} is not an https:// URL",
                d.address
            ));
        }
        let signed = request::build(d, self.secret.expose(), unix_seconds());
        let mut call = self.client.post(&signed.url).body(signed.body);
        for (name, value) in signed.headers {
            call = call.header(name, value);
        }
        match call.send().await {
            Ok(answer) => {
                let retry_after = answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok());
                classify::classify(answer.status().as_u16(), retry_after)
            }
            // No answer (refused, reset, timed out): the receiver may come back.
            Err(e) if e.is_builder() => Outcome::InvalidToken(format!("webhook address: {e}")),
            Err(e) => Outcome::retry(format!("webhook call failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    fn dispatch(address: &str) -> Dispatch {
        crate::test_dispatch(Channel::Webhook, address)
    }

    #[tokio::test]
    async fn an_address_that_is_not_an_https_url_is_invalid_without_a_call() {
        let secret = Secret::new(*b"0123456789abcdef0123");
        let connector = WebhookConnector::new(&WebhookConfig::default(), secret).expect("a client");
        let long = format!("https://{}", "a".repeat(100_000));
        for address in [
            "http://hooks.example.com/h",
            "not a url",
            "",
            "https://",
            &long,
        ] {
            let outcome = connector.send(&dispatch(address)).await;
            assert!(
                matches!(outcome, Outcome::InvalidToken(_) | Outcome::Retry { .. }),
                "{:.60}: {outcome:?}",
                address
            );
            if !address.starts_with("https://") {
                assert!(
                    matches!(outcome, Outcome::InvalidToken(_)),
                    "{address}: {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn a_short_or_missing_secret_is_refused_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("herald-secret-{}", std::process::id()));
        std::fs::write(&dir, "short\n").expect("write");
        let config = WebhookConfig {
            secret_file: Some(dir.clone()),
            ..WebhookConfig::default()
        };
        assert!(matches!(
            load_secret(&config),
            Err(SetupError::Credential(_))
        ));
        std::fs::write(&dir, "a-secret-long-enough-to-use\n").expect("write");
        let secret = load_secret(&config).expect("loads");
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        let missing = WebhookConfig {
            secret_file: Some(dir.join("absent")),
            ..WebhookConfig::default()
        };
        assert!(matches!(
            load_secret(&missing),
            Err(SetupError::Credential(_))
        ));
        let _ = std::fs::remove_file(&dir);
    }
}
