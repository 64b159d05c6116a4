//! `herald replay`: re-drives dead letters once their cause is fixed — each letter's original
//! record (key, value, headers) goes back to the topic it came from, where its stage reads it
//! again. Running it twice is safe: records carry stable ids (notification, delivery, result),
//! so a stage that already handled one does not act twice (the delivery ledger re-reports a
//! recorded outcome; the store upserts).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use herald_runtime::topics::Topics;
use herald_schemas::DeadLetter;
use herald_schemas::codec::decode;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;

/// Arguments of `herald replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Only the letters of this stage (`deliver`, `enrich`, …).
    #[arg(long)]
    pub stage: Option<String>,
    /// Only the letters from this topic (its name under the prefix, or whole).
    #[arg(long)]
    pub source: Option<String>,
    /// Only the letters written at or after this time (unix milliseconds).
    #[arg(long)]
    pub since_ms: Option<i64>,
    /// Say what would be replayed, and replay nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Every dead letter now in the topic, in offset order per partition.
fn letters(config: &Config, topic: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let mut client = config.kafka.reader();
    client.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = client.create().context("creating the consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            if high > low {
                ends.insert(p.id(), high);
                assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Transaction markers take offsets too: a partition is done once its position reaches its end.
    while ends
        .iter()
        .any(|(p, end)| position(&consumer, topic, *p) < *end)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic} took over 2 minutes"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => match m.payload().map(decode::<DeadLetter>) {
                Some(Ok(letter)) => out.push(letter),
                Some(Err(e)) => eprintln!("replay: offset {} of {topic}: {e}", m.offset()),
                None => {}
            },
            Some(Err(e)) => return Err(anyhow::anyhow!("reading {topic}: {e}")),
            None => {}
        }
    }
    Ok(out)
}

fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> i64 {
    let Ok(list) = consumer.position() else {
        return -1;
    };
    list.find_partition(topic, partition)
        .and_then(|e| e.offset().to_raw())
        .unwrap_or(-1)
}

/// Replays the dead letters `args` selects; says what it did.
pub async fn run(config: &Config, args: ReplayArgs) -> anyhow::Result<String> {
    let topics = Topics::new(&config.kafka.topic_prefix);
    let prefix = format!("{}.", config.kafka.topic_prefix);
    let source = args.source.as_ref().map(|s| {
        if s.starts_with(&prefix) {
            s.clone()
        } else {
            format!("{prefix}{s}")
        }
    });
    let topic = topics.dead_letter();
    let all = {
        let (config, topic) = (config.clone(), topic.clone());
        tokio::task::spawn_blocking(move || letters(&config, &topic)).await??
    };
    let chosen: Vec<&DeadLetter> = all
        .iter()
        .filter(|l| args.stage.as_ref().is_none_or(|s| &l.stage == s))
        .filter(|l| source.as_ref().is_none_or(|s| &l.source_topic == s))
        .filter(|l| args.since_ms.is_none_or(|t| l.at_ms >= t))
        // Only back to Herald's own topics.
        .filter(|l| l.source_topic.starts_with(&prefix))
        .collect();
    let mut by_topic: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &chosen {
        *by_topic.entry(&l.source_topic).or_default() += 1;
    }
    let summary: Vec<String> = by_topic
        .iter()
        .map(|(t, n)| format!("{n} to {t}"))
        .collect();
    if args.dry_run || chosen.is_empty() {
        return Ok(format!(
            "{} of {} dead letters selected{}{}",
            chosen.len(),
            all.len(),
            if summary.is_empty() {
                String::new()
            } else {
                format!(": {}", summary.join(", "))
            },
            if args.dry_run {
                " (dry run: nothing replayed)"
            } else {
                ""
            }
        ));
    }
    let producer: FutureProducer = config.kafka.producer().create()?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    for (i, l) in chosen.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for h in &l.headers {
            headers = headers.insert(Header {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&l.source_topic)
            .payload(&l.value)
            .headers(headers);
        if let Some(key) = &l.key {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("replaying to {}: {e}", l.source_topic))?;
        if last_report.elapsed() >= Duration::from_secs(1) || i + 1 == chosen.len() {
            last_report = Instant::now();
            let width = 30;
            let done = (i + 1) * width / chosen.len();
            eprint!(
                "\rreplay [{}{}] {}/{}",
                "#".repeat(done),
                " ".repeat(width - done),
                i + 1,
                chosen.len()
            );
        }
    }
    eprintln!();
    producer.flush(Duration::from_secs(30))?;
    Ok(format!(
        "replayed {} of {} dead letters in {:.1} s: {}",
        chosen.len(),
        all.len(),
        started.elapsed().as_secs_f64(),
        summary.join(", ")
    ))
}
