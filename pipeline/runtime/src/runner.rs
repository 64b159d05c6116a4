//! The generic consume → process → produce → commit loop that runs every stage.
//!
//! At-least-once mode: outputs go through an idempotent producer; the consumed positions are
//! committed only after every output produced before them has been acknowledged (checked every
//! `commit_interval_ms`). A crash or a lost partition therefore replays the uncommitted tail, and
//! the stages' deterministic ids make the replay produce identical records.
//!
//! Processor errors are classified: [`ProcessError::Poison`] records are logged, counted and
//! skipped; [`ProcessError::Retry`] is retried with backoff while the partition waits;
//! [`ProcessError::Fatal`] and any failed produce stop the runner with an error, so the process
//! exits non-zero and restarts from the committed offsets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::try_join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{KafkaConfig, Result, RuntimeError};

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
}

/// How a processor failed, which decides what the runner does next.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record can never be processed (undecodable, invalid): logged, counted and skipped.
    #[error("poison record: {0}")]
    Poison(String),
    /// A dependency failed: the same record is retried with backoff.
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
    /// Records produced and acknowledged.
    pub produced: u64,
    /// Records skipped as poison.
    pub poison: u64,
    /// Retries of failed processing.
    pub retries: u64,
}

/// Runs `processor` until `shutdown` is cancelled (then flushes and commits) or a fatal error.
pub async fn run<P: Processor>(
    kafka: &KafkaConfig,
    spec: &RunnerSpec,
    mut processor: P,
    shutdown: CancellationToken,
) -> Result<RunStats> {
    let consumer: StreamConsumer = kafka.consumer(&spec.group).create()?;
    let topics: Vec<&str> = spec.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let producer: FutureProducer = kafka.producer().create()?;
    let interval = Duration::from_millis(kafka.commit_interval_ms.max(1));
    info!(stage = %spec.name, group = %spec.group, topics = ?spec.input_topics, "stage started");

    let mut batch = Batch::default();
    let mut stats = RunStats::default();
    let mut last_commit = Instant::now();
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            r = tokio::time::timeout(interval, consumer.recv()) => r,
        };
        match received {
            Ok(Ok(message)) => {
                let outputs =
                    process_with_retry(&mut processor, &message, &shutdown, &mut stats).await?;
                let Some(outputs) = outputs else { break };
                let trace = traceparent(&message);
                for output in outputs {
                    batch.send(&producer, output, trace.as_deref()).await?;
                }
                batch.consumed(&message);
                stats.consumed += 1;
            }
            Ok(Err(e)) => warn!(stage = %spec.name, error = %e, "consumer error"),
            Err(_) => {} // nothing arrived within the commit interval
        }
        if last_commit.elapsed() >= interval {
            stats.produced += batch.commit(&consumer, CommitMode::Async).await?;
            last_commit = Instant::now();
        }
    }
    stats.produced += batch.commit(&consumer, CommitMode::Sync).await?;
    info!(stage = %spec.name, ?stats, "stage stopped");
    Ok(stats)
}

/// Runs the processor on one record, retrying retriable errors with capped exponential backoff.
/// `Ok(None)` means shutdown was requested while waiting.
async fn process_with_retry<P: Processor>(
    processor: &mut P,
    message: &BorrowedMessage<'_>,
    shutdown: &CancellationToken,
    stats: &mut RunStats,
) -> Result<Option<Vec<Output>>> {
    let input = Input {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload().unwrap_or_default(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match processor.process(&input).await {
            Ok(outputs) => return Ok(Some(outputs)),
            Err(ProcessError::Poison(reason)) => {
                warn!(topic = input.topic, partition = input.partition, offset = input.offset,
                      %reason, "skipping poison record");
                stats.poison += 1;
                return Ok(Some(Vec::new()));
            }
            Err(ProcessError::Retry(reason)) => {
                warn!(topic = input.topic, offset = input.offset, %reason, ?backoff, "retrying");
                stats.retries += 1;
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(ProcessError::Fatal(reason)) => return Err(RuntimeError::Fatal(reason)),
        }
    }
}

fn traceparent(message: &BorrowedMessage<'_>) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// Outputs in flight and the input positions they came from.
#[derive(Default)]
struct Batch {
    in_flight: Vec<DeliveryFuture>,
    positions: HashMap<(String, i32), i64>,
}

impl Batch {
    async fn send(
        &mut self,
        producer: &FutureProducer,
        output: Output,
        trace: Option<&str>,
    ) -> Result<()> {
        loop {
            let mut record = FutureRecord::to(&output.topic)
                .key(&output.key)
                .payload(&output.payload);
            if let Some(trace) = trace {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: TRACEPARENT,
                    value: Some(trace),
                }));
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    debug!("producer queue full; waiting for acknowledgements");
                    self.await_acks().await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    fn consumed(&mut self, message: &BorrowedMessage<'_>) {
        self.positions.insert(
            (message.topic().to_owned(), message.partition()),
            message.offset() + 1,
        );
    }

    /// Waits for every in-flight output; any failure is fatal for the runner.
    async fn await_acks(&mut self) -> Result<u64> {
        let in_flight = std::mem::take(&mut self.in_flight);
        let count = in_flight.len() as u64;
        let results = try_join_all(in_flight)
            .await
            .map_err(|_| RuntimeError::Fatal("producer dropped a delivery report".into()))?;
        for result in results {
            if let Err((e, _)) = result {
                return Err(e.into());
            }
        }
        Ok(count)
    }

    /// Waits for the outputs, then commits the positions that produced them. A commit that fails
    /// (for example after losing the partition in a rebalance) only means a replay.
    async fn commit(&mut self, consumer: &StreamConsumer, mode: CommitMode) -> Result<u64> {
        let acked = self.await_acks().await?;
        if self.positions.is_empty() {
            return Ok(acked);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in self.positions.drain() {
            list.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        }
        if let Err(e) = consumer.commit(&list, mode) {
            warn!(error = %e, "offset commit failed; the uncommitted records will be replayed");
        }
        Ok(acked)
    }
}
