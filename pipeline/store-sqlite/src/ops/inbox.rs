//! The in-app inbox: entries, newest-first pages, and the delivery-ordered feed.
//!
//! An entry lives in the month file of its creation, so a page is read from the newest month
//! down until it is full; the `unread_only` and `category` filters are part of each month's
//! query. The feed (what `WatchInbox` pushes) is in write order: each month file numbers its
//! inbox rows as they are written (`feed_seq`, under the write lock), and a feed cursor holds
//! the last number read per month file ([`crate::feed`]), so an entry written late — delivered
//! long before the newest one, or a write that stalled — is still new to a watch.

use herald_store::retention::DAY_MS;
use herald_store::{
    FeedCursor, FeedItem, FeedPage, InboxEntryRecord, InboxPage, InboxQuery, Month, token,
};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::codec::{INBOX_COLUMNS, inbox_row};
use crate::error::Result;
use crate::feed::Cursor;
use crate::files::lock;
use crate::store::Inner;

impl Inner {
    pub(crate) fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> Result<()> {
        if !self.retention.keeps(e.created_at_ms, self.now()) {
            return Ok(());
        }
        self.in_month(e.created_at_ms, |c| {
            // The write lock is taken first, so write-order numbers follow commit order.
            let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
            insert_inbox_entry(&tx, e)?;
            tx.commit()?;
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

    /// The month files a feed follows now: the one before now's through the one a day ahead
    /// (an entry is filed by creation and delivered at or after it, within the hour a deferral
    /// may add).
    fn feed_months(&self) -> Vec<Month> {
        let now = self.now();
        let last = Month::of_ms(now.saturating_add(DAY_MS));
        let mut month = Month::of_ms(now)
            .prev()
            .max(Month::of_ms(self.oldest_kept()));
        let mut months = vec![month];
        while month < last {
            month = month.next();
            months.push(month);
        }
        months
    }

    pub(crate) fn feed_start(&self) -> Result<FeedCursor> {
        let mut cursor = Cursor::default();
        for month in self.feed_months() {
            if let Some(conn) = self.month(month, false)? {
                let newest: i64 = lock(&conn)?.query_row(
                    "SELECT IFNULL(MAX(feed_seq), 0) FROM inbox",
                    [],
                    |r| r.get(0),
                )?;
                cursor.set(month, newest);
            }
        }
        Ok(FeedCursor(cursor.text()))
    }

    pub(crate) fn inbox_feed(
        &self,
        tenant: &str,
        user: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<FeedPage> {
        let mut cursor = Cursor::parse(&after.0)?;
        let months = self.feed_months();
        if let Some(first) = months.first() {
            cursor.keep_from(*first);
        }
        let mut items = Vec::new();
        for month in months {
            if items.len() >= limit {
                break;
            }
            let Some(conn) = self.month(month, false)? else {
                continue;
            };
            let rows = lock(&conn)?
                .prepare_cached(&format!(
                    "SELECT {INBOX_COLUMNS}, feed_seq FROM inbox
                     WHERE tenant = ?1 AND recipient_user_id = ?2 AND feed_seq > ?3
                     ORDER BY feed_seq LIMIT ?4"
                ))?
                .query_map(
                    params![
                        tenant,
                        user,
                        cursor.seq(month),
                        i64::try_from(limit - items.len()).unwrap_or(i64::MAX)
                    ],
                    |r| Ok((inbox_row(r)?, r.get::<_, i64>(10)?)),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (entry, seq) in rows {
                cursor.set(month, seq);
                items.push(FeedItem {
                    entry,
                    after: FeedCursor(cursor.text()),
                });
            }
        }
        Ok(FeedPage {
            more: limit > 0 && items.len() >= limit,
            items,
            next: FeedCursor(cursor.text()),
        })
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

/// Writes `e` to its month file's connection `c` (kept if already there), numbered next in the
/// file's write order; `c` must hold the write lock (an immediate transaction).
pub(crate) fn insert_inbox_entry(c: &Connection, e: &InboxEntryRecord) -> Result<()> {
    c.prepare_cached(&format!(
        "INSERT INTO inbox ({INBOX_COLUMNS}, feed_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                 (SELECT IFNULL(MAX(feed_seq), 0) + 1 FROM inbox))
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
}
