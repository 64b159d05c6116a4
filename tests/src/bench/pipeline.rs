//! Section 3: Herald end to end (ingress → four stages → recording provider) against a
//! pass-through chain with as many hops on Herald's own runner (producer → 4 copying runners →
//! a sink runner), on the same broker: throughput of a burst, and latency at the same offered
//! rate. The chain shows the runner's own cost next to the bare chain ([`super::bare`]), which
//! shares no Herald code.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use herald_runtime::KafkaConfig;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunnerSpec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::stats::{Run, open_loop};

/// Hops a notification takes: enrich, rate-limit, fan-out, deliver.
pub const HOPS: usize = 4;
/// Notifications sent through Herald (and records through a chain) before a timed burst, so
/// that every consumer has joined its group.
pub const WARM: u64 = 10;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Copies a record to the next topic, or (the last hop) records its age.
struct Hop {
    next: Option<String>,
    sink: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl Processor for Hop {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        match &self.next {
            Some(topic) => Ok(vec![Output {
                topic: topic.clone(),
                key: String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned(),
                payload: input.payload.to_vec(),
                partition: None,
            }]),
            None => {
                let sent = input
                    .payload
                    .get(..8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                let age = Duration::from_micros(now_us().saturating_sub(sent));
                self.sink
                    .lock()
                    .map_err(|_| ProcessError::Fatal("poisoned".into()))?
                    .push(age);
                Ok(Vec::new())
            }
        }
    }
}

/// The pass-through chain, running in this process.
pub struct Chain {
    first: String,
    sink: Arc<Mutex<Vec<Duration>>>,
    producer: FutureProducer,
    size: usize,
    shutdown: CancellationToken,
    runners: tokio::task::JoinSet<()>,
}

impl Chain {
    /// Creates the chain's topics under `kafka.topic_prefix` and starts its runners.
    pub async fn start(kafka: &KafkaConfig, size: usize) -> anyhow::Result<Chain> {
        // HOPS copying runners, then a sink runner on the last topic.
        let topics: Vec<String> = (0..=HOPS)
            .map(|i| format!("{}.chain.{i}", kafka.topic_prefix))
            .collect();
        if kafka.delivery_mode == herald_runtime::DeliveryMode::ExactlyOnce {
            // The transactional runner's probe and id registry live under the same prefix.
            herald_runtime::topics::ensure_topics(kafka).await?;
        }
        let admin: AdminClient<DefaultClientContext> = kafka.admin().create()?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    kafka.partitions,
                    TopicReplication::Fixed(kafka.replication_factor),
                )
            })
            .collect();
        admin.create_topics(&new, &AdminOptions::new()).await?;
        let sink = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let mut runners = tokio::task::JoinSet::new();
        for (i, topic) in topics.iter().enumerate() {
            let hop = Hop {
                next: topics.get(i + 1).cloned(),
                sink: Arc::clone(&sink),
            };
            let spec = RunnerSpec {
                name: format!("chain.{i}"),
                group: format!("{topic}.group"),
                input_topics: vec![topic.clone()],
            };
            let (kafka, token) = (kafka.clone(), shutdown.clone());
            runners.spawn(async move {
                if let Err(e) = runner::run(&kafka, &spec, hop, token).await {
                    eprintln!("bench: chain runner failed: {e}");
                }
            });
        }
        Ok(Chain {
            first: topics[0].clone(),
            sink,
            producer: kafka.producer().create()?,
            size,
            shutdown,
            runners,
        })
    }

    fn payload(size: usize) -> Vec<u8> {
        let mut payload = now_us().to_le_bytes().to_vec();
        payload.resize(size.max(8), b'x');
        payload
    }

    async fn send(producer: &FutureProducer, topic: &str, size: usize, i: u64) -> bool {
        let key = format!("bench/user-{}", i % 1_000);
        let payload = Chain::payload(size);
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .is_ok()
    }

    /// Enqueues `n` records at once (waiting only while the producer queue is full).
    async fn burst(&self, n: u64) -> anyhow::Result<()> {
        let mut acks = Vec::new();
        for i in 0..n {
            let key = format!("bench/user-{}", i % 1_000);
            let payload = Chain::payload(self.size);
            loop {
                match self
                    .producer
                    .send_result(FutureRecord::to(&self.first).key(&key).payload(&payload))
                {
                    Ok(ack) => break acks.push(ack),
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }
        for ack in acks {
            ack.await?.map_err(|(e, _)| e)?;
        }
        Ok(())
    }

    fn received(&self) -> usize {
        self.sink.lock().map(|s| s.len()).unwrap_or_default()
    }

    /// Latencies recorded so far, then cleared.
    fn take(&self) -> Vec<Duration> {
        self.sink
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// Stops the runners.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.runners.join_next().await.is_some() {}
    }
}

/// Throughput of a burst of `n` (first send to last arrival) and latency at `rate`.
#[derive(Debug, Default)]
pub struct PipelineRun {
    /// Items per second through every hop, for a burst.
    pub rate: f64,
    /// Latency of each item at the fixed offered rate.
    pub at_rate: Run,
}

impl PipelineRun {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({ "burst_per_s": self.rate, "at_rate": self.at_rate.json() })
    }
}

pub(crate) async fn wait_until(
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !done() {
        anyhow::ensure!(started.elapsed() < limit, "not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// The chain's rate for a burst of `n` (first send to last arrival), after a few records went
/// through first (so every runner has joined its group, as in the bare chain).
pub async fn chain_burst(chain: &Chain, n: u64) -> anyhow::Result<f64> {
    const WARM: u64 = 10;
    chain.burst(WARM).await?;
    wait_until(Duration::from_secs(120), || chain.received() as u64 >= WARM).await?;
    chain.take();
    let started = Instant::now();
    chain.burst(n).await?;
    wait_until(Duration::from_secs(300), || chain.received() as u64 >= n).await?;
    chain.take();
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The chain's latency at `rate`/s for `seconds`.
pub async fn chain_at_rate(chain: &Chain, rate: f64, seconds: u64) -> anyhow::Result<Run> {
    let producer = Arc::new(chain.producer.clone());
    let topic: Arc<str> = Arc::from(chain.first.as_str());
    let size = chain.size;
    let sent = open_loop(rate, Duration::from_secs(seconds), move |i| {
        let (producer, topic) = (Arc::clone(&producer), Arc::clone(&topic));
        async move { Chain::send(&producer, &topic, size, i).await }
    })
    .await;
    let want = sent.latencies.len();
    wait_until(Duration::from_secs(120), || chain.received() >= want).await?;
    let mut latencies = chain.take();
    latencies.sort();
    Ok(Run { latencies, ..sent })
}
