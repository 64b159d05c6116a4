//! Counting what a run left behind, for the crash tests: when the platform has gone quiet, every
//! provider call per delivery id (repeats included), every inbox entry per notification, and, for
//! exactly-once runs, whether any hop added a copy of a record that a `read_committed` reader
//! can see.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use herald_proto::v1::ListInboxRequest;
use herald_schemas::codec::decode;
use herald_schemas::{
    Channel, DeliveryResult, DeliveryState, Dispatch, NotificationAdmitted, NotificationEnriched,
    NotificationRequested,
};
use rdkafka::consumer::{BaseConsumer, Consumer};

use herald_connectors::recording::RecordedCall;

use crate::chaos::Kill;
use crate::clients::QueryClient;
use crate::topic::read_records;

/// The sum of every topic's high watermark under `prefix` (records written so far, markers
/// included).
fn written(bootstrap: &str, prefix: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let mut total = 0;
    for topic in metadata.topics() {
        if !topic.name().starts_with(&format!("{prefix}.")) {
            continue;
        }
        for p in topic.partitions() {
            total += consumer.fetch_watermarks(topic.name(), p.id(), timeout)?.1;
        }
    }
    Ok(total)
}

/// Waits until no topic under `prefix` has grown and the provider has had no call for `quiet`,
/// or fails after `limit`; so late duplicates are there to be counted.
pub async fn wait_quiet(
    bootstrap: &str,
    prefix: &str,
    recording: &Path,
    quiet: Duration,
    limit: Duration,
) -> anyhow::Result<()> {
    crate::settled_for(limit, quiet, "the platform to go quiet", || async {
        let (b, p) = (bootstrap.to_owned(), prefix.to_owned());
        let topics = tokio::task::spawn_blocking(move || written(&b, &p)).await??;
        let calls = herald_connectors::recording::call_count(recording)?;
        Ok(Some((topics, calls)))
    })
    .await?;
    Ok(())
}

/// Provider calls per delivery id, and which repeats a kill of the deliver stage explains.
#[derive(Debug, Default)]
pub struct ProviderAudit {
    /// Calls per delivery id, as the provider logged them.
    pub calls: BTreeMap<String, Vec<i64>>,
    /// Ids called again after a deliver kill that caught them in the provider window: their
    /// call was among the last [`IN_FLIGHT`] of its channel before the kill (each channel's
    /// runner calls its provider for that many recipients at once, so a kill can leave at most
    /// that many called but not recorded).
    pub window_resends: Vec<String>,
    /// Ids called more than once otherwise: duplicates Herald caused.
    pub duplicates: Vec<String>,
}

impl ProviderAudit {
    /// Reads the recording provider's call log and classifies repeats against `kills`.
    pub fn read(recording: &Path, kills: &[Kill]) -> anyhow::Result<ProviderAudit> {
        let calls = herald_connectors::recording::read_calls(recording)?;
        Ok(ProviderAudit::classify(&calls, kills, IN_FLIGHT))
    }

    /// Classifies repeated calls (in log order) against `kills`, when each channel has at most
    /// `in_flight` calls under way at once.
    pub fn classify(calls: &[RecordedCall], kills: &[Kill], in_flight: usize) -> ProviderAudit {
        // For each deliver kill, the last `in_flight` calls of each channel at or before it (log
        // order).
        let mut in_window: Vec<(i64, std::collections::HashSet<usize>)> = Vec::new();
        for kill in kills.iter().filter(|k| k.victim == DELIVER) {
            let mut last: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, call) in calls.iter().enumerate() {
                if call.recorded_at_ms <= kill.at_ms {
                    last.entry(call.channel.as_str()).or_default().push(i);
                }
            }
            let window = last
                .into_values()
                .flat_map(|calls| calls.into_iter().rev().take(in_flight))
                .collect();
            in_window.push((kill.at_ms, window));
        }
        let mut audit = ProviderAudit::default();
        let mut by_id: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, call) in calls.iter().enumerate() {
            by_id.entry(&call.delivery_id).or_default().push(i);
            audit
                .calls
                .entry(call.delivery_id.clone())
                .or_default()
                .push(call.recorded_at_ms);
        }
        for (id, indices) in by_id {
            if indices.len() < 2 {
                continue;
            }
            let explained = indices.windows(2).all(|w| {
                let (before, after) = (calls[w[0]].recorded_at_ms, calls[w[1]].recorded_at_ms);
                in_window
                    .iter()
                    .any(|(at, last)| (before..=after).contains(at) && last.contains(&w[0]))
            });
            if explained {
                audit.window_resends.push(id.to_owned());
            } else {
                audit.duplicates.push(id.to_owned());
            }
        }
        audit
    }
}

/// How many calls a channel of the deliver stage has under way at once.
pub const IN_FLIGHT: usize = herald_stages::deliver::CONCURRENT_RECIPIENTS;

/// The deliver stage's name in the kill log.
const DELIVER: &str = "stage deliver";

/// Every notification id in a user's inbox, one element per entry, following page tokens
/// (`query` calls as `tenant`).
pub async fn inbox_ids(
    query: &mut QueryClient,
    tenant: &str,
    user: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_inbox(ListInboxRequest {
                tenant: tenant.into(),
                recipient_user_id: user.into(),
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(page.entries.into_iter().map(|e| e.notification_id));
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        token = page.next_page_token;
    }
}

/// Records per id in each topic of the flow, as a `read_committed` reader sees them.
#[derive(Debug, Default)]
pub struct TopicCounts {
    /// `requested`, per notification.
    pub requested: HashMap<String, u32>,
    /// `enriched`, per notification.
    pub enriched: HashMap<String, u32>,
    /// `admitted`, per notification.
    pub admitted: HashMap<String, u32>,
    /// `dispatch.<channel>`, per (notification, channel).
    pub dispatched: HashMap<(String, Channel), u32>,
    /// `delivery-result`, per (notification, channel, state).
    pub results: HashMap<(String, Option<Channel>, DeliveryState), u32>,
}

fn count<E: herald_schemas::codec::Event>(
    bootstrap: &str,
    topic: &str,
    mut key: impl FnMut(E),
) -> anyhow::Result<()> {
    for r in read_records(bootstrap, topic)? {
        let event: E = decode(&r.value)
            .map_err(|e| anyhow::anyhow!("{topic}[{}]@{}: {e}", r.partition, r.offset))?;
        key(event);
    }
    Ok(())
}

impl TopicCounts {
    /// Reads the flow's topics under `prefix` (the dispatch topics of `channels`).
    pub fn read(
        bootstrap: &str,
        prefix: &str,
        channels: &[Channel],
    ) -> anyhow::Result<TopicCounts> {
        let mut c = TopicCounts::default();
        count(
            bootstrap,
            &format!("{prefix}.requested"),
            |e: NotificationRequested| {
                *c.requested.entry(e.notification_id).or_default() += 1;
            },
        )?;
        count(
            bootstrap,
            &format!("{prefix}.enriched"),
            |e: NotificationEnriched| {
                *c.enriched.entry(e.notification_id).or_default() += 1;
            },
        )?;
        count(
            bootstrap,
            &format!("{prefix}.admitted"),
            |e: NotificationAdmitted| {
                *c.admitted.entry(e.notification_id).or_default() += 1;
            },
        )?;
        for &channel in channels {
            let topic = format!("{prefix}.dispatch.{}", channel.as_str());
            count(bootstrap, &topic, |e: Dispatch| {
                *c.dispatched
                    .entry((e.notification_id, e.channel))
                    .or_default() += 1;
            })?;
        }
        count(
            bootstrap,
            &format!("{prefix}.delivery-result"),
            |e: DeliveryResult| {
                *c.results
                    .entry((e.notification_id, e.channel, e.state))
                    .or_default() += 1;
            },
        )?;
        Ok(c)
    }

    fn result(&self, id: &str, channel: Option<Channel>, state: DeliveryState) -> u32 {
        self.results
            .get(&(id.to_owned(), channel, state))
            .copied()
            .unwrap_or(0)
    }

    /// Where a hop wrote a record more (or fewer) times than it read its input: every input
    /// record is processed exactly once, so each output appears as often as the record it came
    /// from (a client's retry can put one request on `requested` twice; then everything after
    /// it appears twice too). Empty when every hop was exactly-once.
    pub fn hop_violations(&self, channels: &[Channel]) -> Vec<String> {
        let mut bad = Vec::new();
        let mut check = |hop: &str, id: &str, input: u32, output: u32| {
            if input != output {
                bad.push(format!("{hop}: {id} read {input}×, written {output}×"));
            }
        };
        for (id, &n) in &self.requested {
            let enriched = self.enriched.get(id).copied().unwrap_or(0);
            check("enrich", id, n, enriched);
        }
        for (id, &n) in &self.enriched {
            let decided = self.admitted.get(id).copied().unwrap_or(0)
                + self.result(id, None, DeliveryState::RateLimited)
                + self.result(id, None, DeliveryState::Deferred);
            check("rate-limit", id, n, decided);
        }
        for (id, &n) in &self.admitted {
            for &channel in channels {
                let dispatched = self
                    .dispatched
                    .get(&(id.clone(), channel))
                    .copied()
                    .unwrap_or(0);
                check("fan-out", id, n, dispatched);
                let noted = self.result(id, Some(channel), DeliveryState::Dispatched);
                check("fan-out result", id, n, noted);
            }
        }
        for ((id, channel), &n) in &self.dispatched {
            let outcome = [
                DeliveryState::Delivered,
                DeliveryState::Failed,
                DeliveryState::InvalidToken,
            ]
            .iter()
            .map(|s| self.result(id, Some(*channel), *s))
            .sum();
            check("deliver", id, n, outcome);
        }
        bad.sort();
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, channel: &str, at: i64) -> RecordedCall {
        RecordedCall {
            delivery_id: id.into(),
            notification_id: id.into(),
            channel: channel.into(),
            address: String::new(),
            title: String::new(),
            body: String::new(),
            recorded_at_ms: at,
        }
    }

    fn kill(victim: &'static str, at_ms: i64) -> Kill {
        Kill {
            victim,
            at_ms,
            draining: false,
        }
    }

    #[test]
    fn a_kill_explains_only_the_calls_of_each_channel_under_way_before_it() {
        let calls = [
            call("a", "email", 100),
            call("b", "email", 200),
            call("s", "sms", 210),
            // deliver killed at 300: b (email) and s (sms) were in the window; a was not.
            call("a", "email", 400),
            call("b", "email", 410),
            call("s", "sms", 420),
        ];
        let audit = ProviderAudit::classify(&calls, &[kill(DELIVER, 300)], 1);
        assert_eq!(audit.window_resends, ["b", "s"]);
        assert_eq!(audit.duplicates, ["a"]);
        // Two calls under way at once per channel: a was in the window too.
        let audit = ProviderAudit::classify(&calls, &[kill(DELIVER, 300)], 2);
        assert_eq!(audit.window_resends, ["a", "b", "s"]);
        assert!(audit.duplicates.is_empty());
    }

    #[test]
    fn only_a_deliver_kill_between_the_calls_explains_a_repeat() {
        let calls = [call("b", "email", 200), call("b", "email", 410)];
        let other = ProviderAudit::classify(&calls, &[kill("stage enrich", 300)], 1);
        assert_eq!(other.duplicates, ["b"]);
        let after = ProviderAudit::classify(&calls, &[kill(DELIVER, 500)], 1);
        assert_eq!(after.duplicates, ["b"]);
        let between = ProviderAudit::classify(&calls, &[kill(DELIVER, 300)], 1);
        assert_eq!(between.window_resends, ["b"]);
    }
}
