//! Replaying the outbox: kept records are produced oldest first, many in flight at once (the
//! producer keeps their order per partition), and removed in one store transaction per round
//! once acknowledged. A full round starts the next at once, so a backlog drains at the
//! producer's speed; an empty outbox ends degraded mode.
//!
//! Every instance renews a lease on its own outbox while it runs. An instance replaced under
//! another name (a Kubernetes pod of a Deployment) stops renewing; once its lease has run out, a
//! live instance of the same kind takes it over and replays what it kept.

use herald_telemetry::metrics::{OUTBOX_OLDEST_SECONDS, OUTBOX_RECORDS};
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald_store::OutboxRecord;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::DeliveryFuture;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Outbox, future_record};
use crate::fatal;

/// How often the outbox is looked at when the last round did not end in a full batch.
const REPLAY_EVERY: Duration = Duration::from_secs(1);
/// Records replayed per round.
const REPLAY_BATCH: usize = 5_000;

/// How a replay round ended.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Nothing is kept any more.
    Empty,
    /// A full batch went out: there may be more.
    More,
    /// Kafka (or the store) refused: try again later.
    Blocked,
}

impl Outbox {
    /// Replays kept records until `shutdown`; leaves degraded mode once the outbox is empty.
    pub async fn replay(self, shutdown: CancellationToken) {
        self.count_kept().await;
        let mut leased_at: Option<std::time::Instant> = None;
        loop {
            let lease = self.inner.lease;
            if !lease.is_zero() && leased_at.is_none_or(|t| t.elapsed() >= lease / 3) {
                leased_at = Some(std::time::Instant::now());
                self.renew_and_adopt(&shutdown).await;
            }
            let owner = self.inner.owner.clone();
            let round = self.replay_once(&owner).await;
            self.publish_depth();
            if round == Round::Empty {
                self.inner.degraded.store(false, Ordering::Release);
            }
            if round == Round::More && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REPLAY_EVERY) => {}
            }
        }
    }

    async fn count_kept(&self) {
        let inner = &self.inner;
        let cap = inner.max_kept.saturating_add(1);
        match inner.store.outbox_count(&inner.owner, cap).await {
            Ok(n) => {
                inner.kept.store(n, Ordering::Release);
                if n > 0 {
                    info!(owner = %inner.owner, records = n, "outbox: records kept from before; replaying them");
                }
            }
            Err(err) => warn!(%err, owner = %inner.owner, "outbox: counting kept records failed"),
        }
    }

    /// Renews the lease on this outbox, and takes over (and drains) the outbox of any instance
    /// of the same kind whose lease has run out.
    async fn renew_and_adopt(&self, shutdown: &CancellationToken) {
        let inner = &self.inner;
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(inner.lease.as_millis()).unwrap_or(i64::MAX));
        if let Err(err) = inner
            .store
            .outbox_lease(&inner.owner, &inner.owner, now, until)
            .await
        {
            warn!(%err, owner = %inner.owner, "outbox: renewing the lease failed");
            return;
        }
        let kind = inner.owner.split('.').next().unwrap_or_default().to_owned();
        let owners = match inner.store.outbox_owners().await {
            Ok(o) => o,
            Err(err) => {
                warn!(%err, "outbox: listing outboxes failed");
                return;
            }
        };
        for other in owners {
            if other == inner.owner || !other.starts_with(&format!("{kind}.")) {
                continue;
            }
            match inner
                .store
                .outbox_lease(&other, &inner.owner, now, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => {
                    warn!(%err, owner = %other, "outbox: taking over a lease failed");
                    continue;
                }
            }
            info!(from = %other, by = %inner.owner, "outbox: replaying the outbox of an instance that is gone");
            while self.replay_once(&other).await == Round::More && !shutdown.is_cancelled() {}
        }
    }

    /// One round of `owner`'s outbox: up to a batch of kept records, produced together and
    /// removed together.
    async fn replay_once(&self, owner: &str) -> Round {
        let inner = &self.inner;
        let own = owner == inner.owner;
        if let Err(err) = self.after_broker_loss().await {
            warn!(%err, owner = %inner.owner, "outbox: keeping records after a broker loss failed");
            return Round::Blocked;
        }
        let pending = match inner.store.outbox_pending(owner, REPLAY_BATCH).await {
            Ok(p) => p,
            Err(err) => {
                warn!(%err, owner = %inner.owner, "outbox: reading pending records failed");
                return Round::Blocked;
            }
        };
        if own {
            let oldest_ms = pending.first().map(|r| r.created_at_ms);
            self.publish_age(oldest_ms);
        }
        if pending.is_empty() {
            return Round::Empty;
        }
        let mut in_flight: Vec<(&OutboxRecord, DeliveryFuture)> = Vec::new();
        for r in &pending {
            match inner.producer.send_result(future_record(r)) {
                Ok(delivery) => in_flight.push((r, delivery)),
                // The queue is full: what is in flight goes; the rest waits for the next round.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((err, _)) => {
                    self.refused(err).await;
                    break;
                }
            }
        }
        let sent = in_flight.len();
        let mut acked = Vec::with_capacity(sent);
        let mut blocked = sent < pending.len();
        for (r, delivery) in in_flight {
            match tokio::time::timeout(inner.ack_timeout, delivery).await {
                Ok(Ok(Ok(delivered))) => {
                    self.retain(delivered.partition, r.clone());
                    acked.push(r.id.clone());
                }
                Ok(Ok(Err((err, _)))) => {
                    self.refused(err).await;
                    blocked = true;
                }
                Ok(Err(_)) | Err(_) => blocked = true,
            }
        }
        if !acked.is_empty() {
            if let Err(err) = inner.store.outbox_remove_many(owner, &acked).await {
                warn!(%err, "outbox: removing replayed records failed (they will be sent again)");
                return Round::Blocked;
            }
            if own {
                let left = inner
                    .kept
                    .load(Ordering::Acquire)
                    .saturating_sub(acked.len());
                inner.kept.store(left, Ordering::Release);
            }
            info!(%owner, replayed = acked.len(), "outbox: replayed records");
        }
        match (blocked, pending.len() < REPLAY_BATCH) {
            (true, _) => Round::Blocked,
            (false, true) => Round::Empty,
            (false, false) => Round::More,
        }
    }

    /// The outbox's kind (`ingress`, `query-engagement`): its metrics' label.
    fn kind(&self) -> String {
        let owner = &self.inner.owner;
        owner.split('.').next().unwrap_or(owner).to_owned()
    }

    fn publish_depth(&self) {
        let kept = self.inner.kept.load(Ordering::Acquire);
        metrics::gauge!(OUTBOX_RECORDS, "outbox" => self.kind()).set(kept as f64);
    }

    fn publish_age(&self, oldest_ms: Option<i64>) {
        let age_ms = oldest_ms.map_or(0, |at| now_ms().saturating_sub(at).max(0));
        metrics::gauge!(OUTBOX_OLDEST_SECONDS, "outbox" => self.kind())
            .set(age_ms as f64 / 1_000.0);
    }

    async fn refused(&self, err: KafkaError) {
        if fatal::is_fatal(&err) {
            if let Err(e) = self.fail(err, None).await {
                warn!(error = %e, "outbox: keeping records after a fatal error failed");
            }
        } else {
            warn!(%err, owner = %self.inner.owner, "outbox: Kafka still refuses; retrying later");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
