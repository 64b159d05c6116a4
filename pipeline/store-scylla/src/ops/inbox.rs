//! The in-app inbox: entries, newest-first pages, and the delivery-ordered feed.
//!
//! An entry lives in the partition of its user and creation month, newest first, so a page is
//! a slice of one partition and paging walks months newest first. The `unread_only` and
//! `category` filters are applied here, while paging: one request examines at most
//! [`INBOX_SCAN_LIMIT`] rows, and if that runs out before a page is full it returns what it
//! found (possibly nothing) with a token that continues below the last row examined.

use std::ops::ControlFlow;

use futures::FutureExt;
use futures::future::try_join_all;
use herald_store::retention::DAY_MS;
use herald_store::{
    FeedCursor, FeedItem, FeedPage, InboxEntryRecord, InboxPage, InboxQuery, Month, StoreError,
    token,
};
use scylla::value::MaybeUnset;

use crate::Result;
use crate::codec::{self, InboxRow};
use crate::cql::{exec, scan};
use crate::store::Inner;
use crate::tiers::WithTtl;

/// The most inbox rows one `list_inbox` call examines (filtered-out rows included).
pub const INBOX_SCAN_LIMIT: usize = 1_000;

impl Inner {
    /// Writes the entry (both tiers by its creation), its by-id pointer, and its feed copy
    /// (both tiers by its delivery). `read_at_ms` is left unset unless given, so a replayed
    /// entry keeps its read state.
    pub(crate) async fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> Result<()> {
        let read_at = e.read_at_ms.map_or(MaybeUnset::Unset, MaybeUnset::Set);
        let row = |month: Month| {
            (
                month.bucket(),
                e.tenant.as_str(),
                e.recipient_user_id.as_str(),
                e.notification_id.as_str(),
                e.category.as_str(),
                e.title.as_str(),
                e.body.as_str(),
                e.action_url.as_deref(),
                e.created_at_ms,
                e.delivered_at_ms,
                read_at,
            )
        };
        let mut writes = Vec::new();
        for (tier, ttl) in self.time.writes(e.created_at_ms) {
            let st = self.st.tier(tier);
            let entry = WithTtl {
                row: row(Month::of_ms(e.created_at_ms)),
                ttl,
            };
            writes.push(exec(&self.session, &st.insert_inbox, entry).boxed());
            let by_id = (
                e.tenant.as_str(),
                e.recipient_user_id.as_str(),
                e.notification_id.as_str(),
                e.created_at_ms,
            );
            writes.push(
                exec(
                    &self.session,
                    &st.insert_inbox_by_id,
                    WithTtl { row: by_id, ttl },
                )
                .boxed(),
            );
        }
        for (tier, ttl) in self.time.writes(e.delivered_at_ms) {
            let feed = WithTtl {
                row: row(Month::of_ms(e.delivered_at_ms)),
                ttl,
            };
            writes.push(exec(&self.session, &self.st.tier(tier).insert_feed, feed).boxed());
        }
        try_join_all(writes).await?;
        Ok(())
    }

    pub(crate) async fn list_inbox(&self, q: &InboxQuery) -> herald_store::Result<InboxPage> {
        let now = self.time.now();
        let oldest = self.time.oldest_kept();
        let scope = token::inbox_scope(q);
        let cursor = match (q.page_token.as_deref(), q.before_ms) {
            (Some(t), _) => Some(token::decode(token::INBOX, &scope, t, now)?),
            (None, Some(before)) => Some((before, String::new())),
            (None, None) => None,
        };
        if let Some((ms, _)) = &cursor {
            self.time.retention.check_readable(*ms, now)?;
        }
        let top = now
            .saturating_add(DAY_MS)
            .min(cursor.as_ref().map_or(i64::MAX, |c| c.0));
        let filtered = q.unread_only || q.category.is_some();
        let want = q.page_size.saturating_add(1);
        let mut entries = Vec::new();
        let (mut scanned, mut last_scanned) = (0_usize, None);
        let mut too_old = false;
        // Only the first month can hold rows above the cursor; later months lie wholly below.
        let mut below = cursor;
        for month in Month::newest_first(oldest, top) {
            let st = self.st.tier(self.time.read_tier(month.start_ms()));
            let page = if filtered { 200 } else { want - entries.len() };
            let mut visit = |row: InboxRow| {
                let e = codec::inbox(row);
                if e.created_at_ms < oldest {
                    too_old = true;
                    return Ok(ControlFlow::Break(()));
                }
                scanned += 1;
                last_scanned = Some((e.created_at_ms, e.notification_id.clone()));
                let keep = (!q.unread_only || e.read_at_ms.is_none())
                    && q.category.as_ref().is_none_or(|c| *c == e.category);
                if keep {
                    entries.push(e);
                }
                Ok(if entries.len() >= want || scanned >= INBOX_SCAN_LIMIT {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            };
            let key = (
                q.tenant.as_str(),
                q.recipient_user_id.as_str(),
                month.bucket(),
            );
            match below.take() {
                Some((ms, id)) => {
                    let values = (key.0, key.1, key.2, ms, id.as_str());
                    scan(
                        &self.session,
                        &st.select_inbox_below,
                        values,
                        page,
                        &mut visit,
                    )
                    .await?;
                }
                None => scan(&self.session, &st.select_inbox_month, key, page, &mut visit).await?,
            }
            if too_old || entries.len() >= want || scanned >= INBOX_SCAN_LIMIT {
                break;
            }
        }
        let full = token::finish_page(token::INBOX, &scope, &mut entries, q.page_size, |e| {
            (e.created_at_ms, &e.notification_id)
        });
        // A filtered scan that ran out of budget continues below the last row it examined.
        let next_page_token = full.or_else(|| {
            (scanned >= INBOX_SCAN_LIMIT && !too_old)
                .then(|| last_scanned.map(|(ms, id)| token::encode(token::INBOX, &scope, ms, &id)))
                .flatten()
        });
        Ok(InboxPage {
            entries,
            next_page_token,
        })
    }

    /// A feed cursor at now: entries delivered from now on.
    pub(crate) fn feed_start(&self) -> FeedCursor {
        FeedCursor(self.time.now().to_string())
    }

    /// The feed page past `after` ([`feed_page`]).
    pub(crate) async fn feed_after(
        &self,
        tenant: &str,
        user_id: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> herald_store::Result<FeedPage> {
        let since_ms = parse_feed_cursor(after).ok_or(StoreError::BadPageToken)?;
        let entries = self.inbox_feed(tenant, user_id, since_ms, limit).await?;
        Ok(feed_page(since_ms, entries, limit))
    }

    /// Entries delivered at or after `since_ms`, in delivery order: the feed partitions of
    /// each month from `since_ms`'s (or the oldest kept) to the current one, oldest first.
    pub(crate) async fn inbox_feed(
        &self,
        tenant: &str,
        user_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntryRecord>> {
        let oldest = self.time.oldest_kept();
        let top = self.time.now().saturating_add(DAY_MS);
        let mut months: Vec<Month> = Month::newest_first(since_ms.max(oldest), top).collect();
        months.reverse();
        let mut entries = Vec::new();
        for month in months {
            if entries.len() >= limit {
                break;
            }
            let st = self.st.tier(self.time.read_tier(month.start_ms()));
            let values = (tenant, user_id, month.bucket(), since_ms);
            scan(
                &self.session,
                &st.select_feed_since,
                values,
                limit - entries.len(),
                |row: InboxRow| {
                    let e = codec::inbox(row);
                    if e.created_at_ms >= oldest {
                        entries.push(e);
                    }
                    Ok(if entries.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )
            .await?;
        }
        entries.sort_by(|a, b| {
            (a.delivered_at_ms, &a.notification_id).cmp(&(b.delivered_at_ms, &b.notification_id))
        });
        entries.truncate(limit);
        Ok(entries)
    }
}

/// How far behind the newest delivery time it has read a feed cursor trails. The feed is
/// ordered by delivery time (`inbox_feed` clusters by it), not by write: an entry whose write
/// lands later than this behind a newer entry a watch has already read is not pushed to that
/// watch (ListInbox shows it). The embedded store keeps exact write order instead.
pub const FEED_OVERLAP_MS: i64 = 2_000;

/// A feed cursor's text: the delivery time (ms) the next read starts at.
pub(crate) fn parse_feed_cursor(cursor: &FeedCursor) -> Option<i64> {
    cursor.0.parse().ok().filter(|ms| *ms >= 0)
}

/// Turns `entries` read from `since_ms` on (in delivery order, at most `limit`) into a feed
/// page: a full page moves the cursor to its last entry (a backlog is read page by page), any
/// other trails the newest delivery time by [`FEED_OVERLAP_MS`], so late writes are read again.
pub(crate) fn feed_page(since_ms: i64, entries: Vec<InboxEntryRecord>, limit: usize) -> FeedPage {
    let full = limit > 0 && entries.len() >= limit;
    let newest = entries.last().map(|e| e.delivered_at_ms);
    let items = entries
        .into_iter()
        .map(|entry| FeedItem {
            after: FeedCursor(
                since_ms
                    .max(entry.delivered_at_ms - FEED_OVERLAP_MS)
                    .to_string(),
            ),
            entry,
        })
        .collect();
    let next = match newest {
        Some(newest) if full => newest,
        Some(newest) => since_ms.max(newest - FEED_OVERLAP_MS),
        None => since_ms,
    };
    FeedPage {
        items,
        next: FeedCursor(next.to_string()),
        // More than a page delivered in one millisecond cannot move the cursor: wait instead.
        more: full && next > since_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, delivered_at_ms: i64) -> InboxEntryRecord {
        InboxEntryRecord {
            tenant: "t".into(),
            recipient_user_id: "u".into(),
            notification_id: id.into(),
            category: "c".into(),
            title: "x".into(),
            body: "y".into(),
            action_url: None,
            created_at_ms: delivered_at_ms,
            delivered_at_ms,
            read_at_ms: None,
        }
    }

    #[test]
    fn a_partial_page_trails_by_the_overlap_and_a_full_one_moves_to_its_end() {
        let page = feed_page(10_000, vec![entry("a", 20_000), entry("b", 30_000)], 5);
        assert_eq!(page.next, FeedCursor("28000".into()));
        assert_eq!(page.items[0].after, FeedCursor("18000".into()));
        assert!(!page.more);
        let page = feed_page(10_000, vec![entry("a", 20_000), entry("b", 30_000)], 2);
        assert_eq!(page.next, FeedCursor("30000".into()));
        assert!(page.more);
        let stuck = feed_page(30_000, vec![entry("a", 30_000), entry("b", 30_000)], 2);
        assert!(
            !stuck.more,
            "a page that cannot move the cursor must not be re-read at once"
        );
        let empty = feed_page(10_000, Vec::new(), 2);
        assert_eq!(
            (empty.next, empty.more),
            (FeedCursor("10000".into()), false)
        );
        assert_eq!(parse_feed_cursor(&FeedCursor("-1".into())), None);
        assert_eq!(parse_feed_cursor(&FeedCursor("12".into())), Some(12));
    }
}
