//! What the HTTP connectors share when they start: one HTTPS client per connector (rustls,
//! a timeout, an optional private CA), credentials read from a file or the environment and
//! never printed, and the errors that keep a connector from starting.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a connector cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A credential is missing or unusable.
    #[error("{0}")]
    Credential(String),
    /// The CA file cannot be read or parsed.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client cannot be built.
    #[error("HTTP client: {0}")]
    Client(String),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
}

/// A credential (a signing secret, a password, a private key); `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A secret holding `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// `what` (named in errors) from `file` if given, else from the environment variable
    /// `env`; trailing whitespace (a file's last newline) is not part of it, and it must not
    /// be empty.
    pub fn load(what: &str, env: &str, file: Option<&Path>) -> Result<Secret, SetupError> {
        let value = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| SetupError::Credential(format!("{what}: {}: {e}", path.display())))?,
            None => std::env::var(env).map_err(|_| {
                SetupError::Credential(format!("{what}: set {env} (or the secret file)"))
            })?,
        };
        let value = value.trim_end();
        if value.is_empty() {
            return Err(SetupError::Credential(format!("{what} is empty")));
        }
        Ok(Secret(value.as_bytes().to_vec()))
    }

    /// The secret's bytes, for signing or sending.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// An HTTPS-only client that waits at most `timeout` per call (connecting included), follows
/// no redirect, and trusts the PEM certificates in `ca_file` besides the system's.
pub fn https_client(
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, SetupError> {
    // rustls needs one process-wide crypto provider; a second install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let ca = |reason: String| SetupError::Ca {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca("no certificate in it".into()));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| SetupError::Client(e.to_string()))
}

/// A provider's answer, its body read up to a bound.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body's first bytes (at most the bound given to [`call`]).
    pub body: Vec<u8>,
}

/// Sends `request` and reads the answer's status, `Retry-After` and up to `max_body` bytes of
/// its body (the rest is not read: a provider's answer is small, a huge one is not trusted).
pub async fn call(request: reqwest::RequestBuilder, max_body: usize) -> reqwest::Result<Answer> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_capped(response, max_body).await;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The first `cap` bytes of `answer`'s body: fewer if it ends sooner or breaks off.
pub async fn read_capped(mut answer: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The longest Retry-After honoured: a provider asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// A `Retry-After` header's value given in seconds, capped at [`MAX_RETRY_AFTER`] (an HTTP
/// date is not honoured: the retry policy's backoff applies).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let seconds: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_capped_and_ignores_dates() {
        assert_eq!(retry_after(Some(" 5 ")), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(Some("999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2026 07:28:00 GMT")), None);
        assert_eq!(retry_after(Some("-1")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn a_secret_comes_from_its_file_first_and_is_never_printed() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("s");
        std::fs::write(&file, "from-the-file\n").expect("write");
        let secret =
            Secret::load("test secret", "HERALD_TEST_UNSET_VARIABLE", Some(&file)).expect("loads");
        assert_eq!(secret.expose(), b"from-the-file");
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        std::fs::write(&file, " \n").expect("write");
        assert!(Secret::load("test secret", "X", Some(&file)).is_err());
        let missing = Secret::load("test secret", "HERALD_TEST_UNSET_VARIABLE", None);
        let error = missing.expect_err("no variable").to_string();
        assert!(error.contains("HERALD_TEST_UNSET_VARIABLE"), "{error}");
    }
}
