//! Scale-out: every topic with six partitions, then 1 → 2 → 3 instances of the busiest stage
//! (deliver: the most CPU per notification in every run) beside one `herald run`, and
//! 1 → 2 → 3 ingress processes sharing one address (`[ingress] reuse_port`). At each level: the
//! rate, what each instance did by its own metrics (so the partitions were shared, not left
//! with one member), its CPU, and whether anything was lost or delivered twice.
//!
//! On two cores more instances cannot run faster; what this shows is that the partitions move
//! to new members, nothing is lost while they do, and the rate does not fall. The capacity
//! model in `docs/CAPACITY.md` extrapolates the per-instance costs to larger loads.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};
use tonic::transport::Channel as GrpcChannel;

use super::{cpu_seconds, produce, stats};
use crate::proc::Proc;
use crate::{Broker, Platform, eventually};

/// Partitions of every topic in this section (Herald's default is 3).
pub const PARTITIONS: i32 = 6;
/// Instances at the last level.
const LEVELS: usize = 3;
/// Notifications per deliver level.
const BURST: u64 = 3_000;
/// Connections the ingress load is spread over (the kernel assigns each to one listener).
pub const CONNECTIONS: usize = 12;

/// One level: `instances` processes of one component.
#[derive(Debug, Clone, Default)]
pub struct Level {
    /// Processes of the component.
    pub instances: usize,
    /// Notifications delivered (deliver) or requests accepted (ingress) per second.
    pub rate: f64,
    /// What each instance handled in this level, by its own metrics: records consumed
    /// (deliver) or requests answered (ingress).
    pub per_instance: Vec<f64>,
    /// CPU seconds each instance used in this level.
    pub cpu_s: Vec<f64>,
    /// Sent (deliver) or accepted (ingress) in this level.
    pub sent: u64,
    /// Not delivered (deliver: e-mails missing at the recording provider) or not in the topic
    /// (ingress: accepted requests not among the records the requested topic gained).
    pub lost: i64,
    /// Delivered more than once (deliver: provider calls beyond one per id); 0 for the ingress.
    pub duplicates: i64,
}

impl Level {
    fn json(&self) -> Value {
        json!({
            "instances": self.instances, "rate_per_s": self.rate, "per_instance": self.per_instance,
            "cpu_s": self.cpu_s, "sent": self.sent, "lost": self.lost, "duplicates": self.duplicates,
        })
    }

    /// One line for the report.
    pub fn line(&self, unit: &str) -> String {
        let split: Vec<String> = self
            .per_instance
            .iter()
            .map(|n| format!("{n:.0}"))
            .collect();
        let cpu: Vec<String> = self.cpu_s.iter().map(|c| format!("{c:.2}")).collect();
        format!(
            "{} instance(s): {:>7.0} {unit}/s; per instance {} (CPU-s {}); lost {}, twice {}",
            self.instances,
            self.rate,
            split.join(" / "),
            cpu.join(" / "),
            self.lost,
            self.duplicates
        )
    }
}

/// Both halves.
pub struct Scale {
    /// Deliver instances 1..=3.
    pub deliver: Vec<Level>,
    /// Ingress instances 1..=3.
    pub ingress: Vec<Level>,
}

impl Scale {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "partitions": PARTITIONS,
            "deliver": self.deliver.iter().map(Level::json).collect::<Vec<_>>(),
            "ingress": self.ingress.iter().map(Level::json).collect::<Vec<_>>(),
            "ingress_connections": CONNECTIONS,
        })
    }
}

/// Runs both halves on fresh platforms.
pub async fn run(broker: &Broker) -> anyhow::Result<Scale> {
    let deliver = deliver(broker).await?;
    let ingress = ingress(broker).await?;
    Ok(Scale { deliver, ingress })
}

/// One instance: its process (none for the one `herald run` supervises), pid, metrics address.
struct Instance {
    _proc: Option<Proc>,
    pid: i32,
    metrics: SocketAddr,
}

impl Instance {
    /// One this section started (killed when dropped).
    fn spawned(proc: Proc, metrics: SocketAddr) -> Instance {
        let pid = proc
            .pid()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_default();
        Instance {
            _proc: Some(proc),
            pid,
            metrics,
        }
    }

    async fn counter(&self, name: &str) -> f64 {
        crate::platform::counter_at(self.metrics, name)
            .await
            .unwrap_or(f64::NAN)
    }
}

fn configured(broker: &Broker) -> anyhow::Result<Platform> {
    let extra = format!("partitions = {PARTITIONS}\n{}", super::experiment());
    Platform::configure(broker, &extra)
}

const RECORDS_IN: &str = "herald_stage_records_in_total";

async fn deliver(broker: &Broker) -> anyhow::Result<Vec<Level>> {
    let platform = configured(broker)?.with_extra_config(super::UNLIMITED)?;
    crate::seed_email_contacts(&platform.store_url, "bench", super::USERS).await?;
    let platform = platform.start().await?;
    let channel = GrpcChannel::from_shared(Platform::url(platform.ingress))?
        .connect()
        .await?;
    let client = crate::clients::ingress_on(channel, &platform.api_key("bench").await?)?;
    let recording = platform.recording.clone();
    let delivered = || herald_connectors::recording::delivered_ids(&recording).unwrap_or(0);
    let first = platform
        .components()
        .into_iter()
        .find(|(_, args)| args == "stage deliver")
        .map(|(pid, _)| pid)
        .ok_or_else(|| anyhow::anyhow!("herald run started no deliver stage"))?;
    let mut instances = vec![Instance {
        _proc: None,
        pid: first,
        metrics: *platform
            .metrics
            .get("deliver")
            .ok_or_else(|| anyhow::anyhow!("deliver has no metrics address"))?,
    }];
    // Request numbers never repeat (each becomes a new notification); users are `i % USERS`.
    let mut next = 0u64;
    let mut levels = Vec::new();
    for n in 1..=LEVELS {
        if n > 1 {
            let (proc, metrics) = platform
                .spawn_instance(
                    "deliver",
                    &["stage", "deliver"],
                    &format!("scale-{n}"),
                    &[],
                    None,
                )
                .await?;
            instances.push(Instance::spawned(proc, metrics));
        }
        // Until every instance has consumed something: the group has shared the partitions.
        eprintln!("bench: deliver × {n}: waiting for the partitions to be shared…");
        let wait = eventually(
            Duration::from_secs(180),
            "every deliver instance busy",
            || {
                let (client, from) = (client.clone(), next);
                next += 60;
                let instances = &instances;
                let delivered = &delivered;
                async move {
                    let sent = stats::closed_loop_count(16, 60, move |i| {
                        produce::ingress_send(client.clone())(from + i)
                    })
                    .await;
                    anyhow::ensure!(sent == 60, "{sent} of 60 accepted");
                    let want = from + 60;
                    let arrived = tokio::time::timeout(Duration::from_secs(60), async {
                        while delivered() < want {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    })
                    .await;
                    anyhow::ensure!(arrived.is_ok(), "not all warm-ups delivered in 60 s");
                    for instance in instances {
                        let consumed = instance.counter(RECORDS_IN).await;
                        if consumed.is_nan() || consumed <= 0.0 {
                            return Ok(None);
                        }
                    }
                    Ok(Some(()))
                }
            },
        );
        wait.await?;
        let before_in = counters(&instances, RECORDS_IN).await;
        let before_cpu: Vec<f64> = instances
            .iter()
            .map(|i| cpu_seconds(i.pid).unwrap_or(f64::NAN))
            .collect();
        let calls_before = herald_connectors::recording::call_count(&platform.recording)?;
        let ids_before = delivered();
        eprintln!("bench: deliver × {n}: a burst of {BURST}…");
        let started = Instant::now();
        let from = next;
        next += BURST;
        let sender = client.clone();
        let sent = stats::closed_loop_count(super::WORKERS, BURST, move |i| {
            produce::ingress_send(sender.clone())(from + i)
        })
        .await;
        let want = ids_before + sent;
        let settled = tokio::time::timeout(Duration::from_secs(300), async {
            while delivered() < want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let rate = sent as f64 / started.elapsed().as_secs_f64();
        if settled.is_err() {
            eprintln!("bench: deliver × {n}: not everything delivered in 300 s");
        }
        // Let late duplicates, if any, arrive before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after_in = counters(&instances, RECORDS_IN).await;
        let ids = delivered() - ids_before;
        let calls = herald_connectors::recording::call_count(&platform.recording)? - calls_before;
        levels.push(Level {
            instances: n,
            rate,
            per_instance: after_in
                .iter()
                .zip(&before_in)
                .map(|(a, b)| a - b)
                .collect(),
            cpu_s: instances
                .iter()
                .zip(&before_cpu)
                .map(|(i, b)| cpu_seconds(i.pid).unwrap_or(f64::NAN) - b)
                .collect(),
            sent,
            lost: sent as i64 - ids as i64,
            duplicates: calls as i64 - ids as i64,
        });
    }
    Ok(levels)
}

async fn counters(instances: &[Instance], name: &str) -> Vec<f64> {
    let mut values = Vec::with_capacity(instances.len());
    for instance in instances {
        values.push(instance.counter(name).await);
    }
    values
}

async fn ingress(broker: &Broker) -> anyhow::Result<Vec<Level>> {
    let platform = configured(broker)?;
    let kafka = herald_runtime::KafkaConfig {
        partitions: PARTITIONS,
        ..super::bench_kafka(broker, &platform.prefix)
    };
    herald_runtime::topics::ensure_topics(&kafka).await?;
    let key = platform.api_key("bench").await?;
    let requested = herald_runtime::topics::Topics::new(&platform.prefix).requested();
    let reuse = [("HERALD__INGRESS__REUSE_PORT", "true")];
    let mut instances: Vec<Instance> = Vec::new();
    let mut levels = Vec::new();
    for n in 1..=LEVELS {
        let (proc, metrics) = platform
            .spawn_instance(
                "ingress",
                &["ingress"],
                &format!("scale-{n}"),
                &reuse,
                Some("ingress listening"),
            )
            .await?;
        instances.push(Instance::spawned(proc, metrics));
        eprintln!("bench: ingress × {n} on one address, {CONNECTIONS} connections…");
        let answered = "herald_ingress_requests_total";
        let before = counters(&instances, answered).await;
        let before_cpu: Vec<f64> = instances
            .iter()
            .map(|i| cpu_seconds(i.pid).unwrap_or(f64::NAN))
            .collect();
        let in_topic_before = records_in(&broker.bootstrap, &requested)?;
        let target = [
            "ingress-spread".to_owned(),
            Platform::url(platform.ingress),
            key.clone(),
            CONNECTIONS.to_string(),
        ];
        let shape = [
            "closed".to_owned(),
            super::WORKERS.to_string(),
            super::LEVEL_SECONDS.to_string(),
        ];
        let run = super::load::measure(&target, &shape).await?;
        let after = counters(&instances, answered).await;
        let cpu_s = instances
            .iter()
            .zip(&before_cpu)
            .map(|(i, b)| cpu_seconds(i.pid).unwrap_or(f64::NAN) - b)
            .collect();
        // The warm-up request is accepted too; then the topic must hold every accepted one.
        let accepted = run.latencies.len() as u64 + 1;
        let in_topic = eventually(
            Duration::from_secs(30),
            "accepted requests in the topic",
            || {
                let bootstrap = broker.bootstrap.clone();
                let requested = requested.clone();
                async move {
                    let now = records_in(&bootstrap, &requested)? - in_topic_before;
                    Ok((now >= accepted).then_some(now))
                }
            },
        )
        .await
        .unwrap_or_else(|_| {
            records_in(&broker.bootstrap, &requested).unwrap_or(0) - in_topic_before
        });
        levels.push(Level {
            instances: n,
            rate: run.achieved,
            // A new instance has no counter before its first request.
            per_instance: after
                .iter()
                .zip(&before)
                .map(|(a, b)| a - if b.is_nan() { 0.0 } else { *b })
                .collect(),
            cpu_s,
            sent: accepted,
            lost: accepted as i64 - in_topic as i64,
            duplicates: 0,
        });
    }
    Ok(levels)
}

/// Records in `topic` (the sum of its partitions' high watermarks; the ingress writes without
/// transactions, so there are no commit markers among them).
fn records_in(bootstrap: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::random_name("watermarks"))
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0u64;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += u64::try_from(high).unwrap_or(0);
        }
    }
    Ok(total)
}
