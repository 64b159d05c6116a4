//! The `[kafka]` section of Herald's config and the librdkafka settings derived from it.

use rdkafka::ClientConfig;
use serde::Deserialize;

/// How stages move records from input to output topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    /// Kafka transactions: each batch of outputs commits atomically with the input offsets, and
    /// downstream consumers read with `read_committed`. Needs a broker with transactions (Apache
    /// Kafka, Redpanda); the runner checks at start-up and stops with a clear message otherwise.
    ExactlyOnce,
    /// Idempotent producer; outputs are acknowledged before input offsets are committed. A crash
    /// replays the uncommitted tail, and idempotent effects (deterministic ids, upserts, the
    /// delivery ledger) make the replay harmless. Works on any broker, including tansu.
    AtLeastOnce,
}

/// A librdkafka property value as written in TOML or the environment (`7`, `true`, `"cgrp"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Property {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Anything else.
    Text(String),
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Property::Bool(b) => write!(f, "{b}"),
            Property::Int(i) => write!(f, "{i}"),
            Property::Float(x) => write!(f, "{x}"),
            Property::Text(s) => f.write_str(s),
        }
    }
}

/// Connection and topic settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Every topic and consumer group name starts with this prefix and a dot.
    pub topic_prefix: String,
    /// Partitions for topics Herald creates.
    pub partitions: i32,
    /// If not 0: topics Herald creates keep records this long (`retention.ms`, in segments of
    /// a twenty-fourth of it). For brokers that hold records in memory (noida-db); 0 leaves the
    /// broker's default.
    pub topic_retention_ms: u64,
    /// Replication factor for topics Herald creates.
    pub replication_factor: i32,
    /// How stages hand records on: `exactly-once` (production, needs transactions) or
    /// `at-least-once` (any broker; `make run` and the tests use it with tansu).
    pub delivery_mode: DeliveryMode,
    /// Identifies this process among the replicas of a stage: the transactional id is
    /// `<group>.<instance_id>`, so it must be stable across restarts (a restarted instance then
    /// fences its zombie) and distinct between replicas. Default: `$HOSTNAME`, else `local`.
    pub instance_id: String,
    /// Static group membership (KIP-345): every stage consumer joins with `group.instance.id` =
    /// `<group>.<instance_id>`, so a restarted process takes its partitions back at once instead
    /// of waiting for a rebalance. Needed on tansu, which otherwise keeps a SIGKILLed member as
    /// the group leader and never hands its partitions to the replacement.
    pub static_membership: bool,
    /// If not 0: a stage that has consumed nothing for this long although it holds no partition,
    /// or although records wait beyond its position, exits (non-zero), so that its supervisor
    /// restarts it and it joins the group afresh. A workaround for tansu, whose coordinator can
    /// wedge a group in "rebalance in progress" after one static member is replaced several
    /// times within seconds; leave it 0 on Kafka, where an idle standby replica legitimately
    /// holds no partition.
    pub rejoin_if_unassigned_ms: u64,
    /// Kafka's `transaction.timeout.ms`: an open transaction older than this is aborted by the
    /// coordinator (milliseconds).
    pub transaction_timeout_ms: u64,
    /// Stages commit consumed offsets (close the transaction) at least this often (milliseconds)…
    pub commit_interval_ms: u64,
    /// …and at the latest after this many input records.
    pub max_batch_records: u64,
    /// The most records handed to a stage at once (of those already fetched): a smaller
    /// hand-over lets results leave sooner within one transaction batch (a shorter tail),
    /// a larger one gives the stage more to work on at once.
    pub max_handover_records: u64,
    /// librdkafka's `fetch.wait.max.ms` for stage consumers: the longest a fetch waits for data.
    /// Each hop can add up to this much latency on brokers that hold fetches for the full wait
    /// (tansu does), so it is lower than librdkafka's 500 ms default.
    pub fetch_wait_max_ms: u64,
    /// If not 0: a stage consumer that has received nothing for this long (and for two
    /// `commit_interval_ms`, so a steady exactly-once flow never pauses) pauses its partitions
    /// for this long, fetches for 10 ms, pauses again, … until a record arrives (milliseconds).
    /// For brokers that answer an empty fetch at once instead of holding it for
    /// `fetch_wait_max_ms` (noida-db does; `make run` and the tests set 100 for it), where every
    /// idle consumer otherwise spins at ~0.4 of a core. Costs up to this much latency on the
    /// first record after a quiet spell; leave it 0 on Apache Kafka and Redpanda.
    pub idle_pause_ms: u64,
    /// With `idle_pause_ms`: a pause lasts a quarter of the time the runner has been idle when
    /// that is longer than `idle_pause_ms`, up to this (milliseconds), so a runner idle for long
    /// (another channel's, the bulk lane's) fetches about once per this instead of once per
    /// `idle_pause_ms`. Its first record after a quiet spell waits at most a quarter of the
    /// spell, and never more than this. 0 (the default): every pause is `idle_pause_ms`. With
    /// 800 on noida-db, deliver used ~20 % less CPU in a burst, but the first notification
    /// after a few idle seconds waited up to 0.8 s more at every hop (BENCHMARKS.md).
    pub idle_pause_max_ms: u64,
    /// A produce not acknowledged within this time fails (milliseconds).
    pub message_timeout_ms: u64,
    /// How long an instance's lease on its outbox lasts (milliseconds): it renews it every third
    /// of that while it runs; once it has run out (the instance was replaced under another
    /// name and never came back), a live instance of the same kind replays its kept records.
    pub outbox_lease_ms: u64,
    /// How long a stage retries a record whose processing keeps failing for a reason that
    /// might pass (a store that does not answer), from its first failure, before sending it to
    /// the dead-letter topic (milliseconds).
    pub retry_budget_ms: u64,
    /// Idempotent producers (no duplicates or reordering when librdkafka retries). Turn it off
    /// only for tansu, which cannot take the producer epoch librdkafka raises by itself while the
    /// broker is down and stops serving at its restart (docs/BROKERS.md); producers then send one
    /// request at a time per connection to keep order, and the stages' idempotent effects absorb
    /// the duplicates a retry can make. Exactly-once mode needs it on.
    pub idempotence: bool,
    /// How long after acknowledging a record the broker may still lose it in a crash
    /// (milliseconds). The ingress and the query service hold what they produced in memory
    /// that long and produce it again if the broker turns out to have lost it. 0 for Apache
    /// Kafka with replication (acknowledged means on several disks); noida-db saves about once
    /// a second, so `make run` and the tests set 3000 for it.
    pub unsaved_ack_window_ms: u64,
    /// Record compression: `none` or `lz4` (tansu cannot serve snappy; zstd is not built in).
    pub compression: String,
    /// Extra librdkafka properties for every client (e.g. `debug = "cgrp"`, security settings),
    /// applied last.
    pub librdkafka: std::collections::BTreeMap<String, Property>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: "herald".into(),
            partitions: 3,
            topic_retention_ms: 0,
            replication_factor: 1,
            delivery_mode: DeliveryMode::ExactlyOnce,
            instance_id: std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "local".into()),
            static_membership: true,
            rejoin_if_unassigned_ms: 0,
            transaction_timeout_ms: 60_000,
            commit_interval_ms: 100,
            max_batch_records: 1_000,
            max_handover_records: 250,
            fetch_wait_max_ms: 50,
            idle_pause_ms: 0,
            idle_pause_max_ms: 0,
            message_timeout_ms: 10_000,
            retry_budget_ms: 300_000,
            outbox_lease_ms: 30_000,
            idempotence: true,
            unsaved_ack_window_ms: 0,
            compression: "lz4".into(),
            librdkafka: std::collections::BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("log_level", "4");
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (key, value) in &self.librdkafka {
            c.set(key, value.to_string());
        }
        c
    }

    /// An idempotent producer (unless `idempotence` is off): acks=all, no duplicates or
    /// reordering on retry.
    pub fn producer(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", self.idempotence.to_string());
        if !self.idempotence {
            c.set("max.in.flight.requests.per.connection", "1");
        }
        c.set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", "5")
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        self.finish(c)
    }

    /// A transactional producer with `transactional.id` = `id`.
    pub fn transactional_producer(&self, id: &str) -> ClientConfig {
        let mut c = self.producer();
        c.set("enable.idempotence", "true")
            .remove("max.in.flight.requests.per.connection");
        c.set("transactional.id", id).set(
            "transaction.timeout.ms",
            self.transaction_timeout_ms.to_string(),
        );
        c
    }

    /// A group consumer that never commits on its own: the runner commits after outputs are safe.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        if self.static_membership {
            c.set("group.instance.id", format!("{group}.{}", self.instance_id));
        }
        self.finish(c)
    }

    /// A consumer outside any group, for reading partitions it assigns itself.
    pub fn reader(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", "herald.reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        self.finish(c)
    }

    /// The outbox timings for a producer that waits `wait` for Kafka before keeping a record.
    pub fn outbox_times(
        &self,
        wait: std::time::Duration,
        max_kept: usize,
    ) -> crate::outbox::OutboxTimes {
        crate::outbox::OutboxTimes {
            wait,
            ack_timeout: std::time::Duration::from_millis(self.message_timeout_ms + 1_000),
            unsaved_window: std::time::Duration::from_millis(self.unsaved_ack_window_ms),
            max_kept,
            lease: std::time::Duration::from_millis(self.outbox_lease_ms),
        }
    }

    /// An admin client.
    pub fn admin(&self) -> ClientConfig {
        self.finish(self.base())
    }
}
