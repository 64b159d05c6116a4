//! A stage's changelog: state records a processor writes (in the same transactions as its
//! outputs and offsets) to the partition of its input they belong to, and reads back when it
//! (re)starts that partition ([`crate::runner::Processor::reset_partition`]).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{KafkaConfig, Result, RuntimeError};

/// Every committed value of `topic`[`partition`], oldest first: read from the beginning up to
/// the high watermark taken at the start (records of transactions still open or aborted are not
/// returned; a transaction committed just before is waited for, even if its commit marker is not
/// written yet), within `within`.
pub async fn read_partition(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    within: Duration,
) -> Result<Vec<Vec<u8>>> {
    let consumer: BaseConsumer = kafka
        .consumer(&format!("{topic}.restore"))
        .set("enable.partition.eof", "true")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + within;
        let (_, high) = consumer.fetch_watermarks(&topic, partition, within)?;
        let mut values = Vec::new();
        let mut at_end = high <= 0;
        while !at_end {
            if Instant::now() >= deadline {
                return Err(RuntimeError::Fatal(format!(
                    "reading {topic}[{partition}] did not reach offset {high} within {within:?} \
                     ({} records read)",
                    values.len()
                )));
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    values.push(m.payload().unwrap_or_default().to_vec());
                    at_end = m.offset() + 1 >= high;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // At the last stable offset: done once it has passed the watermark taken at
                    // the start (it may stop short while a commit marker is being written).
                    at_end = position(&consumer, &topic, partition)? >= high;
                }
                Some(Err(e)) => return Err(RuntimeError::Kafka(e)),
            }
        }
        Ok(values)
    })
    .await
    .map_err(|e| RuntimeError::Fatal(e.to_string()))?
}

/// The consumer's next offset in `topic`[`partition`] (0 before it has one).
fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> Result<i64> {
    Ok(consumer
        .position()?
        .find_partition(topic, partition)
        .and_then(|p| match p.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(0))
}
