//! Read state: marking entries read (by id, or all up to a time in bounded batches) and the
//! unread count. Each entry is updated in place, in its month file, with `RETURNING` so the
//! caller learns which entries this call changed.

use herald_store::InboxEntryRecord;
use rusqlite::{OptionalExtension, params};

use crate::codec::{INBOX_COLUMNS, inbox_row};
use crate::error::Result;
use crate::files::lock;
use crate::store::Inner;

impl Inner {
    pub(crate) fn mark_read(
        &self,
        tenant: &str,
        user: &str,
        ids: &[String],
        at_ms: i64,
    ) -> Result<Vec<InboxEntryRecord>> {
        let months = self.kept_months()?;
        let mut newly = Vec::new();
        for id in ids {
            for (_, conn) in &months {
                let c = lock(conn)?;
                let exists = c
                    .prepare_cached(
                        "SELECT 1 FROM inbox
                         WHERE tenant = ?1 AND recipient_user_id = ?2 AND notification_id = ?3",
                    )?
                    .exists(params![tenant, user, id])?;
                if !exists {
                    continue;
                }
                let row = c
                    .prepare_cached(&format!(
                        "UPDATE inbox SET read_at_ms = ?4
                         WHERE tenant = ?1 AND recipient_user_id = ?2 AND notification_id = ?3
                           AND read_at_ms IS NULL AND created_at_ms >= ?5
                         RETURNING {INBOX_COLUMNS}"
                    ))?
                    .query_row(
                        params![tenant, user, id, at_ms, self.oldest_kept()],
                        inbox_row,
                    )
                    .optional()?;
                newly.extend(row);
                break;
            }
        }
        Ok(newly)
    }

    pub(crate) fn mark_all_read(
        &self,
        tenant: &str,
        user: &str,
        up_to_ms: i64,
        at_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntryRecord>> {
        let oldest = self.oldest_kept();
        let mut newly = Vec::new();
        for found in self.months_between(oldest, up_to_ms) {
            if newly.len() >= limit {
                break;
            }
            let (_, conn) = found?;
            let left = i64::try_from(limit - newly.len()).unwrap_or(i64::MAX);
            let rows = lock(&conn)?
                .prepare_cached(&format!(
                    "UPDATE inbox SET read_at_ms = ?4
                     WHERE tenant = ?1 AND recipient_user_id = ?2 AND notification_id IN (
                         SELECT notification_id FROM inbox
                         WHERE tenant = ?1 AND recipient_user_id = ?2 AND read_at_ms IS NULL
                           AND created_at_ms <= ?3 AND created_at_ms >= ?5
                         LIMIT ?6)
                     RETURNING {INBOX_COLUMNS}"
                ))?
                .query_map(
                    params![tenant, user, up_to_ms, at_ms, oldest, left],
                    inbox_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            newly.extend(rows);
        }
        Ok(newly)
    }

    pub(crate) fn unread_count(&self, tenant: &str, user: &str, cap: u32) -> Result<u32> {
        let mut count = 0_u32;
        for (_, conn) in self.kept_months()? {
            if count >= cap {
                break;
            }
            let n: i64 = lock(&conn)?
                .prepare_cached(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM inbox
                         WHERE tenant = ?1 AND recipient_user_id = ?2 AND read_at_ms IS NULL
                           AND created_at_ms >= ?3 LIMIT ?4)",
                )?
                .query_row(
                    params![tenant, user, self.oldest_kept(), cap - count],
                    |r| r.get(0),
                )?;
            count = count.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
        Ok(count.min(cap))
    }
}
