//! One hop of a bare chain: consumes `from` in consumer group `group` and copies every record to
//! `to`, as a user would write it with plain `rdkafka` and no Herald code.
//!
//! `bare-copier <bootstrap> <group> <from> <to> alo|eos`
//!
//! - `alo` (at-least-once): records are sent without waiting; every 100 ms (or 1,000 records)
//!   the copier waits for all sent records to be acknowledged, then commits the offsets after
//!   them.
//! - `eos` (exactly-once): a transactional producer; each batch (100 ms or 1,000 records) is one
//!   transaction holding its outputs and its input offsets.
//!
//! Runs until killed; exits non-zero on any error (the bench then sees the chain stall).
#![allow(clippy::print_stderr)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bare_kafka::{consumer_config, producer_config};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const BATCH_TIME: Duration = Duration::from_millis(100);
const BATCH_RECORDS: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, group, from, to, mode] = args.as_slice() else {
        anyhow::bail!("usage: bare-copier <bootstrap> <group> <from> <to> alo|eos");
    };
    let consumer: StreamConsumer = consumer_config(bootstrap, group)
        .set("enable.auto.offset.store", "false")
        .create()?;
    consumer.subscribe(&[from.as_str()])?;
    match mode.as_str() {
        "alo" => at_least_once(&consumer, producer_config(bootstrap).create()?, to).await,
        "eos" => {
            let producer: FutureProducer = producer_config(bootstrap)
                .set("transactional.id", format!("{group}.copier"))
                .create()?;
            producer.init_transactions(TIMEOUT)?;
            exactly_once(&consumer, producer, to).await
        }
        other => anyhow::bail!("mode {other}: alo or eos"),
    }
}

async fn at_least_once(
    consumer: &StreamConsumer,
    producer: FutureProducer,
    to: &str,
) -> anyhow::Result<()> {
    let mut sent: Vec<DeliveryFuture> = Vec::new();
    let mut since = Instant::now();
    loop {
        if let Ok(m) = tokio::time::timeout(BATCH_TIME, consumer.recv()).await {
            let m = m?;
            let record = FutureRecord::to(to)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default());
            sent.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| anyhow::Error::from(e))?,
            );
            consumer.store_offset_from_message(&m)?;
        }
        if sent.len() >= BATCH_RECORDS || since.elapsed() >= BATCH_TIME {
            for delivery in sent.drain(..) {
                delivery.await?.map_err(|(e, _)| e)?;
            }
            match consumer.commit_consumer_state(CommitMode::Async) {
                Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(_)) => {}
                Err(e) => return Err(e.into()),
            }
            since = Instant::now();
        }
    }
}

async fn exactly_once(
    consumer: &StreamConsumer,
    producer: FutureProducer,
    to: &str,
) -> anyhow::Result<()> {
    loop {
        // A transaction begins with the first record of its batch.
        let first = consumer.recv().await?;
        producer.begin_transaction()?;
        let started = Instant::now();
        let mut copied = 0usize;
        let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
        let mut next = Some(first);
        loop {
            if let Some(m) = next.take() {
                next_offsets.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
                let record = FutureRecord::to(to)
                    .key(m.key().unwrap_or_default())
                    .payload(m.payload().unwrap_or_default());
                // Delivery is confirmed by commit_transaction.
                drop(
                    producer
                        .send_result(record)
                        .map_err(|(e, _)| anyhow::Error::from(e))?,
                );
                copied += 1;
            }
            let left = BATCH_TIME.saturating_sub(started.elapsed());
            if copied >= BATCH_RECORDS || left.is_zero() {
                break;
            }
            if let Ok(m) = tokio::time::timeout(left, consumer.recv()).await {
                next = Some(m?);
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next_offsets {
            offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
        producer.send_offsets_to_transaction(&offsets, &group, TIMEOUT)?;
        producer.commit_transaction(TIMEOUT)?;
    }
}
