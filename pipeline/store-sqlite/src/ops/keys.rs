//! API keys, in the main file (they do not age; revoked and expired ones are kept).

use herald_store::ApiKeyRecord;
use rusqlite::{OptionalExtension, Row, params};

use crate::error::Result;
use crate::store::Inner;

const COLUMNS: &str =
    "key_id, tenant, name, scopes, secret_hash, created_at_ms, expires_at_ms, revoked_at_ms";

fn record(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let scopes: String = r.get(3)?;
    Ok(ApiKeyRecord {
        key_id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        secret_hash: r.get(4)?,
        created_at_ms: r.get(5)?,
        expires_at_ms: r.get(6)?,
        revoked_at_ms: r.get(7)?,
    })
}

impl Inner {
    pub(crate) fn put_api_key(&self, k: &ApiKeyRecord) -> Result<()> {
        self.main()?
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                k.key_id,
                k.tenant,
                k.name,
                k.scopes.join(","),
                k.secret_hash,
                k.created_at_ms,
                k.expires_at_ms,
                k.revoked_at_ms
            ])?;
        Ok(())
    }

    pub(crate) fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>> {
        Ok(self
            .main()?
            .prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = ?1"))?
            .query_row(params![key_id], record)
            .optional()?)
    }

    pub(crate) fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>> {
        Ok(self
            .main()?
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE tenant = ?1 ORDER BY created_at_ms, key_id"
            ))?
            .query_map(params![tenant], record)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
