//! The store writer: records notifications (from `requested`) and every state change (from
//! `delivery-result`) in the store. Both writes are upserts by deterministic id.

use std::sync::Arc;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::{DeliveryResult, DeliveryState, NotificationRequested, ids};
use herald_store::{DeliveryEventRecord, NotificationRecord, Store};

use crate::wire::decode;

/// The store rows for a requested notification: the notification and its `ACCEPTED` event.
pub fn accepted_rows(r: &NotificationRequested) -> (NotificationRecord, DeliveryEventRecord) {
    (
        NotificationRecord {
            tenant: r.tenant.clone(),
            notification_id: r.notification_id.clone(),
            recipient_user_id: r.recipient_user_id.clone(),
            category: r.category.clone(),
            priority: r.priority,
            created_at_ms: r.requested_at_ms,
        },
        DeliveryEventRecord {
            tenant: r.tenant.clone(),
            notification_id: r.notification_id.clone(),
            result_id: ids::result_id(&r.notification_id, None, 1, DeliveryState::Accepted),
            recipient_user_id: r.recipient_user_id.clone(),
            category: r.category.clone(),
            channel: None,
            state: DeliveryState::Accepted,
            reason: None,
            at_ms: r.requested_at_ms,
        },
    )
}

/// The timeline row for a result.
pub fn event_row(r: &DeliveryResult) -> DeliveryEventRecord {
    DeliveryEventRecord {
        tenant: r.tenant.clone(),
        notification_id: r.notification_id.clone(),
        result_id: r.result_id.clone(),
        recipient_user_id: r.recipient_user_id.clone(),
        category: r.category.clone(),
        channel: r.channel,
        state: r.state,
        reason: r.reason.clone(),
        at_ms: r.at_ms,
    }
}

/// The store writer's processor; it produces nothing.
pub struct StoreWriterProcessor {
    store: Arc<dyn Store>,
    requested_topic: String,
}

impl StoreWriterProcessor {
    /// A processor writing to `store`.
    pub fn new(store: Arc<dyn Store>, topics: &Topics) -> StoreWriterProcessor {
        StoreWriterProcessor {
            store,
            requested_topic: topics.requested(),
        }
    }
}

#[async_trait]
impl Processor for StoreWriterProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        // Store errors convert by meaning: retry, dead-letter, or stop.
        if input.topic == self.requested_topic {
            let r: NotificationRequested = decode(input.payload)?;
            let (notification, accepted) = accepted_rows(&r);
            self.store.upsert_notification(&notification).await?;
            self.store.record_delivery_event(&accepted).await?;
        } else {
            let r: DeliveryResult = decode(input.payload)?;
            self.store.record_delivery_event(&event_row(&r)).await?;
        }
        Ok(Vec::new())
    }
}
