//! Transactional ids for the exactly-once runner: a fresh one for every incarnation of a runner
//! and after every abort, each registered before it is used, so that the next incarnation can
//! abort what its predecessor left open.
//!
//! Why not one stable `transactional.id` per runner, the textbook way? Because a producer id
//! that has had a transaction aborted must not write again on a broker that reuses producer ids
//! across `init_transactions` and sends every abort it ever recorded with each fetch: noida-db
//! 0.2.3 (the transactional broker the tests run on) does both, and librdkafka then skips that
//! producer's later *committed* batches for any consumer that starts reading after the abort
//! marker — records silently lost (found by the exactly-once crash test; docs/BROKERS.md).
//! Apache Kafka hands out the same producer id too but only sends the aborts a fetch overlaps,
//! so it is safe there, and so is this scheme: fencing no longer rests on the id but on the
//! consumer group generation sent with the offsets (KIP-447), as in Kafka Streams' EOS v2.
//!
//! The registry is the compacted topic `<p>.txn-ids`: key `<group>.<instance_id>`, value the
//! id in use. On start a runner reads its key's latest value and calls `init_transactions` on
//! that id, which aborts the predecessor's open transaction (so its records never hold back
//! `read_committed` readers) and fences the predecessor's producer if it still runs; then it
//! registers a fresh id (acknowledged before first use) and works with it. After an abort it
//! moves to another fresh id the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};

use crate::changelog::read_partition_blocking;
use crate::topics::Topics;
use crate::{KafkaConfig, Result, RuntimeError, fatal};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The registry entry of one runner: its key and the ids it has used.
pub struct TxnIds {
    kafka: KafkaConfig,
    key: String,
    topic: String,
}

/// A fresh id under `key`: the key, then the time in ms and a random part (unique even for
/// two ids made in one millisecond).
pub fn fresh_id(key: &str, now_ms: u128, random: u32) -> String {
    format!("{key}.{now_ms:x}{random:08x}")
}

impl TxnIds {
    /// The registry entry of the runner whose stable name is `key` (`<group>.<instance_id>`).
    pub fn new(kafka: &KafkaConfig, key: &str) -> TxnIds {
        TxnIds {
            kafka: kafka.clone(),
            key: key.to_owned(),
            topic: Topics::new(&kafka.topic_prefix).txn_ids(),
        }
    }

    /// The id the runner's previous incarnation registered last, if any.
    pub fn last(&self) -> Result<Option<String>> {
        let consumer: BaseConsumer = self.kafka.reader().create()?;
        let metadata = consumer.fetch_metadata(Some(&self.topic), TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| p.id())
            .collect();
        if partitions.is_empty() {
            return Err(RuntimeError::Fatal(format!(
                "topic {} is missing: run `herald topics` (herald run creates it)",
                self.topic
            )));
        }
        let mut last = None;
        for partition in partitions {
            for (key, value) in
                read_partition_blocking(&self.kafka, &self.topic, partition, TIMEOUT)?
            {
                if key.as_deref() == Some(self.key.as_bytes()) {
                    last = Some(String::from_utf8_lossy(&value).into_owned());
                }
            }
        }
        Ok(last)
    }

    /// Aborts whatever transaction `id` left open and fences any producer still using it.
    pub fn retire(&self, id: &str) -> Result<()> {
        let producer: BaseProducer = self.kafka.transactional_producer(id).create()?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| fatal::explain(e, producer.client()))
    }

    /// A fresh id, registered (and acknowledged) before it is returned.
    pub async fn register_fresh(&self) -> Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let id = fresh_id(&self.key, now, rand::random());
        let producer: FutureProducer = self.kafka.producer().create()?;
        producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(self.key.as_bytes())
                    .payload(id.as_bytes()),
                TIMEOUT,
            )
            .await
            .map_err(|(e, _)| fatal::explain(e, producer.client()))?;
        Ok(id)
    }

    /// On start: retires the predecessor's id (waiting on the broker in a blocking thread),
    /// then registers a fresh one.
    pub async fn take_over(self: &std::sync::Arc<Self>) -> Result<String> {
        let ids = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || -> Result<()> {
            if let Some(old) = ids.last()? {
                ids.retire(&old)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| {
            RuntimeError::Fatal(format!("retiring the previous transactional id: {e}"))
        })??;
        self.register_fresh().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_keep_the_key_and_differ() {
        let a = fresh_id("p.stage.enrich.host-1", 1_700_000_000_000, 1);
        let b = fresh_id("p.stage.enrich.host-1", 1_700_000_000_000, 2);
        assert!(a.starts_with("p.stage.enrich.host-1."), "{a}");
        assert_ne!(a, b);
    }
}
