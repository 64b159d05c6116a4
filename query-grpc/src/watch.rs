//! `WatchInbox`: follows a user's inbox in delivery order and pushes what is new.
//!
//! Each watcher polls the store's inbox feed (one partition slice) every `poll` interval. The
//! cursor trails the newest delivery time by [`OVERLAP_MS`] and a set of ids already pushed
//! filters repeats, so an entry whose write lands slightly after a newer one (another deliver
//! instance, a slow write) is still pushed. A resume token is the last pushed (delivery time,
//! id); resuming re-reads from that time minus the overlap, so entries near a reconnect may be
//! pushed twice (clients deduplicate by notification id) but none is skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_proto::store_status;
use herald_proto::v1::WatchInboxResponse;
use herald_store::{Clock, InboxEntryRecord, Retention, Store, SystemClock, token};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::debug;

use crate::inbox_entry;

/// How far behind the newest delivery time the cursor trails.
pub const OVERLAP_MS: i64 = 2_000;
/// Entries read per poll.
const BATCH: usize = 100;

/// The tag of resume tokens ([`herald_store::token`]).
const RESUME: &str = "w2";

/// A resume token of `tenant`'s `user`: the last pushed entry's (delivery time, notification id).
pub fn encode_token(
    tenant: &str,
    user: &str,
    delivered_at_ms: i64,
    notification_id: &str,
) -> String {
    token::encode(
        RESUME,
        &token::scope(&[tenant, user]),
        delivered_at_ms,
        notification_id,
    )
}

/// The delivery time in a resume token of `tenant`'s `user`, read at `now_ms`.
pub fn decode_token(tenant: &str, user: &str, resume_token: &str, now_ms: i64) -> Option<i64> {
    token::decode(RESUME, &token::scope(&[tenant, user]), resume_token, now_ms)
        .ok()
        .map(|(ms, _)| ms)
}

/// Where a watch of `tenant`'s `user` starts: after a resume token (one issued for the same
/// tenant and user), or at now.
pub fn start_ms(
    tenant: &str,
    user: &str,
    resume_token: &str,
    retention: &Retention,
) -> Result<i64, Status> {
    let now = SystemClock.now_ms();
    if resume_token.is_empty() {
        return Ok(now);
    }
    let at = decode_token(tenant, user, resume_token, now).ok_or_else(|| {
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
    Ok(at - OVERLAP_MS)
}

/// One watcher.
pub struct Watch {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) tenant: String,
    pub(crate) user: String,
    pub(crate) since_ms: i64,
    pub(crate) poll: Duration,
}

impl Watch {
    /// Pushes new entries into `tx` until the client goes away or `shutdown`.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Result<WatchInboxResponse, Status>>,
        shutdown: CancellationToken,
    ) {
        // Ids pushed recently, with their delivery times (pruned as the cursor moves).
        let mut pushed: HashMap<String, i64> = HashMap::new();
        loop {
            let batch = match self
                .store
                .inbox_feed(&self.tenant, &self.user, self.since_ms, BATCH)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(store_status(&e))).await;
                    return;
                }
            };
            let full = batch.len() == BATCH;
            let mut newest = None;
            for entry in batch {
                newest = Some(entry.delivered_at_ms);
                if pushed.contains_key(&entry.notification_id) {
                    continue;
                }
                pushed.insert(entry.notification_id.clone(), entry.delivered_at_ms);
                let message = response(&self.tenant, &self.user, entry);
                if tx.send(Ok(message)).await.is_err() {
                    debug!("watcher went away");
                    return;
                }
            }
            let before = self.since_ms;
            if let Some(newest) = newest {
                // A full batch moves the cursor to its end, so a backlog is read page by page.
                self.since_ms = if full {
                    newest
                } else {
                    self.since_ms.max(newest - OVERLAP_MS)
                };
                pushed.retain(|_, at| *at >= self.since_ms);
            }
            // (More than a batch delivered in one millisecond cannot move the cursor: wait.)
            if full && self.since_ms > before {
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

fn response(tenant: &str, user: &str, entry: InboxEntryRecord) -> WatchInboxResponse {
    WatchInboxResponse {
        resume_token: encode_token(tenant, user, entry.delivered_at_ms, &entry.notification_id),
        entry: Some(inbox_entry(entry)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_expire_and_belong_to_one_user() {
        let now = SystemClock.now_ms();
        let t = encode_token("acme", "ana", now - 5_000, "n-1");
        assert_eq!(decode_token("acme", "ana", &t, now), Some(now - 5_000));
        let r = Retention::default();
        assert_eq!(
            start_ms("acme", "ana", &t, &r).ok(),
            Some(now - 5_000 - OVERLAP_MS)
        );
        let old = encode_token(
            "acme",
            "ana",
            now - 8 * herald_store::retention::DAY_MS,
            "n-1",
        );
        assert_eq!(
            start_ms("acme", "ana", &old, &r).err().map(|s| s.code()),
            Some(tonic::Code::OutOfRange)
        );
        let far = encode_token("acme", "ana", i64::MAX, "n-1");
        let bad_ones = [
            "zz".to_owned(),
            "7731".to_owned(),
            t[..6].to_owned(),
            far,
            encode_token("acme", "bob", now - 5_000, "n-1"),
            encode_token("other", "ana", now - 5_000, "n-1"),
        ];
        for bad in &bad_ones {
            assert_eq!(
                start_ms("acme", "ana", bad, &r).err().map(|s| s.code()),
                Some(tonic::Code::InvalidArgument),
                "{bad:?}"
            );
        }
    }
}
