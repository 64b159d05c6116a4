//! The rate-limit stage: `enriched` → `admitted`, or a `RATE_LIMITED` result on
//! `delivery-result` with the limit that was hit. Over-limit notifications are dropped and
//! recorded (never silently); critical ones bypass the limits.

mod limiter;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::{DeliveryState, NotificationAdmitted, NotificationEnriched};

pub use limiter::{Decision, Limiter, LimitsConfig, QuotaConfig};

use crate::wire::{decode, output};
use crate::{Subject, result_for};

/// An admitted notification carries the enriched one unchanged.
pub fn admit(n: NotificationEnriched) -> NotificationAdmitted {
    NotificationAdmitted {
        notification_id: n.notification_id,
        tenant: n.tenant,
        recipient_user_id: n.recipient_user_id,
        category: n.category,
        priority: n.priority,
        requested_at_ms: n.requested_at_ms,
        deliveries: n.deliveries,
    }
}

/// The rate-limit stage's processor.
pub struct RateLimitProcessor {
    topics: Topics,
    limiter: Limiter,
}

impl RateLimitProcessor {
    /// A processor with `limits`, writing to `topics`.
    pub fn new(topics: Topics, limits: LimitsConfig) -> RateLimitProcessor {
        RateLimitProcessor {
            topics,
            limiter: Limiter::new(limits),
        }
    }
}

#[async_trait]
impl Processor for RateLimitProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let n: NotificationEnriched = decode(input.payload)?;
        let decision = self.limiter.decide(
            &n.tenant,
            &n.recipient_user_id,
            &n.category,
            n.priority,
            input.timestamp_ms,
        );
        let (tenant, user) = (n.tenant.clone(), n.recipient_user_id.clone());
        match decision {
            Decision::Admit | Decision::Bypass => Ok(vec![output(
                self.topics.admitted(),
                &tenant,
                &user,
                &admit(n),
            )?]),
            Decision::Limited(reason) => {
                let subject = Subject {
                    notification_id: &n.notification_id,
                    tenant: &n.tenant,
                    recipient_user_id: &n.recipient_user_id,
                    category: &n.category,
                };
                let r = result_for(
                    subject,
                    None,
                    DeliveryState::RateLimited,
                    Some(reason),
                    input.timestamp_ms,
                );
                Ok(vec![output(
                    self.topics.delivery_result(),
                    &tenant,
                    &user,
                    &r,
                )?])
            }
        }
    }
}
