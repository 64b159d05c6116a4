//! Reading what a topic holds, as a `read_committed` consumer sees it.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::random_name;

/// One record as a consumer received it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// Its timestamp (ms since the epoch; the producer's clock when it was sent).
    pub timestamp_ms: i64,
}

/// Every record value in `topic`, read from the beginning to the current end of each partition,
/// as a `read_committed` consumer sees it (records of aborted transactions are skipped).
pub fn read_topic(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(read_records(bootstrap, topic)?
        .into_iter()
        .map(|r| r.value)
        .collect())
}

/// Every record in `topic` from the beginning to the end each partition has now, as a
/// `read_committed` consumer sees it. The end is where the consumer reports end-of-partition, so
/// a transaction's commit marker (which no consumer receives) cannot make it wait for ever.
pub fn read_records(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", random_name("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut open = HashSet::new();
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        open.insert(p.id());
        assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out; partitions {open:?} never reached their end"
        );
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                timestamp_ms: m.timestamp().to_millis().unwrap_or_default(),
            }),
        }
    }
    Ok(records)
}

/// The engagement events on `<prefix>.engagement`, once at least `at_least` are there and no
/// more arrived for a few seconds ([`crate::settled`]); at most a minute.
pub async fn engagement_events(
    bootstrap: &str,
    prefix: &str,
    at_least: usize,
) -> anyhow::Result<Vec<herald_schemas::Engagement>> {
    let topic = format!("{prefix}.engagement");
    let values = crate::settled(Duration::from_secs(60), "engagement events", || {
        let (bootstrap, topic) = (bootstrap.to_owned(), topic.clone());
        async move {
            let values =
                tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic)).await??;
            Ok((values.len() >= at_least).then_some(values))
        }
    })
    .await?;
    Ok(values
        .iter()
        .map(|v| herald_schemas::codec::decode(v))
        .collect::<Result<_, _>>()?)
}
