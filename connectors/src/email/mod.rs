//! The e-mail channel: a multipart (text and HTML) message sent over SMTP with STARTTLS or
//! implicit TLS and AUTH, with a Message-ID derived from the delivery id and RFC 8058 one-click
//! unsubscribe headers for notifications that are not critical.
//!
//! - [`config`]: `[provider.email]` and its checks.
//! - [`message`]: the message, pure (golden tests).
//! - [`smtp`]: the conversation, step by step, and the idle connections.
//! - [`classify`]: what the server's answer means (delivered / retry / failed / invalid address).

pub mod classify;
pub mod config;
pub mod message;
pub mod smtp;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use herald_schemas::Dispatch;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};

pub use self::config::{EmailConfig, TlsMode};
use self::message::Settings;
use self::smtp::{Server, Smtp, Upgrade};
use crate::setup::{Secret, SetupError};
use crate::{Connector, Outcome};

/// Sends dispatches as e-mails through one SMTP server.
pub struct EmailConnector {
    settings: Settings,
    smtp: Smtp,
    /// For `Debug`: where it sends, never the password.
    describe: String,
}

impl std::fmt::Debug for EmailConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConnector")
            .field("server", &self.describe)
            .finish_non_exhaustive()
    }
}

impl EmailConnector {
    /// A connector as `config` says: its checks passed, the password read (when there is a
    /// username) and the CA file loaded. It connects when the first message is sent.
    pub fn new(config: &EmailConfig) -> Result<EmailConnector, SetupError> {
        let from = config.validate()?;
        // rustls needs one process-wide crypto provider; a second install is refused, harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let credentials = match &config.username {
            Some(username) => {
                let secret = Secret::load(
                    "SMTP password",
                    &config.password_env,
                    config.password_file.as_deref(),
                )?;
                let password = String::from_utf8(secret.expose().to_vec())
                    .map_err(|_| SetupError::Credential("SMTP password: not UTF-8".into()))?;
                Some(Credentials::new(username.clone(), password))
            }
            None => None,
        };
        let tls = match config.tls {
            TlsMode::None => None,
            TlsMode::Starttls => Some((tls_parameters(config)?, Upgrade::Starttls)),
            TlsMode::Implicit => Some((tls_parameters(config)?, Upgrade::Implicit)),
        };
        let describe = format!(
            "{}:{} tls={:?} user={:?}",
            config.host,
            config.port(),
            config.tls,
            config.username
        );
        let smtp = Smtp::new(Server {
            host: bare_host(&config.host).to_owned(),
            port: config.port(),
            tls,
            credentials,
            timeout: Duration::from_millis(config.timeout_ms),
        });
        Ok(EmailConnector {
            settings: Settings {
                from,
                unsubscribe_url: config.unsubscribe_url.clone(),
            },
            smtp,
            describe,
        })
    }
}

/// `host` without spaces around it nor the brackets of an IPv6 literal (`[::1]`).
fn bare_host(host: &str) -> &str {
    host.trim().trim_start_matches('[').trim_end_matches(']')
}

/// TLS checking the server's certificate against the system's roots and `ca_file`'s.
fn tls_parameters(config: &EmailConfig) -> Result<TlsParameters, SetupError> {
    let mut builder = TlsParameters::builder(bare_host(&config.host).to_owned());
    if let Some(path) = &config.ca_file {
        let ca = |reason: String| SetupError::Ca {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ca("no certificate in it".into()));
        }
        let certificate = Certificate::from_pem(&pem).map_err(|e| ca(e.to_string()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| SetupError::Client(format!("SMTP TLS: {e}")))
}

#[async_trait]
impl Connector for EmailConnector {
    async fn send(&self, d: &Dispatch) -> Outcome {
        let email = match message::build(d, &self.settings, SystemTime::now(), None) {
            Ok(email) => email,
            Err(invalid) => return Outcome::InvalidToken(invalid.to_string()),
        };
        let message_id = message::message_id(&d.delivery_id, self.settings.from.email.domain());
        match self.smtp.send(email.envelope(), &email.formatted()).await {
            Ok(()) => classify::delivered(&message_id),
            Err(failure) => classify::classify(&failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    fn dispatch(address: &str) -> Dispatch {
        crate::test_dispatch(Channel::Email, address)
    }

    fn config() -> EmailConfig {
        EmailConfig {
            // Nothing listens on port 9 of this machine: a call would be refused, and retried.
            host: "127.0.0.1".into(),
            port: Some(9),
            from: "noreply@example.com".into(),
            timeout_ms: 2_000,
            ..EmailConfig::default()
        }
    }

    #[tokio::test]
    async fn an_address_that_is_no_mailbox_is_invalid_without_a_call() {
        let connector = EmailConnector::new(&config()).expect("a connector");
        let long = format!("{}@example.com", "a".repeat(100_000));
        for address in [
            "",
            "not an address",
            "a@",
            "@example.com",
            "a@b@c",
            "a\r\n@x.com",
            &long,
        ] {
            let outcome = connector.send(&dispatch(address)).await;
            assert!(
                matches!(outcome, Outcome::InvalidToken(_)),
                "{:.60}: {outcome:?}",
                address
            );
        }
        // The same connector, given a mailbox, does call (and finds nobody there).
        let outcome = connector.send(&dispatch("ana@example.com")).await;
        assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");
    }

    #[test]
    fn the_password_is_read_only_with_a_username_and_never_printed() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2-smtp\n").expect("write");
        let with_user = EmailConfig {
            username: Some("herald".into()),
            password_file: Some(file.clone()),
            ..config()
        };
        let connector = EmailConnector::new(&with_user).expect("a connector");
        let printed = format!("{connector:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("127.0.0.1:9"), "{printed}");
        let missing = EmailConfig {
            username: Some("herald".into()),
            password_env: "HERALD_TEST_UNSET_SMTP_PASSWORD".into(),
            ..config()
        };
        let error = EmailConnector::new(&missing)
            .expect_err("no password")
            .to_string();
        assert!(error.contains("HERALD_TEST_UNSET_SMTP_PASSWORD"), "{error}");
        // No username: no password needed.
        assert!(EmailConnector::new(&config()).is_ok());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let config = EmailConfig {
            tls: TlsMode::Starttls,
            ca_file: Some(file),
            ..config()
        };
        assert!(matches!(
            EmailConnector::new(&config),
            Err(SetupError::Ca { .. })
        ));
    }
}
