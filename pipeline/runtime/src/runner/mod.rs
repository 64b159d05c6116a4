//! The generic consume → process → produce → commit loop that runs every stage, in one of two
//! modes ([`crate::DeliveryMode`]):
//!
//! - [`exactly_once`]: a transactional producer; each batch of outputs and the consumed offsets
//!   commit atomically (Apache Kafka, Redpanda).
//! - [`at_least_once`]: an idempotent producer; offsets are committed after the outputs are
//!   acknowledged, and a crash replays the uncommitted tail (any broker, including tansu).
//!
//! Both run the same loop (`scaffold.rs`: receive what has been fetched, process it, emit,
//! commit when due; idle pausing in `idle.rs`, stall and consumer-error checks in `health.rs`);
//! a mode supplies only how outputs are produced and a batch committed or aborted. Records
//! received together go to [`Processor::process_batch`] at once (`process.rs` resets partition
//! state, classifies errors and retries), so a stage can write its store once per batch or
//! work on different keys concurrently ([`lanes`]); offsets are committed only for records
//! whose outputs were emitted, since a batch is emitted whole before the next commit.
//! A record that is not due yet ([`ProcessError::NotDue`]) sets its partition aside
//! (`parking.rs`: paused, sought back to it, resumed when due) while the others flow.
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
pub mod lanes;
mod parking;
mod position;
mod process;
mod scaffold;
mod store_error;
pub mod txn_ids;

pub use process::{Failed, dead_letter};

use async_trait::async_trait;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

use crate::{DeliveryMode, KafkaConfig, Result};

/// The W3C trace-context header carried from input records to their outputs.
pub const TRACEPARENT: &str = herald_telemetry::trace::TRACEPARENT;

/// The header naming the notification a record is about, set by the ingress and carried to
/// every record it causes (for the stages' spans, without decoding the record).
pub const NOTIFICATION_ID: &str = "herald-notification-id";

/// One consumed record, as a processor sees it.
#[derive(Debug, Clone, Copy)]
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
    /// The W3C `traceparent` of the record's span in this stage (of the record itself when
    /// spans are off), for work done on its behalf ([`herald_telemetry::trace::child_of`]).
    pub trace: Option<&'a str>,
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
    /// The record is not due for this long yet (a deferred notification, a delivery to retry
    /// later). The runner sets its partition aside — paused, to be read again from this record
    /// once the wait is over — and goes on with the other partitions. Whether a record is due
    /// is the processor's to judge, by its injected clock; the waiting is the runner's, so
    /// `process` never sleeps.
    #[error("not due for {0:?}")]
    NotDue(std::time::Duration),
}

/// A stage's logic: turns one input record into zero or more output records.
#[async_trait]
pub trait Processor: Send {
    /// Processes one record. Must be deterministic in its outputs for a given input, so that a
    /// replay after a crash produces the same records.
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError>;

    /// Processes records received together — whatever had been fetched, up to the batch's
    /// room; each partition's in offset order — and returns their results in input order: at
    /// least one, and at most up to and including the first error. The runner handles that
    /// error (a retriable one by calling [`Processor::process`] on that record alone) and
    /// hands the records after it over again.
    ///
    /// The default processes one record after another. A stage overrides it to write to its
    /// store once per batch, or to overlap slow calls for different keys
    /// ([`lanes::by_key`]) — keeping each key's records in their order.
    async fn process_batch(
        &mut self,
        inputs: &[Input<'_>],
    ) -> Vec<Result<Vec<Output>, ProcessError>> {
        let mut results = Vec::with_capacity(inputs.len());
        for input in inputs {
            let result = self.process(input).await;
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }

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
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(list) => {
                tracing::info!(partitions = %describe(list), "partitions assigned");
                if let Ok(mut assigned) = self.0.lock() {
                    assigned.extend(
                        list.elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition())),
                    );
                }
            }
            rdkafka::consumer::Rebalance::Revoke(list) => {
                tracing::info!(partitions = %describe(list), "partitions revoked")
            }
            rdkafka::consumer::Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance failed")
            }
        }
    }
}

/// `topic[0,1,2] other[3]` for a log line.
fn describe(list: &rdkafka::TopicPartitionList) -> String {
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for e in list.elements() {
        by_topic
            .entry(e.topic().to_owned())
            .or_default()
            .push(e.partition());
    }
    by_topic
        .iter()
        .map(|(topic, parts)| {
            let parts: Vec<String> = parts.iter().map(i32::to_string).collect();
            format!("{topic}[{}]", parts.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    /// Times a partition was set aside until a record of its was due
    /// ([`ProcessError::NotDue`]).
    pub parked: u64,
}

impl RunStats {
    /// The counts published as the runner's metrics.
    pub fn counts(&self) -> herald_telemetry::metrics::StageCounts {
        herald_telemetry::metrics::StageCounts {
            records_in: self.consumed,
            records_out: self.produced,
            dead_letters: self.dead_letters,
            retries: self.retries,
            commits: self.commits,
            aborts: self.aborts,
        }
    }
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

fn header(message: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// What a record's outputs carry on from it: the trace context (of the record's span in this
/// stage when spans are on) and the notification id.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    pub(crate) trace: Option<String>,
    notification: Option<String>,
    /// The record's span in this stage; it ends when the record's outputs are handed on.
    _span: Option<tracing::Span>,
}

impl Carried {
    /// What `message`, consumed by runner `stage`, carries on; opens its span.
    pub(crate) fn of(stage: &str, message: &BorrowedMessage<'_>) -> Carried {
        let trace = header(message, TRACEPARENT);
        let notification = header(message, NOTIFICATION_ID);
        if !herald_telemetry::trace::enabled() {
            return Carried {
                trace,
                notification,
                _span: None,
            };
        }
        let tenant = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.split('/').next())
            .unwrap_or_default();
        let span = herald_telemetry::trace::record_span(
            stage,
            trace.as_deref(),
            tenant,
            notification.as_deref().unwrap_or_default(),
        );
        Carried {
            trace: herald_telemetry::trace::traceparent(&span).or(trace),
            notification,
            _span: Some(span),
        }
    }
}

/// The record for one output, carrying its input's headers.
pub(crate) fn record<'a>(
    output: &'a Output,
    carried: &'a Carried,
) -> FutureRecord<'a, String, Vec<u8>> {
    let mut record = FutureRecord::to(&output.topic)
        .key(&output.key)
        .payload(&output.payload);
    if let Some(partition) = output.partition {
        record = record.partition(partition);
    }
    if carried.trace.is_none() && carried.notification.is_none() {
        return record;
    }
    let mut headers = OwnedHeaders::new_with_capacity(2);
    for (key, value) in [
        (TRACEPARENT, &carried.trace),
        (NOTIFICATION_ID, &carried.notification),
    ] {
        if let Some(value) = value {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
    }
    record.headers(headers)
}
