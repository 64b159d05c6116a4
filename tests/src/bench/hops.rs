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
