//! API keys: `hk_<id>_<secret>` — a public id of 16 hex digits (what the store is keyed by and
//! logs may show) and a secret of 32 random bytes in hex (256 bits; shown once, stored only as
//! its SHA-256, compared in constant time). Making, checking and rotating are pure here; the
//! store keeps the records.

use std::time::Duration;

use herald_store::ApiKeyRecord;
use sha2::{Digest, Sha256};

use crate::{AuthError, Scope};

/// The prefix of every key.
pub const PREFIX: &str = "hk_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;
/// A key's length: prefix, id, `_`, secret.
pub const KEY_LEN: usize = PREFIX.len() + ID_HEX + 1 + SECRET_HEX;

/// A key as given to its holder, once; `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The whole key, to hand to the backend.
    pub key: String,
    /// What the store keeps.
    pub record: ApiKeyRecord,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("key_id", &self.record.key_id)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The hex SHA-256 of `secret`.
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A new key for `tenant` allowed `scopes`, named `name`, made at `now_ms`, expiring after
/// `ttl` if given.
pub fn make(
    tenant: &str,
    scopes: &[Scope],
    name: &str,
    now_ms: i64,
    ttl: Option<Duration>,
) -> NewKey {
    let id = hex(&rand::random::<[u8; ID_HEX / 2]>());
    let secret = hex(&rand::random::<[u8; SECRET_HEX / 2]>());
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    NewKey {
        key: format!("{PREFIX}{id}_{secret}"),
        record: ApiKeyRecord {
            key_id: id,
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            secret_hash: secret_hash(&secret),
            created_at_ms: now_ms,
            expires_at_ms: ttl.map(|t| now_ms.saturating_add(millis(t))),
            revoked_at_ms: None,
        },
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The (id, secret) of a presented key; anything else is malformed.
pub fn parse(key: &str) -> Result<(&str, &str), AuthError> {
    let malformed = || AuthError::Unauthenticated("malformed API key".into());
    let rest = key.strip_prefix(PREFIX).ok_or_else(malformed)?;
    let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
    let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex(id, ID_HEX) || !is_hex(secret, SECRET_HEX) {
        return Err(malformed());
    }
    Ok((id, secret))
}

/// Equal byte strings, in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scopes of `record` if `secret` is its secret and it is live at `now_ms`.
pub fn check(record: &ApiKeyRecord, secret: &str, now_ms: i64) -> Result<Vec<Scope>, AuthError> {
    // One answer for every failure: a caller learns nothing about which keys exist.
    let refused = || AuthError::Unauthenticated("unknown, revoked or expired API key".into());
    if !constant_time_eq(
        secret_hash(secret).as_bytes(),
        record.secret_hash.as_bytes(),
    ) {
        return Err(refused());
    }
    if record.revoked_at_ms.is_some_and(|at| at <= now_ms)
        || record.expires_at_ms.is_some_and(|at| at <= now_ms)
    {
        return Err(refused());
    }
    Ok(record
        .scopes
        .iter()
        .filter_map(|s| Scope::parse(s))
        .collect())
}

/// Rotation: a new key like `old`, and `old` expiring after `overlap` (both work meanwhile).
pub fn rotate(old: &ApiKeyRecord, now_ms: i64, overlap: Duration) -> (NewKey, ApiKeyRecord) {
    let scopes: Vec<Scope> = old.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
    let new = make(&old.tenant, &scopes, &old.name, now_ms, None);
    let ends = now_ms.saturating_add(millis(overlap));
    let expiring = ApiKeyRecord {
        expires_at_ms: Some(old.expires_at_ms.map_or(ends, |at| at.min(ends))),
        ..old.clone()
    };
    (new, expiring)
}

/// `record` revoked at `now_ms` (a revoked key stays revoked at its first time).
pub fn revoke(record: &ApiKeyRecord, now_ms: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        revoked_at_ms: Some(record.revoked_at_ms.unwrap_or(now_ms)),
        ..record.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_of(key: &str) -> &str {
        parse(key).expect("parses").1
    }

    #[test]
    fn a_new_key_parses_and_checks_with_its_scopes_and_its_hash_only_is_kept() {
        let new = make(
            "acme",
            &[Scope::Read, Scope::Send, Scope::Read],
            "billing",
            10,
            None,
        );
        assert_eq!(new.key.len(), KEY_LEN);
        let (id, secret) = parse(&new.key).expect("parses");
        assert_eq!(id, new.record.key_id);
        assert!(!new.record.secret_hash.contains(secret));
        assert_eq!(new.record.scopes, ["send", "read"]);
        assert_eq!(
            check(&new.record, secret, 11),
            Ok(vec![Scope::Send, Scope::Read])
        );
        assert!(!format!("{new:?}").contains(secret));
        let other = make("acme", &[Scope::Send], "x", 10, None);
        assert_ne!(other.key, new.key);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = make("acme", &[Scope::Send], "x", 0, None).key;
        for bad in [
            String::new(),
            "Bearer".into(),
            good.replacen("hk_", "hx_", 1),
            good[..good.len() - 1].to_owned(),
            format!("{good}0"),
            good.replacen('_', "-", 2),
            good.to_uppercase(),
            format!("hk_{}_{}", "g".repeat(16), "0".repeat(64)),
        ] {
            assert!(
                matches!(parse(&bad), Err(AuthError::Unauthenticated(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_wrong_secret_a_revoked_and_an_expired_key_are_refused_alike() {
        let new = make(
            "acme",
            &[Scope::Send],
            "x",
            0,
            Some(Duration::from_secs(60)),
        );
        let secret = secret_of(&new.key);
        let wrong = "0".repeat(64);
        assert!(matches!(
            check(&new.record, &wrong, 1),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(check(&new.record, secret, 59_999).is_ok());
        assert!(check(&new.record, secret, 60_000).is_err());
        let revoked = revoke(&new.record, 5);
        assert!(
            check(&revoked, secret, 4).is_ok(),
            "revocation applies from its time"
        );
        assert_eq!(check(&revoked, secret, 5), check(&new.record, &wrong, 1));
        assert_eq!(revoke(&revoked, 9).revoked_at_ms, Some(5));
    }

    #[test]
    fn rotation_keeps_both_keys_for_the_overlap_then_only_the_new() {
        let old = make("acme", &[Scope::Send, Scope::Manage], "billing", 0, None);
        let (new, expiring) = rotate(&old.record, 1_000, Duration::from_secs(3_600));
        assert_eq!(new.record.tenant, "acme");
        assert_eq!(new.record.scopes, old.record.scopes);
        assert_eq!(expiring.expires_at_ms, Some(3_601_000));
        let (old_secret, new_secret) = (secret_of(&old.key), secret_of(&new.key));
        assert!(check(&expiring, old_secret, 3_600_999).is_ok());
        assert!(check(&expiring, old_secret, 3_601_000).is_err());
        assert!(check(&new.record, new_secret, 9_999_999).is_ok());
        // A key already expiring sooner keeps its sooner end.
        let soon = ApiKeyRecord {
            expires_at_ms: Some(2_000),
            ..old.record
        };
        assert_eq!(
            rotate(&soon, 1_000, Duration::from_secs(3_600))
                .1
                .expires_at_ms,
            Some(2_000)
        );
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        // `printf abc | sha256sum`
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn comparison_is_by_every_byte() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"xbc", b"abc"));
    }
}
