//! A stage's changelog: state records a processor writes (in the same transactions as its
//! outputs and offsets) to the partition of its input they belong to, and reads back when it
//! (re)starts that partition ([`crate::runner::Processor::reset_partition`]).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{KafkaConfig, Result, RuntimeError};

/// One record: its key (if any) and its value.
pub type KeyValue = (Option<Vec<u8>>, Vec<u8>);

/// Every committed value of `topic`[`partition`], oldest first ([`read_partition_blocking`]),
/// on the blocking pool.
pub async fn read_partition(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    within: Duration,
) -> Result<Vec<Vec<u8>>> {
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        read_partition_blocking(&kafka, &topic, partition, within)
            .map(|records| records.into_iter().map(|(_, value)| value).collect())
    })
    .await
    .map_err(|e| RuntimeError::Fatal(e.to_string()))?
}

/// Every committed record (key, value) of `topic`[`partition`], oldest first: read from the
/// beginning up to the high watermark taken at the start (records of transactions still open or
/// aborted are not returned; a transaction committed just before is waited for, even if its
/// commit marker is not written yet), within `within`. Blocks the calling thread.
pub fn read_partition_blocking(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    within: Duration,
) -> Result<Vec<KeyValue>> {
    let consumer: BaseConsumer = kafka.consumer(&format!("{topic}.restore")).create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + within;
    let (_, high) = consumer.fetch_watermarks(topic, partition, within)?;
    let mut records = Vec::new();
    // Done once the position has passed the watermark taken at the start: records of aborted
    // transactions and commit markers are skipped but still move the position, and a commit
    // marker still being written holds it back until it is.
    while high > 0 && position(&consumer, topic, partition)? < high {
        if Instant::now() >= deadline {
            return Err(RuntimeError::Fatal(format!(
                "reading {topic}[{partition}] did not reach offset {high} within {within:?} ({} \
                 records read)",
                records.len()
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => records.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(e)) => return Err(RuntimeError::Kafka(e)),
        }
    }
    Ok(records)
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
