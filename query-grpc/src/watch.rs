//! `WatchInbox`: follows a user's inbox feed and pushes what is new.
//!
//! Each watcher reads the store's feed past its cursor every `poll` interval
//! ([`Store::inbox_feed`]): in write order in the embedded store, so an entry written late
//! (delivered long before the newest one, a stalled write) is still pushed; by delivery time
//! with an overlap in ScyllaDB (`herald_store_scylla::FEED_OVERLAP_MS`). A set of recently
//! pushed ids filters what an overlap reads again. A resume token carries the cursor just past
//! its entry (and the entry's delivery time, for the age limit), so a watch resumed with it —
//! on any query process, after a restart — goes on where that entry was; entries in an overlap
//! may be pushed twice (clients deduplicate by notification id) but none is skipped.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use herald_proto::store_status;
use herald_proto::v1::WatchInboxResponse;
use herald_store::{Clock, FeedCursor, FeedItem, Retention, Store, SystemClock, token};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::debug;

use crate::inbox_entry;

/// Entries read per poll.
const BATCH: usize = 100;
/// How many pushed ids a watcher remembers to skip what an overlap reads again.
const REMEMBERED: usize = 1_000;

/// The tag of resume tokens ([`herald_store::token`]).
const RESUME: &str = "w3";

/// A resume token of `tenant`'s `user`: the pushed entry's delivery time and the feed cursor
/// just past it.
pub fn encode_token(tenant: &str, user: &str, delivered_at_ms: i64, after: &FeedCursor) -> String {
    token::encode(
        RESUME,
        &token::scope(&[tenant, user]),
        delivered_at_ms,
        &after.0,
    )
}

/// The delivery time and feed cursor in a resume token of `tenant`'s `user`, read at `now_ms`.
pub fn decode_token(
    tenant: &str,
    user: &str,
    resume_token: &str,
    now_ms: i64,
) -> Option<(i64, FeedCursor)> {
    token::decode(RESUME, &token::scope(&[tenant, user]), resume_token, now_ms)
        .ok()
        .map(|(ms, cursor)| (ms, FeedCursor(cursor)))
}

/// Where a watch of `tenant`'s `user` resumes: past the entry of a resume token issued for
/// the same tenant and user; `None` without a token (the watch starts at what the store holds
/// now, [`Store::feed_start`]).
pub fn resume_cursor(
    tenant: &str,
    user: &str,
    resume_token: &str,
    retention: &Retention,
) -> Result<Option<FeedCursor>, Status> {
    if resume_token.is_empty() {
        return Ok(None);
    }
    let now = SystemClock.now_ms();
    let (at, cursor) = decode_token(tenant, user, resume_token, now).ok_or_else(|| {
        Status::invalid_argument(
            "resume_token: not a token this service issued for this tenant and user",
        )
    })?;
    let oldest = now - retention.watch_resume_days * herald_store::retention::DAY_MS;
    if at < oldest {
        return Err(Status::out_of_range(format!(
            "resume_token: older than {} days; call ListInbox to catch up, then watch without a \
             token",
            retention.watch_resume_days
        )));
    }
    Ok(Some(cursor))
}

/// One watcher.
pub struct Watch {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) tenant: String,
    pub(crate) user: String,
    pub(crate) cursor: FeedCursor,
    pub(crate) poll: Duration,
}

impl Watch {
    /// Pushes new entries into `tx` until the client goes away or `shutdown`.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Result<WatchInboxResponse, Status>>,
        shutdown: CancellationToken,
    ) {
        let mut pushed = Remembered::default();
        loop {
            let page = match self
                .store
                .inbox_feed(&self.tenant, &self.user, &self.cursor, BATCH)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(store_status(&e))).await;
                    return;
                }
            };
            for item in page.items {
                if !pushed.insert(&item.entry.notification_id) {
                    continue;
                }
                if tx
                    .send(Ok(response(&self.tenant, &self.user, item)))
                    .await
                    .is_err()
                {
                    debug!("watcher went away");
                    return;
                }
            }
            self.cursor = page.next;
            if page.more {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

/// The ids pushed last (at most [`REMEMBERED`]).
#[derive(Default)]
struct Remembered {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Remembered {
    /// Remembers `id`; false if it was remembered already.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

fn response(tenant: &str, user: &str, item: FeedItem) -> WatchInboxResponse {
    WatchInboxResponse {
        resume_token: encode_token(tenant, user, item.entry.delivered_at_ms, &item.after),
        entry: Some(inbox_entry(item.entry)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(text: &str) -> FeedCursor {
        FeedCursor(text.to_owned())
    }

    #[test]
    fn tokens_round_trip_expire_and_belong_to_one_user() {
        let now = SystemClock.now_ms();
        let at = cursor("202611:42");
        let t = encode_token("acme", "ana", now - 5_000, &at);
        assert_eq!(
            decode_token("acme", "ana", &t, now),
            Some((now - 5_000, at.clone()))
        );
        let r = Retention::default();
        assert_eq!(resume_cursor("acme", "ana", &t, &r).ok(), Some(Some(at)));
        assert_eq!(resume_cursor("acme", "ana", "", &r).ok(), Some(None));
        let old = encode_token(
            "acme",
            "ana",
            now - 8 * herald_store::retention::DAY_MS,
            &cursor("1"),
        );
        assert_eq!(
            resume_cursor("acme", "ana", &old, &r)
                .err()
                .map(|s| s.code()),
            Some(tonic::Code::OutOfRange)
        );
        let far = encode_token("acme", "ana", i64::MAX, &cursor("1"));
        let bad_ones = [
            "zz".to_owned(),
            "7731".to_owned(),
            t[..6].to_owned(),
            far,
            encode_token("acme", "bob", now - 5_000, &cursor("1")),
            encode_token("other", "ana", now - 5_000, &cursor("1")),
        ];
        for bad in &bad_ones {
            assert_eq!(
                resume_cursor("acme", "ana", bad, &r)
                    .err()
                    .map(|s| s.code()),
                Some(tonic::Code::InvalidArgument),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_watcher_skips_what_it_pushed_lately_and_forgets_the_oldest() {
        let mut pushed = Remembered::default();
        assert!(pushed.insert("n-0"));
        assert!(!pushed.insert("n-0"));
        for i in 1..=REMEMBERED {
            assert!(pushed.insert(&format!("n-{i}")));
        }
        assert!(pushed.insert("n-0"), "the oldest id is forgotten");
        assert!(!pushed.insert(&format!("n-{REMEMBERED}")));
        assert_eq!(pushed.ids.len(), REMEMBERED);
    }
}
