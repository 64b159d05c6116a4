//! Where a runner reads: partitions, and seeking them back (after an abort, to a record not due
//! yet, to records gathered before a rebalance).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};

use crate::{Result, RuntimeError};

/// A topic and partition.
pub(crate) type Partition = (String, i32);

/// Seeks each partition this consumer still owns back to `offsets`. A partition it no longer
/// owns is skipped (its next owner starts from the committed offset); a failed seek on one it
/// owns is fatal, since reading on would skip the aborted batch. Returns how many it sought.
pub(crate) fn seek<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    offsets: HashMap<Partition, i64>,
) -> Result<u64> {
    let assignment = consumer.assignment()?;
    let mut sought = 0;
    for ((topic, partition), offset) in offsets {
        if assignment.find_partition(&topic, partition).is_none() {
            continue;
        }
        sought += 1;
        consumer
            .seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
            .map_err(|e| {
                RuntimeError::Fatal(format!(
                    "could not rewind {topic}[{partition}] after an abort: {e}"
                ))
            })?;
    }
    Ok(sought)
}
