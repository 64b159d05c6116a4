//! Read state: marking entries read and counting the unread ones.
//!
//! `read_at_ms` is written with the entry's remaining TTL into the entry and its feed copy, in
//! every tier the entry is in, as an upsert of the key and that one column (no lightweight
//! transaction: two concurrent `mark_read`s of one entry may both report it, and the later
//! read time wins; the count and the badge are unaffected).

use std::ops::ControlFlow;

use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use herald_store::retention::DAY_MS;
use herald_store::{InboxEntryRecord, Month};

use crate::Result;
use crate::codec::{self, InboxRow};
use crate::cql::{exec, first, scan};
use crate::store::Inner;
use crate::tiers::{Tier, WithTtl};

/// The most inbox rows one `unread_count` call examines; unread entries older than that many
/// newer entries are not counted.
pub const UNREAD_SCAN_LIMIT: usize = 10_000;

/// How many entries `mark_read`/`mark_all_read` update at once.
const WRITE_CONCURRENCY: usize = 16;

impl Inner {
    pub(crate) async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        notification_ids: &[String],
        at_ms: i64,
    ) -> Result<Vec<InboxEntryRecord>> {
        let mut ids = notification_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let found = stream::iter(ids)
            .map(|id| async move { self.unread_entry(tenant, user_id, &id).await })
            .buffered(WRITE_CONCURRENCY)
            .try_filter_map(|e| async move { Ok(e) })
            .try_collect::<Vec<_>>()
            .await?;
        self.set_read(found, at_ms).await
    }

    pub(crate) async fn mark_all_read(
        &self,
        tenant: &str,
        user_id: &str,
        up_to_ms: i64,
        at_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntryRecord>> {
        let oldest = self.time.oldest_kept();
        let top = up_to_ms.min(self.time.now().saturating_add(DAY_MS));
        let mut unread = Vec::new();
        for month in Month::newest_first(oldest, top) {
            let st = self.st.tier(self.time.read_tier(month.start_ms()));
            let values = (tenant, user_id, month.bucket(), up_to_ms);
            scan(
                &self.session,
                &st.select_inbox_up_to,
                values,
                500,
                |row: InboxRow| {
                    let e = codec::inbox(row);
                    if e.created_at_ms < oldest {
                        return Ok(ControlFlow::Break(()));
                    }
                    if e.read_at_ms.is_none() {
                        unread.push(e);
                    }
                    Ok(if unread.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )
            .await?;
            if unread.len() >= limit {
                break;
            }
        }
        self.set_read(unread, at_ms).await
    }

    pub(crate) async fn unread_count(&self, tenant: &str, user_id: &str, cap: u32) -> Result<u32> {
        let oldest = self.time.oldest_kept();
        let top = self.time.now().saturating_add(DAY_MS);
        let (mut count, mut scanned) = (0_u32, 0_usize);
        for month in Month::newest_first(oldest, top) {
            if count >= cap || scanned >= UNREAD_SCAN_LIMIT {
                break;
            }
            let st = self.st.tier(self.time.read_tier(month.start_ms()));
            let values = (tenant, user_id, month.bucket());
            scan(
                &self.session,
                &st.select_inbox_read_state,
                values,
                1_000,
                |(created, read): (i64, Option<i64>)| {
                    if created < oldest {
                        return Ok(ControlFlow::Break(()));
                    }
                    scanned += 1;
                    count += u32::from(read.is_none());
                    Ok(if count >= cap || scanned >= UNREAD_SCAN_LIMIT {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )
            .await?;
        }
        Ok(count.min(cap))
    }

    /// The entry `id` of the user if it exists, is still kept and is unread.
    async fn unread_entry(
        &self,
        tenant: &str,
        user_id: &str,
        id: &str,
    ) -> Result<Option<InboxEntryRecord>> {
        let mut created = None;
        for tier in [Tier::Hot, Tier::Archive] {
            let by_id = &self.st.tier(tier).select_inbox_by_id;
            created = first::<(i64,)>(&self.session, by_id, (tenant, user_id, id)).await?;
            if created.is_some() {
                break;
            }
        }
        let Some((created,)) = created.filter(|(c,)| *c >= self.time.oldest_kept()) else {
            return Ok(None);
        };
        let month = Month::of_ms(created);
        let st = self.st.tier(self.time.read_tier(month.start_ms()));
        let values = (tenant, user_id, month.bucket(), created, id);
        let row: Option<InboxRow> = first(&self.session, &st.select_inbox_entry, values).await?;
        Ok(row.map(codec::inbox).filter(|e| e.read_at_ms.is_none()))
    }

    /// Writes `read_at_ms` into each entry and its feed copy; returns the entries as now read.
    async fn set_read(
        &self,
        entries: Vec<InboxEntryRecord>,
        at_ms: i64,
    ) -> Result<Vec<InboxEntryRecord>> {
        stream::iter(entries)
            .map(|mut e| async move {
                let mut writes = Vec::new();
                for (tier, ttl) in self.time.writes(e.created_at_ms) {
                    let row = (
                        e.tenant.as_str(),
                        e.recipient_user_id.as_str(),
                        Month::of_ms(e.created_at_ms).bucket(),
                        e.created_at_ms,
                        e.notification_id.as_str(),
                        at_ms,
                    );
                    let st = &self.st.tier(tier).set_inbox_read;
                    writes.push(exec(&self.session, st, WithTtl { row, ttl }).boxed());
                }
                for (tier, ttl) in self.time.writes(e.delivered_at_ms) {
                    let row = (
                        e.tenant.as_str(),
                        e.recipient_user_id.as_str(),
                        Month::of_ms(e.delivered_at_ms).bucket(),
                        e.delivered_at_ms,
                        e.notification_id.as_str(),
                        at_ms,
                    );
                    let st = &self.st.tier(tier).set_feed_read;
                    writes.push(exec(&self.session, st, WithTtl { row, ttl }).boxed());
                }
                futures::future::try_join_all(writes).await?;
                e.read_at_ms = Some(at_ms);
                Ok::<_, crate::Error>(e)
            })
            .buffered(WRITE_CONCURRENCY)
            .try_collect()
            .await
    }
}
