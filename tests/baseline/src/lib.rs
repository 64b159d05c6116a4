//! What a user would build without Herald, so that `make bench` can measure Herald against it:
//! plain `rdkafka` clients with their settings written out here (none read from Herald), a
//! producer that keeps a fixed number of records in flight, a reader that takes a topic to its
//! end, and a copier — one consumer → producer hop, at-least-once or with transactions — run as
//! its own process (`bare-copier`). This crate depends on no Herald crate, so nothing Herald does
//! can slow (or hide in) its numbers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A producer as the librdkafka documentation suggests for "no loss, no duplicates":
/// idempotence on (which implies acks=all), everything else at its default.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true");
    c
}

/// A consumer in `group` that commits by hand, starts at the beginning of a new group and reads
/// only committed records (so a transactional chain passes on only what was committed).
pub fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    c
}

/// Produces `count` records of `size` bytes to `topic` (key `k<i % 1000>`), keeping `in_flight`
/// unacknowledged at a time, after one warm-up record (so `count + 1` in all); the first 8 bytes
/// of each value are the microseconds since the epoch when it was sent. Returns the time from
/// the first timed send to the last acknowledgement, and when that first send was.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    count: usize,
    size: usize,
    in_flight: usize,
) -> anyhow::Result<(Instant, Duration)> {
    let producer: FutureProducer = producer_config(bootstrap).create()?;
    // One record first, so connecting (metadata, the idempotent producer id) is not timed.
    producer
        .send(
            FutureRecord::to(topic)
                .key("warm-up")
                .payload(&vec![0u8; size.max(8)]),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for i in 0..count {
        if pending.len() >= in_flight.max(1)
            && let Some(done) = pending.next().await
        {
            done?;
        }
        let mut value = vec![0u8; size.max(8)];
        value[..8].copy_from_slice(&now_us().to_le_bytes());
        let key = format!("k{}", i % 1_000);
        let producer = producer.clone();
        let topic = topic.to_owned();
        pending.push(async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| anyhow::Error::from(e))
        });
    }
    while let Some(done) = pending.next().await {
        done?;
    }
    Ok((started, started.elapsed()))
}

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// What [`read_to_end`] saw.
#[derive(Debug, Clone)]
pub struct Read {
    /// Records read.
    pub records: usize,
    /// From the assignment to the end of the last partition.
    pub elapsed: Duration,
    /// When the last record needed was read.
    pub finished: Instant,
    /// Each record's age when read (now − the send time in its first 8 bytes).
    pub ages: Vec<Duration>,
}

/// Reads every committed record of `topic` from the beginning until each partition reports its
/// end and at least `at_least` records were read (waiting for more if fewer are there yet), for
/// at most `within`.
pub fn read_to_end(
    bootstrap: &str,
    topic: &str,
    at_least: usize,
    within: Duration,
) -> anyhow::Result<Read> {
    let consumer: BaseConsumer = consumer_config(bootstrap, &format!("reader-{}", now_us()))
        .set("enable.partition.eof", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    let mut open = HashSet::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        open.insert(p.id());
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut read = Read {
        records: 0,
        elapsed: Duration::ZERO,
        finished: started,
        ages: Vec::new(),
    };
    while !open.is_empty() || read.records < at_least {
        anyhow::ensure!(
            started.elapsed() < within,
            "{topic}: {} of {at_least} records within {within:?}",
            read.records
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                use rdkafka::Message;
                let sent = m
                    .payload()
                    .and_then(|v| v.get(..8))
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
                read.ages
                    .push(Duration::from_micros(now_us().saturating_sub(sent)));
                read.records += 1;
                read.finished = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
        }
        read.elapsed = started.elapsed();
    }
    Ok(read)
}
