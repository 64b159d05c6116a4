//! Records the broker has acknowledged but might still lose in a crash, kept in memory until it
//! has surely saved them.
//!
//! Apache Kafka with replication has an acknowledged record on several disks; a local broker may
//! not (noida-db writes its state about once a second, so a SIGKILL loses the last second). The
//! outbox keeps each acknowledged record here for `window` (`kafka.unsaved_ack_window_ms`); a
//! record is dropped once a later record on the same partition was acknowledged more than
//! `window` after it — proof that the broker stayed up long enough to save it (a broker that had
//! lost it would have refused the later record's sequence number). When the producer fails
//! fatally (how a restarted broker that lost records answers), the outbox moves everything held
//! here into the store, to be produced again; consumers drop the repeats by event id.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use herald_store::OutboxRecord;

/// Acknowledged records per partition, oldest first.
#[derive(Debug)]
pub struct Retained {
    window: Duration,
    cap: usize,
    partitions: HashMap<(String, i32), VecDeque<(Instant, OutboxRecord)>>,
    len: usize,
    /// Records dropped because the cap was reached before the window passed.
    pub overflowed: u64,
}

impl Retained {
    /// Keeps records for `window`, at most `cap` of them (the oldest go first beyond it).
    pub fn new(window: Duration, cap: usize) -> Retained {
        Retained {
            window,
            cap,
            partitions: HashMap::new(),
            len: 0,
            overflowed: 0,
        }
    }

    /// Whether retention is on at all.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero() && self.cap > 0
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `record` was acknowledged on `topic`/`partition` at `at`.
    pub fn acked(&mut self, topic: &str, partition: i32, at: Instant, record: OutboxRecord) {
        if !self.enabled() {
            return;
        }
        let queue = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        while queue
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > self.window)
        {
            queue.pop_front();
            self.len -= 1;
        }
        queue.push_back((at, record));
        self.len += 1;
        while self.len > self.cap {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let oldest = self
            .partitions
            .iter()
            .filter_map(|(k, q)| q.front().map(|(t, _)| (*t, k.clone())))
            .min_by_key(|(t, _)| *t);
        if let Some((_, key)) = oldest
            && let Some(queue) = self.partitions.get_mut(&key)
        {
            queue.pop_front();
            self.len -= 1;
            self.overflowed += 1;
        }
    }

    /// Everything held, oldest first per partition; empties the buffer.
    pub fn take_all(&mut self) -> Vec<OutboxRecord> {
        self.len = 0;
        let mut all: Vec<(Instant, OutboxRecord)> =
            self.partitions.drain().flat_map(|(_, q)| q).collect();
        all.sort_by_key(|(t, _)| *t);
        all.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> OutboxRecord {
        OutboxRecord {
            owner: "o".into(),
            id: id.into(),
            topic: "t".into(),
            key: Vec::new(),
            payload: Vec::new(),
            headers: Vec::new(),
            created_at_ms: 0,
        }
    }

    fn ids(records: Vec<OutboxRecord>) -> Vec<String> {
        records.into_iter().map(|r| r.id).collect()
    }

    #[test]
    fn a_record_goes_once_a_later_ack_on_its_partition_comes_a_window_later() {
        let t0 = Instant::now();
        let mut r = Retained::new(Duration::from_secs(3), 100);
        r.acked("t", 0, t0, record("a"));
        r.acked("t", 1, t0 + Duration::from_secs(1), record("b"));
        // Partition 0 moves on 4 s later: "a" is surely saved; "b" (partition 1) is not known to be.
        r.acked("t", 0, t0 + Duration::from_secs(4), record("c"));
        assert_eq!(r.len(), 2);
        assert_eq!(ids(r.take_all()), ["b", "c"]);
        assert!(r.is_empty());
    }

    #[test]
    fn within_the_window_everything_is_kept() {
        let t0 = Instant::now();
        let mut r = Retained::new(Duration::from_secs(3), 100);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            r.acked("t", 0, t0 + Duration::from_secs(i as u64), record(id));
        }
        assert_eq!(ids(r.take_all()), ["a", "b", "c"]);
    }

    #[test]
    fn beyond_the_cap_the_oldest_go_and_are_counted() {
        let t0 = Instant::now();
        let mut r = Retained::new(Duration::from_secs(3), 2);
        r.acked("t", 0, t0, record("a"));
        r.acked("t", 1, t0 + Duration::from_millis(1), record("b"));
        r.acked("t", 2, t0 + Duration::from_millis(2), record("c"));
        assert_eq!(r.overflowed, 1);
        assert_eq!(ids(r.take_all()), ["b", "c"]);
    }

    #[test]
    fn a_zero_window_keeps_nothing() {
        let mut r = Retained::new(Duration::ZERO, 100);
        r.acked("t", 0, Instant::now(), record("a"));
        assert!(r.is_empty());
    }
}
