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
//!
//! A record Kafka acknowledged is also held in memory for `kafka.unsaved_ack_window_ms`
//! ([`retained`]) on brokers that may lose acknowledged records in a crash; when the producer
//! then fails fatally (what a restarted broker that lost records causes), the outbox keeps those
//! records and the failed one in the store, and [`Outbox::failed`] resolves: the process should
//! exit, so that it starts again with a fresh producer and replays them.

mod replay;
pub mod retained;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_store::{OutboxRecord, Store, StoreError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use self::retained::Retained;
use crate::fatal;

/// At most this many acknowledged records are held for the unsaved window.
const RETAIN_CAP: usize = 100_000;

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
    /// Kafka did not take the record and the outbox already holds its limit.
    #[error("the outbox already holds {0} records waiting for Kafka")]
    Full(usize),
}

/// The outbox producer's context: notes when every broker connection is lost.
#[derive(Debug, Default)]
pub struct BrokerWatch {
    down: Arc<AtomicBool>,
}

impl ClientContext for BrokerWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.down.store(true, Ordering::Release);
        }
        warn!(%error, reason, "kafka client error");
    }
}

/// A producer backed by the store's outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    producer: FutureProducer<BrokerWatch>,
    store: Arc<dyn Store>,
    owner: String,
    /// How long a produce may take before the record is kept instead.
    wait: Duration,
    /// How long a replayed record may take.
    ack_timeout: Duration,
    /// Set while records wait in the outbox.
    degraded: AtomicBool,
    /// About how many records wait in the store (exact at start, then counted).
    kept: AtomicUsize,
    /// At most this many are kept; beyond, [`OutboxError::Full`].
    max_kept: usize,
    /// How long a lease on an outbox lasts (zero: no leases, no taking over).
    lease: Duration,
    /// Acknowledged records the broker may not have saved yet.
    retained: Mutex<Retained>,
    /// Cancelled when the producer has failed fatally; `failure` says why.
    failed: CancellationToken,
    failure: Mutex<Option<String>>,
    /// Set by the producer's context when every broker connection is lost.
    broker_down: Arc<AtomicBool>,
}

/// How long the outbox waits, and what it holds.
#[derive(Debug, Clone, Copy)]
pub struct OutboxTimes {
    /// How long a produce may take before the record is kept instead.
    pub wait: Duration,
    /// How long a replayed record may take.
    pub ack_timeout: Duration,
    /// How long after its acknowledgement a record is held in memory in case the broker loses
    /// it (`kafka.unsaved_ack_window_ms`; zero: not at all).
    pub unsaved_window: Duration,
    /// At most this many records are kept; past it new ones are refused with
    /// [`OutboxError::Full`], so that callers retry later instead of filling the disk.
    pub max_kept: usize,
    /// How long the lease on an outbox lasts: renewed by its instance every third of it; once
    /// it runs out, a live instance of the same kind replays the outbox (zero: never).
    pub lease: Duration,
}

pub(crate) fn future_record(r: &OutboxRecord) -> FutureRecord<'_, [u8], [u8]> {
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
    /// An outbox named `owner` (one per process instance: it replays only its own records),
    /// producing with a producer made from `config`.
    pub fn new(
        config: &ClientConfig,
        store: Arc<dyn Store>,
        owner: String,
        times: OutboxTimes,
    ) -> Result<Outbox, KafkaError> {
        let watch = BrokerWatch::default();
        let broker_down = Arc::clone(&watch.down);
        let producer = config.create_with_context(watch)?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                producer,
                store,
                owner,
                wait: times.wait,
                ack_timeout: times.ack_timeout,
                degraded: AtomicBool::new(true),
                kept: AtomicUsize::new(0),
                max_kept: times.max_kept,
                lease: times.lease,
                retained: Mutex::new(Retained::new(times.unsaved_window, RETAIN_CAP)),
                failed: CancellationToken::new(),
                failure: Mutex::new(None),
                broker_down,
            }),
        })
    }

    /// After every broker connection was lost, the broker may come back restarted without
    /// what it acknowledged last: keep the records held for its unsaved window in the store,
    /// to be produced again (consumers drop repeats by event id).
    async fn after_broker_loss(&self) -> Result<(), StoreError> {
        if !self.inner.broker_down.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let held = self
            .inner
            .retained
            .lock()
            .map(|mut r| r.take_all())
            .unwrap_or_default();
        if held.is_empty() {
            return Ok(());
        }
        warn!(owner = %self.inner.owner, records = held.len(), "lost every broker connection: keeping the records the broker may not have saved, to produce them again");
        self.inner.degraded.store(true, Ordering::Release);
        for r in &held {
            self.inner.store.outbox_put(r).await?;
        }
        Ok(())
    }

    /// Resolves once the producer has failed fatally; every record it had taken is then kept in
    /// the store. The process should exit (non-zero) and start again.
    pub async fn failed(&self) -> String {
        self.inner.failed.cancelled().await;
        self.inner
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default()
    }

    /// Why the producer failed fatally, once it has.
    pub fn failure(&self) -> Option<String> {
        if !self.inner.failed.is_cancelled() {
            return None;
        }
        self.inner.failure.lock().ok().and_then(|f| f.clone())
    }

    /// A token cancelled when `shutdown` is, or when the producer fails fatally: what a server
    /// that must stop then serves until.
    pub fn stop_on_failure(&self, shutdown: &CancellationToken) -> CancellationToken {
        let stop = shutdown.child_token();
        let (failed, guard) = (self.inner.failed.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = failed.cancelled() => guard.cancel(),
                () = guard.cancelled() => {}
            }
        });
        stop
    }

    /// The producer failed fatally: keep what it may have lost, and tell the process.
    async fn fail(&self, e: KafkaError, current: Option<&OutboxRecord>) -> Result<(), StoreError> {
        let reason = fatal::explain(e, self.inner.producer.client()).to_string();
        error!(owner = %self.inner.owner, %reason, "the Kafka producer failed fatally; keeping its records in the outbox and stopping");
        self.inner.degraded.store(true, Ordering::Release);
        let held = self
            .inner
            .retained
            .lock()
            .map(|mut r| r.take_all())
            .unwrap_or_default();
        if !held.is_empty() {
            warn!(
                records = held.len(),
                "keeping acknowledged records the broker may have lost"
            );
        }
        for r in held.iter().chain(current) {
            self.inner.store.outbox_put(r).await?;
        }
        if let Ok(mut f) = self.inner.failure.lock() {
            f.get_or_insert(reason);
        }
        self.inner.failed.cancel();
        Ok(())
    }

    fn retain(&self, partition: i32, record: OutboxRecord) {
        if let Ok(mut r) = self.inner.retained.lock() {
            let topic = record.topic.clone();
            r.acked(&topic, partition, Instant::now(), record);
        }
    }

    /// The name this outbox keeps records under.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Produces `record`, or keeps it for replay — also when the producer's queue is full: for
    /// records whose cause is already stored (a read mark), so that they are never lost.
    pub async fn send_or_store(&self, record: OutboxRecord) -> Result<Sent, OutboxError> {
        match self.send_or_keep(record.clone()).await {
            Err(OutboxError::QueueFull | OutboxError::Full(_)) => {
                let mut record = record;
                record.owner.clone_from(&self.inner.owner);
                self.store(&record).await
            }
            other => other,
        }
    }

    /// Produces `record` (its `owner` is set to this outbox's), or keeps it for replay. A full
    /// producer queue is [`OutboxError::QueueFull`]: the caller should shed load.
    pub async fn send_or_keep(&self, mut record: OutboxRecord) -> Result<Sent, OutboxError> {
        let inner = &self.inner;
        record.owner.clone_from(&inner.owner);
        self.after_broker_loss().await?;
        if inner.degraded.load(Ordering::Acquire) {
            return self.keep(&record).await;
        }
        let mut delivery = match inner.producer.send_result(future_record(&record)) {
            Ok(d) => d,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err(OutboxError::QueueFull);
            }
            Err((err, _)) if fatal::is_fatal(&err) => {
                self.fail(err, Some(&record)).await?;
                return Ok(Sent::Kept);
            }
            Err((err, _)) => {
                debug!(%err, "produce refused; keeping the record in the outbox");
                return self.keep(&record).await;
            }
        };
        match tokio::time::timeout(inner.wait, &mut delivery).await {
            Ok(Ok(Ok(delivered))) => {
                self.retain(delivered.partition, record);
                Ok(Sent::Acked)
            }
            Ok(Ok(Err((err, _)))) if fatal::is_fatal(&err) => {
                self.fail(err, Some(&record)).await?;
                Ok(Sent::Kept)
            }
            Ok(Ok(Err((err, _)))) => {
                debug!(%err, "produce failed; keeping the record in the outbox");
                self.keep(&record).await
            }
            Ok(Err(_cancelled)) => self.keep(&record).await,
            Err(_slow) => {
                debug!(wait = ?inner.wait, "no acknowledgement in time; keeping the record");
                let sent = self.keep(&record).await?;
                // If the slow produce succeeds after all, the replay is unnecessary.
                let outbox = self.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(_)) = delivery.await
                        && outbox
                            .inner
                            .store
                            .outbox_remove(&record.owner, &record.id)
                            .await
                            .is_ok()
                    {
                        let left = outbox.inner.kept.load(Ordering::Acquire).saturating_sub(1);
                        outbox.inner.kept.store(left, Ordering::Release);
                    }
                });
                Ok(sent)
            }
        }
    }

    async fn keep(&self, record: &OutboxRecord) -> Result<Sent, OutboxError> {
        let kept = self.inner.kept.load(Ordering::Acquire);
        if self.inner.max_kept > 0 && kept >= self.inner.max_kept {
            return Err(OutboxError::Full(kept));
        }
        self.store(record).await
    }

    /// Keeps `record` whatever the bound (its cause is stored already).
    async fn store(&self, record: &OutboxRecord) -> Result<Sent, OutboxError> {
        if !self.inner.degraded.swap(true, Ordering::AcqRel) {
            warn!(owner = %self.inner.owner, "Kafka is slow or down: keeping records in the outbox until it takes them again");
        }
        self.inner.store.outbox_put(record).await?;
        self.inner.kept.fetch_add(1, Ordering::AcqRel);
        Ok(Sent::Kept)
    }
}
