//! READ engagement events for analysts, written to `<prefix>.engagement` when entries are marked
//! read. The read state is stored first; an event the broker cannot take right now goes to the
//! store's outbox and is replayed later, so a Kafka outage neither fails `MarkRead` nor loses the
//! event. Event ids are stable per (notification, kind): a replay is a recognisable duplicate.

use std::sync::Arc;
use std::time::Duration;

use herald_runtime::KafkaConfig;
use herald_runtime::topics::Topics;
use herald_schemas::{Channel, Engagement, EngagementKind, ids};
use herald_store::{InboxEntryRecord, OutboxRecord, Store};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the outbox is retried.
const REPLAY_EVERY: Duration = Duration::from_secs(5);
/// Outbox records replayed per round.
const REPLAY_BATCH: usize = 500;

/// Writes engagement events, falling back to the store's outbox.
#[derive(Clone)]
pub struct EngagementSink {
    producer: FutureProducer,
    topic: String,
    store: Arc<dyn Store>,
    owner: String,
    ack_timeout: Duration,
}

impl EngagementSink {
    /// A sink producing to `kafka`'s engagement topic; `instance_id` names this process's
    /// outbox.
    pub fn new(
        kafka: &KafkaConfig,
        store: Arc<dyn Store>,
    ) -> Result<EngagementSink, rdkafka::error::KafkaError> {
        Ok(EngagementSink {
            producer: kafka.producer().create()?,
            topic: Topics::new(&kafka.topic_prefix).engagement(),
            store,
            owner: format!("query-engagement.{}", kafka.instance_id),
            ack_timeout: Duration::from_millis(kafka.message_timeout_ms + 1_000),
        })
    }

    /// Emits a READ event for each entry; what Kafka does not acknowledge is kept in the outbox.
    /// Fails only if neither Kafka nor the store took an event.
    pub async fn read(&self, entries: &[InboxEntryRecord]) -> Result<(), herald_store::StoreError> {
        let records: Vec<OutboxRecord> = entries.iter().filter_map(|e| self.record(e)).collect();
        let sends = records.iter().map(|r| self.send(r));
        let acked = futures::future::join_all(sends).await;
        for (record, ok) in records.iter().zip(acked) {
            if !ok {
                self.store.outbox_put(record).await?;
            }
        }
        Ok(())
    }

    fn record(&self, e: &InboxEntryRecord) -> Option<OutboxRecord> {
        let at_ms = e.read_at_ms?;
        let event = Engagement {
            event_id: ids::engagement_id(&e.notification_id, EngagementKind::Read),
            notification_id: e.notification_id.clone(),
            tenant: e.tenant.clone(),
            recipient_user_id: e.recipient_user_id.clone(),
            channel: Some(Channel::InApp),
            kind: EngagementKind::Read,
            at_ms,
        };
        let payload = match herald_schemas::codec::encode(&event) {
            Ok(p) => p,
            Err(err) => {
                warn!(%err, "cannot encode an engagement event; dropped");
                return None;
            }
        };
        Some(OutboxRecord {
            owner: self.owner.clone(),
            id: event.event_id,
            topic: self.topic.clone(),
            key: format!("{}/{}", e.tenant, e.recipient_user_id).into_bytes(),
            payload,
            headers: Vec::new(),
            created_at_ms: at_ms,
        })
    }

    /// Produces one record; true once Kafka acknowledged it.
    async fn send(&self, r: &OutboxRecord) -> bool {
        let record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.payload);
        match self.producer.send(record, self.ack_timeout).await {
            Ok(_) => true,
            Err((err, _)) => {
                warn!(%err, id = %r.id, "engagement event not acknowledged; kept in the outbox");
                false
            }
        }
    }

    /// Replays the outbox until `shutdown`.
    pub async fn replay(self, shutdown: CancellationToken) {
        loop {
            match self.store.outbox_pending(&self.owner, REPLAY_BATCH).await {
                Ok(pending) if !pending.is_empty() => {
                    let mut sent = 0;
                    for r in &pending {
                        if !self.send(r).await {
                            break;
                        }
                        if let Err(err) = self.store.outbox_remove(&r.owner, &r.id).await {
                            warn!(%err, "outbox: removing a replayed event failed");
                            break;
                        }
                        sent += 1;
                    }
                    info!(
                        sent,
                        pending = pending.len(),
                        "outbox: replayed engagement events"
                    );
                }
                Ok(_) => {}
                Err(err) => warn!(%err, "outbox: reading pending events failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REPLAY_EVERY) => {}
            }
        }
    }
}
