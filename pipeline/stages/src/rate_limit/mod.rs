//! The rate-limit stage: `enriched` → `admitted`; over a limit, either a `RATE_LIMITED` result
//! (drop) or a `DEFERRED` result plus the notification parked on `deferred` until the limit
//! allows it (defer), which the [`DeferredRelay`] puts back on `enriched`. Critical
//! notifications bypass the limits. Nothing is dropped silently. The limiters' state goes to
//! `rate-limit-state` with each decision and is restored from it, so a replay decides the same.

mod limiter;
mod relay;
mod route;

/// A notification for the rate-limit stage's tests.
#[cfg(test)]
pub(crate) fn test_enriched(deferrals: i32, defer_until_ms: Option<i64>) -> NotificationEnriched {
    NotificationEnriched {
        notification_id: "n1".into(),
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "news".into(),
        priority: herald_schemas::Priority::Normal,
        requested_at_ms: 1,
        deliveries: vec![],
        deferrals,
        defer_until_ms,
    }
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_runtime::KafkaConfig;
use herald_runtime::changelog::read_partition;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::NotificationEnriched;
use herald_store::Clock;
use tracing::{info, warn};

pub use limiter::{
    Decision, Limiter, LimiterState, LimitsConfig, OverLimit, QuotaConfig, event_time,
};
pub use relay::{DeferredRelay, wait_for};
pub use route::{Routed, admit, route};

use crate::wire::{decode, output};

/// Where a rate-limit processor reads its changelog back.
#[async_trait]
pub trait StateLog: Send + Sync {
    /// Every committed state record of `partition`, oldest first.
    async fn read(&self, partition: i32) -> Result<Vec<Vec<u8>>, ProcessError>;
}

/// The changelog topic on Kafka.
pub struct KafkaStateLog {
    kafka: KafkaConfig,
    topic: String,
}

impl KafkaStateLog {
    /// Reads `topics`' rate-limit changelog with `kafka`'s settings.
    pub fn new(kafka: KafkaConfig, topics: &Topics) -> KafkaStateLog {
        KafkaStateLog {
            kafka,
            topic: topics.rate_limit_state(),
        }
    }
}

#[async_trait]
impl StateLog for KafkaStateLog {
    async fn read(&self, partition: i32) -> Result<Vec<Vec<u8>>, ProcessError> {
        read_partition(&self.kafka, &self.topic, partition, RESTORE_WITHIN)
            .await
            .map_err(|e| ProcessError::Retry(format!("reading the limiter changelog: {e}")))
    }
}

/// How long restoring one partition's limiters may take before it is retried: well inside the
/// default transaction timeout (60 s), since a reset can run while a transaction is open.
const RESTORE_WITHIN: Duration = Duration::from_secs(20);

/// The rate-limit stage's processor: one [`Limiter`] per input partition, each restored from
/// the changelog when the runner (re)starts its partition, each decision's state written to the
/// changelog in the decision's transaction.
pub struct RateLimitProcessor {
    topics: Topics,
    limits: LimitsConfig,
    limiters: HashMap<i32, Limiter>,
    log: Box<dyn StateLog>,
    clock: Arc<dyn Clock>,
}

impl RateLimitProcessor {
    /// A processor with `limits` over an input of `partitions` partitions (the tenant quota is
    /// shared out between them), writing to `topics`, restoring from `log`, bounding record
    /// times by `clock`.
    pub fn new(
        topics: Topics,
        limits: &LimitsConfig,
        partitions: u32,
        log: Box<dyn StateLog>,
        clock: Arc<dyn Clock>,
    ) -> RateLimitProcessor {
        RateLimitProcessor {
            topics,
            limits: limits.per_partition(partitions),
            limiters: HashMap::new(),
            log,
            clock,
        }
    }
}

#[async_trait]
impl Processor for RateLimitProcessor {
    async fn reset_partition(&mut self, topic: &str, partition: i32) -> Result<(), ProcessError> {
        if topic != self.topics.enriched() {
            return Ok(());
        }
        let records = self.log.read(partition).await?;
        let mut limiter = Limiter::new(self.limits.clone());
        // A record's clock may lie at most as far ahead as a record's timestamp may.
        let latest_ms = self
            .clock
            .now_ms()
            .saturating_add(self.limits.max_clock_skew_ms.max(0));
        let mut unreadable = 0usize;
        for record in &records {
            let restored = serde_json::from_slice::<LimiterState>(record)
                .is_ok_and(|state| limiter.restore(state, latest_ms));
            if !restored {
                unreadable += 1;
            }
        }
        limiter.forget_full();
        if unreadable > 0 {
            warn!(
                partition,
                unreadable, "skipped unreadable limiter state records"
            );
        }
        info!(partition, records = records.len(), keys = ?limiter.keys(), "limiters restored");
        self.limiters.insert(partition, limiter);
        Ok(())
    }

    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let n: NotificationEnriched = decode(input.payload)?;
        let at = event_time(
            input.timestamp_ms,
            self.clock.now_ms(),
            self.limits.max_clock_skew_ms,
        );
        let limiter = self
            .limiters
            .entry(input.partition)
            .or_insert_with(|| Limiter::new(self.limits.clone()));
        let decision = limiter.decide(&n.tenant, &n.recipient_user_id, &n.category, n.priority, at);
        let state = limiter.state(&n.tenant, &n.recipient_user_id, &n.category);
        let state = Output {
            topic: self.topics.rate_limit_state(),
            key: format!("{}/{}/{}", n.tenant, n.recipient_user_id, n.category),
            payload: serde_json::to_vec(&state).map_err(|e| ProcessError::Fatal(e.to_string()))?,
            partition: Some(input.partition),
        };
        let (tenant, user) = (n.tenant.clone(), n.recipient_user_id.clone());
        let topics = &self.topics;
        let mut outputs = match route(n, decision, &self.limits, at) {
            Routed::Admit(a) => vec![output(topics.admitted(), &tenant, &user, &a)?],
            Routed::Defer(parked, result) => vec![
                output(topics.deferred(), &tenant, &user, &parked)?,
                output(topics.delivery_result(), &tenant, &user, &result)?,
            ],
            Routed::Drop(result) => {
                vec![output(topics.delivery_result(), &tenant, &user, &result)?]
            }
        };
        outputs.push(state);
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use herald_schemas::{Channel, ChannelContent, Priority, codec};
    use herald_store::ManualClock;

    use super::*;

    const T0: i64 = 1_700_000_000_000;

    /// A changelog in memory: what was "committed" per partition.
    #[derive(Clone, Default)]
    struct MemoryLog(Arc<Mutex<HashMap<i32, Vec<Vec<u8>>>>>);

    #[async_trait]
    impl StateLog for MemoryLog {
        async fn read(&self, partition: i32) -> Result<Vec<Vec<u8>>, ProcessError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&partition)
                .cloned()
                .unwrap_or_default())
        }
    }

    fn limits() -> LimitsConfig {
        LimitsConfig {
            per_recipient: QuotaConfig {
                limit: 2,
                window_seconds: 10,
            },
            per_tenant: QuotaConfig {
                limit: 5,
                window_seconds: 10,
            },
            bypass_categories: Vec::new(),
            ..LimitsConfig::default()
        }
    }

    fn notification(i: usize) -> Vec<u8> {
        let user = format!("u{}", i % 3);
        codec::encode(&NotificationEnriched {
            notification_id: format!("n{i}"),
            tenant: "acme".into(),
            recipient_user_id: user.clone(),
            category: "news".into(),
            priority: Priority::Normal,
            requested_at_ms: T0,
            deliveries: vec![ChannelContent {
                channel: Channel::InApp,
                address: user,
                title: "t".into(),
                body: "b".into(),
                action_url: None,
            }],
            deferrals: 0,
            defer_until_ms: None,
        })
        .unwrap()
    }

    fn processor(log: &MemoryLog) -> RateLimitProcessor {
        RateLimitProcessor::new(
            Topics::new("t"),
            &limits(),
            1,
            Box::new(log.clone()),
            Arc::new(ManualClock::at(T0 + 3_600_000)),
        )
    }

    /// Decides notifications `ids` on partition 0: admitted or not, and the state records.
    async fn decide(
        p: &mut RateLimitProcessor,
        ids: std::ops::Range<usize>,
    ) -> (Vec<bool>, Vec<Vec<u8>>) {
        let topics = Topics::new("t");
        let (enriched, admitted, state) = (
            topics.enriched(),
            topics.admitted(),
            topics.rate_limit_state(),
        );
        let mut decisions = Vec::new();
        let mut states = Vec::new();
        for i in ids {
            let payload = notification(i);
            let input = Input {
                topic: &enriched,
                partition: 0,
                offset: i64::try_from(i).unwrap(),
                key: None,
                payload: &payload,
                timestamp_ms: T0 + i64::try_from(i).unwrap() * 700,
                trace: None,
            };
            let outputs = p.process(&input).await.unwrap();
            decisions.push(outputs.iter().any(|o| o.topic == admitted));
            states.extend(
                outputs
                    .into_iter()
                    .filter(|o| o.topic == state && o.partition == Some(0))
                    .map(|o| o.payload),
            );
        }
        (decisions, states)
    }

    /// An aborted batch's decisions are forgotten by the reset that precedes its redo: the redo
    /// decides as a processor that never saw the aborted attempt.
    #[tokio::test]
    async fn a_reset_discards_what_an_aborted_batch_decided() {
        let uninterrupted = MemoryLog::default();
        let mut whole = processor(&uninterrupted);
        let (expected, _) = decide(&mut whole, 0..40).await;
        assert!(expected.contains(&true) && expected.contains(&false));

        let log = MemoryLog::default();
        let mut p = processor(&log);
        p.reset_partition(&Topics::new("t").enriched(), 0)
            .await
            .unwrap();
        let (first, committed) = decide(&mut p, 0..15).await;
        log.0.lock().unwrap().insert(0, committed);
        // Decided, then aborted: its state records never reach the log.
        let _ = decide(&mut p, 15..25).await;
        p.reset_partition(&Topics::new("t").enriched(), 0)
            .await
            .unwrap();
        let (redo, _) = decide(&mut p, 15..40).await;
        assert_eq!([first, redo].concat(), expected);

        // Without the reset the redo is decided against buckets the aborted attempt used.
        let mut stale = processor(&MemoryLog::default());
        let _ = decide(&mut stale, 0..25).await;
        let (redo, _) = decide(&mut stale, 15..40).await;
        assert_ne!(redo, expected[15..].to_vec());
    }

    /// Another input topic (none today) is not the limiter's: its reset reads nothing.
    #[tokio::test]
    async fn only_the_enriched_topic_is_restored() {
        let log = MemoryLog::default();
        log.0.lock().unwrap().insert(0, vec![b"not json".to_vec()]);
        let mut p = processor(&log);
        p.reset_partition("t.other", 0).await.unwrap();
        assert!(p.limiters.is_empty());
        // An unreadable state record is skipped, not fatal.
        p.reset_partition(&Topics::new("t").enriched(), 0)
            .await
            .unwrap();
        assert_eq!(p.limiters.len(), 1);
    }
}
