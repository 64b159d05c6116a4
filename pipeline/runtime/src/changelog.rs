//! A stage's changelog: state records a processor writes (in the same transactions as its
//! outputs and offsets) to the partition of its input they belong to, and reads back when it
//! (re)starts that partition ([`crate::runner::Processor::reset_partition`]).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{KafkaConfig, Result, RuntimeError};

/// Every committed value of `topic`[`partition`], oldest first: read from the beginning to the
/// last stable offset (uncommitted and aborted records are not read), within `within`.
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
        let mut values = Vec::new();
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => values.push(m.payload().unwrap_or_default().to_vec()),
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(values),
                Some(Err(e)) => return Err(RuntimeError::Kafka(e)),
            }
        }
        Err(RuntimeError::Fatal(format!(
            "reading {topic}[{partition}] did not reach its end within {within:?} ({} records \
             read)",
            values.len()
        )))
    })
    .await
    .map_err(|e| RuntimeError::Fatal(e.to_string()))?
}
