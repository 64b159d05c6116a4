//! The OAuth2 access token FCM wants, from a Google service-account key: a JWT bearer grant
//! (RFC 7523), cached until shortly before it expires.
//!
//! ```text
//! POST <token_uri>
//! Content-Type: application/x-www-form-urlencoded
//!
//! grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=<JWT>
//!
//! JWT header {"typ":"JWT","alg":"RS256","kid":"<private_key_id>"}
//! JWT claims {"iss":"<client_email>","scope":"https://www.googleapis.com/auth/firebase.messaging",
//!             "aud":"<token_uri>","iat":<now>,"exp":<now + 3600>}
//! answer     {"access_token":"…","expires_in":3599,"token_type":"Bearer"}
//! ```
//!
//! [`ServiceAccount`] reads the key file and signs assertions (pure, given the time);
//! [`TokenCache`] keeps one token and refreshes it when less than five minutes remain, one
//! refresh at a time; [`AccessTokens`] joins them to the token endpoint.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::setup::SetupError;

/// The scope that lets a token send FCM messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The JWT bearer grant type, form-encoded.
const GRANT_TYPE_FORM: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// How long an assertion is valid (Google's maximum).
pub const ASSERTION_LIFETIME_S: u64 = 3_600;
/// A cached token with less than this left is replaced before use.
pub const REFRESH_MARGIN_S: u64 = 300;
/// The largest token-endpoint answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The time as seconds since the Unix epoch; injected so tests need not wait.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// Why no access token could be had; sends wait and retry (a wrong key is fixed in the
/// configuration, a down endpoint comes back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FCM access token: {0}")]
pub struct TokenError(pub String);

/// A service account's identity and signing key, from its JSON key file. `Debug` never shows
/// the private key.
pub struct ServiceAccount {
    /// `client_email`: the assertion's issuer.
    pub client_email: String,
    /// `private_key_id`: the assertion's `kid`.
    pub private_key_id: String,
    /// `token_uri`: where assertions are exchanged for access tokens.
    pub token_uri: String,
    /// `project_id`: the Firebase project messages are sent for.
    pub project_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .field("private_key", &"…")
            .finish()
    }
}

/// The key file's fields Herald uses (it has more). No `Debug`: it holds the private key.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

impl ServiceAccount {
    /// The service account in the key file at `path`, checked: every field present, the
    /// private key an RSA key in PEM that signs.
    pub fn load(path: &Path) -> Result<ServiceAccount, SetupError> {
        let json = std::fs::read(path).map_err(|e| {
            SetupError::Credential(format!("FCM service-account key {}: {e}", path.display()))
        })?;
        ServiceAccount::from_json(&json).map_err(|why| {
            SetupError::Credential(format!("FCM service-account key {}: {why}", path.display()))
        })
    }

    /// The service account in a key file's JSON, or what is wrong with it.
    pub fn from_json(json: &[u8]) -> Result<ServiceAccount, String> {
        // serde_json's errors name positions, never the text.
        let file: KeyFile =
            serde_json::from_slice(json).map_err(|e| format!("not a JSON key file ({e})"))?;
        if let Some(kind) = file.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!(
                "a {kind:?} key, not a service account's: download a key of a service account"
            ));
        }
        let field = |value: Option<String>, name: &str| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("{name} is missing or empty"))
        };
        let private_key = field(file.private_key, "private_key")?;
        let account = ServiceAccount {
            client_email: field(file.client_email, "client_email")?,
            private_key_id: field(file.private_key_id, "private_key_id")?,
            token_uri: field(file.token_uri, "token_uri")?,
            project_id: field(file.project_id, "project_id")?,
            key: EncodingKey::from_rsa_pem(private_key.as_bytes())
                .map_err(|e| format!("private_key is not an RSA private key in PEM ({e})"))?,
        };
        if !account
            .project_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_".contains(c))
        {
            return Err(format!(
                "project_id {:?} is not a Google Cloud project id",
                account.project_id
            ));
        }
        // A key that parses may still not sign (a truncated or corrupted one): try it now.
        account
            .assertion(&account.token_uri, 0)
            .map_err(|e| format!("private_key cannot sign ({})", e.0))?;
        Ok(account)
    }

    /// The signed assertion for the token endpoint `aud`, issued at `now` (unix seconds).
    pub fn assertion(&self, aud: &str, now: u64) -> Result<String, TokenError> {
        // Signing needs one process-wide provider; a second install is refused, harmlessly.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud,
            iat: now,
            exp: now.saturating_add(ASSERTION_LIFETIME_S),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| TokenError(format!("cannot sign the assertion: {e}")))
    }
}

/// The form body exchanging `assertion` for an access token.
pub fn token_request_body(assertion: &str) -> String {
    // A JWT is base64url parts and dots: nothing to escape.
    format!("grant_type={GRANT_TYPE_FORM}&assertion={assertion}")
}

/// An access token as the endpoint gave it. `Debug` never shows the token.
#[derive(Deserialize)]
pub struct Granted {
    /// The token.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// Its kind: `Bearer`.
    pub token_type: String,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Granted(…, expires in {} s)", self.expires_in)
    }
}

/// The token in the endpoint's answer (`status`, `body`), or why there is none.
pub fn read_grant(status: u16, body: &[u8]) -> Result<Granted, TokenError> {
    if status != 200 {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct OAuthError {
            error: String,
            error_description: String,
        }
        let e: OAuthError = serde_json::from_slice(body).unwrap_or_default();
        let detail: String = format!(" {} {}", e.error, e.error_description)
            .trim_end()
            .chars()
            .take(300)
            .collect();
        let hint = match status {
            400 | 401 | 403 => ": check the service-account key (revoked, or a wrong file?)",
            _ => "",
        };
        return Err(TokenError(format!(
            "the token endpoint answered {status}{detail}{hint}"
        )));
    }
    let granted: Granted = serde_json::from_slice(body)
        .map_err(|e| TokenError(format!("the token endpoint's answer is unusable ({e})")))?;
    if !granted.token_type.eq_ignore_ascii_case("bearer") || granted.access_token.is_empty() {
        return Err(TokenError(format!(
            "the token endpoint gave a {:?} token, not a bearer token",
            granted.token_type
        )));
    }
    Ok(granted)
}

/// An access token and when it expires. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    value: Arc<str>,
    expires_at: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(…, expires at {})", self.expires_at)
    }
}

impl AccessToken {
    /// The token, for the `Authorization` header.
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// When it expires (unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    fn fresh_at(&self, now: u64) -> bool {
        self.expires_at.saturating_sub(now) >= REFRESH_MARGIN_S
    }
}

/// One cached access token: reused while at least [`REFRESH_MARGIN_S`] of it remains, then
/// fetched again. Concurrent callers share one fetch (the lock is held across it).
pub struct TokenCache {
    clock: Clock,
    slot: tokio::sync::Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache(…)")
    }
}

impl TokenCache {
    /// An empty cache reading the time from `clock`.
    pub fn new(clock: Clock) -> TokenCache {
        TokenCache {
            clock,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached token if still fresh, else the one `fetch` gets (given the time), cached.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<AccessToken, TokenError>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<Granted, TokenError>>,
    {
        let mut slot = self.slot.lock().await;
        let now = (self.clock)();
        if let Some(token) = slot.as_ref().filter(|t| t.fresh_at(now)) {
            return Ok(token.clone());
        }
        let granted = fetch(now).await?;
        let token = AccessToken {
            value: granted.access_token.into(),
            expires_at: now.saturating_add(granted.expires_in),
        };
        *slot = Some(token.clone());
        Ok(token)
    }

    /// Drops `token` if it is still the cached one (a newer one stays).
    pub async fn forget(&self, token: &AccessToken) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref() == Some(token) {
            *slot = None;
        }
    }
}

/// Access tokens for one service account, fetched from the token endpoint and cached.
#[derive(Debug)]
pub struct AccessTokens {
    account: ServiceAccount,
    token_uri: String,
    client: reqwest::Client,
    cache: TokenCache,
}

impl AccessTokens {
    /// Tokens for `account` from `token_uri` (also the assertions' audience), fetched with
    /// `client`, the time read from `clock`.
    pub fn new(
        account: ServiceAccount,
        token_uri: String,
        client: reqwest::Client,
        clock: Clock,
    ) -> AccessTokens {
        AccessTokens {
            account,
            token_uri,
            client,
            cache: TokenCache::new(clock),
        }
    }

    /// The service account.
    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// A fresh access token: the cached one, or a new one.
    pub async fn get(&self) -> Result<AccessToken, TokenError> {
        self.cache.get(|now| self.fetch(now)).await
    }

    /// Drops `token` (FCM refused it): the next [`AccessTokens::get`] fetches another.
    pub async fn forget(&self, token: &AccessToken) {
        self.cache.forget(token).await;
    }

    async fn fetch(&self, now: u64) -> Result<Granted, TokenError> {
        let assertion = self.account.assertion(&self.token_uri, now)?;
        let answer = self
            .client
            .post(&self.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(token_request_body(&assertion))
            .send()
            .await
            .map_err(|e| TokenError(format!("the token endpoint did not answer: {e}")))?;
        let status = answer.status().as_u16();
        let body = crate::setup::read_capped(answer, MAX_ANSWER_BYTES).await;
        read_grant(status, &body)
    }
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
