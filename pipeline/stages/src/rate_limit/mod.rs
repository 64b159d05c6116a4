//! The rate-limit stage: `enriched` → `admitted`; over a limit, either a `RATE_LIMITED` result
//! (drop) or a `DEFERRED` result plus the notification parked on `deferred` until the limit
//! allows it (defer), which the [`DeferredRelay`] puts back on `enriched`. Critical
//! notifications bypass the limits. Nothing is dropped silently.

mod limiter;
mod relay;
mod route;

use std::sync::Arc;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::NotificationEnriched;
use herald_store::Clock;

pub use limiter::{Decision, Limiter, LimitsConfig, OverLimit, QuotaConfig, event_time};
pub use relay::{DeferredRelay, wait_for};
pub use route::{Routed, admit, route};

use crate::wire::{decode, output};

/// The rate-limit stage's processor.
pub struct RateLimitProcessor {
    topics: Topics,
    limits: LimitsConfig,
    limiter: Limiter,
    clock: Arc<dyn Clock>,
}

impl RateLimitProcessor {
    /// A processor with `limits`, writing to `topics`, bounding record times by `clock`.
    pub fn new(topics: Topics, limits: LimitsConfig, clock: Arc<dyn Clock>) -> RateLimitProcessor {
        RateLimitProcessor {
            topics,
            limiter: Limiter::new(limits.clone()),
            limits,
            clock,
        }
    }
}

#[async_trait]
impl Processor for RateLimitProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let n: NotificationEnriched = decode(input.payload)?;
        let at = event_time(
            input.timestamp_ms,
            self.clock.now_ms(),
            self.limits.max_clock_skew_ms,
        );
        let decision =
            self.limiter
                .decide(&n.tenant, &n.recipient_user_id, &n.category, n.priority, at);
        let (tenant, user) = (n.tenant.clone(), n.recipient_user_id.clone());
        let topics = &self.topics;
        Ok(match route(n, decision, &self.limits, at) {
            Routed::Admit(a) => vec![output(topics.admitted(), &tenant, &user, &a)?],
            Routed::Defer(parked, result) => vec![
                output(topics.deferred(), &tenant, &user, &parked)?,
                output(topics.delivery_result(), &tenant, &user, &result)?,
            ],
            Routed::Drop(result) => {
                vec![output(topics.delivery_result(), &tenant, &user, &result)?]
            }
        })
    }
}
