//! Section 1 and 2: the raw rdkafka produce baseline and the ingress, at the same offered loads
//! on the same broker, with records of the same size.

use std::sync::Arc;
use std::time::Duration;

use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{InlineContent, SendNotificationRequest};
use herald_runtime::KafkaConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use super::load::measure;
use super::stats::Run;
use super::{LEVEL_SECONDS, WORKERS};
use crate::clients::IngressClient;

/// The request every ingress benchmark sends (a new notification id each time).
pub fn request(i: u64) -> SendNotificationRequest {
    SendNotificationRequest {
        tenant: "bench".into(),
        idempotency_key: String::new(),
        recipient_user_id: format!("user-{}", i % 1_000),
        category: "orders".into(),
        priority: 0,
        channels: vec![],
        content: Some(Content::Inline(InlineContent {
            title: format!("Order {i} shipped"),
            body: "Your order is on its way and should arrive within two working days.".into(),
            action_url: "https://shop.example/orders/123".into(),
        })),
    }
}

/// The size of the Avro record the ingress writes for [`request`], so the raw baseline sends
/// records of the same size.
pub fn record_size() -> usize {
    let event = herald_ingress_event(request(1));
    herald_schemas::codec::encode(&event)
        .map(|b| b.len())
        .unwrap_or(256)
}

fn herald_ingress_event(r: SendNotificationRequest) -> herald_schemas::NotificationRequested {
    let Some(Content::Inline(i)) = r.content else {
        unreachable!("bench requests are inline")
    };
    herald_schemas::NotificationRequested {
        notification_id: herald_schemas::ids::new_notification_id().to_string(),
        tenant: r.tenant,
        idempotency_key: None,
        recipient_user_id: r.recipient_user_id,
        category: r.category,
        priority: herald_schemas::Priority::Normal,
        template: None,
        inline: Some(herald_schemas::InlineContent {
            title: i.title,
            body: i.body,
            action_url: Some(i.action_url),
        }),
        channels: vec![],
        requested_at_ms: 0,
    }
}

/// Produces one record of `size` bytes and waits for the broker's acknowledgement.
pub(crate) fn raw_send(
    producer: Arc<FutureProducer>,
    topic: Arc<str>,
    size: usize,
) -> impl Fn(u64) -> futures_like::BoxFuture + Clone {
    move |i| {
        let (producer, topic) = (Arc::clone(&producer), Arc::clone(&topic));
        Box::pin(async move {
            let key = format!("bench/user-{}", i % 1_000);
            let payload = vec![b'x'; size];
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .is_ok()
        })
    }
}

/// Sends one SendNotification through `client` (which calls as tenant `bench`).
pub fn ingress_send(client: IngressClient) -> impl Fn(u64) -> futures_like::BoxFuture + Clone {
    move |i| {
        let mut client = client.clone();
        Box::pin(async move { client.send_notification(request(i)).await.is_ok() })
    }
}

pub mod futures_like {
    //! A boxed request future, so closures of both sections have one type.
    /// A request that resolves to "succeeded?".
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
}

/// Both sections' results.
pub struct ProduceResults {
    /// Raw produce at most concurrency.
    pub raw_max: Run,
    /// Ingress at most concurrency.
    pub ingress_max: Run,
    /// (fraction of the ingress maximum, raw run, ingress run) per level.
    pub levels: Vec<(f64, Run, Run)>,
    /// Ingress offered twice its maximum.
    pub overload: Run,
    /// (process, raw side, ingress side): CPU µs per accepted request in the closed-loop runs.
    pub cpu: Vec<(String, f64, f64)>,
}

/// Seconds of each half of an ABBA pair.
const HALF_SECONDS: u64 = LEVEL_SECONDS.div_ceil(2);

/// Runs both sections, each load from a `herald-load` process ([`super::load`]). `kafka`
/// points at the broker, `topic` is the raw baseline's topic, `ingress` the ingress's URL and
/// `key` an API key of tenant `bench`.
///
/// Every comparison runs in ABBA order — raw, ingress, ingress, raw, each for half the level's
/// time — and pools each side's halves: noida-db slows down as it fills (it saves its whole
/// state every second), so whichever side ran later would otherwise pay for the records the
/// earlier one left behind.
/// `pids` are the processes (the broker, the ingress) whose CPU per request the closed-loop
/// comparison reports beside the generator's.
pub async fn run(
    kafka: &KafkaConfig,
    topic: &str,
    ingress: &str,
    key: &str,
    pids: &[(String, i32)],
) -> anyhow::Result<ProduceResults> {
    let size = record_size();
    // The raw baseline's producer shares no Herald code or setting (crate `bare-kafka`).
    let raw: Vec<String> = ["raw", &kafka.bootstrap_servers, topic, &size.to_string()]
        .map(str::to_owned)
        .to_vec();
    let ingress: Vec<String> = vec!["ingress".into(), ingress.to_owned(), key.to_owned()];
    let half = HALF_SECONDS.to_string();
    let closed = ["closed".to_owned(), WORKERS.to_string(), half.clone()];
    let open =
        |rate: f64, seconds: &str| ["open".to_owned(), format!("{rate:.0}"), seconds.to_owned()];
    eprintln!("bench: raw produce and the ingress, {WORKERS} in flight, {size}-byte records…");
    let mut cpu = CpuPerRequest::new(pids);
    let (raw_max, ingress_max) = abba(&raw, &ingress, &closed, Some(&mut cpu)).await?;
    let mut levels = Vec::new();
    for fraction in [0.25, 0.5, 0.75, 1.0] {
        let rate = (ingress_max.achieved * fraction).max(1.0);
        eprintln!(
            "bench: open loop at {rate:.0}/s ({:.0} % of the ingress maximum)…",
            fraction * 100.0
        );
        let (raw_run, ingress_run) = abba(&raw, &ingress, &open(rate, &half), None).await?;
        levels.push((fraction, raw_run, ingress_run));
    }
    eprintln!("bench: ingress at twice its maximum…");
    let overload = measure(
        &ingress,
        &open(ingress_max.achieved * 2.0, &LEVEL_SECONDS.to_string()),
    )
    .await?;
    Ok(ProduceResults {
        raw_max,
        ingress_max,
        levels,
        overload,
        cpu: cpu.per_request(),
    })
}

/// CPU seconds of this process's children that have been waited for (the generators, each
/// reaped when its run ends): `cutime` + `cstime` of `/proc/self/stat`.
fn generators_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // After the command: state is field 3, cutime 16 and cstime 17 (1-based, whole line).
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(13), ticks(14)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// CPU seconds per process, summed over each side's closed-loop runs, and their requests.
struct CpuPerRequest {
    pids: Vec<(String, i32)>,
    /// Per side (0 raw, 1 ingress): CPU seconds of the generator then of each of `pids`.
    cpu: [Vec<f64>; 2],
    requests: [u64; 2],
}

impl CpuPerRequest {
    fn new(pids: &[(String, i32)]) -> CpuPerRequest {
        let zero = vec![0.0; pids.len() + 1];
        CpuPerRequest {
            pids: pids.to_vec(),
            cpu: [zero.clone(), zero],
            requests: [0, 0],
        }
    }

    fn now(&self) -> Vec<f64> {
        std::iter::once(generators_cpu())
            .chain(
                self.pids
                    .iter()
                    .map(|(_, p)| super::cpu_seconds(*p).unwrap_or(f64::NAN)),
            )
            .collect()
    }

    /// (process, raw side µs per request, ingress side µs per request).
    fn per_request(&self) -> Vec<(String, f64, f64)> {
        let names = std::iter::once("load generator".to_owned())
            .chain(self.pids.iter().map(|(n, _)| n.clone()));
        names
            .enumerate()
            .map(|(i, name)| {
                let us = |side: usize| self.cpu[side][i] * 1e6 / self.requests[side].max(1) as f64;
                (name, us(0), us(1))
            })
            .collect()
    }
}

/// `a` then `b` then `b` then `a` with the same load `shape`; each side's two runs pooled, and
/// their CPU added to `cpu` if given (`a` as the raw side).
async fn abba(
    a: &[String],
    b: &[String],
    shape: &[String],
    mut cpu: Option<&mut CpuPerRequest>,
) -> anyhow::Result<(Run, Run)> {
    let mut runs = Vec::with_capacity(4);
    for (side, target) in [(0, a), (1, b), (1, b), (0, a)] {
        let before = cpu.as_ref().map(|c| c.now());
        let run = measure(target, shape).await?;
        if let (Some(c), Some(before)) = (cpu.as_deref_mut(), before) {
            let after = c.now();
            for (i, (x, y)) in after.iter().zip(&before).enumerate() {
                c.cpu[side][i] += x - y;
            }
            c.requests[side] += run.latencies.len() as u64;
        }
        runs.push(run);
    }
    let mut runs = runs.into_iter();
    let (a1, b1, b2, a2) = (runs.next(), runs.next(), runs.next(), runs.next());
    match (a1, b1, b2, a2) {
        (Some(a1), Some(b1), Some(b2), Some(a2)) => Ok((a1.pooled(a2), b1.pooled(b2))),
        _ => anyhow::bail!("an ABBA run is missing"),
    }
}

impl ProduceResults {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "raw_produce_max": self.raw_max.json(),
            "ingress_max": self.ingress_max.json(),
            "ingress_to_raw_rate": self.ingress_max.achieved / self.raw_max.achieved,
            "levels": self.levels.iter().map(|(f, raw, ing)| json!({
                "fraction_of_ingress_max": f,
                "raw": raw.json(),
                "ingress": ing.json(),
                "p99_ratio": ing.quantile_ms(0.99) / raw.quantile_ms(0.99),
            })).collect::<Vec<_>>(),
            "ingress_at_2x": self.overload.json(),
            "closed_loop_cpu_us_per_request": self.cpu.iter().map(|(n, raw, ing)| json!({
                "process": n, "raw": raw, "ingress": ing,
            })).collect::<Vec<_>>(),
        })
    }
}
