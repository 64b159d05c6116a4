//! The durable outbox: records a process has promised to deliver (an accepted request, an
//! engagement event) that Kafka cannot take right now are kept in the store and replayed later,
//! oldest first.
//!
//! While anything waits in the outbox, new records go straight to it instead of to Kafka, so the
//! caller gets an answer in milliseconds during an outage and records mostly keep their order
//! (not strictly: a record kept in the instant the replayer finds the outbox empty is replayed a
//! second later, after records sent directly meanwhile; a slow produce that succeeds late also
//! lands after records sent after it). A record kept after a slow (not failed) produce may reach
//! Kafka twice, once late and once replayed; every consumer of Herald's topics is idempotent by
//! event id, so that is harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_store::{OutboxRecord, Store, StoreError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the outbox is replayed.
const REPLAY_EVERY: Duration = Duration::from_secs(1);
/// Records replayed per round.
const REPLAY_BATCH: usize = 500;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Kafka acknowledged it.
    Acked,
    /// Kafka did not acknowledge it in time; it is kept in the store and will be replayed.
    Kept,
}

/// Why a record was neither produced nor kept.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The producer's queue is full: the process is overloaded; the caller should shed load.
    #[error("producer queue full")]
    QueueFull,
    /// Kafka did not take the record and neither did the store.
    #[error("neither Kafka nor the store took the record: {0}")]
    Store(#[from] StoreError),
}

/// A producer backed by the store's outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    producer: FutureProducer,
    store: Arc<dyn Store>,
    owner: String,
    /// How long a produce may take before the record is kept instead.
    wait: Duration,
    /// How long a replayed record may take.
    ack_timeout: Duration,
    /// Set while records wait in the outbox.
    degraded: AtomicBool,
}

fn future_record(r: &OutboxRecord) -> FutureRecord<'_, [u8], [u8]> {
    let mut record = FutureRecord::to(&r.topic)
        .key(&r.key[..])
        .payload(&r.payload[..]);
    if !r.headers.is_empty() {
        let headers = r
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        record = record.headers(headers);
    }
    record
}

impl Outbox {
    /// An outbox named `owner` (one per process instance: it replays only its own records).
    /// A produce not acknowledged within `wait` is kept instead; replays wait `ack_timeout`.
    pub fn new(
        producer: FutureProducer,
        store: Arc<dyn Store>,
        owner: String,
        wait: Duration,
        ack_timeout: Duration,
    ) -> Outbox {
        Outbox {
            inner: Arc::new(Inner {
                producer,
                store,
                owner,
                wait,
                ack_timeout,
                degraded: AtomicBool::new(true),
            }),
        }
    }

    /// The name this outbox keeps records under.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Produces `record` (its `owner` is set to this outbox's), or keeps it for replay.
    pub async fn send_or_keep(&self, mut record: OutboxRecord) -> Result<Sent, OutboxError> {
        let inner = &self.inner;
        record.owner.clone_from(&inner.owner);
        if inner.degraded.load(Ordering::Acquire) {
            inner.store.outbox_put(&record).await?;
            return Ok(Sent::Kept);
        }
        let mut delivery = match inner.producer.send_result(future_record(&record)) {
            Ok(d) => d,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err(OutboxError::QueueFull);
            }
            Err((err, _)) => {
                warn!(%err, "produce refused; keeping the record in the outbox");
                return self.keep(&record).await;
            }
        };
        match tokio::time::timeout(inner.wait, &mut delivery).await {
            Ok(Ok(Ok(_))) => Ok(Sent::Acked),
            Ok(Ok(Err((err, _)))) => {
                warn!(%err, "produce failed; keeping the record in the outbox");
                self.keep(&record).await
            }
            Ok(Err(_cancelled)) => self.keep(&record).await,
            Err(_slow) => {
                warn!(wait = ?inner.wait, "no acknowledgement in time; keeping the record");
                let sent = self.keep(&record).await?;
                // If the slow produce succeeds after all, the replay is unnecessary.
                let store = Arc::clone(&inner.store);
                tokio::spawn(async move {
                    if let Ok(Ok(_)) = delivery.await {
                        let _ = store.outbox_remove(&record.owner, &record.id).await;
                    }
                });
                Ok(sent)
            }
        }
    }

    async fn keep(&self, record: &OutboxRecord) -> Result<Sent, OutboxError> {
        self.inner.degraded.store(true, Ordering::Release);
        self.inner.store.outbox_put(record).await?;
        Ok(Sent::Kept)
    }

    /// One replay pass: true when the outbox was found empty or emptied.
    async fn replay_once(&self) -> bool {
        let inner = &self.inner;
        let pending = match inner.store.outbox_pending(&inner.owner, REPLAY_BATCH).await {
            Ok(p) => p,
            Err(err) => {
                warn!(%err, owner = %inner.owner, "outbox: reading pending records failed");
                return false;
            }
        };
        let mut replayed = 0;
        for r in &pending {
            let acked = match inner
                .producer
                .send(future_record(r), inner.ack_timeout)
                .await
            {
                Ok(_) => true,
                Err((err, _)) => {
                    warn!(%err, owner = %inner.owner, "outbox: Kafka still refuses; retrying later");
                    false
                }
            };
            if !acked {
                break;
            }
            if let Err(err) = inner.store.outbox_remove(&r.owner, &r.id).await {
                warn!(%err, "outbox: removing a replayed record failed");
                break;
            }
            replayed += 1;
        }
        if replayed > 0 {
            info!(owner = %inner.owner, replayed, "outbox: replayed records");
        }
        replayed == pending.len() && pending.len() < REPLAY_BATCH
    }

    /// Replays kept records until `shutdown`; leaves degraded mode once the outbox is empty.
    pub async fn replay(self, shutdown: CancellationToken) {
        loop {
            if self.replay_once().await {
                self.inner.degraded.store(false, Ordering::Release);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REPLAY_EVERY) => {}
            }
        }
    }
}
