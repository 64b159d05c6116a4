//! Notifications held for quiet hours, in the main file: kept until released, then forgotten.

use herald_store::HeldRecord;
use rusqlite::params;

use crate::error::Result;
use crate::store::Inner;

impl Inner {
    pub(crate) fn hold(&self, h: &HeldRecord) -> Result<()> {
        self.main()?
            .prepare_cached(
                "INSERT INTO held
                     (tenant, notification_id, release_at_ms, recipient_user_id, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO UPDATE SET
                     recipient_user_id = excluded.recipient_user_id, payload = excluded.payload",
            )?
            .execute(params![
                h.tenant,
                h.notification_id,
                h.release_at_ms,
                h.recipient_user_id,
                h.payload
            ])?;
        Ok(())
    }

    pub(crate) fn held_due(&self, now_ms: i64, limit: usize) -> Result<Vec<HeldRecord>> {
        Ok(self
            .main()?
            .prepare_cached(
                "SELECT tenant, notification_id, recipient_user_id, release_at_ms, payload
                 FROM held WHERE release_at_ms <= ?1
                 ORDER BY release_at_ms, tenant, notification_id LIMIT ?2",
            )?
            .query_map(
                params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(HeldRecord {
                        tenant: r.get(0)?,
                        notification_id: r.get(1)?,
                        recipient_user_id: r.get(2)?,
                        release_at_ms: r.get(3)?,
                        payload: r.get(4)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn forget_held(&self, released: &[HeldRecord]) -> Result<()> {
        let main = self.main()?;
        let tx = main.unchecked_transaction()?;
        {
            let mut delete = tx.prepare_cached(
                "DELETE FROM held
                 WHERE tenant = ?1 AND notification_id = ?2 AND release_at_ms = ?3",
            )?;
            for h in released {
                delete.execute(params![h.tenant, h.notification_id, h.release_at_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
