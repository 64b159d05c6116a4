//! API keys: hot keyspace, no TTL (revoked and expired keys are kept, marked).

use herald_store::ApiKeyRecord;

use crate::Result;
use crate::cql::{all, exec, first};
use crate::store::Inner;

type Row = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

fn record(row: Row) -> ApiKeyRecord {
    let (key_id, tenant, name, scopes, secret_hash, created_at_ms, expires_at_ms, revoked_at_ms) =
        row;
    ApiKeyRecord {
        key_id,
        tenant,
        name,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        secret_hash,
        created_at_ms,
        expires_at_ms,
        revoked_at_ms,
    }
}

impl Inner {
    pub(crate) async fn put_api_key(&self, k: &ApiKeyRecord) -> Result<()> {
        let st = &self.st.shared;
        // The key first, then its listing: a listing never names a key that is not there.
        let values = (
            k.key_id.as_str(),
            k.tenant.as_str(),
            k.name.as_str(),
            k.scopes.join(","),
            k.secret_hash.as_str(),
            k.created_at_ms,
            k.expires_at_ms,
            k.revoked_at_ms,
        );
        exec(&self.session, &st.insert_api_key, values).await?;
        let listing = (k.tenant.as_str(), k.key_id.as_str());
        exec(&self.session, &st.insert_api_key_by_tenant, listing).await
    }

    pub(crate) async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>> {
        let row: Option<Row> =
            first(&self.session, &self.st.shared.select_api_key, (key_id,)).await?;
        Ok(row.map(record))
    }

    pub(crate) async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>> {
        let ids: Vec<(String,)> = all(
            &self.session,
            &self.st.shared.select_api_keys_of_tenant,
            (tenant,),
        )
        .await?;
        let mut keys = Vec::with_capacity(ids.len());
        for (key_id,) in ids {
            if let Some(key) = self.api_key(&key_id).await?
                && key.tenant == tenant
            {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| (a.created_at_ms, &a.key_id).cmp(&(b.created_at_ms, &b.key_id)));
        Ok(keys)
    }
}
