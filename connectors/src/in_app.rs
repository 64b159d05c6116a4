//! The in-app channel: the "provider" is the user's inbox in Herald's own store.

use std::sync::Arc;

use async_trait::async_trait;
use herald_schemas::Dispatch;
use herald_store::{Clock, InboxEntryRecord, NotificationRecord, Store, SystemClock, Write};

use crate::{Connector, Outcome};

/// Delivers by upserting an inbox entry, with its notification's record (both idempotent by
/// notification id).
pub struct InAppConnector {
    store: Arc<dyn Store>,
}

impl InAppConnector {
    /// A connector writing to `store`.
    pub fn new(store: Arc<dyn Store>) -> InAppConnector {
        InAppConnector { store }
    }
}

/// The notification record of `d`, as the store writer writes it from `requested` (the same
/// upsert): written with the inbox entry, so whatever an app reads from its inbox is known to
/// `GetNotification` and `RecordOpened` at once, however far behind the store writer is.
fn notification(d: &Dispatch) -> NotificationRecord {
    NotificationRecord {
        tenant: d.tenant.clone(),
        notification_id: d.notification_id.clone(),
        recipient_user_id: d.recipient_user_id.clone(),
        category: d.category.clone(),
        priority: d.priority,
        created_at_ms: d.requested_at_ms,
    }
}

/// The inbox entry delivering `d`.
fn entry(d: &Dispatch) -> InboxEntryRecord {
    InboxEntryRecord {
        tenant: d.tenant.clone(),
        recipient_user_id: d.recipient_user_id.clone(),
        notification_id: d.notification_id.clone(),
        category: d.category.clone(),
        title: d.title.clone(),
        body: d.body.clone(),
        action_url: d.action_url.clone(),
        created_at_ms: d.requested_at_ms,
        // WatchInbox pushes in this order; a replay keeps the first entry and its time.
        delivered_at_ms: SystemClock.now_ms(),
        read_at_ms: None,
    }
}

/// What a store write's result means for the dispatches it delivered.
fn outcome(written: herald_store::Result<()>) -> Outcome {
    match written {
        Ok(()) => Outcome::Delivered {
            provider_message_id: None,
        },
        // A store that will answer again: retry; anything else will not pass by waiting.
        Err(e) if e.is_retriable() => Outcome::retry(format!("inbox write failed: {e}")),
        Err(e) => Outcome::Failed(format!("inbox write failed: {e}")),
    }
}

#[async_trait]
impl Connector for InAppConnector {
    async fn send(&self, d: &Dispatch) -> Outcome {
        let writes = [
            Write::Notification(notification(d)),
            Write::InboxEntry(entry(d)),
        ];
        outcome(self.store.write_many(&writes).await)
    }

    /// One store write for all of them; if it fails, one at a time, so each outcome is its own.
    async fn send_many(&self, dispatches: &[Dispatch]) -> Vec<Outcome> {
        let writes: Vec<Write> = dispatches
            .iter()
            .flat_map(|d| {
                [
                    Write::Notification(notification(d)),
                    Write::InboxEntry(entry(d)),
                ]
            })
            .collect();
        if self.store.write_many(&writes).await.is_ok() {
            return dispatches.iter().map(|_| outcome(Ok(()))).collect();
        }
        crate::send_each(self, dispatches).await
    }

    /// The inbox upsert is keyed by notification id: a repeat changes nothing.
    fn idempotent(&self) -> bool {
        true
    }
}
