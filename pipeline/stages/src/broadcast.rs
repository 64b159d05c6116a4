//! The broadcast stage: `broadcasts` → `requested` (bulk lane), a chunk at a time. Each record
//! asks for the subscribers of a topic after a cursor; the stage writes one notification per
//! subscriber in the next chunk and, if the chunk was full, the record again with the cursor
//! advanced — in one transaction, so a crash redoes a whole chunk and each subscriber's
//! notification (its id derived from the broadcast's) is written once. A broadcast to a million
//! subscribers is then a chain of small transactions that other broadcasts interleave with.

use std::sync::Arc;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::{Lane, Topics};
use herald_schemas::{BroadcastRequested, NotificationRequested, ids};
use herald_store::Store;
use tracing::info;

use crate::wire::{decode, output};

/// Subscribers expanded per record (one transaction's worth).
pub const CHUNK: usize = 500;

/// What one chunk of a broadcast becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// One notification per subscriber of the chunk.
    pub requests: Vec<NotificationRequested>,
    /// The broadcast again, to expand the next chunk; `None` when this chunk was the last.
    pub next: Option<BroadcastRequested>,
}

/// Expands `b` to `subscribers` (the page after `b.after`, at most `chunk` of them, ascending).
/// A full page may have more after it; a short one is the end.
pub fn expand(b: &BroadcastRequested, subscribers: &[String], chunk: usize) -> Expansion {
    let requests = subscribers
        .iter()
        .map(|user| NotificationRequested {
            notification_id: ids::broadcast_notification_id(&b.broadcast_id, user),
            tenant: b.tenant.clone(),
            idempotency_key: None,
            recipient_user_id: user.clone(),
            category: b.category.clone(),
            priority: b.priority,
            template: b.template.clone(),
            inline: b.inline.clone(),
            channels: b.channels.clone(),
            requested_at_ms: b.requested_at_ms,
        })
        .collect();
    let next = match subscribers.last() {
        Some(last) if subscribers.len() >= chunk => Some(BroadcastRequested {
            after: Some(last.clone()),
            expanded: b.expanded + i64::try_from(subscribers.len()).unwrap_or(i64::MAX),
            ..b.clone()
        }),
        _ => None,
    };
    Expansion { requests, next }
}

/// Reads each chunk's subscribers from the store and runs [`expand`].
pub struct BroadcastProcessor {
    store: Arc<dyn Store>,
    topics: Topics,
    chunk: usize,
}

impl BroadcastProcessor {
    /// A processor reading subscribers from `store`, `chunk` per record.
    pub fn new(store: Arc<dyn Store>, topics: Topics, chunk: usize) -> BroadcastProcessor {
        BroadcastProcessor {
            store,
            topics,
            chunk: chunk.max(1),
        }
    }
}

#[async_trait]
impl Processor for BroadcastProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let b: BroadcastRequested = decode(input.payload)?;
        let subscribers = self
            .store
            .subscribers(&b.tenant, &b.topic, b.after.as_deref(), self.chunk)
            .await?;
        let expansion = expand(&b, &subscribers, self.chunk);
        let mut outputs = Vec::with_capacity(expansion.requests.len() + 1);
        let lane = self.topics.in_lane(Lane::Bulk).requested();
        for r in &expansion.requests {
            outputs.push(output(lane.clone(), &r.tenant, &r.recipient_user_id, r)?);
        }
        match &expansion.next {
            Some(next) => outputs.push(output(
                self.topics.broadcasts(),
                &next.tenant,
                &next.topic,
                next,
            )?),
            None => {
                let total = b.expanded + i64::try_from(subscribers.len()).unwrap_or(i64::MAX);
                info!(tenant = %b.tenant, topic = %b.topic, broadcast_id = %b.broadcast_id,
                      notifications = total, "broadcast expanded");
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use herald_schemas::{Channel, InlineContent, Priority};

    use super::*;

    fn broadcast(after: Option<&str>, expanded: i64) -> BroadcastRequested {
        BroadcastRequested {
            broadcast_id: "b1".into(),
            tenant: "acme".into(),
            topic: "releases".into(),
            category: "news".into(),
            priority: Priority::Low,
            template: None,
            inline: Some(InlineContent {
                title: "v2".into(),
                body: "is out".into(),
                action_url: None,
            }),
            channels: vec![Channel::InApp],
            requested_at_ms: 7,
            after: after.map(str::to_owned),
            expanded,
        }
    }

    fn users(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_full_chunk_writes_its_notifications_and_asks_for_the_next() {
        let e = expand(&broadcast(None, 0), &users(&["a", "b"]), 2);
        let to: Vec<_> = e
            .requests
            .iter()
            .map(|r| r.recipient_user_id.as_str())
            .collect();
        assert_eq!(to, ["a", "b"]);
        assert!(
            e.requests
                .iter()
                .all(|r| r.category == "news" && r.requested_at_ms == 7)
        );
        assert_eq!(e.next, Some(broadcast(Some("b"), 2)));
    }

    #[test]
    fn a_short_chunk_is_the_last() {
        let e = expand(&broadcast(Some("b"), 2), &users(&["c"]), 2);
        assert_eq!(e.requests.len(), 1);
        assert_eq!(e.next, None);
        let e = expand(&broadcast(Some("c"), 3), &[], 2);
        assert!(e.requests.is_empty() && e.next.is_none());
    }

    #[test]
    fn each_subscriber_gets_the_same_id_every_time_and_only_their_own() {
        let a = expand(&broadcast(None, 0), &users(&["a", "b"]), 5);
        let again = expand(&broadcast(None, 0), &users(&["a", "b"]), 5);
        assert_eq!(a, again);
        assert_ne!(a.requests[0].notification_id, a.requests[1].notification_id);
        let mut other = broadcast(None, 0);
        other.broadcast_id = "b2".into();
        let other = expand(&other, &users(&["a"]), 5);
        assert_ne!(
            other.requests[0].notification_id,
            a.requests[0].notification_id
        );
    }
}
