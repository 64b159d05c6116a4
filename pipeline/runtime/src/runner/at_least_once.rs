//! At-least-once mode: an idempotent producer; the consumed positions are committed only after
//! every output produced before them has been acknowledged (checked every `commit_interval_ms`).
//! A crash or a lost partition replays the uncommitted tail; a failed produce stops the runner.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::idle::{self, IdleFetch};
use super::{
    BatchClock, DeadLetters, Output, Processor, Progress, Rebalances, RunStats, RunnerSpec,
    Started, Starvation, on_consumer_error, process_with_retry, record, traceparent,
};
use crate::{KafkaConfig, Result, RuntimeError, fatal};

/// Runs `processor` at least once until `shutdown` (then flushes and commits) or a fatal error.
pub async fn run<P: Processor>(
    kafka: &KafkaConfig,
    spec: &RunnerSpec,
    mut processor: P,
    shutdown: CancellationToken,
) -> Result<RunStats> {
    let rebalances = Rebalances::default();
    let consumer: StreamConsumer<Rebalances> = kafka
        .consumer(&spec.group)
        .create_with_context(rebalances.clone())?;
    let topics: Vec<&str> = spec.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let producer: FutureProducer = kafka.producer().create()?;
    info!(stage = %spec.name, group = %spec.group, topics = ?spec.input_topics, "stage started");

    let mut batch = Batch::default();
    let mut stats = RunStats::default();
    let mut progress = Progress::new(&spec.name);
    let mut clock = BatchClock::new(kafka);
    let mut starvation = Starvation::new(kafka);
    let dead = DeadLetters::new(kafka, spec);
    let mut started = Started::default();
    let mut idling = IdleFetch::new(kafka.idle_pause_ms, Instant::now());
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            r = tokio::time::timeout(clock.wait(&idling), consumer.recv()) => r,
        };
        let assigned = rebalances.take_assigned();
        if !assigned.is_empty() {
            idle::apply(idling.wake(Instant::now()), &consumer, &mut stats);
        }
        for partition in assigned {
            started.forget(&partition);
        }
        match received {
            Ok(Ok(message)) => {
                idle::apply(idling.on_record(Instant::now()), &consumer, &mut stats);
                let outputs = process_with_retry(
                    &mut processor,
                    &mut started,
                    &message,
                    &dead,
                    &shutdown,
                    &mut stats,
                )
                .await?;
                let Some(outputs) = outputs else { break };
                let trace = traceparent(&message);
                for output in outputs {
                    batch.send(&producer, output, trace.as_deref()).await?;
                }
                batch.consumed(&message);
                stats.consumed += 1;
            }
            Ok(Err(e)) => on_consumer_error(e, &consumer, &spec.name)?,
            Err(_) => {} // nothing arrived within the commit interval
        }
        if clock.due(&stats) {
            stats.produced += batch
                .commit(&producer, &consumer, CommitMode::Async)
                .await?;
            clock.restart(&stats);
        }
        idle::apply(idling.on_tick(Instant::now()), &consumer, &mut stats);
        progress.tick(&stats);
        starvation.check(&consumer, &stats)?;
    }
    stats.produced += batch.commit(&producer, &consumer, CommitMode::Sync).await?;
    info!(stage = %spec.name, ?stats, "stage stopped");
    Ok(stats)
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
            match producer.send_result(record(&output, trace)) {
                Ok(delivery) => {
                    self.in_flight.push(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    debug!("producer queue full; waiting for acknowledgements");
                    self.await_acks(producer).await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(fatal::explain(e, producer.client())),
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
    async fn await_acks(&mut self, producer: &FutureProducer) -> Result<u64> {
        let in_flight = std::mem::take(&mut self.in_flight);
        let count = in_flight.len() as u64;
        let results = try_join_all(in_flight)
            .await
            .map_err(|_| RuntimeError::Fatal("producer dropped a delivery report".into()))?;
        for result in results {
            if let Err((e, _)) = result {
                return Err(fatal::explain(e, producer.client()));
            }
        }
        Ok(count)
    }

    /// Waits for the outputs, then commits the positions that produced them. A commit that fails
    /// (for example after losing the partition in a rebalance) only means a replay.
    async fn commit(
        &mut self,
        producer: &FutureProducer,
        consumer: &StreamConsumer<Rebalances>,
        mode: CommitMode,
    ) -> Result<u64> {
        let acked = self.await_acks(producer).await?;
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
