//! Topic and consumer-group names, all under one prefix so that several Herald deployments (or
//! tests) can share a broker.

use std::time::Duration;

use herald_schemas::Channel;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaConfig, Result, RuntimeError};

/// The retry tiers, by the longest wait each takes: `retry.<channel>.30s`, `.5m` and `.1h`
/// (which also takes anything longer).
pub const RETRY_TIERS: [(&str, Duration); 3] = [
    ("30s", Duration::from_secs(30)),
    ("5m", Duration::from_secs(300)),
    ("1h", Duration::from_secs(3_600)),
];

/// A priority lane. Bulk traffic (broadcasts, batches, low-priority notifications) has topics
/// and consumers of its own at every hop from `requested` to the provider call, so a broadcast
/// never queues ahead of a one-time code: the main lane's runners never see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Everything but bulk: single notifications of normal, high and critical priority.
    Main,
    /// Broadcasts, batches and low-priority notifications.
    Bulk,
}

impl Lane {
    /// Both lanes, main first.
    pub const ALL: [Lane; 2] = [Lane::Main, Lane::Bulk];

    /// What a lane's topics, groups and runners carry after their main-lane name (`.bulk`).
    pub fn suffix(self) -> &'static str {
        match self {
            Lane::Main => "",
            Lane::Bulk => ".bulk",
        }
    }
}

/// The names of every topic, derived from the prefix, for one lane: the topics a notification
/// passes through (`requested` to `retry`, and the rate limiter's changelog) are the lane's own;
/// results, engagement, dead letters, changes and broadcasts are shared.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
    lane: Lane,
}

impl Topics {
    /// Names under `prefix`, main lane.
    pub fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.to_owned(),
            lane: Lane::Main,
        }
    }

    /// The same names for `lane`.
    pub fn in_lane(&self, lane: Lane) -> Topics {
        Topics {
            prefix: self.prefix.clone(),
            lane,
        }
    }

    /// The lane these names are for.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// A topic of the lane's own.
    fn laned(&self, suffix: &str) -> String {
        format!("{}.{suffix}{}", self.prefix, self.lane.suffix())
    }

    /// Validated requests from the ingress (per lane).
    pub fn requested(&self) -> String {
        self.laned("requested")
    }
    /// Broadcasts to a topic's subscribers, expanded by the broadcast stage into the bulk
    /// lane's `requested` (shared; key tenant/topic).
    pub fn broadcasts(&self) -> String {
        self.name("broadcasts")
    }
    /// Requests held for their recipient's quiet hours, released when the hours end; read by
    /// the enrich stage along with `requested` (a released request is not held again).
    pub fn released(&self) -> String {
        self.name("released")
    }
    /// Output of the enrich stage (per lane).
    pub fn enriched(&self) -> String {
        self.laned("enriched")
    }
    /// Over-limit notifications waiting to be re-evaluated (rate-limit stage, `defer` mode;
    /// per lane).
    pub fn deferred(&self) -> String {
        self.laned("deferred")
    }
    /// Output of the rate-limit stage (per lane).
    pub fn admitted(&self) -> String {
        self.laned("admitted")
    }
    /// One dispatch topic per channel (per lane).
    pub fn dispatch(&self, channel: Channel) -> String {
        self.laned(&format!("dispatch.{}", channel.as_str()))
    }
    /// The retry topic of `channel` for a delivery to try again after `wait`: the first tier of
    /// [`RETRY_TIERS`] whose bound is at least the wait (the last takes any longer wait). Read
    /// by the channel's deliver stage along with its dispatches, a tier's partition waiting for
    /// its head to be due: a retry waits behind others of its own tier only, so at most that
    /// tier's bound past its own time.
    pub fn retry(&self, channel: Channel, wait: Duration) -> String {
        let (tier, _) = RETRY_TIERS
            .iter()
            .find(|(_, bound)| wait <= *bound)
            .unwrap_or(&RETRY_TIERS[RETRY_TIERS.len() - 1]);
        self.laned(&format!("retry.{}.{tier}", channel.as_str()))
    }

    /// Every retry topic of `channel`, shortest tier first.
    pub fn retries(&self, channel: Channel) -> Vec<String> {
        RETRY_TIERS
            .iter()
            .map(|(tier, _)| self.laned(&format!("retry.{}.{tier}", channel.as_str())))
            .collect()
    }
    /// Every state change; read by the store writer and analysts.
    pub fn delivery_result(&self) -> String {
        self.name("delivery-result")
    }
    /// Opens, clicks and reads.
    pub fn engagement(&self) -> String {
        self.name("engagement")
    }
    /// Input records a stage could not process, whole, with where they came from and why.
    pub fn dead_letter(&self) -> String {
        self.name("dead-letter")
    }
    /// Where the start-up check writes (and aborts) one record to learn whether the broker
    /// supports transactions. Nothing ever reads it.
    pub fn txn_probe(&self) -> String {
        self.name("txn-probe")
    }
    /// Which transactional id each exactly-once runner uses now (compacted; key
    /// `<group>.<instance_id>`), so its next incarnation can abort what it left open
    /// ([`crate::runner::txn_ids`]).
    pub fn txn_ids(&self) -> String {
        self.name("txn-ids")
    }
    /// The rate-limit stage's changelog: its limiters' state after each decision, in the
    /// partition of the input it decided (compacted; key tenant/recipient/category).
    pub fn rate_limit_state(&self) -> String {
        self.laned("rate-limit-state")
    }
    /// Changes to recipients and templates (compacted, 1 partition; key `<kind>/<tenant>/<id>`):
    /// written by the management API, template imports and the deliver stage (an address its
    /// provider refused); every enrich instance follows it to drop what it cached.
    pub fn changes(&self) -> String {
        self.name("changes")
    }
    /// The consumer group of a stage.
    pub fn group(&self, stage: &str) -> String {
        self.name(&format!("stage.{stage}"))
    }

    /// Every topic Herald uses, both lanes'.
    pub fn all(&self) -> Vec<String> {
        let mut all = vec![
            self.released(),
            self.broadcasts(),
            self.changes(),
            self.delivery_result(),
            self.engagement(),
            self.dead_letter(),
            self.txn_probe(),
            self.txn_ids(),
        ];
        for lane in Lane::ALL {
            let t = self.in_lane(lane);
            all.extend([
                t.requested(),
                t.enriched(),
                t.deferred(),
                t.admitted(),
                t.rate_limit_state(),
            ]);
            all.extend(Channel::ALL.map(|c| t.dispatch(c)));
            all.extend(Channel::ALL.into_iter().flat_map(|c| t.retries(c)));
        }
        all
    }
}

/// How many partitions `topic` has (0 when the broker does not know it).
pub async fn partition_count(config: &KafkaConfig, topic: &str) -> Result<usize> {
    let consumer: rdkafka::consumer::BaseConsumer = config.reader().create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    })
    .await
    .map_err(|e| RuntimeError::Fatal(e.to_string()))?
}

/// Creates every topic that does not exist yet.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.admin().create()?;
    let topics = Topics::new(&config.topic_prefix);
    let names = topics.all();
    let registry = topics.txn_ids();
    let changes = topics.changes();
    let changelogs: Vec<String> = Lane::ALL
        .iter()
        .map(|l| topics.in_lane(*l).rate_limit_state())
        .collect();
    let retention = (config.topic_retention_ms > 0).then(|| {
        let segment = (config.topic_retention_ms / 24).max(60_000);
        (config.topic_retention_ms.to_string(), segment.to_string())
    });
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            let replication = TopicReplication::Fixed(config.replication_factor);
            if *n == registry || *n == changes {
                // Small and keyed: one partition, the latest value per key kept.
                return NewTopic::new(n, 1, replication).set("cleanup.policy", "compact");
            }
            let topic = NewTopic::new(n, config.partitions, replication);
            if changelogs.contains(n) {
                // Partitioned as the input it records; the newest state per key is enough.
                // Hourly segments, so compaction (which skips the active segment) keeps up.
                return topic
                    .set("cleanup.policy", "compact")
                    .set("segment.ms", "3600000");
            }
            match &retention {
                Some((keep, segment)) => topic.set("retention.ms", keep).set("segment.ms", segment),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(RuntimeError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_goes_to_the_shortest_tier_that_takes_its_wait() {
        let t = Topics::new("p");
        let at = |s: u64| t.retry(Channel::Sms, Duration::from_secs(s));
        assert_eq!(at(0), "p.retry.sms.30s");
        assert_eq!(at(30), "p.retry.sms.30s");
        assert_eq!(at(31), "p.retry.sms.5m");
        assert_eq!(at(300), "p.retry.sms.5m");
        assert_eq!(at(301), "p.retry.sms.1h");
        assert_eq!(at(86_400), "p.retry.sms.1h");
        assert_eq!(
            t.retries(Channel::Webhook),
            [
                "p.retry.webhook.30s",
                "p.retry.webhook.5m",
                "p.retry.webhook.1h"
            ]
        );
        let all = t.all();
        for c in Channel::ALL {
            assert!(t.retries(c).iter().all(|r| all.contains(r)));
        }
    }

    #[test]
    fn the_bulk_lane_has_its_own_pipeline_topics_and_shares_the_rest() {
        let main = Topics::new("p");
        let bulk = main.in_lane(Lane::Bulk);
        assert_eq!(bulk.requested(), "p.requested.bulk");
        assert_eq!(bulk.dispatch(Channel::Sms), "p.dispatch.sms.bulk");
        assert_eq!(
            bulk.retry(Channel::Sms, Duration::from_secs(1)),
            "p.retry.sms.30s.bulk"
        );
        assert_eq!(bulk.rate_limit_state(), "p.rate-limit-state.bulk");
        assert_eq!(main.requested(), "p.requested");
        for shared in [
            Topics::delivery_result,
            Topics::dead_letter,
            Topics::changes,
        ] {
            assert_eq!(shared(&bulk), shared(&main));
        }
        let all = main.all();
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "no topic twice");
        for t in [
            bulk.requested(),
            bulk.enriched(),
            bulk.admitted(),
            main.broadcasts(),
        ] {
            assert!(all.contains(&t), "{t}");
        }
    }
}
