//! Engagement events for analysts, written to `<prefix>.engagement` (and, through the same
//! outbox, the management API's changes to `<prefix>.changes`): READ when entries are marked
//! read, OPENED from `RecordOpened`, CLICKED from the click redirect ([`crate::clicks`]). The read state is stored first; an event the broker cannot take right now waits in the
//! store's outbox ([`herald_runtime::outbox`]) and is replayed later, so a Kafka outage neither
//! fails `MarkRead` nor loses the event. Event ids are stable per (notification, kind): a replay
//! is a recognisable duplicate.

use std::sync::Arc;
use std::time::Duration;

use herald_runtime::KafkaConfig;
use herald_runtime::outbox::{Outbox, OutboxError};
use herald_runtime::topics::Topics;
use herald_schemas::{Change, Channel, Engagement, EngagementKind, ids};
use herald_store::{InboxEntryRecord, OutboxRecord, Store};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long `MarkRead` waits for Kafka before keeping the events in the outbox instead.
const WAIT_FOR_KAFKA: Duration = Duration::from_secs(2);

/// One user's reaction to emit.
#[derive(Debug, Clone, Copy)]
pub struct Engaged<'a> {
    /// What they did.
    pub kind: EngagementKind,
    /// To which notification.
    pub notification_id: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its recipient.
    pub recipient_user_id: &'a str,
    /// On which channel, if known.
    pub channel: Option<Channel>,
    /// When (ms since the epoch).
    pub at_ms: i64,
}

/// Writes engagement events through an outbox. Cheap to clone.
#[derive(Clone)]
pub struct EngagementSink {
    outbox: Outbox,
    topic: String,
    changes_topic: String,
}

/// Publishes the management API's changes ([`herald_management::Changes`]) through the
/// engagement sink's outbox: produced, or kept and replayed.
pub struct ChangeSink {
    outbox: Outbox,
    topic: String,
}

#[tonic::async_trait]
impl herald_management::Changes for ChangeSink {
    async fn publish(&self, change: Change) -> Result<(), String> {
        let payload = herald_schemas::codec::encode(&change).map_err(|e| e.to_string())?;
        let record = OutboxRecord {
            owner: String::new(),
            id: format!("{}@{}", change.key(), change.at_ms),
            topic: self.topic.clone(),
            key: change.key().into_bytes(),
            payload,
            headers: Vec::new(),
            created_at_ms: change.at_ms,
        };
        self.outbox
            .send_or_store(record)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl EngagementSink {
    /// A sink producing to `kafka`'s engagement topic; its outbox is named after the instance.
    pub fn new(
        kafka: &KafkaConfig,
        store: Arc<dyn Store>,
    ) -> Result<EngagementSink, rdkafka::error::KafkaError> {
        let outbox = Outbox::new(
            &kafka.producer(),
            store,
            format!("query-engagement.{}", kafka.instance_id),
            // Read marks are stored before their events: never refused for a full outbox.
            kafka.outbox_times(WAIT_FOR_KAFKA, 0),
        )?;
        let topics = Topics::new(&kafka.topic_prefix);
        Ok(EngagementSink {
            outbox,
            topic: topics.engagement(),
            changes_topic: topics.changes(),
        })
    }

    /// Emits a READ event for each entry: produced, or kept for replay (also when the producer
    /// is overloaded: the read marks are stored already, so their events must not be lost).
    pub async fn read(&self, entries: &[InboxEntryRecord]) -> Result<(), OutboxError> {
        let sends = entries
            .iter()
            .filter_map(|e| self.record(e))
            .map(|r| self.outbox.send_or_store(r));
        for sent in futures::future::join_all(sends).await {
            sent?;
        }
        Ok(())
    }

    /// Emits one OPENED or CLICKED event (produced, or kept for replay). Its id is stable per
    /// notification and kind: a second click is a recognisable duplicate.
    pub async fn emit(&self, event: Engaged<'_>) -> Result<(), OutboxError> {
        let record = self.encode(Engagement {
            event_id: ids::engagement_id(event.notification_id, event.kind),
            notification_id: event.notification_id.to_owned(),
            tenant: event.tenant.to_owned(),
            recipient_user_id: event.recipient_user_id.to_owned(),
            channel: event.channel,
            kind: event.kind,
            at_ms: event.at_ms,
        });
        match record {
            Some(r) => self.outbox.send_or_store(r).await.map(|_| ()),
            None => Ok(()),
        }
    }

    fn record(&self, e: &InboxEntryRecord) -> Option<OutboxRecord> {
        let at_ms = e.read_at_ms?;
        self.encode(Engagement {
            event_id: ids::engagement_id(&e.notification_id, EngagementKind::Read),
            notification_id: e.notification_id.clone(),
            tenant: e.tenant.clone(),
            recipient_user_id: e.recipient_user_id.clone(),
            channel: Some(Channel::InApp),
            kind: EngagementKind::Read,
            at_ms,
        })
    }

    fn encode(&self, event: Engagement) -> Option<OutboxRecord> {
        let payload = match herald_schemas::codec::encode(&event) {
            Ok(p) => p,
            Err(err) => {
                warn!(%err, "cannot encode an engagement event; dropped");
                return None;
            }
        };
        Some(OutboxRecord {
            owner: String::new(),
            id: event.event_id.clone(),
            topic: self.topic.clone(),
            key: format!("{}/{}", event.tenant, event.recipient_user_id).into_bytes(),
            payload,
            headers: Vec::new(),
            created_at_ms: event.at_ms,
        })
    }

    /// The management API's announcements of what it changed, through the same outbox, to
    /// `<p>.changes`.
    pub fn changes(&self) -> ChangeSink {
        ChangeSink {
            outbox: self.outbox.clone(),
            topic: self.changes_topic.clone(),
        }
    }

    /// A token cancelled with `shutdown` or when the producer fails fatally.
    pub fn stop_on_failure(&self, shutdown: &CancellationToken) -> CancellationToken {
        self.outbox.stop_on_failure(shutdown)
    }

    /// Why the producer failed fatally, once it has.
    pub fn failure(&self) -> Option<String> {
        self.outbox.failure()
    }

    /// Replays the outbox until `shutdown`.
    pub async fn replay(self, shutdown: CancellationToken) {
        self.outbox.replay(shutdown).await;
    }
}
