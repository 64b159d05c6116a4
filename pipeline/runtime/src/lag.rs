//! Consumer lag: how far a consumer group's committed offsets are behind the end of each
//! partition it reads (`herald lag`; the source for a lag metric).
//!
//! The end is the high watermark. With transactions, the last record of a partition written in
//! a transaction is followed by its commit marker, which takes an offset but is never
//! delivered: a group that has consumed everything then shows a lag of 1 on that partition, as
//! Kafka's own `kafka-consumer-groups` does.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaConfig, Result, RuntimeError};

/// How long each broker call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's lag for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (the next record it will read), if it committed one.
    pub committed: Option<i64>,
    /// The partition's end (high watermark).
    pub end: i64,
    /// Records not yet consumed: end − committed, or end − the partition's start when the group
    /// never committed (it will read from the start); never negative.
    pub lag: i64,
}

/// The lag of `group` on every partition of `topics`. A topic that does not exist has no rows.
pub async fn group_lag(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>> {
    let (kafka, group, topics) = (kafka.clone(), group.to_owned(), topics.to_vec());
    tokio::task::spawn_blocking(move || group_lag_blocking(&kafka, &group, &topics))
        .await
        .map_err(|e| RuntimeError::Fatal(format!("lag worker failed: {e}")))?
}

fn group_lag_blocking(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>> {
    LagReader::new(kafka).group_lag(group, topics)
}

/// Reads groups' lag again and again (the lag exporter) with one consumer per group, made on
/// first use: creating a client per reading would cost more than the reading.
pub struct LagReader {
    kafka: KafkaConfig,
    consumers: std::collections::HashMap<String, BaseConsumer>,
}

impl LagReader {
    /// A reader for `kafka`'s broker.
    pub fn new(kafka: &KafkaConfig) -> LagReader {
        LagReader {
            kafka: kafka.clone(),
            consumers: std::collections::HashMap::new(),
        }
    }

    /// The lag of `group` on every partition of `topics` (blocking: call it off the runtime).
    pub fn group_lag(&mut self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>> {
        if !self.consumers.contains_key(group) {
            // Reads the group's offsets without joining it.
            let consumer: BaseConsumer = self.kafka.reader().set("group.id", group).create()?;
            self.consumers.insert(group.to_owned(), consumer);
        }
        let consumer = self
            .consumers
            .get(group)
            .ok_or_else(|| RuntimeError::Fatal("lag consumer vanished".into()))?;
        read_lag(consumer, group, topics)
    }
}

fn read_lag(consumer: &BaseConsumer, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>> {
    let mut wanted = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
            for p in t.partitions() {
                wanted.add_partition(t.name(), p.id());
            }
        }
    }
    if wanted.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(wanted, TIMEOUT)?;
    let mut rows = Vec::new();
    for element in committed.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (start, end) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        let committed = match element.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        };
        rows.push(PartitionLag {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            committed,
            end,
            lag: lag(committed, start, end),
        });
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(rows)
}

/// Records between where the group reads next and the end.
fn lag(committed: Option<i64>, start: i64, end: i64) -> i64 {
    (end - committed.unwrap_or(start)).max(0)
}

/// `rows` as a table for a terminal, one line per partition and a total per group.
pub fn table(rows: &[PartitionLag]) -> String {
    let mut out = format!(
        "{:<32} {:<28} {:>4} {:>10} {:>10} {:>8}\n",
        "GROUP", "TOPIC", "PART", "COMMITTED", "END", "LAG"
    );
    let mut groups: Vec<&str> = rows.iter().map(|r| r.group.as_str()).collect();
    groups.dedup();
    for group in groups {
        let of_group: Vec<&PartitionLag> = rows.iter().filter(|r| r.group == group).collect();
        for r in &of_group {
            let committed = r
                .committed
                .map_or_else(|| "-".to_owned(), |c| c.to_string());
            out.push_str(&format!(
                "{:<32} {:<28} {:>4} {:>10} {:>10} {:>8}\n",
                r.group, r.topic, r.partition, committed, r.end, r.lag
            ));
        }
        let total: i64 = of_group.iter().map(|r| r.lag).sum();
        out.push_str(&format!(
            "{:<32} {:<28} {:>4} {:>10} {:>10} {:>8}\n",
            group, "(total)", "", "", "", total
        ));
    }
    out.push_str(
        "(a partition written in transactions shows 1 when caught up: its last commit marker)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_end_minus_the_committed_offset() {
        assert_eq!(lag(Some(4), 0, 6), 2);
        assert_eq!(lag(Some(6), 0, 6), 0);
    }

    #[test]
    fn a_group_that_never_committed_lags_by_everything_kept() {
        assert_eq!(lag(None, 3, 10), 7);
    }

    #[test]
    fn a_committed_offset_past_the_end_is_no_lag() {
        // A broker that lost its last records (noida-db after a SIGKILL).
        assert_eq!(lag(Some(12), 0, 10), 0);
    }

    #[test]
    fn the_table_totals_each_group() {
        let row = |group: &str, partition, committed, end, lag| PartitionLag {
            group: group.into(),
            topic: "t".into(),
            partition,
            committed,
            end,
            lag,
        };
        let text = table(&[
            row("a", 0, Some(4), 6, 2),
            row("a", 1, None, 4, 4),
            row("b", 0, Some(1), 1, 0),
        ]);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["GROUP", "TOPIC", "PART", "COMMITTED", "END", "LAG"]
        );
        assert_eq!(lines[1], ["a", "t", "0", "4", "6", "2"]);
        assert_eq!(lines[2], ["a", "t", "1", "-", "4", "4"]);
        assert_eq!(lines[3], ["a", "(total)", "6"]);
        assert_eq!(lines[5], ["b", "(total)", "0"]);
    }
}
