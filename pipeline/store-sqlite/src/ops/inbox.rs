//! The in-app inbox: entries, newest-first pages, and the delivery-ordered feed.
//!
//! An entry lives in the month file of its creation, so a page is read from the newest month
//! down until it is full; the `unread_only` and `category` filters are part of each month's
//! query. The feed (what `WatchInbox` pushes) is ordered by delivery instead.

use herald_store::retention::DAY_MS;
use herald_store::{InboxEntryRecord, InboxPage, InboxQuery, Month, token};
use rusqlite::{Connection, params};

use crate::codec::{INBOX_COLUMNS, inbox_row};
use crate::error::Result;
use crate::files::lock;
use crate::store::Inner;

impl Inner {
    pub(crate) fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> Result<()> {
        if !self.retention.keeps(e.created_at_ms, self.now()) {
            return Ok(());
        }
        self.in_month(e.created_at_ms, |c| {
            c.prepare_cached(&format!(
                "INSERT INTO inbox ({INBOX_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (tenant, recipient_user_id, notification_id) DO NOTHING"
            ))?
            .execute(params![
                e.tenant,
                e.recipient_user_id,
                e.notification_id,
                e.category,
                e.title,
                e.body,
                e.action_url,
                e.created_at_ms,
                e.delivered_at_ms,
                e.read_at_ms
            ])?;
            Ok(())
        })
    }

    pub(crate) fn list_inbox(&self, q: &InboxQuery) -> Result<InboxPage> {
        let now = self.now();
        let scope = token::inbox_scope(q);
        let cursor = match (q.page_token.as_deref(), q.before_ms) {
            (Some(t), _) => token::decode(token::INBOX, &scope, t, now)?,
            (None, Some(before)) => (before, String::new()),
            (None, None) => (i64::MAX, String::new()),
        };
        if cursor.0 != i64::MAX {
            self.retention.check_readable(cursor.0, now)?;
        }
        let oldest = self.oldest_kept();
        let want = q.page_size.saturating_add(1);
        // A day of slack past now: entries stamped slightly ahead (clock skew) are listed.
        let top = cursor.0.min(now + DAY_MS);
        let mut entries = self.newest_first_across_months(
            (oldest, top),
            cursor,
            want,
            |e: &InboxEntryRecord| (e.created_at_ms, e.notification_id.clone()),
            |c, cursor, limit| Ok(inbox_slice(c, q, cursor, oldest, limit)?),
        )?;
        let next_page_token =
            token::finish_page(token::INBOX, &scope, &mut entries, q.page_size, |e| {
                (e.created_at_ms, &e.notification_id)
            });
        Ok(InboxPage {
            entries,
            next_page_token,
        })
    }

    pub(crate) fn inbox_feed(
        &self,
        tenant: &str,
        user: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntryRecord>> {
        // An entry is filed by creation and delivered at or after it; entries created in the
        // month before `since_ms` can still be delivered after it.
        let from = Month::of_ms(since_ms).prev().start_ms();
        let mut entries = Vec::new();
        for found in self.months_between(from, self.now() + DAY_MS) {
            let (_, conn) = found?;
            let rows = lock(&conn)?
                .prepare_cached(&format!(
                    "SELECT {INBOX_COLUMNS} FROM inbox
                     WHERE tenant = ?1 AND recipient_user_id = ?2 AND delivered_at_ms >= ?3
                       AND created_at_ms >= ?4
                     ORDER BY delivered_at_ms, notification_id LIMIT ?5"
                ))?
                .query_map(
                    params![
                        tenant,
                        user,
                        since_ms,
                        self.oldest_kept(),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    inbox_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            entries.extend(rows);
        }
        entries.sort_by(|a, b| {
            (a.delivered_at_ms, &a.notification_id).cmp(&(b.delivered_at_ms, &b.notification_id))
        });
        entries.truncate(limit);
        Ok(entries)
    }
}

/// Reads up to `limit` inbox rows from one month, below the cursor, newest first.
fn inbox_slice(
    c: &Connection,
    q: &InboxQuery,
    cursor: &(i64, String),
    oldest_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<InboxEntryRecord>> {
    c.prepare_cached(&format!(
        "SELECT {INBOX_COLUMNS} FROM inbox
         WHERE tenant = ?1 AND recipient_user_id = ?2
           AND (created_at_ms < ?3 OR (created_at_ms = ?3 AND notification_id < ?4))
           AND created_at_ms >= ?5
           AND (?6 = 0 OR read_at_ms IS NULL) AND (?7 IS NULL OR category = ?7)
         ORDER BY created_at_ms DESC, notification_id DESC LIMIT ?8"
    ))?
    .query_map(
        params![
            q.tenant,
            q.recipient_user_id,
            cursor.0,
            cursor.1,
            oldest_ms,
            q.unread_only,
            q.category,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        inbox_row,
    )?
    .collect()
}
