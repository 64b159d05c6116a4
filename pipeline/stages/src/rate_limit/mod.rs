//! The rate-limit stage: `enriched` → `admitted`; over a limit, either a `RATE_LIMITED` result
//! (drop) or a `DEFERRED` result plus the notification parked on `deferred` until the limit
//! allows it (defer), which the [`DeferredRelay`] puts back on `enriched`. Critical
//! notifications bypass the limits. Nothing is dropped silently. The limiters' state goes to
//! `rate-limit-state` with each decision and is restored from it, so a replay decides the same.

mod limiter;
mod relay;
mod route;

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

/// How long restoring one partition's limiters may take before it is retried.
const RESTORE_WITHIN: Duration = Duration::from_secs(60);

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
        let mut unreadable = 0usize;
        for record in &records {
            match serde_json::from_slice::<LimiterState>(record) {
                Ok(state) => limiter.restore(state),
                Err(_) => unreadable += 1,
            }
        }
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
