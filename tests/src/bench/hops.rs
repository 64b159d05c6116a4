//! Where one notification's time goes, hop by hop: for the notifications sent in the latency
//! phase, the timestamps of the record each stage produced for it (set by the producer when the
//! stage sent it) and of the provider call, as differences from one hop to the next.

use std::collections::HashMap;
use std::path::Path;

use herald_runtime::topics::Topics;
use herald_schemas::{
    Channel, DeliveryResult, DeliveryState, Dispatch, NotificationAdmitted, NotificationEnriched,
    NotificationRequested, codec,
};
use serde_json::{Value, json};

use crate::topic::read_records;

/// Per-hop latency over the sampled notifications.
#[derive(Debug, Clone)]
pub struct Hops {
    /// Notifications with every hop seen.
    pub samples: usize,
    /// (hop, p50 ms, p99 ms).
    pub hops: Vec<(String, f64, f64)>,
}

impl Hops {
    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "samples": self.samples,
            "hops": self.hops.iter().map(|(h, p50, p99)| json!({ "hop": h, "p50_ms": p50, "p99_ms": p99 })).collect::<Vec<_>>(),
        })
    }
}

/// Notification id → the timestamp of its record in `topic`, for records sent at or after
/// `since_ms` that `id` accepts.
fn stamps(
    bootstrap: &str,
    topic: &str,
    since_ms: i64,
    id: impl Fn(&[u8]) -> Option<String>,
) -> anyhow::Result<HashMap<String, i64>> {
    Ok(read_records(bootstrap, topic)?
        .into_iter()
        .filter(|r| r.timestamp_ms >= since_ms)
        .filter_map(|r| id(&r.value).map(|id| (id, r.timestamp_ms)))
        .collect())
}

fn quantile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64
}

/// The e-mail path of every notification sent at or after `since_ms`: ingress → enrich →
/// rate-limit → fan-out → provider call → delivery result.
pub fn measure(
    bootstrap: &str,
    topics: &Topics,
    recording: &Path,
    since_ms: i64,
) -> anyhow::Result<Hops> {
    let requested = stamps(bootstrap, &topics.requested(), since_ms, |v| {
        codec::decode::<NotificationRequested>(v)
            .ok()
            .map(|n| n.notification_id)
    })?;
    let enriched = stamps(bootstrap, &topics.enriched(), since_ms, |v| {
        codec::decode::<NotificationEnriched>(v)
            .ok()
            .map(|n| n.notification_id)
    })?;
    let admitted = stamps(bootstrap, &topics.admitted(), since_ms, |v| {
        codec::decode::<NotificationAdmitted>(v)
            .ok()
            .map(|n| n.notification_id)
    })?;
    let dispatched = stamps(bootstrap, &topics.dispatch(Channel::Email), since_ms, |v| {
        codec::decode::<Dispatch>(v).ok().map(|d| d.notification_id)
    })?;
    let results = stamps(bootstrap, &topics.delivery_result(), since_ms, |v| {
        codec::decode::<DeliveryResult>(v)
            .ok()
            .filter(|r| r.state == DeliveryState::Delivered && r.channel == Some(Channel::Email))
            .map(|r| r.notification_id)
    })?;
    let called: HashMap<String, i64> = herald_connectors::recording::read_calls(recording)?
        .into_iter()
        .filter(|c| c.channel == Channel::Email.as_str() && c.recorded_at_ms >= since_ms)
        .map(|c| (c.notification_id, c.recorded_at_ms))
        .collect();
    let path = [
        ("ingress → enrich", &requested, &enriched),
        ("enrich → rate-limit", &enriched, &admitted),
        ("rate-limit → fan-out", &admitted, &dispatched),
        ("fan-out → provider call (deliver)", &dispatched, &called),
        ("provider call → result sent", &called, &results),
    ];
    let complete: Vec<&String> = requested
        .keys()
        .filter(|id| path.iter().all(|(_, _, to)| to.contains_key(*id)))
        .collect();
    let hops = path
        .iter()
        .map(|(name, from, to)| {
            let mut deltas: Vec<i64> = complete.iter().map(|id| to[*id] - from[*id]).collect();
            deltas.sort_unstable();
            (
                (*name).to_owned(),
                quantile(&deltas, 0.5),
                quantile(&deltas, 0.99),
            )
        })
        .collect();
    Ok(Hops {
        samples: complete.len(),
        hops,
    })
}

/// Per runner of the busy stages: batches handed over, and their mean, p50 and p99 time, from
/// each stage's `herald_stage_batch_duration_seconds` (a stage that does not answer is left out).
pub async fn batch_times(platform: &crate::Platform) -> Vec<String> {
    use herald_telemetry::metrics::{STAGE_BATCH_SECONDS, STAGE_COMMIT_SECONDS};
    use herald_telemetry::scrape::{buckets, quantile, sum};
    let mut lines = Vec::new();
    for component in ["enrich", "rate-limit", "fan-out", "deliver", "store-writer"] {
        let Ok(page) = platform.scrape(component).await else {
            continue;
        };
        let count_name = format!("{STAGE_BATCH_SECONDS}_count");
        let mut stages: Vec<&str> = page
            .iter()
            .filter(|s| s.name == count_name && s.value > 0.0)
            .map(|s| s.label("stage"))
            .collect();
        stages.dedup();
        for stage in stages {
            let with = [("stage", stage)];
            let count = sum(&page, &count_name, &with);
            let total = sum(&page, &format!("{STAGE_BATCH_SECONDS}_sum"), &with);
            let b = buckets(&page, STAGE_BATCH_SECONDS, &with);
            let ms = |b: &[(f64, f64)], q: f64| quantile(q, b).map_or(f64::NAN, |v| v * 1_000.0);
            let commits = buckets(&page, STAGE_COMMIT_SECONDS, &with);
            let commit_count = commits.last().map_or(0.0, |(_, c)| *c);
            lines.push(format!(
                "{stage:<18} {count:>5.0} batches, mean {:>5.1} p50 {:>5.1} p99 {:>5.1} ms; \
                 {commit_count:>4.0} commits, p50 {:>5.1} p99 {:>5.1} ms",
                total / count * 1_000.0,
                ms(&b, 0.5),
                ms(&b, 0.99),
                ms(&commits, 0.5),
                ms(&commits, 0.99),
            ));
        }
    }
    lines
}
