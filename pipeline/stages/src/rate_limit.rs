//! The rate-limit stage: `enriched` → `admitted`.
//!
//! Not yet limiting: today every notification is admitted unchanged. Per-recipient and
//! per-tenant `governor` limits, the critical-category bypass and the rate-limited/deferred
//! outcomes are the stage runtime issue's work; the stage already runs as its own consumer group
//! on a topic keyed by recipient, so each recipient's limiter will live in one consumer.

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::{NotificationAdmitted, NotificationEnriched};

use crate::wire::{decode, output};

/// Admits an enriched notification (no limits are applied yet; see the module docs).
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
}

impl RateLimitProcessor {
    /// A processor writing to `topics`.
    pub fn new(topics: Topics) -> RateLimitProcessor {
        RateLimitProcessor { topics }
    }
}

#[async_trait]
impl Processor for RateLimitProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let enriched: NotificationEnriched = decode(input.payload)?;
        let admitted = admit(enriched);
        let out = output(
            self.topics.admitted(),
            &admitted.tenant,
            &admitted.recipient_user_id,
            &admitted,
        )?;
        Ok(vec![out])
    }
}
