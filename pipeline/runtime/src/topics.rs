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

/// The names of every topic, derived from the prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.to_owned(),
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Validated requests from the ingress.
    pub fn requested(&self) -> String {
        self.name("requested")
    }
    /// Requests held for their recipient's quiet hours, released when the hours end; read by
    /// the enrich stage along with `requested` (a released request is not held again).
    pub fn released(&self) -> String {
        self.name("released")
    }
    /// Output of the enrich stage.
    pub fn enriched(&self) -> String {
        self.name("enriched")
    }
    /// Over-limit notifications waiting to be re-evaluated (rate-limit stage, `defer` mode).
    pub fn deferred(&self) -> String {
        self.name("deferred")
    }
    /// Output of the rate-limit stage.
    pub fn admitted(&self) -> String {
        self.name("admitted")
    }
    /// One dispatch topic per channel.
    pub fn dispatch(&self, channel: Channel) -> String {
        self.name(&format!("dispatch.{}", channel.as_str()))
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
        self.name(&format!("retry.{}.{tier}", channel.as_str()))
    }

    /// Every retry topic of `channel`, shortest tier first.
    pub fn retries(&self, channel: Channel) -> Vec<String> {
        RETRY_TIERS
            .iter()
            .map(|(tier, _)| self.name(&format!("retry.{}.{tier}", channel.as_str())))
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
        self.name("rate-limit-state")
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

    /// Every topic Herald uses.
    pub fn all(&self) -> Vec<String> {
        let mut all = vec![
            self.requested(),
            self.released(),
            self.enriched(),
            self.deferred(),
            self.admitted(),
            self.changes(),
        ];
        all.extend(Channel::ALL.map(|c| self.dispatch(c)));
        all.extend(Channel::ALL.into_iter().flat_map(|c| self.retries(c)));
        all.extend([
            self.delivery_result(),
            self.engagement(),
            self.dead_letter(),
            self.txn_probe(),
            self.txn_ids(),
            self.rate_limit_state(),
        ]);
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
    let changelog = topics.rate_limit_state();
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
            if *n == changelog {
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
}
