//! What one notification costs, for the capacity model (`docs/CAPACITY.md`): the records and
//! bytes it leaves in each topic (read back from the broker after the burst), and the CPU each
//! process spent per notification during the burst, extrapolated linearly to 10× and 100× the
//! measured rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

/// Records and bytes (key + value) one topic holds.
#[derive(Debug, Clone, Default)]
pub struct TopicUse {
    /// The topic, without the platform's prefix.
    pub topic: String,
    /// Committed records.
    pub records: u64,
    /// Their keys' and values' bytes (headers not counted).
    pub bytes: u64,
}

/// Reads every topic under `prefix.` from the beginning (read_committed: what consumers see)
/// and counts its records and bytes; stops when nothing new came for two seconds.
pub fn footprint(bootstrap: &str, prefix: &str) -> anyhow::Result<Vec<TopicUse>> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::random_name("footprint"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    let head = format!("{prefix}.");
    for topic in metadata.topics() {
        if !topic.name().starts_with(&head) {
            continue;
        }
        for p in topic.partitions() {
            assignment.add_partition_offset(topic.name(), p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut by_topic: BTreeMap<String, TopicUse> = BTreeMap::new();
    let (started, mut last) = (Instant::now(), Instant::now());
    while last.elapsed() < Duration::from_secs(2) && started.elapsed() < Duration::from_secs(120) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        last = Instant::now();
        let name = message
            .topic()
            .strip_prefix(&head)
            .unwrap_or(message.topic());
        let entry = by_topic.entry(name.to_owned()).or_insert_with(|| TopicUse {
            topic: name.to_owned(),
            ..TopicUse::default()
        });
        entry.records += 1;
        entry.bytes += (message.key().map_or(0, <[u8]>::len)
            + message.payload().map_or(0, <[u8]>::len)) as u64;
    }
    Ok(by_topic.into_values().collect())
}

/// The model's inputs and what it prints.
pub struct Model {
    /// Notifications in the measured burst.
    pub notifications: u64,
    /// Notifications the topics hold (the burst and its warm-up).
    pub in_topics: u64,
    /// Its rate.
    pub rate: f64,
    /// CPU seconds per process in the burst.
    pub cpu: Vec<(String, f64)>,
    /// Records and bytes per topic after it.
    pub topics: Vec<TopicUse>,
    /// The bare exactly-once chain's (or else at-least-once chain's) CPU seconds per record.
    pub bare_cpu_per_record: f64,
}

impl Model {
    fn per_notification(&self, n: u64) -> f64 {
        n as f64 / self.in_topics as f64
    }

    /// CPU milliseconds per notification, all processes.
    pub fn cpu_ms_total(&self) -> f64 {
        self.cpu.iter().map(|(_, s)| s).sum::<f64>() * 1e3 / self.notifications as f64
    }

    /// The lines of the report.
    pub fn lines(&self) -> Vec<String> {
        let r = self.rate;
        let mut out = vec![format!(
            "{:<34} {:>9} {:>9} {:>11} {:>11}",
            "process",
            "CPU ms/n",
            format!("cores@{r:.0}"),
            format!("@{:.0}/s", r * 10.0),
            format!("@{:.0}/s", r * 100.0)
        )];
        let row = |name: &str, ms: f64| {
            format!(
                "{name:<34} {ms:>9.3} {:>9.2} {:>11.1} {:>11.0}",
                ms * r / 1e3,
                ms * r * 10.0 / 1e3,
                ms * r * 100.0 / 1e3
            )
        };
        for (name, s) in &self.cpu {
            out.push(row(name, s * 1e3 / self.notifications as f64));
        }
        out.push(row("all of the above", self.cpu_ms_total()));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        out.push(format!(
            "CPU-bound ceiling here: {cores:.0} cores ÷ {:.3} ms = {:.0} notifications/s (measured {r:.0}/s, {:.0} % of it)",
            self.cpu_ms_total(),
            cores * 1e3 / self.cpu_ms_total(),
            100.0 * r * self.cpu_ms_total() / (cores * 1e3)
        ));
        out.push(format!(
            "bare chain: {:.3} CPU ms per record, all its processes; Herald ÷ bare = {:.1}",
            self.bare_cpu_per_record * 1e3,
            self.cpu_ms_total() / (self.bare_cpu_per_record * 1e3)
        ));
        let (records, bytes) = self.totals();
        out.push(format!(
            "written per notification: {:.1} records, {:.0} bytes (keys + values) → {:.2} / {:.1} / {:.0} MB/s at 1× / 10× / 100×",
            self.per_notification(records),
            self.per_notification(bytes),
            self.per_notification(bytes) * r / 1e6,
            self.per_notification(bytes) * r * 10.0 / 1e6,
            self.per_notification(bytes) * r * 100.0 / 1e6,
        ));
        for t in &self.topics {
            out.push(format!(
                "  {:<32} {:>7.2} records {:>7.0} bytes per notification",
                t.topic,
                self.per_notification(t.records),
                self.per_notification(t.bytes)
            ));
        }
        out
    }

    fn totals(&self) -> (u64, u64) {
        self.topics
            .iter()
            .fold((0, 0), |(r, b), t| (r + t.records, b + t.bytes))
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        let (records, bytes) = self.totals();
        json!({
            "notifications": self.notifications,
            "rate_per_s": self.rate,
            "cpu_ms_per_notification": self.cpu.iter().map(|(n, s)| json!({ "process": n, "ms": s * 1e3 / self.notifications as f64 })).collect::<Vec<_>>(),
            "cpu_ms_per_notification_total": self.cpu_ms_total(),
            "bare_chain_cpu_ms_per_record": self.bare_cpu_per_record * 1e3,
            "records_per_notification": self.per_notification(records),
            "bytes_per_notification": self.per_notification(bytes),
            "topics": self.topics.iter().map(|t| json!({ "topic": t.topic, "records": t.records, "bytes": t.bytes })).collect::<Vec<_>>(),
        })
    }
}
