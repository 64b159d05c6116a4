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

use herald_proto::v1::WatchInboxResponse;
use herald_store::{Clock, InboxEntryRecord, Retention, Store, SystemClock, token};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::debug;

use crate::{inbox_entry, store_status};

/// How far behind the newest delivery time the cursor trails.
pub const OVERLAP_MS: i64 = 2_000;
/// Entries read per poll.
const BATCH: usize = 100;

/// The tag of resume tokens ([`herald_store::token`]).
const RESUME: &str = "w1";

/// A resume token: the last pushed entry's (delivery time, notification id).
pub fn encode_token(delivered_at_ms: i64, notification_id: &str) -> String {
    token::encode(RESUME, delivered_at_ms, notification_id)
}

/// The delivery time in a resume token.
pub fn decode_token(resume_token: &str) -> Option<i64> {
    token::decode(RESUME, resume_token).ok().map(|(ms, _)| ms)
}

/// Where a watch starts: after a resume token, or at now.
pub fn start_ms(resume_token: &str, retention: &Retention) -> Result<i64, Status> {
    let now = SystemClock.now_ms();
    if resume_token.is_empty() {
        return Ok(now);
    }
    let at = decode_token(resume_token)
        .ok_or_else(|| Status::invalid_argument("resume_token: not a token this service issued"))?;
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
                    let _ = tx.send(Err(store_status(e))).await;
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
                if tx.send(Ok(response(entry))).await.is_err() {
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

fn response(entry: InboxEntryRecord) -> WatchInboxResponse {
    WatchInboxResponse {
        resume_token: encode_token(entry.delivered_at_ms, &entry.notification_id),
        entry: Some(inbox_entry(entry)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_expire() {
        let now = SystemClock.now_ms();
        let t = encode_token(now - 5_000, "n-1");
        assert_eq!(decode_token(&t), Some(now - 5_000));
        let r = Retention::default();
        assert_eq!(start_ms(&t, &r).ok(), Some(now - 5_000 - OVERLAP_MS));
        let old = encode_token(now - 8 * herald_store::retention::DAY_MS, "n-1");
        assert_eq!(
            start_ms(&old, &r).err().map(|s| s.code()),
            Some(tonic::Code::OutOfRange)
        );
        for bad in ["zz", "7731", &encode_token(1, "x")[..6]] {
            assert_eq!(
                start_ms(bad, &r).err().map(|s| s.code()),
                Some(tonic::Code::InvalidArgument),
                "{bad:?}"
            );
        }
    }
}
