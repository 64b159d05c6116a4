//! The APNs provider token: an ES256 JWT, header `{"alg":"ES256","kid":<key id>}` and claims
//! `{"iss":<team id>,"iat":<unix seconds>}`, signed with the team's `.p8` key (PKCS#8, P-256).
//!
//! APNs refuses a token older than an hour and asks that it be renewed no more often than
//! every 20 minutes, so one token serves every request until it is
//! [`REFRESH_AFTER_S`] old, or until APNs calls it expired ([`ProviderToken::expire`]). The
//! time is passed in, so reuse and refresh are tested without waiting.

use std::sync::{Mutex, MutexGuard};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::setup::SetupError;

/// A token this old (seconds) is replaced before the next request: 50 minutes, inside APNs's
/// hour.
pub const REFRESH_AFTER_S: i64 = 50 * 60;

/// Why a token cannot be signed (after [`ProviderToken::new`] signed one, only a bug would).
#[derive(Debug, thiserror::Error)]
#[error("APNs provider token: {0}")]
pub struct SignError(String);

/// The signing key and the token in use; `Debug` shows neither.
pub struct ProviderToken {
    key: EncodingKey,
    header: Header,
    team_id: String,
    current: Mutex<Option<Issued>>,
}

impl std::fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderToken")
            .field("key_id", &self.header.kid)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

/// A signed token and the time it was signed at.
struct Issued {
    jwt: String,
    iat: i64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

impl ProviderToken {
    /// Signs for `team_id` with the PEM key `pem` (a `.p8` file's contents) named `key_id`,
    /// refusing a key it cannot sign with: not PEM, not PKCS#8, or not on P-256.
    pub fn new(pem: &[u8], key_id: &str, team_id: &str) -> Result<ProviderToken, SetupError> {
        let unusable = |why: &str| {
            SetupError::Credential(format!(
                "APNs key: {why} (expected the .p8 file Apple issued: a PKCS#8 PEM \
                 \"PRIVATE KEY\" on the P-256 curve)"
            ))
        };
        let key = EncodingKey::from_ec_pem(pem).map_err(|_| unusable("not an EC private key"))?;
        let mut header = Header::new(Algorithm::ES256);
        header.typ = None;
        header.kid = Some(key_id.to_owned());
        let token = ProviderToken {
            key,
            header,
            team_id: team_id.to_owned(),
            current: Mutex::new(None),
        };
        // The PEM parser checks the wrapping only; signing parses the key itself.
        token
            .sign(0)
            .map_err(|_| unusable("cannot sign ES256 with it"))?;
        Ok(token)
    }

    /// The token to send at `now` (unix seconds): the one in use while younger than
    /// [`REFRESH_AFTER_S`], else a new one signed at `now`.
    pub fn get(&self, now: i64) -> Result<String, SignError> {
        let mut current = self.lock();
        if let Some(issued) = current.as_ref()
            && now.saturating_sub(issued.iat) < REFRESH_AFTER_S
        {
            return Ok(issued.jwt.clone());
        }
        let jwt = self.sign(now)?;
        *current = Some(Issued {
            jwt: jwt.clone(),
            iat: now,
        });
        Ok(jwt)
    }

    /// APNs called `jwt` expired: the next [`get`](Self::get) signs a new one — unless `jwt`
    /// has been replaced already (by a concurrent request that heard the same).
    pub fn expire(&self, jwt: &str) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|issued| issued.jwt == jwt) {
            *current = None;
        }
    }

    fn sign(&self, iat: i64) -> Result<String, SignError> {
        let claims = Claims {
            iss: &self.team_id,
            iat,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| SignError(e.to_string()))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Issued>> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it torn.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use serde::Deserialize;

    use super::*;

    const T0: i64 = 1_767_225_600;

    fn key_pair() -> rcgen::KeyPair {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key")
    }

    #[derive(Debug, Deserialize, PartialEq, Eq)]
    struct Seen {
        iss: String,
        iat: i64,
    }

    /// The claims of `jwt` after checking its signature with `key`'s public half.
    fn verify(jwt: &str, key: &rcgen::KeyPair) -> Seen {
        let public = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).expect("public");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<Seen>(jwt, &public, &validation)
            .expect("a valid signature")
            .claims
    }

    #[test]
    fn the_token_is_es256_with_key_id_team_and_time_and_verifies() {
        let key = key_pair();
        let token = ProviderToken::new(key.serialize_pem().as_bytes(), "ABC123DEFG", "TEAM456789")
            .expect("a usable key");
        let jwt = token.get(T0).expect("signs");
        let header = jsonwebtoken::decode_header(&jwt).expect("a header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("ABC123DEFG"));
        assert_eq!(header.typ, None);
        assert_eq!(
            verify(&jwt, &key),
            Seen {
                iss: "TEAM456789".into(),
                iat: T0
            }
        );
    }

    #[test]
    fn one_token_serves_fifty_minutes_then_a_new_one_is_signed() {
        let key = key_pair();
        let token = ProviderToken::new(key.serialize_pem().as_bytes(), "K", "T").expect("key");
        let first = token.get(T0).expect("signs");
        assert_eq!(token.get(T0 + 1).expect("signs"), first);
        assert_eq!(token.get(T0 + REFRESH_AFTER_S - 1).expect("signs"), first);
        // A clock stepped back keeps the token; APNs's ExpiredProviderToken would replace it.
        assert_eq!(token.get(T0 - 600).expect("signs"), first);
        let second = token.get(T0 + REFRESH_AFTER_S).expect("signs");
        assert_ne!(second, first);
        assert_eq!(verify(&second, &key).iat, T0 + REFRESH_AFTER_S);
        assert_eq!(token.get(T0 + REFRESH_AFTER_S + 60).expect("signs"), second);
    }

    #[test]
    fn an_expired_token_is_replaced_once() {
        let key = key_pair();
        let token = ProviderToken::new(key.serialize_pem().as_bytes(), "K", "T").expect("key");
        let first = token.get(T0).expect("signs");
        token.expire(&first);
        let second = token.get(T0 + 5).expect("signs");
        assert_ne!(second, first);
        assert_eq!(verify(&second, &key).iat, T0 + 5);
        // A second request refused with the old token does not throw the new one away.
        token.expire(&first);
        assert_eq!(token.get(T0 + 6).expect("signs"), second);
    }

    #[test]
    fn keys_it_cannot_sign_with_are_refused_at_start() {
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384");
        let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519");
        let p256 = key_pair().serialize_pem();
        let truncated = &p256[..p256.len() / 2];
        let garbage = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            "A".repeat(64)
        );
        for pem in [
            p384.serialize_pem().as_str(),
            ed25519.serialize_pem().as_str(),
            truncated,
            garbage.as_str(),
            "",
            "not a key",
        ] {
            let error = ProviderToken::new(pem.as_bytes(), "K", "T").expect_err(pem);
            assert!(matches!(error, SetupError::Credential(_)), "{error}");
            assert!(error.to_string().contains(".p8"), "{error}");
        }
    }

    #[test]
    fn debug_shows_neither_key_nor_token() {
        let key = key_pair();
        let token =
            ProviderToken::new(key.serialize_pem().as_bytes(), "KEYID", "TEAM").expect("key");
        let jwt = token.get(T0).expect("signs");
        let debug = format!("{token:?}");
        assert_eq!(
            debug,
            r#"ProviderToken { key_id: Some("KEYID"), team_id: "TEAM", .. }"#
        );
        assert!(!debug.contains(&jwt[..20]));
    }
}
