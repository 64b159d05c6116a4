//! Notifications, their timelines, and the failures listing.
//!
//! A notification lives in the month file of its creation; each timeline event and failure in
//! the month of its own time, so a timeline is gathered from the month of creation onwards and
//! the failures listing walks months newest first.

use herald_schemas::Channel;
use herald_store::retention::DAY_MS;
use herald_store::{
    DeliveryEventRecord, FailurePage, FailureQuery, FailureRecord, Month, NotificationRecord,
    is_failure, token,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::{EVENT_COLUMNS, event_row, failure_row, notification_row};
use crate::error::Result;
use crate::files::lock;
use crate::store::Inner;

impl Inner {
    pub(crate) fn upsert_notification(&self, n: &NotificationRecord) -> Result<()> {
        if !self.retention.keeps(n.created_at_ms, self.now()) {
            return Ok(());
        }
        self.in_month(n.created_at_ms, |c| insert_notification(c, n))
    }

    pub(crate) fn record_delivery_event(&self, e: &DeliveryEventRecord) -> Result<()> {
        if !self.retention.keeps(e.at_ms, self.now()) {
            return Ok(());
        }
        self.in_month(e.at_ms, |c| insert_event(c, e))
    }

    pub(crate) fn get_notification(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>> {
        let months = self.kept_months()?;
        let mut found = None;
        for (_, conn) in &months {
            found = lock(conn)?
                .prepare_cached(
                    "SELECT tenant, notification_id, recipient_user_id, category, priority,
                         created_at_ms FROM notifications
                     WHERE tenant = ?1 AND notification_id = ?2",
                )?
                .query_row(params![tenant, id], notification_row)
                .optional()?;
            if found.is_some() {
                break;
            }
        }
        let Some(n) = found.filter(|n| n.created_at_ms >= self.oldest_kept()) else {
            return Ok(None);
        };
        // Events happen at or after creation: only the months since can hold them.
        let mut timeline = Vec::new();
        for (m, conn) in &months {
            if *m < Month::of_ms(n.created_at_ms) {
                break;
            }
            let rows = lock(conn)?
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM delivery_events
                     WHERE tenant = ?1 AND notification_id = ?2"
                ))?
                .query_map(params![tenant, id], event_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            timeline.extend(rows);
        }
        timeline.sort_by(|a, b| (a.at_ms, &a.result_id).cmp(&(b.at_ms, &b.result_id)));
        Ok(Some((n, timeline)))
    }

    pub(crate) fn list_failures(&self, q: &FailureQuery) -> Result<FailurePage> {
        let now = self.now();
        self.retention.check_readable(q.from_ms, now)?;
        let scope = token::failures_scope(q);
        // The cursor is exclusive: (at, result id) strictly below it; never further ahead
        // than a day past now, however far `to_ms` reaches.
        let cursor = match q.page_token.as_deref() {
            Some(t) => token::decode(token::FAILURES, &scope, t, now)?,
            None => (q.to_ms.min(now + DAY_MS), String::new()),
        };
        let want = q.page_size.saturating_add(1);
        let mut failures = self.newest_first_across_months(
            (q.from_ms, cursor.0),
            cursor,
            want,
            |f: &FailureRecord| (f.at_ms, f.result_id.clone()),
            |c, cursor, limit| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM failures
                     WHERE tenant = ?1 AND at_ms >= ?2
                       AND (at_ms < ?3 OR (at_ms = ?3 AND result_id < ?4))
                     ORDER BY at_ms DESC, result_id DESC LIMIT ?5"
                ))?
                .query_map(
                    params![
                        q.tenant,
                        q.from_ms,
                        cursor.0,
                        cursor.1,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    failure_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?)
            },
        )?;
        let next_page_token =
            token::finish_page(token::FAILURES, &scope, &mut failures, q.page_size, |f| {
                (f.at_ms, &f.result_id)
            });
        Ok(FailurePage {
            failures,
            next_page_token,
        })
    }
}

/// Writes `n` to its month file's connection `c` (kept if already there).
pub(crate) fn insert_notification(c: &Connection, n: &NotificationRecord) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO notifications (tenant, notification_id, recipient_user_id,
             category, priority, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant, notification_id) DO NOTHING",
    )?
    .execute(params![
        n.tenant,
        n.notification_id,
        n.recipient_user_id,
        n.category,
        n.priority.as_str(),
        n.created_at_ms
    ])?;
    Ok(())
}

/// Writes `e` (and, for a failure, its failures row) to its month file's connection `c`.
pub(crate) fn insert_event(c: &Connection, e: &DeliveryEventRecord) -> Result<()> {
    let row = params![
        e.tenant,
        e.notification_id,
        e.result_id,
        e.recipient_user_id,
        e.category,
        e.channel.map(Channel::as_str),
        e.state.as_str(),
        e.reason,
        e.at_ms
    ];
    c.prepare_cached(&format!(
        "INSERT INTO delivery_events ({EVENT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (tenant, notification_id, result_id) DO NOTHING"
    ))?
    .execute(row)?;
    if is_failure(e.state) {
        c.prepare_cached(&format!(
            "INSERT INTO failures ({EVENT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (tenant, at_ms, result_id) DO NOTHING"
        ))?
        .execute(row)?;
    }
    Ok(())
}
