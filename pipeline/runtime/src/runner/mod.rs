//! The generic consume → process → produce → commit loop that runs every stage, in one of two
//! modes ([`crate::DeliveryMode`]):
//!
//! - [`exactly_once`]: a transactional producer; each batch of outputs and the consumed offsets
//!   commit atomically (Apache Kafka, Redpanda).
//! - [`at_least_once`]: an idempotent producer; offsets are committed after the outputs are
//!   acknowledged, and a crash replays the uncommitted tail (any broker, including tansu).
//!
//! Both run the same loop (`scaffold.rs`: receive, reset, process, emit, commit when due, idle
//! pausing in `idle.rs`, stall and consumer-error checks in `health.rs`); a mode supplies only
//! how outputs are produced and a batch committed or aborted.
//!
//! In both, processor errors are classified: a [`ProcessError::Poison`] record (undecodable,
//! written with a schema this build does not know, invalid) goes to `<p>.dead-letter` whole,
//! with where it came from and why, in the same batch (transaction) as its input offset, and the
//! stage goes on; [`ProcessError::Retry`] is retried with capped backoff while the partition
//! waits, until `kafka.retry_budget_ms` has passed since its first failure — then the record is
//! dead-lettered too, so one record that never succeeds cannot stall its partition for ever;
//! [`ProcessError::Fatal`] stops the runner with an error, so the process exits non-zero and
//! restarts from the committed offsets. A store error converts into one of the three by its
//! meaning (`store_error.rs`). The stages' deterministic ids make every replay produce
//! identical records (a dead letter is stamped with its input's time for the same reason).

pub mod at_least_once;
pub mod exactly_once;
mod health;
mod idle;
mod scaffold;
mod store_error;
pub mod txn_ids;

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{DeliveryMode, KafkaConfig, Result, RuntimeError};

/// The W3C trace-context header carried from input records to their outputs.
pub const TRACEPARENT: &str = "traceparent";

/// One consumed record, as a processor sees it.
#[derive(Debug)]
pub struct Input<'a> {
    /// The topic it came from (a stage may read several).
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Its value; empty for a tombstone.
    pub payload: &'a [u8],
    /// The record's timestamp (ms since the epoch). Stages use it as "now", so a replay
    /// produces identical records.
    pub timestamp_ms: i64,
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Partitioning key: tenant/recipient, so one recipient's events stay in order.
    pub key: String,
    /// Encoded value.
    pub payload: Vec<u8>,
    /// A partition of its own choosing (a stage's state record goes to the partition of the
    /// input it was made from, so whoever owns that input partition restores it); `None`: by
    /// key.
    pub partition: Option<i32>,
}

/// How a processor failed, which decides what the runner does next.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record can never be processed (undecodable, invalid): it goes to the dead-letter
    /// topic and the stage goes on.
    #[error("poison record: {0}")]
    Poison(String),
    /// A dependency failed: the same record is retried with backoff, within the retry budget.
    #[error("retriable: {0}")]
    Retry(String),
    /// A broken invariant: the runner stops and the process exits non-zero.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// A stage's logic: turns one input record into zero or more output records.
#[async_trait]
pub trait Processor: Send {
    /// Processes one record. Must be deterministic in its outputs for a given input, so that a
    /// replay after a crash produces the same records.
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError>;

    /// Called before the first record of `topic`[`partition`] the runner hands over since it
    /// (re)started reading that partition at its committed offset: after an assignment, and
    /// after an abort rewound it. A processor keeping state per input partition rebuilds it
    /// here — from state records it wrote in the same transactions as the offsets, so in
    /// exactly-once mode the state matches the committed offset exactly and a replay decides
    /// as the first run did. The default keeps no state. A `Retry` error is retried with
    /// backoff within the retry budget; any other error, or one past it, stops the runner.
    async fn reset_partition(&mut self, _topic: &str, _partition: i32) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// The input partitions whose processor state matches where the runner reads them; one not in
/// it gets [`Processor::reset_partition`] before its next record.
/// (A runner holds a handful of partitions: a list, checked without allocating per record.)
#[derive(Debug, Default)]
pub(crate) struct Started(Vec<(String, i32)>);

impl Started {
    /// After a rewind of `partition`, or a rebalance that assigned it.
    pub(crate) fn forget(&mut self, partition: &(String, i32)) {
        self.0.retain(|p| p != partition);
    }

    fn contains(&self, topic: &str, partition: i32) -> bool {
        self.0.iter().any(|(t, p)| t == topic && *p == partition)
    }
}

/// A consumer context that notes the partitions each rebalance assigns, so the loop resets
/// their state ([`Started::forget`]). Only those: under cooperative rebalancing a partition the
/// consumer keeps is read on from where it was, with the open batch's state still in memory.
#[derive(Debug, Default, Clone)]
pub(crate) struct Rebalances(std::sync::Arc<std::sync::Mutex<Vec<(String, i32)>>>);

impl Rebalances {
    /// The partitions assigned since the last call.
    pub(crate) fn take_assigned(&self) -> Vec<(String, i32)> {
        self.0
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    pub(crate) fn note(&self, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(list) = rebalance
            && let Ok(mut assigned) = self.0.lock()
        {
            assigned.extend(
                list.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition())),
            );
        }
    }
}

impl rdkafka::ClientContext for Rebalances {}

impl rdkafka::consumer::ConsumerContext for Rebalances {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        self.note(rebalance);
    }
}

/// Capped exponential backoff (100 ms doubling to 30 s) within the retry budget, shared by
/// processing a record and resetting a partition's state.
struct Retrying {
    backoff: Duration,
    first_failure: std::time::Instant,
    budget: Duration,
}

impl Retrying {
    fn new(budget: Duration) -> Retrying {
        Retrying {
            backoff: Duration::from_millis(100),
            first_failure: std::time::Instant::now(),
            budget,
        }
    }

    /// Whether the budget allows another attempt.
    fn within_budget(&self) -> bool {
        self.first_failure.elapsed() < self.budget
    }

    /// Counts a retry and waits out the backoff; false if shutdown was requested meanwhile.
    async fn wait(&mut self, shutdown: &CancellationToken, stats: &mut RunStats) -> bool {
        stats.retries += 1;
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(self.backoff) => {}
        }
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        true
    }
}

/// Resets the processor's state of `message`'s partition if the runner (re)started reading it.
/// `Ok(false)` means shutdown was requested while retrying.
async fn ensure_started<P: Processor>(
    processor: &mut P,
    started: &mut Started,
    message: &BorrowedMessage<'_>,
    dead: &DeadLetters,
    shutdown: &CancellationToken,
    stats: &mut RunStats,
) -> Result<bool> {
    if started.contains(message.topic(), message.partition()) {
        return Ok(true);
    }
    let partition = (message.topic().to_owned(), message.partition());
    let mut retrying = Retrying::new(dead.budget);
    loop {
        match processor.reset_partition(&partition.0, partition.1).await {
            Ok(()) => break,
            Err(ProcessError::Retry(reason)) if retrying.within_budget() => {
                warn!(topic = %partition.0, partition = partition.1, %reason,
                      backoff = ?retrying.backoff, "retrying the reset of a partition's state");
                if !retrying.wait(shutdown, stats).await {
                    return Ok(false);
                }
            }
            Err(e) => {
                return Err(RuntimeError::Fatal(format!(
                    "resetting the state of {}[{}]: {e}",
                    partition.0, partition.1
                )));
            }
        }
    }
    stats.resets += 1;
    started.0.push(partition);
    Ok(true)
}

/// What the runner runs.
#[derive(Debug, Clone)]
pub struct RunnerSpec {
    /// Stage name, for logs.
    pub name: String,
    /// Consumer group id.
    pub group: String,
    /// Topics to consume.
    pub input_topics: Vec<String>,
}

/// Counters a runner returns when it stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Records processed (including poison ones).
    pub consumed: u64,
    /// Records produced and acknowledged (or committed, in exactly-once mode).
    pub produced: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Retries of failed processing.
    pub retries: u64,
    /// Transactions committed (exactly-once mode).
    pub commits: u64,
    /// Transactions aborted (exactly-once mode), by the loop or before a rebalance.
    pub aborts: u64,
    /// Transactional calls (offsets to the transaction, commit, abort) that failed with an
    /// error librdkafka calls retriable (e.g. the coordinator moved) and were made again.
    pub txn_retries: u64,
    /// Partitions sought back to the start of an aborted batch, to process it again.
    pub rewinds: u64,
    /// Calls of [`Processor::reset_partition`] (after assignments and rewinds).
    pub resets: u64,
    /// Times the consumer paused its partitions for being idle (`kafka.idle_pause_ms`).
    pub idle_pauses: u64,
}

/// Runs `processor` in the configured delivery mode until `shutdown` is cancelled (then it
/// finishes the open batch) or a fatal error.
pub async fn run<P: Processor>(
    kafka: &KafkaConfig,
    spec: &RunnerSpec,
    processor: P,
    shutdown: CancellationToken,
) -> Result<RunStats> {
    match kafka.delivery_mode {
        DeliveryMode::AtLeastOnce => at_least_once::run(kafka, spec, processor, shutdown).await,
        DeliveryMode::ExactlyOnce => exactly_once::run(kafka, spec, processor, shutdown).await,
    }
}

/// Where a runner sends what it cannot process, and how long it retries.
pub(crate) struct DeadLetters {
    topic: String,
    stage: String,
    budget: Duration,
}

impl DeadLetters {
    pub(crate) fn new(kafka: &KafkaConfig, spec: &RunnerSpec) -> DeadLetters {
        DeadLetters {
            topic: crate::topics::Topics::new(&kafka.topic_prefix).dead_letter(),
            stage: spec.name.clone(),
            budget: Duration::from_millis(kafka.retry_budget_ms),
        }
    }

    /// The dead-letter record for `message`, which failed `attempts` times with `error`.
    fn output(&self, message: &BorrowedMessage<'_>, error: &str, attempts: u32) -> Result<Output> {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| herald_schemas::RecordHeader {
                        key: h.key.to_owned(),
                        value: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let at = message.timestamp().to_millis().unwrap_or_default();
        let letter = herald_schemas::DeadLetter {
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            source_timestamp_ms: at,
            stage: self.stage.clone(),
            error: error.to_owned(),
            attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
            at_ms: at,
        };
        let payload = herald_schemas::codec::encode(&letter)
            .map_err(|e| RuntimeError::Fatal(format!("encoding a dead letter failed: {e}")))?;
        Ok(Output {
            topic: self.topic.clone(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            payload,
            partition: None,
        })
    }
}

/// Runs the processor on one record (resetting its partition's state first if the runner
/// (re)started reading it): its outputs; or, for a poison record or one still failing when the
/// retry budget is spent, its dead letter. Retriable errors are retried with capped
/// exponential backoff meanwhile. `Ok(None)` means shutdown was requested while waiting.
pub(crate) async fn process_with_retry<P: Processor>(
    processor: &mut P,
    started: &mut Started,
    message: &BorrowedMessage<'_>,
    dead: &DeadLetters,
    shutdown: &CancellationToken,
    stats: &mut RunStats,
) -> Result<Option<Vec<Output>>> {
    if !ensure_started(processor, started, message, dead, shutdown, stats).await? {
        return Ok(None);
    }
    let input = Input {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload().unwrap_or_default(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
    };
    let mut retrying = Retrying::new(dead.budget);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let reason = match processor.process(&input).await {
            Ok(outputs) => return Ok(Some(outputs)),
            Err(ProcessError::Poison(reason)) => reason,
            Err(ProcessError::Retry(reason)) if retrying.within_budget() => {
                warn!(topic = input.topic, offset = input.offset, %reason,
                      backoff = ?retrying.backoff, "retrying");
                if !retrying.wait(shutdown, stats).await {
                    return Ok(None);
                }
                continue;
            }
            Err(ProcessError::Retry(reason)) => format!(
                "still failing after {attempts} attempts over {:?}: {reason}",
                retrying.first_failure.elapsed()
            ),
            Err(ProcessError::Fatal(reason)) => return Err(RuntimeError::Fatal(reason)),
        };
        warn!(topic = input.topic, partition = input.partition, offset = input.offset,
              %reason, "sending the record to the dead-letter topic");
        stats.dead_letters += 1;
        return Ok(Some(vec![dead.output(message, &reason, attempts)?]));
    }
}

pub(crate) fn traceparent(message: &BorrowedMessage<'_>) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// The record for one output, carrying the input's trace context.
pub(crate) fn record<'a>(
    output: &'a Output,
    trace: Option<&'a str>,
) -> FutureRecord<'a, String, Vec<u8>> {
    let mut record = FutureRecord::to(&output.topic)
        .key(&output.key)
        .payload(&output.payload);
    if let Some(partition) = output.partition {
        record = record.partition(partition);
    }
    match trace {
        Some(trace) => record.headers(OwnedHeaders::new().insert(Header {
            key: TRACEPARENT,
            value: Some(trace),
        })),
        None => record,
    }
}
