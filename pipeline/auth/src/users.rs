//! User tokens: a JWT that a tenant's backend signs for one of its users, so that an app can
//! call the inbox RPCs straight. Its header's `kid` names the tenant (whose key checks it); its
//! claims are `sub` (the user id), `aud` (`herald` unless configured), `exp` and `iat`:
//!
//! ```text
//! header  {"alg":"HS256","typ":"JWT","kid":"acme"}
//! claims  {"sub":"ana","aud":"herald","iat":1767225600,"exp":1767229200}
//! ```
//!
//! A tenant's key is a shared secret (HS256) or a public key (ES256 or RS256, PEM), from
//! `[auth.user_tokens.<tenant>]`. A token is refused when its signature, tenant, audience or
//! expiry is wrong, when it has no `iat`, or when it lives longer than the tenant's
//! `max_lifetime_s` (so a leaked token is short-lived by construction). Time is passed in.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{AuthError, Principal};

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4_096;

/// `[auth.user_tokens.<tenant>]`: how a tenant's user tokens are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserTokenConfig {
    /// HS256: the environment variable holding the tenant's shared secret…
    pub secret_env: Option<String>,
    /// …or a file holding it.
    pub secret_file: Option<PathBuf>,
    /// ES256 or RS256 (see `algorithm`): the tenant's public key, PEM.
    pub public_key_file: Option<PathBuf>,
    /// `HS256` (with a secret), `ES256` or `RS256` (with a public key).
    pub algorithm: String,
    /// The audience tokens must name.
    pub audience: String,
    /// The longest lifetime (`exp - iat`) accepted, in seconds.
    pub max_lifetime_s: u64,
}

impl Default for UserTokenConfig {
    fn default() -> Self {
        UserTokenConfig {
            secret_env: None,
            secret_file: None,
            public_key_file: None,
            algorithm: "HS256".into(),
            audience: "herald".into(),
            max_lifetime_s: 86_400,
        }
    }
}

/// A token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The audience.
    pub aud: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issue time, unix seconds.
    pub iat: i64,
}

struct TenantKey {
    key: DecodingKey,
    algorithm: Algorithm,
    audience: String,
    max_lifetime_s: i64,
}

/// Every tenant's user-token key.
#[derive(Default)]
pub struct UserTokens {
    tenants: HashMap<String, TenantKey>,
}

impl std::fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut tenants: Vec<&String> = self.tenants.keys().collect();
        tenants.sort();
        f.debug_struct("UserTokens")
            .field("tenants", &tenants)
            .finish()
    }
}

/// The secret of an HS256 tenant, as its config says.
pub fn shared_secret(tenant: &str, c: &UserTokenConfig) -> Result<Vec<u8>, String> {
    let secret = match (&c.secret_file, &c.secret_env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("[auth.user_tokens.{tenant}] {}: {e}", path.display()))?,
        (None, Some(env)) => {
            std::env::var(env).map_err(|_| format!("[auth.user_tokens.{tenant}] set {env}"))?
        }
        (None, None) => {
            return Err(format!(
                "[auth.user_tokens.{tenant}] needs secret_env or secret_file for HS256"
            ));
        }
    };
    let secret = secret.trim_end().as_bytes().to_vec();
    if secret.len() < 32 {
        return Err(format!(
            "[auth.user_tokens.{tenant}] the secret is shorter than 32 bytes"
        ));
    }
    Ok(secret)
}

impl UserTokens {
    /// The keys `configs` name (by tenant), read now.
    pub fn load(configs: &BTreeMap<String, UserTokenConfig>) -> Result<UserTokens, String> {
        let mut tenants = HashMap::new();
        for (tenant, c) in configs {
            let bad = |m: String| format!("[auth.user_tokens.{tenant}] {m}");
            let (key, algorithm) = match c.algorithm.as_str() {
                "HS256" => (
                    DecodingKey::from_secret(&shared_secret(tenant, c)?)
                        .map_err(|e| bad(e.to_string()))?,
                    Algorithm::HS256,
                ),
                name @ ("ES256" | "RS256") => {
                    let path = c
                        .public_key_file
                        .as_ref()
                        .ok_or_else(|| bad(format!("{name} needs public_key_file")))?;
                    let pem =
                        std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
                    let key = if name == "ES256" {
                        DecodingKey::from_ec_pem(&pem)
                    } else {
                        DecodingKey::from_rsa_pem(&pem)
                    }
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                    let algorithm = if name == "ES256" {
                        Algorithm::ES256
                    } else {
                        Algorithm::RS256
                    };
                    (key, algorithm)
                }
                other => return Err(bad(format!("algorithm {other:?}: HS256, ES256 or RS256"))),
            };
            tenants.insert(
                tenant.clone(),
                TenantKey {
                    key,
                    algorithm,
                    audience: c.audience.clone(),
                    max_lifetime_s: i64::try_from(c.max_lifetime_s).unwrap_or(i64::MAX),
                },
            );
        }
        Ok(UserTokens { tenants })
    }

    /// The user `token` is for, checked at `now_s` (unix seconds).
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Principal, AuthError> {
        let refused = |why: &str| AuthError::Unauthenticated(format!("user token: {why}"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused("too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused("malformed"))?;
        let tenant = header
            .kid
            .ok_or_else(|| refused("no kid (the tenant) in its header"))?;
        let key = self
            .tenants
            .get(&tenant)
            .ok_or_else(|| refused("its tenant accepts no user tokens"))?;
        let mut validation = Validation::new(key.algorithm);
        // Expiry is checked below against the time passed in, not the system's.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[&key.audience]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| refused(&format!("{e}")))?;
        let c = data.claims;
        if c.exp <= now_s {
            return Err(refused("expired"));
        }
        if c.iat > now_s + 60 || c.exp.saturating_sub(c.iat) > key.max_lifetime_s {
            return Err(refused("lives longer than the tenant allows"));
        }
        if c.sub.is_empty() || c.sub.len() > 256 {
            return Err(refused("no user"));
        }
        Ok(Principal::User {
            tenant,
            user_id: c.sub,
        })
    }
}

/// An HS256 user token for `user` of `tenant`, valid for `ttl_s` from `now_s`: what a tenant's
/// backend does (the README shows it in Python); here for `herald token` and the tests.
pub fn mint_hs256(
    secret: &[u8],
    tenant: &str,
    user: &str,
    audience: &str,
    now_s: i64,
    ttl_s: i64,
) -> Result<String, String> {
    let header = Header {
        kid: Some(tenant.to_owned()),
        ..Header::new(Algorithm::HS256)
    };
    let claims = Claims {
        sub: user.to_owned(),
        aud: audience.to_owned(),
        iat: now_s,
        exp: now_s.saturating_add(ttl_s),
    };
    let key = EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-tenant-secret-of-at-least-32-bytes!";
    const NOW: i64 = 1_767_225_600;

    fn tokens() -> (tempfile::TempDir, UserTokens) {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("acme.secret");
        std::fs::write(&file, SECRET).expect("write");
        let config = UserTokenConfig {
            secret_file: Some(file),
            max_lifetime_s: 3_600,
            ..UserTokenConfig::default()
        };
        let tokens =
            UserTokens::load(&BTreeMap::from([("acme".to_owned(), config)])).expect("loads");
        (dir, tokens)
    }

    fn mint(tenant: &str, user: &str, aud: &str, iat: i64, ttl: i64) -> String {
        mint_hs256(SECRET, tenant, user, aud, iat, ttl).expect("mints")
    }

    #[test]
    fn a_good_token_names_its_tenant_and_user() {
        let (_dir, tokens) = tokens();
        let token = mint("acme", "ana", "herald", NOW, 600);
        assert_eq!(
            tokens.verify(&token, NOW + 10),
            Ok(Principal::User {
                tenant: "acme".into(),
                user_id: "ana".into()
            })
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let (_dir, tokens) = tokens();
        let good = mint("acme", "ana", "herald", NOW, 600);
        let other_secret = mint_hs256(&[7; 40], "acme", "ana", "herald", NOW, 600).expect("mints");
        let mut tampered = good.clone();
        tampered.insert(good.find('.').expect("a dot") + 5, 'x');
        for (token, at) in [
            (good.clone(), NOW + 600),
            (mint("acme", "ana", "elsewhere", NOW, 600), NOW),
            (mint("umbrella", "ana", "herald", NOW, 600), NOW),
            (mint("acme", "ana", "herald", NOW, 7_200), NOW),
            (mint("acme", "ana", "herald", NOW + 3_000, 600), NOW),
            (mint("acme", "", "herald", NOW, 600), NOW),
            (other_secret, NOW),
            (tampered, NOW),
            ("not.a.token".into(), NOW),
            (String::new(), NOW),
            ("x".repeat(MAX_TOKEN_BYTES + 1), NOW),
        ] {
            assert!(
                matches!(
                    tokens.verify(&token, at),
                    Err(AuthError::Unauthenticated(_))
                ),
                "{token:.40}"
            );
        }
    }

    #[test]
    fn a_config_without_a_usable_key_is_refused() {
        let short = UserTokenConfig {
            secret_env: Some("HERALD_TEST_NO_SUCH_VARIABLE".into()),
            ..UserTokenConfig::default()
        };
        assert!(UserTokens::load(&BTreeMap::from([("a".to_owned(), short)])).is_err());
        let es = UserTokenConfig {
            algorithm: "ES256".into(),
            ..UserTokenConfig::default()
        };
        assert!(UserTokens::load(&BTreeMap::from([("a".to_owned(), es)])).is_err());
        let none = UserTokenConfig {
            algorithm: "none".into(),
            ..UserTokenConfig::default()
        };
        assert!(UserTokens::load(&BTreeMap::from([("a".to_owned(), none)])).is_err());
    }
}
