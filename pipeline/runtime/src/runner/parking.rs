//! Partitions set aside until a record is due ([`super::ProcessError::NotDue`]): the partition
//! is paused and sought back to that record, and resumed once the wait is over, so it is read
//! again from there while the consumer's other partitions flow. One mechanism for everything
//! that must wait (deferred notifications, deliveries to retry later), and no sleeping inside a
//! processor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};

use super::RunStats;
use super::position::{Partition, seek};
use crate::Result;

/// The partitions set aside, and until when.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    until: HashMap<Partition, Instant>,
}

impl Parking {
    /// Whether `topic`[`partition`] is set aside.
    pub(crate) fn holds(&self, topic: &str, partition: i32) -> bool {
        self.until
            .keys()
            .any(|(t, p)| t == topic && *p == partition)
    }

    /// When the next partition is due, if any is set aside.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }

    /// Sets `partition` aside for `wait`, to be read again from `offset`.
    pub(crate) fn park<C: ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        partition: Partition,
        offset: i64,
        wait: Duration,
        now: Instant,
        stats: &mut RunStats,
    ) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&partition.0, partition.1);
        consumer.pause(&list)?;
        seek(consumer, HashMap::from([(partition.clone(), offset)]))?;
        stats.parked += 1;
        self.until.insert(partition, now + wait);
        Ok(())
    }

    /// Resumes the partitions whose wait is over (those still assigned).
    pub(crate) fn resume_due<C: ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        now: Instant,
    ) -> Result<()> {
        let due: Vec<Partition> = self
            .until
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| p.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let assigned = consumer.assignment()?;
        let mut list = TopicPartitionList::new();
        for partition in &due {
            self.until.remove(partition);
            if assigned.find_partition(&partition.0, partition.1).is_some() {
                list.add_partition(&partition.0, partition.1);
            }
        }
        super::idle::resume_and_wake(consumer, &list)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_due_is_the_earliest_and_holds_names_the_partitions() {
        let mut parking = Parking::default();
        assert_eq!(parking.next_due(), None);
        let t0 = Instant::now();
        parking
            .until
            .insert(("a".into(), 0), t0 + Duration::from_secs(5));
        parking
            .until
            .insert(("a".into(), 1), t0 + Duration::from_secs(2));
        assert_eq!(parking.next_due(), Some(t0 + Duration::from_secs(2)));
        assert!(parking.holds("a", 0) && parking.holds("a", 1));
        assert!(!parking.holds("a", 2) && !parking.holds("b", 0));
    }
}
