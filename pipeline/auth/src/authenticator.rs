//! Checking a call's credential: `authorization: Bearer <API key or user token>`. API keys are
//! read from the store and kept for `key_cache_ms` (so a revocation applies within that), user
//! tokens are checked against their tenant's key.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use herald_store::{ApiKeyRecord, Clock, Store};
use serde::Deserialize;
use tracing::warn;

use crate::keys::{self, PREFIX};
use crate::users::{UserTokenConfig, UserTokens};
use crate::{AuthError, Principal};

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a looked-up API key is trusted before it is read again (milliseconds): a
    /// revoked key stops working within this.
    pub key_cache_ms: u64,
    /// The most keys kept at once (the cache starts afresh beyond).
    pub key_cache_entries: usize,
    /// `[auth.user_tokens.<tenant>]`: tenants whose apps call with user tokens.
    pub user_tokens: BTreeMap<String, UserTokenConfig>,
    /// Where `herald run` keeps the development key it makes (tenant `acme`, every scope) and
    /// where `herald send`/`inbox`/`get` find it when given no key.
    pub development_key_file: PathBuf,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_cache_ms: 5_000,
            key_cache_entries: 10_000,
            user_tokens: BTreeMap::new(),
            development_key_file: PathBuf::from("var/herald/dev-api-key"),
        }
    }
}

struct Cached {
    record: Option<Arc<ApiKeyRecord>>,
    read_at_ms: i64,
}

/// Checks credentials against the store's keys and the tenants' user-token keys.
pub struct Authenticator {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    users: UserTokens,
    cache: Mutex<HashMap<String, Cached>>,
    cache_ms: i64,
    cache_entries: usize,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users)
            .field("cache_ms", &self.cache_ms)
            .finish_non_exhaustive()
    }
}

/// The bearer token of `authorization`, or why there is none.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, AuthError> {
    let missing = || {
        AuthError::Unauthenticated(
            "no credential: send `authorization: Bearer <API key or user token>`".into(),
        )
    };
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Unauthenticated("malformed authorization header".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

impl Authenticator {
    /// An authenticator reading keys from `store` and telling time by `clock`.
    pub fn new(
        config: &AuthConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Authenticator, String> {
        Ok(Authenticator {
            store,
            clock,
            users: UserTokens::load(&config.user_tokens)?,
            cache: Mutex::default(),
            cache_ms: i64::try_from(config.key_cache_ms).unwrap_or(i64::MAX),
            cache_entries: config.key_cache_entries.max(1),
        })
    }

    /// Who sent the call with `metadata`.
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Principal, AuthError> {
        self.check(bearer(metadata)?).await
    }

    /// Who holds `credential` (an API key or a user token).
    pub async fn check(&self, credential: &str) -> Result<Principal, AuthError> {
        let now_ms = self.clock.now_ms();
        if !credential.starts_with(PREFIX) {
            return self.users.verify(credential, now_ms.div_euclid(1_000));
        }
        let (key_id, secret) = keys::parse(credential)?;
        let record = self.record(key_id, now_ms).await?;
        let record = record.ok_or_else(|| {
            AuthError::Unauthenticated("unknown, revoked or expired API key".into())
        })?;
        let scopes = keys::check(&record, secret, now_ms)?;
        Ok(Principal::Service {
            tenant: record.tenant.clone(),
            key_id: record.key_id.clone(),
            scopes,
        })
    }

    /// The record of `key_id`, from the cache while fresh, else from the store.
    async fn record(
        &self,
        key_id: &str,
        now_ms: i64,
    ) -> Result<Option<Arc<ApiKeyRecord>>, AuthError> {
        if let Some(cached) = self.lock().get(key_id)
            && now_ms.saturating_sub(cached.read_at_ms) < self.cache_ms
        {
            return Ok(cached.record.clone());
        }
        let record = self
            .store
            .api_key(key_id)
            .await
            .map_err(|e| {
                warn!(error = %e, "reading an API key failed");
                AuthError::Unavailable("the credential cannot be checked now; retry".into())
            })?
            .map(Arc::new);
        let mut cache = self.lock();
        if cache.len() >= self.cache_entries {
            cache.clear();
        }
        cache.insert(
            key_id.to_owned(),
            Cached {
                record: record.clone(),
                read_at_ms: now_ms,
            },
        );
        Ok(record)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // The cache holds copies of store rows only: one poisoned elsewhere is still sound.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use herald_store::ManualClock;
    use herald_store_sqlite::SqliteStore;

    use super::*;
    use crate::Scope;

    async fn setup() -> (
        tempfile::TempDir,
        Arc<dyn Store>,
        ManualClock,
        Authenticator,
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("h.db"))
                .await
                .expect("store"),
        );
        let clock = ManualClock::at(1_000_000);
        let auth = Authenticator::new(
            &AuthConfig::default(),
            Arc::clone(&store),
            Arc::new(clock.clone()),
        )
        .expect("authenticator");
        (dir, store, clock, auth)
    }

    fn metadata(value: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", value.parse().expect("ascii"));
        m
    }

    #[tokio::test]
    async fn a_stored_key_authenticates_as_its_tenant_with_its_scopes() {
        let (_dir, store, _clock, auth) = setup().await;
        let new = keys::make("acme", &[Scope::Send], "b", 1_000_000, None);
        store.put_api_key(&new.record).await.expect("put");
        let principal = auth
            .authenticate(&metadata(&format!("Bearer {}", new.key)))
            .await;
        assert_eq!(
            principal,
            Ok(Principal::Service {
                tenant: "acme".into(),
                key_id: new.record.key_id.clone(),
                scopes: vec![Scope::Send],
            })
        );
    }

    #[tokio::test]
    async fn missing_malformed_and_unknown_credentials_are_unauthenticated() {
        let (_dir, _store, _clock, auth) = setup().await;
        let unknown = keys::make("acme", &[Scope::Send], "b", 0, None).key;
        assert!(matches!(
            auth.authenticate(&tonic::metadata::MetadataMap::new())
                .await,
            Err(AuthError::Unauthenticated(_))
        ));
        for value in [
            "Basic dXNlcjpwYXNz".to_owned(),
            "Bearer ".into(),
            "Bearer hk_nothex".into(),
            format!("Bearer {unknown}"),
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x".into(),
        ] {
            assert!(
                matches!(
                    auth.authenticate(&metadata(&value)).await,
                    Err(AuthError::Unauthenticated(_))
                ),
                "{value}"
            );
        }
    }

    #[tokio::test]
    async fn a_revocation_applies_once_the_cached_copy_is_old() {
        let (_dir, store, clock, auth) = setup().await;
        let new = keys::make("acme", &[Scope::Read], "b", 1_000_000, None);
        store.put_api_key(&new.record).await.expect("put");
        assert!(auth.check(&new.key).await.is_ok());
        store
            .put_api_key(&keys::revoke(&new.record, 1_000_000))
            .await
            .expect("revoke");
        assert!(auth.check(&new.key).await.is_ok(), "cached");
        clock.set(1_000_000 + 5_000);
        assert!(matches!(
            auth.check(&new.key).await,
            Err(AuthError::Unauthenticated(_))
        ));
    }
}
