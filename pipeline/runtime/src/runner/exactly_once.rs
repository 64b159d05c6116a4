//! Exactly-once mode: consume → process → produce → `send_offsets_to_transaction` → commit, one
//! Kafka transaction per batch (closed every `commit_interval_ms`).
//!
//! Errors, as librdkafka classifies them:
//! - retriable (coordinator moved, concurrent transactions): the call is retried;
//! - abortable (`txn_requires_abort`: e.g. a rejected TxnOffsetCommit after a rebalance, a
//!   failed produce): the transaction is aborted and the consumer rewound to the first offset of
//!   the batch, so the batch is processed again;
//! - fatal (fenced by a newer instance with the same transactional id, authorisation): the runner
//!   returns an error and the process exits non-zero for the orchestrator to restart it.
//!
//! Transactional ids come from [`super::txn_ids`]: a fresh one per incarnation and after every
//! abort, the predecessor's aborted (and fenced) at start.
//!
//! On a rebalance the consumer's callback finishes the open transaction (commit, or abort if that
//! fails) before the partitions are given up, so the next owner starts exactly where this one
//! stopped; partitions *lost* (not handed over) abort it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::position::Partition;
use super::scaffold::{Mode, NotesAssignments, Source, run_loop, subscribed};
use super::txn_ids::TxnIds;
use super::{Carried, Output, Processor, Rebalances, RunStats, RunnerSpec, record};
use crate::{KafkaConfig, Result, RuntimeError, fatal, probe};

/// How often a retriable transactional call is retried before giving up (fatal).
const RETRIES: u32 = 5;

/// The open transaction, shared by the loop and the rebalance callback.
struct Txn {
    producer: FutureProducer,
    timeout: Duration,
    open: bool,
    /// Next offset to commit per partition (last consumed + 1).
    positions: HashMap<Partition, i64>,
    /// First offset consumed in this transaction per partition: where an abort rewinds to.
    starts: HashMap<Partition, i64>,
    outputs: u64,
    /// Rewinds owed after the rebalance callback aborted a transaction (for the partitions the
    /// consumer keeps, e.g. under cooperative rebalancing).
    rewind: HashMap<Partition, i64>,
    /// Set when the rebalance callback could not finish the transaction: the loop stops.
    broken: Option<String>,
    /// Set after an abort: the producer must not write again (see [`super::txn_ids`]); the
    /// loop moves to a fresh transactional id before the next transaction.
    stale: bool,
    /// Retriable errors of transactional calls, retried (see [`RunStats::txn_retries`]).
    retries: u64,
    /// Transactions aborted by the rebalance callback, not yet counted by the loop.
    rebalance_aborts: u64,
}

/// What finishing a transaction did.
enum Finished {
    /// Committed this many outputs.
    Committed(u64),
    /// Aborted; these partitions must be rewound to these offsets.
    Aborted(HashMap<Partition, i64>),
}

/// Makes `call` until it succeeds or fails with an error that is not retriable, at most
/// [`RETRIES`] more times; counts each retry in `retries`.
fn retry<T>(retries: &mut u64, mut call: impl FnMut() -> KafkaResult<T>) -> KafkaResult<T> {
    let mut attempt = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < RETRIES => {
                warn!(error = %e, attempt, "retriable transaction error; retrying");
                *retries += 1;
                std::thread::sleep(Duration::from_millis(100 << attempt));
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn requires_abort(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.txn_requires_abort(),
        // A produce that failed inside the transaction: the transaction must be aborted.
        KafkaError::MessageProduction(code) => *code != RDKafkaErrorCode::Fatal,
        _ => false,
    }
}

impl Txn {
    /// `e` as a runtime error; a fatal one names the producer's underlying fatal error.
    fn explain(&self, e: KafkaError) -> RuntimeError {
        fatal::explain(e, self.producer.client())
    }

    fn begin(&mut self) -> KafkaResult<()> {
        if !self.open {
            self.producer.begin_transaction()?;
            self.open = true;
        }
        Ok(())
    }

    fn consumed(&mut self, partition: Partition, offset: i64) {
        self.starts.entry(partition.clone()).or_insert(offset);
        self.positions.insert(partition, offset + 1);
    }

    /// Aborts the open transaction, if any, ignoring errors: used on the way out after a fatal
    /// error, so that closing the consumer cannot commit part of a batch.
    fn abandon(&mut self) {
        if self.open {
            let _ = self.producer.abort_transaction(self.timeout);
            self.clear();
            self.stale = true;
        }
    }

    fn clear(&mut self) -> HashMap<Partition, i64> {
        self.open = false;
        self.positions.clear();
        self.outputs = 0;
        std::mem::take(&mut self.starts)
    }

    fn commit(&mut self, group: &ConsumerGroupMetadata) -> KafkaResult<u64> {
        if !self.positions.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), offset) in &self.positions {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
            retry(&mut self.retries, || {
                self.producer
                    .send_offsets_to_transaction(&offsets, group, self.timeout)
            })?;
        }
        retry(&mut self.retries, || {
            self.producer.commit_transaction(self.timeout)
        })?;
        let outputs = self.outputs;
        self.clear();
        Ok(outputs)
    }

    /// Commits the open transaction; on an abortable error aborts it instead. `Err` is fatal.
    fn finish(&mut self, group: Option<&ConsumerGroupMetadata>) -> KafkaResult<Option<Finished>> {
        if !self.open {
            return Ok(None);
        }
        let error = match group {
            Some(group) => match self.commit(group) {
                Ok(outputs) => return Ok(Some(Finished::Committed(outputs))),
                Err(e) if requires_abort(&e) => e.to_string(),
                Err(e) => return Err(e),
            },
            None => "the partitions were lost, or the consumer is not in a group".to_owned(),
        };
        warn!(%error, "aborting the transaction; its batch will be processed again");
        retry(&mut self.retries, || {
            self.producer.abort_transaction(self.timeout)
        })?;
        self.stale = true;
        Ok(Some(Finished::Aborted(self.clear())))
    }
}

fn lock(txn: &Mutex<Txn>) -> Result<MutexGuard<'_, Txn>> {
    txn.lock()
        .map_err(|_| RuntimeError::Fatal("transaction state poisoned".into()))
}

/// Finishes the open transaction before the group takes partitions away.
struct TxnContext {
    txn: Arc<Mutex<Txn>>,
    rebalances: Rebalances,
}

impl ClientContext for TxnContext {}

impl NotesAssignments for TxnContext {
    fn rebalances(&self) -> &Rebalances {
        &self.rebalances
    }
}

impl ConsumerContext for TxnContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.note(rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Revoke(_)) {
            return;
        }
        let Ok(mut txn) = self.txn.lock() else { return };
        // Partitions *lost* (the session expired, or the broker forgot the group, as a
        // restarted noida-db does) may already belong to another member: committing their
        // offsets could skip records the new owner has not processed, so abort instead.
        let group = if consumer.assignment_lost() {
            None
        } else {
            consumer.group_metadata()
        };
        match txn.finish(group.as_ref()) {
            Ok(Some(Finished::Committed(n))) => {
                info!(
                    outputs = n,
                    "committed the open transaction before the rebalance"
                )
            }
            Ok(Some(Finished::Aborted(starts))) => {
                info!("aborted the open transaction before the rebalance; its batch is redone");
                txn.rebalance_aborts += 1;
                txn.rewind.extend(starts);
            }
            Ok(None) => {}
            Err(e) => {
                let e = txn.explain(e);
                warn!(error = %e, "could not finish the transaction before the rebalance");
                txn.broken = Some(e.to_string());
            }
        }
    }
}

/// Runs `processor` with Kafka transactions until `shutdown` (then commits the open batch) or a
/// fatal error.
pub async fn run<P: Processor>(
    kafka: &KafkaConfig,
    spec: &RunnerSpec,
    mut processor: P,
    shutdown: CancellationToken,
) -> Result<RunStats> {
    // The runner's stable name; its transactional ids are registered under it.
    let key = format!("{}.{}", spec.group, kafka.instance_id);
    probe::require_transactions(kafka, &key).await?;
    let ids = Arc::new(TxnIds::new(kafka, &key));
    let transactional_id = ids.take_over().await?;
    let timeout = Duration::from_millis(kafka.transaction_timeout_ms);
    let producer = transactional_producer(kafka, &transactional_id).await?;
    let txn = Arc::new(Mutex::new(Txn {
        producer,
        timeout,
        open: false,
        positions: HashMap::new(),
        starts: HashMap::new(),
        outputs: 0,
        rewind: HashMap::new(),
        broken: None,
        stale: false,
        retries: 0,
        rebalance_aborts: 0,
    }));
    let context = TxnContext {
        txn: Arc::clone(&txn),
        rebalances: Rebalances::default(),
    };
    let consumer = subscribed(kafka, spec, context)?;
    info!(stage = %spec.name, group = %spec.group, %transactional_id, "stage started (exactly-once)");

    let mut mode = ExactlyOnce {
        kafka,
        shared: Shared {
            txn: &txn,
            ids: &ids,
        },
    };
    let mut result = run_loop(kafka, spec, &mut processor, &mut mode, &consumer, &shutdown).await;
    if let (Ok(stats), Ok(t)) = (&mut result, txn.lock()) {
        stats.txn_retries = t.retries;
    }
    if result.is_err() {
        // Abort before the consumer closes: its revoke callback must not commit part of a batch.
        let shared = Arc::clone(&txn);
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut t) = shared.lock() {
                t.abandon();
            }
        })
        .await;
    }
    let stats = result?;
    info!(stage = %spec.name, ?stats, "stage stopped");
    Ok(stats)
}

/// A transactional producer with `id`, its transactions initialised.
async fn transactional_producer(kafka: &KafkaConfig, id: &str) -> Result<FutureProducer> {
    let producer: FutureProducer = kafka.transactional_producer(id).create()?;
    let timeout = Duration::from_millis(kafka.transaction_timeout_ms);
    tokio::task::spawn_blocking(move || match producer.init_transactions(timeout) {
        Ok(()) => Ok(producer),
        Err(e) => Err(fatal::explain(e, producer.client())),
    })
    .await
    .map_err(|e| RuntimeError::Fatal(e.to_string()))?
}

/// Moves to a fresh transactional id after an abort (see [`super::txn_ids`]).
async fn renew(kafka: &KafkaConfig, shared: &Shared<'_>) -> Result<()> {
    let id = shared.ids.register_fresh().await?;
    let producer = transactional_producer(kafka, &id).await?;
    let old = {
        let mut t = lock(shared.txn)?;
        t.stale = false;
        std::mem::replace(&mut t.producer, producer)
    };
    // Dropping a producer waits for its queue; it is empty, but not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || drop(old)).await;
    info!(transactional_id = %id, "moved to a fresh transactional id after an abort");
    Ok(())
}

/// What the loop shares with the rebalance callback, and the id registry.
struct Shared<'a> {
    txn: &'a Arc<Mutex<Txn>>,
    ids: &'a Arc<TxnIds>,
}

/// The exactly-once mode of the loop: outputs into the open transaction, which commits the
/// consumed offsets with them.
struct ExactlyOnce<'a> {
    kafka: &'a KafkaConfig,
    shared: Shared<'a>,
}

#[async_trait]
impl Mode for ExactlyOnce<'_> {
    type Context = TxnContext;

    /// What the rebalance callback (run inside the receive) left for the loop.
    fn after_receive(&mut self, stats: &mut RunStats) -> Result<HashMap<Partition, i64>> {
        let mut t = lock(self.shared.txn)?;
        if let Some(reason) = t.broken.take() {
            return Err(RuntimeError::Fatal(format!(
                "transaction lost in a rebalance: {reason}"
            )));
        }
        stats.aborts += std::mem::take(&mut t.rebalance_aborts);
        Ok(std::mem::take(&mut t.rewind))
    }

    async fn emit(&mut self, source: Source<'_>, outputs: Vec<Output>) -> Result<()> {
        let txn = self.shared.txn;
        // Begun only now, so a processor's retries never hold a transaction open.
        if lock(txn)?.stale {
            renew(self.kafka, &self.shared).await?;
        }
        {
            let mut t = lock(txn)?;
            t.begin().map_err(|e| t.explain(e))?;
        }
        for output in &outputs {
            send(txn, output, &source.carried).await?;
        }
        let mut t = lock(txn)?;
        t.outputs += outputs.len() as u64;
        t.consumed((source.topic.to_owned(), source.partition), source.offset);
        Ok(())
    }

    /// Commits (or aborts) the open transaction.
    async fn commit(
        &mut self,
        consumer: &StreamConsumer<TxnContext>,
        _last: bool,
        stats: &mut RunStats,
    ) -> Result<HashMap<Partition, i64>> {
        let group = consumer.group_metadata();
        let shared = Arc::clone(self.shared.txn);
        let finished = tokio::task::spawn_blocking(move || -> Result<Option<Finished>> {
            let mut t = lock(&shared)?;
            t.finish(group.as_ref()).map_err(|e| t.explain(e))
        })
        .await
        .map_err(|e| RuntimeError::Fatal(e.to_string()))??;
        match finished {
            None => Ok(HashMap::new()),
            Some(Finished::Committed(outputs)) => {
                stats.commits += 1;
                stats.produced += outputs;
                Ok(HashMap::new())
            }
            Some(Finished::Aborted(starts)) => {
                stats.aborts += 1;
                Ok(starts)
            }
        }
    }
}

/// Produces one output inside the open transaction, waiting while the producer queue is full.
async fn send(txn: &Mutex<Txn>, output: &Output, carried: &Carried) -> Result<()> {
    loop {
        let full = {
            let t = lock(txn)?;
            match t.producer.send_result(record(output, carried)) {
                // Delivery is confirmed by commit_transaction, which flushes and fails if any
                // failed.
                Ok(_) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => true,
                Err((e, _)) => return Err(t.explain(e)),
            }
        };
        if full {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
