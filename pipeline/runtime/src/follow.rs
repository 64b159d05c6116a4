//! Following a topic from its end, without a consumer group: every committed record produced
//! after the start is handed to a callback. What the enrich stage uses to drop the recipients and
//! templates `<p>.changes` names from its caches.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::topics::partition_count;
use crate::{KafkaConfig, Result};

/// Calls `on_record(value)` for each record of every partition of `topic` produced from now on,
/// until `shutdown`. Positions are not committed: a restart starts at the end again (a caller
/// keeping a cache starts it empty).
pub async fn follow<F>(
    kafka: &KafkaConfig,
    topic: &str,
    shutdown: CancellationToken,
    mut on_record: F,
) -> Result<()>
where
    F: FnMut(&[u8]) + Send,
{
    let partitions = loop {
        match partition_count(kafka, topic).await {
            Ok(n) if n > 0 => break n,
            Ok(_) => warn!(%topic, "the topic is not there yet; looking again"),
            Err(e) => warn!(%topic, error = %e, "reading the topic's partitions failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let mut config = kafka.reader();
    config.set("isolation.level", "read_committed");
    let consumer: StreamConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        assignment.add_partition_offset(topic, p, Offset::End)?;
    }
    consumer.assign(&assignment)?;
    info!(%topic, partitions, "following from the end");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            received = consumer.recv() => match received {
                Ok(message) => {
                    if let Some(value) = message.payload() {
                        on_record(value);
                    }
                }
                Err(e) => {
                    warn!(%topic, error = %e, "following the topic failed for now");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
}
