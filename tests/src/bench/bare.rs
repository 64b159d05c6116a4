//! The yardsticks that share no Herald code (crate `bare-kafka`): the broker's raw produce and
//! consume rates for records of the pipeline's size and count, and a bare chain of
//! `bare-copier` processes — one per hop, each its own consumer group — at-least-once and, on a
//! broker with transactions, exactly-once.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::proc::Group;
use crate::{Broker, Proc, random_name};

/// Records in flight while producing.
const IN_FLIGHT: usize = super::WORKERS;
/// Partitions of every topic (as Herald's default).
const PARTITIONS: i32 = 3;

/// The broker's own limits.
#[derive(Debug, Clone, Copy)]
pub struct Raw {
    /// Records produced per second (idempotent, `IN_FLIGHT` in flight).
    pub produce_per_s: f64,
    /// Records read per second by one consumer from the beginning.
    pub consume_per_s: f64,
}

impl Raw {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({ "produce_per_s": self.produce_per_s, "consume_per_s": self.consume_per_s })
    }
}

/// Creates `topics` with [`PARTITIONS`] partitions each.
pub(crate) async fn create_topics(bootstrap: &str, topics: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

async fn read_to_end(
    bootstrap: &str,
    topic: &str,
    at_least: usize,
) -> anyhow::Result<bare_kafka::Read> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        bare_kafka::read_to_end(&bootstrap, &topic, at_least, Duration::from_secs(300))
    })
    .await?
}

/// Produces `count` records of `size` bytes to a new topic, then reads them all back.
pub async fn raw(broker: &Broker, count: usize, size: usize) -> anyhow::Result<Raw> {
    let topic = random_name("raw");
    create_topics(&broker.bootstrap, std::slice::from_ref(&topic)).await?;
    let (_, produced) =
        bare_kafka::produce(&broker.bootstrap, &topic, count, size, IN_FLIGHT).await?;
    let read = read_to_end(&broker.bootstrap, &topic, count + 1).await?;
    Ok(Raw {
        produce_per_s: count as f64 / produced.as_secs_f64(),
        consume_per_s: count as f64 / read.elapsed.as_secs_f64(),
    })
}

/// What one burst through a bare chain measured.
#[derive(Debug, Clone, Copy)]
pub struct ChainBurst {
    /// Records per second from the first send to the last arrival at the end of the chain.
    pub rate: f64,
    /// CPU seconds the burst took: the copiers, the broker, and this process (the producer and
    /// the sink).
    pub cpu_s: f64,
}

/// A burst of `count` records of `size` bytes through `hops` `bare-copier` processes in
/// `mode` (`alo` or `eos`), read at the end of the chain by a consumer in this process.
pub async fn chain_burst(
    broker: &Broker,
    mode: &str,
    hops: usize,
    count: usize,
    size: usize,
) -> anyhow::Result<ChainBurst> {
    let bootstrap = broker.bootstrap.as_str();
    let prefix = random_name("bare");
    let topics: Vec<String> = (0..=hops).map(|i| format!("{prefix}.{i}")).collect();
    create_topics(bootstrap, &topics).await?;
    let bin = std::env::current_exe()?.with_file_name("bare-copier");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing (make bench builds it)",
        bin.display()
    );
    let dir = crate::test_dir()?;
    let mut copiers = Vec::new();
    for i in 0..hops {
        let mut cmd = Command::new(&bin);
        cmd.args([
            bootstrap,
            &format!("{prefix}.copier-{i}"),
            &topics[i],
            &topics[i + 1],
            mode,
        ]);
        copiers.push(Proc::spawn(
            &format!("bare-copier {i}"),
            cmd,
            dir.path().join(format!("copier-{i}.log")),
            Group::Own,
        )?);
    }
    let last = &topics[hops];
    // A few records through first, so every copier has joined its group.
    const WARM: usize = 10;
    bare_kafka::produce(bootstrap, &topics[0], WARM - 1, size, WARM).await?;
    read_to_end(bootstrap, last, WARM).await?;
    let sink = {
        let (bootstrap, last) = (bootstrap.to_owned(), last.clone());
        tokio::spawn(async move { read_to_end(&bootstrap, &last, WARM + 1 + count).await })
    };
    let mut pids: Vec<i32> = copiers
        .iter()
        .filter_map(|c| i32::try_from(c.pid()?).ok())
        .collect();
    pids.extend([
        broker.pid().unwrap_or_default() as i32,
        std::process::id() as i32,
    ]);
    // Only from the first send to the last arrival: idle copiers spin on noida-db (BROKERS.md),
    // so the producer's connecting before and the sink's return after must not count.
    let cpu = super::CpuSampler::start(pids);
    let (started, _) = bare_kafka::produce(bootstrap, &topics[0], count, size, IN_FLIGHT).await?;
    let read = sink.await??;
    let cpu_s = cpu.between(started, read.finished);
    drop(cpu);
    drop(copiers);
    Ok(ChainBurst {
        rate: count as f64 / read.finished.duration_since(started).as_secs_f64(),
        cpu_s,
    })
}
