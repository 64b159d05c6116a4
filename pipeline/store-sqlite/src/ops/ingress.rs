//! The ingress: idempotency keys and the outbox.
//!
//! A key is filed in the month of its first use and looked up in that month and the one before
//! (kept at least a month). The outbox and its leases live in the main file, whose commits are
//! on disk before they return (`synchronous = FULL`): an accepted request survives power loss.

use herald_store::{IdempotencyClaim, IdempotencyRecord, OutboxRecord};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Result, vanished};
use crate::store::Inner;

impl Inner {
    pub(crate) fn claim_idempotency_key(&self, r: &IdempotencyRecord) -> Result<IdempotencyClaim> {
        let lookup = |c: &Connection| -> Result<Option<IdempotencyRecord>> {
            Ok(c.prepare_cached(
                "SELECT tenant, key, request_hash, notification_id, at_ms
                 FROM idempotency_keys WHERE tenant = ?1 AND key = ?2",
            )?
            .query_row(params![r.tenant, r.key], |row| {
                Ok(IdempotencyRecord {
                    tenant: row.get(0)?,
                    key: row.get(1)?,
                    request_hash: row.get(2)?,
                    notification_id: row.get(3)?,
                    at_ms: row.get(4)?,
                })
            })
            .optional()?)
        };
        if let Some((_, first)) = self.recent_two(r.at_ms, lookup)? {
            return Ok(IdempotencyClaim::Existing(first));
        }
        self.in_month(r.at_ms, |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO idempotency_keys (tenant, key, request_hash, notification_id,
                         at_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    r.tenant,
                    r.key,
                    r.request_hash,
                    r.notification_id,
                    r.at_ms
                ])?;
            if inserted == 1 {
                return Ok(IdempotencyClaim::Claimed);
            }
            // Lost a race to a concurrent claim in this month.
            lookup(c)?
                .map(IdempotencyClaim::Existing)
                .ok_or_else(|| vanished("idempotency key"))
        })
    }

    pub(crate) fn outbox_put(&self, r: &OutboxRecord) -> Result<()> {
        self.main()?
            .prepare_cached(
                "INSERT INTO outbox (owner, id, topic, key, payload, headers, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (owner, id) DO NOTHING",
            )?
            .execute(params![
                r.owner,
                r.id,
                r.topic,
                r.key,
                r.payload,
                r.headers_blob(),
                r.created_at_ms
            ])?;
        Ok(())
    }

    pub(crate) fn outbox_pending(&self, owner: &str, limit: usize) -> Result<Vec<OutboxRecord>> {
        Ok(self
            .main()?
            .prepare_cached(
                "SELECT owner, id, topic, key, payload, headers, created_at_ms FROM outbox
                 WHERE owner = ?1 ORDER BY created_at_ms, id LIMIT ?2",
            )?
            .query_map(
                params![owner, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    let headers: Vec<u8> = r.get(5)?;
                    Ok(OutboxRecord {
                        owner: r.get(0)?,
                        id: r.get(1)?,
                        topic: r.get(2)?,
                        key: r.get(3)?,
                        payload: r.get(4)?,
                        headers: OutboxRecord::parse_headers_blob(&headers).ok_or_else(|| {
                            rusqlite::Error::FromSqlConversionFailure(
                                5,
                                rusqlite::types::Type::Blob,
                                "malformed outbox headers".into(),
                            )
                        })?,
                        created_at_ms: r.get(6)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn outbox_remove_many(&self, owner: &str, ids: &[String]) -> Result<()> {
        let c = self.main()?;
        let tx = c.unchecked_transaction()?;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM outbox WHERE owner = ?1 AND id = ?2")?;
            for id in ids {
                delete.execute(params![owner, id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn outbox_owners(&self) -> Result<Vec<String>> {
        Ok(self
            .main()?
            .prepare_cached("SELECT DISTINCT owner FROM outbox ORDER BY owner")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn outbox_lease(
        &self,
        owner: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        // One statement: SQLite runs it atomically, also across processes.
        let changed = self
            .main()?
            .prepare_cached(
                "INSERT INTO outbox_leases (owner, holder, until_ms) VALUES (?1, ?2, ?4)
                 ON CONFLICT (owner) DO UPDATE
                   SET holder = excluded.holder, until_ms = excluded.until_ms
                   WHERE outbox_leases.holder = excluded.holder
                      OR outbox_leases.until_ms < ?3",
            )?
            .execute(params![owner, holder, now_ms, until_ms])?;
        Ok(changed == 1)
    }

    pub(crate) fn outbox_count(&self, owner: &str, cap: usize) -> Result<usize> {
        let n: i64 = self
            .main()?
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE owner = ?1 LIMIT ?2)",
            )?
            .query_row(
                params![owner, i64::try_from(cap).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub(crate) fn outbox_remove(&self, owner: &str, id: &str) -> Result<()> {
        self.main()?
            .prepare_cached("DELETE FROM outbox WHERE owner = ?1 AND id = ?2")?
            .execute(params![owner, id])?;
        Ok(())
    }
}
