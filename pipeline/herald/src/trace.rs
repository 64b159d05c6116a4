//! `herald trace ID`: where a notification went and how long each step took, from its timeline
//! in the store — accepted by the ingress, dispatched per channel by fan-out, then each
//! attempt's outcome — with the time since acceptance and since the step before on its channel.

use std::collections::BTreeMap;

use anyhow::Context;
use herald_store::DeliveryEventRecord;

use crate::config::Config;

/// The trace of `id` of `tenant`, as a table.
pub async fn run(config: &Config, tenant: &str, id: &str) -> anyhow::Result<String> {
    let store = crate::store::open(config).await?;
    let (n, timeline) = store
        .get_notification(tenant, id)
        .await?
        .with_context(|| format!("no notification {id:?} for tenant {tenant:?} (yet)"))?;
    Ok(table(
        n.created_at_ms,
        &n.recipient_user_id,
        &n.category,
        timeline,
    ))
}

/// The table of a timeline, in time order.
fn table(
    created_at_ms: i64,
    user: &str,
    category: &str,
    mut timeline: Vec<DeliveryEventRecord>,
) -> String {
    timeline.sort_by_key(|e| e.at_ms);
    let mut out = format!(
        "user {user}, category {category}\n{:>9}  {:>9}  {:<10} {:<13} reason\n",
        "+total", "+step", "channel", "state"
    );
    let mut previous: BTreeMap<Option<&str>, i64> = BTreeMap::new();
    for e in &timeline {
        let channel = e.channel.map(|c| c.as_str());
        // A channel's first step counts from acceptance.
        let before = previous
            .get(&channel)
            .copied()
            .unwrap_or(created_at_ms)
            .min(e.at_ms);
        out.push_str(&format!(
            "{:>7} ms  {:>6} ms  {:<10} {:<13} {}\n",
            e.at_ms - created_at_ms,
            e.at_ms - before,
            channel.unwrap_or("-"),
            e.state.as_str(),
            e.reason.as_deref().unwrap_or("")
        ));
        previous.insert(channel, e.at_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use herald_schemas::{Channel, DeliveryState};

    use super::*;

    fn event(channel: Option<Channel>, state: DeliveryState, at_ms: i64) -> DeliveryEventRecord {
        DeliveryEventRecord {
            tenant: "t".into(),
            notification_id: "n".into(),
            result_id: format!("{at_ms}"),
            recipient_user_id: "u".into(),
            category: "c".into(),
            channel,
            state,
            reason: None,
            at_ms,
        }
    }

    #[test]
    fn steps_count_from_acceptance_and_from_the_step_before_on_their_channel() {
        let timeline = vec![
            event(Some(Channel::Sms), DeliveryState::Delivered, 1_450),
            event(None, DeliveryState::Accepted, 1_000),
            event(Some(Channel::Sms), DeliveryState::Dispatched, 1_300),
            event(Some(Channel::InApp), DeliveryState::Dispatched, 1_300),
            event(Some(Channel::InApp), DeliveryState::Delivered, 1_320),
        ];
        let text = table(1_000, "u", "c", timeline);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["0", "ms", "0", "ms", "-", "ACCEPTED"]);
        assert_eq!(rows[1][0..4], ["300", "ms", "300", "ms"]);
        assert!(rows.contains(&vec!["320", "ms", "20", "ms", "in_app", "DELIVERED"]));
        assert!(rows.contains(&vec!["450", "ms", "150", "ms", "sms", "DELIVERED"]));
    }
}
