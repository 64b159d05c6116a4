//! `[provider.email]`: the SMTP server, its TLS, the account and what every message carries.

use std::net::IpAddr;
use std::path::PathBuf;

use lettre::message::Mailbox;
use serde::Deserialize;

use crate::setup::SetupError;

/// How the connection to the server is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// A plain connection upgraded with STARTTLS, which the server must offer (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No encryption: only for a server on this machine (127.0.0.1, ::1, localhost).
    None,
}

/// `[provider.email]`: present, the e-mail channel sends through this SMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// The SMTP server's name (also the name its certificate must carry).
    pub host: String,
    /// Its port; by default 587 for `starttls`, 465 for `implicit`, 25 for `none`.
    pub port: Option<u16>,
    /// `starttls` (the default), `implicit` or `none` (a server on this machine only).
    pub tls: TlsMode,
    /// The account to log in with (AUTH PLAIN or LOGIN); none: no AUTH.
    pub username: Option<String>,
    /// With `username`: the environment variable holding the password…
    pub password_env: String,
    /// …or a file holding it (trailing whitespace is ignored); the file wins when both are set.
    pub password_file: Option<PathBuf>,
    /// The sender, `noreply@example.com` or `Example <noreply@example.com>`; its domain names
    /// the Message-IDs (`<delivery id@herald.example.com>`).
    pub from: String,
    /// The one-click unsubscribe URL put in `List-Unsubscribe` of every notification that is not
    /// critical, with `{tenant}`, `{user}` and `{category}` replaced by the notification's
    /// (percent-encoded); an `https://` URL. None: no `List-Unsubscribe` headers.
    pub unsubscribe_url: Option<String>,
    /// How long one message may take, connecting included (milliseconds).
    pub timeout_ms: u64,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            host: "localhost".into(),
            port: None,
            tls: TlsMode::Starttls,
            username: None,
            password_env: "HERALD_SMTP_PASSWORD".into(),
            password_file: None,
            from: String::new(),
            unsubscribe_url: None,
            timeout_ms: 30_000,
            ca_file: None,
        }
    }
}

impl EmailConfig {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Starttls => 587,
            TlsMode::Implicit => 465,
            TlsMode::None => 25,
        })
    }

    /// The checks that need no file: the host, TLS, sender, unsubscribe template and timeout.
    pub fn validate(&self) -> Result<Mailbox, SetupError> {
        let config = |what: String| SetupError::Config(format!("[provider.email] {what}"));
        if self.host.trim().is_empty() {
            return Err(config("host is empty".into()));
        }
        if self.tls == TlsMode::None && !is_this_machine(&self.host) {
            return Err(config(format!(
                "tls = \"none\" is only allowed for a server on this machine (127.0.0.1, ::1, \
                 localhost), not {:?}; use \"starttls\" or \"implicit\"",
                self.host
            )));
        }
        if self.timeout_ms == 0 {
            return Err(config("timeout_ms must be more than 0".into()));
        }
        if self.username.is_none() && self.password_file.is_some() {
            return Err(config("password_file is set without a username".into()));
        }
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| config(format!("from = {:?} is not a mailbox: {e}", self.from)))?;
        if !from.email.domain().is_ascii() {
            return Err(config(format!(
                "from = {:?}: write the domain in its ASCII (punycode) form",
                self.from
            )));
        }
        if let Some(template) = &self.unsubscribe_url {
            check_unsubscribe_template(template).map_err(config)?;
        }
        Ok(from)
    }
}

/// Whether `host` names this machine.
pub fn is_this_machine(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An `https://` URL of visible ASCII whose only placeholders are `{tenant}`, `{user}` and
/// `{category}`.
fn check_unsubscribe_template(template: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("unsubscribe_url = {template:?}: {why}"));
    if !template.starts_with("https://") || template.len() <= "https://".len() {
        return bad("must be an https:// URL (RFC 8058)");
    }
    if let Some(c) = template
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '<' | '>' | '"' | '\\'))
    {
        return bad(&format!("{c:?} is not allowed; percent-encode it"));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return bad("a '{' without '}'");
        };
        let name = &rest[open + 1..open + close];
        if !matches!(name, "tenant" | "user" | "category") {
            return bad(&format!(
                "unknown placeholder {{{name}}} (known: {{tenant}}, {{user}}, {{category}})"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return bad("a '}' without '{'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EmailConfig {
        EmailConfig {
            host: "smtp.example.com".into(),
            from: "Herald <noreply@example.com>".into(),
            ..EmailConfig::default()
        }
    }

    fn error(config: &EmailConfig) -> String {
        config.validate().expect_err("refused").to_string()
    }

    #[test]
    fn a_valid_config_gives_the_sender_and_the_default_ports() {
        let from = config().validate().expect("valid");
        assert_eq!(from.to_string(), "Herald <noreply@example.com>");
        assert_eq!(config().port(), 587);
        let implicit = EmailConfig {
            tls: TlsMode::Implicit,
            ..config()
        };
        assert_eq!(implicit.port(), 465);
        let set = EmailConfig {
            port: Some(2525),
            ..config()
        };
        assert_eq!(set.port(), 2525);
    }

    #[test]
    fn no_tls_is_only_for_this_machine() {
        for host in [
            "127.0.0.1",
            "127.0.0.2",
            "localhost",
            "LOCALHOST",
            "::1",
            "[::1]",
        ] {
            let local = EmailConfig {
                host: host.into(),
                tls: TlsMode::None,
                ..config()
            };
            assert!(local.validate().is_ok(), "{host}");
            assert_eq!(local.port(), 25);
        }
        for host in [
            "smtp.example.com",
            "10.0.0.1",
            "localhost.example.com",
            "0.0.0.0",
        ] {
            let remote = EmailConfig {
                host: host.into(),
                tls: TlsMode::None,
                ..config()
            };
            assert!(error(&remote).contains("only allowed"), "{host}");
        }
    }

    #[test]
    fn the_sender_must_be_a_mailbox_with_an_ascii_domain() {
        for from in ["", "noreply", "a@b@c", "Herald <noreply@exämple.com>"] {
            let bad = EmailConfig {
                from: from.into(),
                ..config()
            };
            assert!(error(&bad).contains("from"), "{from}");
        }
    }

    #[test]
    fn the_unsubscribe_template_is_https_with_known_placeholders() {
        let good = EmailConfig {
            unsubscribe_url: Some(
                "https://example.com/u?tenant={tenant}&user={user}&category={category}".into(),
            ),
            ..config()
        };
        assert!(good.validate().is_ok());
        for (template, why) in [
            ("http://example.com/u?user={user}", "https://"),
            ("https://", "https://"),
            (
                "https://example.com/u?user={uid}",
                "unknown placeholder {uid}",
            ),
            ("https://example.com/u?user={user", "without '}'"),
            ("https://example.com/u?user=user}", "without '{'"),
            ("https://example.com/u?a b", "' ' is not allowed"),
            ("https://example.com/u>x", "'>' is not allowed"),
        ] {
            let bad = EmailConfig {
                unsubscribe_url: Some(template.into()),
                ..config()
            };
            let message = error(&bad);
            assert!(message.contains(why), "{template}: {message}");
        }
    }

    #[test]
    fn other_mistakes_are_named() {
        let empty_host = EmailConfig {
            host: " ".into(),
            ..config()
        };
        assert!(error(&empty_host).contains("host"));
        let no_time = EmailConfig {
            timeout_ms: 0,
            ..config()
        };
        assert!(error(&no_time).contains("timeout_ms"));
        let password_alone = EmailConfig {
            password_file: Some("/run/secrets/smtp".into()),
            ..config()
        };
        assert!(error(&password_alone).contains("without a username"));
    }

    #[test]
    fn the_config_parses_and_refuses_unknown_keys() {
        let config: EmailConfig = serde_json::from_value(serde_json::json!({
            "host": "smtp.example.com", "tls": "implicit", "from": "a@example.com",
            "username": "herald", "timeout_ms": 5000
        }))
        .expect("parses");
        assert_eq!(config.tls, TlsMode::Implicit);
        assert_eq!(config.password_env, "HERALD_SMTP_PASSWORD");
        let unknown = serde_json::from_value::<EmailConfig>(serde_json::json!({"hots": "x"}));
        assert!(unknown.is_err());
        let bad_tls = serde_json::from_value::<EmailConfig>(serde_json::json!({"tls": "ssl"}));
        assert!(bad_tls.is_err());
    }
}
