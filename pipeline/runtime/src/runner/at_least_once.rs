//! At-least-once mode: an idempotent producer; the consumed positions are committed only after
//! every output produced before them has been acknowledged (checked every `commit_interval_ms`).
//! A crash or a lost partition replays the uncommitted tail; a failed produce stops the runner.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::position::Partition;
use super::scaffold::{Mode, Source, run_loop, subscribed};
use super::{Carried, Output, Processor, Rebalances, RunStats, RunnerSpec, record};
use crate::{KafkaConfig, Result, RuntimeError, fatal};

/// Runs `processor` at least once until `shutdown` (then flushes and commits) or a fatal error.
pub async fn run<P: Processor>(
    kafka: &KafkaConfig,
    spec: &RunnerSpec,
    mut processor: P,
    shutdown: CancellationToken,
) -> Result<RunStats> {
    let consumer = subscribed(kafka, spec, Rebalances::default())?;
    let producer: FutureProducer = kafka.producer().create()?;
    info!(stage = %spec.name, group = %spec.group, topics = ?spec.input_topics, "stage started");

    let mut mode = AtLeastOnce {
        producer,
        batch: Batch::default(),
    };
    let stats = run_loop(kafka, spec, &mut processor, &mut mode, &consumer, &shutdown).await?;
    info!(stage = %spec.name, ?stats, "stage stopped");
    Ok(stats)
}

/// An idempotent producer, and what it has in flight.
struct AtLeastOnce {
    producer: FutureProducer,
    batch: Batch,
}

#[async_trait]
impl Mode for AtLeastOnce {
    type Context = Rebalances;

    fn after_receive(&mut self, _stats: &mut RunStats) -> Result<HashMap<Partition, i64>> {
        Ok(HashMap::new())
    }

    async fn emit(&mut self, source: Source<'_>, outputs: Vec<Output>) -> Result<()> {
        for output in outputs {
            self.batch
                .send(&self.producer, output, &source.carried)
                .await?;
        }
        self.batch.positions.insert(
            (source.topic.to_owned(), source.partition),
            source.offset + 1,
        );
        Ok(())
    }

    async fn commit(
        &mut self,
        consumer: &StreamConsumer<Rebalances>,
        last: bool,
        stats: &mut RunStats,
    ) -> Result<HashMap<Partition, i64>> {
        let mode = if last {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        stats.produced += self.batch.commit(&self.producer, consumer, mode).await?;
        Ok(HashMap::new())
    }
}

/// Outputs in flight and the input positions they came from.
#[derive(Default)]
struct Batch {
    in_flight: Vec<DeliveryFuture>,
    positions: HashMap<Partition, i64>,
}

impl Batch {
    async fn send(
        &mut self,
        producer: &FutureProducer,
        output: Output,
        carried: &Carried,
    ) -> Result<()> {
        loop {
            match producer.send_result(record(&output, carried)) {
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
