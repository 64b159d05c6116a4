//! The store writer: records notifications (from `requested`) and every state change (from
//! `delivery-result`) in the store. Both writes are upserts by deterministic id.

use std::sync::Arc;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::{Lane, Topics};
use herald_schemas::{DeliveryResult, DeliveryState, NotificationRequested, ids};
use herald_store::{DeliveryEventRecord, NotificationRecord, Store, Write};
use tracing::Instrument;

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
    requested_topics: Vec<String>,
}

impl StoreWriterProcessor {
    /// A processor writing to `store`.
    pub fn new(store: Arc<dyn Store>, topics: &Topics) -> StoreWriterProcessor {
        StoreWriterProcessor {
            store,
            requested_topics: Lane::ALL
                .map(|lane| topics.in_lane(lane).requested())
                .to_vec(),
        }
    }
}

impl StoreWriterProcessor {
    /// The store rows for one record.
    fn rows(&self, input: &Input<'_>) -> Result<Vec<Write>, ProcessError> {
        if self.requested_topics.iter().any(|t| t == input.topic) {
            let r: NotificationRequested = decode(input.payload)?;
            let (notification, accepted) = accepted_rows(&r);
            Ok(vec![
                Write::Notification(notification),
                Write::DeliveryEvent(accepted),
            ])
        } else {
            let r: DeliveryResult = decode(input.payload)?;
            Ok(vec![Write::DeliveryEvent(event_row(&r))])
        }
    }
}

#[async_trait]
impl Processor for StoreWriterProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        // Store errors convert by meaning: retry, dead-letter, or stop.
        let span = herald_telemetry::trace::child_of("store.write", "1", input.trace);
        self.store
            .write_many(&self.rows(input)?)
            .instrument(span)
            .await?;
        Ok(Vec::new())
    }

    /// The rows of every record up to the first undecodable one, in one store write.
    async fn process_batch(
        &mut self,
        inputs: &[Input<'_>],
    ) -> Vec<Result<Vec<Output>, ProcessError>> {
        let mut writes = Vec::new();
        let mut results = Vec::with_capacity(inputs.len());
        let mut poison = None;
        for input in inputs {
            match self.rows(input) {
                Ok(rows) => {
                    writes.extend(rows);
                    results.push(Ok(Vec::new()));
                }
                Err(e) => {
                    poison = Some(e);
                    break;
                }
            }
        }
        // One write for records of many notifications: its span joins the first one's trace.
        let span = herald_telemetry::trace::child_of(
            "store.write",
            &results.len().to_string(),
            inputs.first().and_then(|i| i.trace),
        );
        if !writes.is_empty()
            && let Err(e) = self.store.write_many(&writes).instrument(span).await
        {
            // Which record the store refused is unknown: the first goes alone (so its error
            // is its own), and the runner hands the others over again.
            tracing::debug!(error = %e, "a batch write failed; writing one record at a time");
            return match inputs.first() {
                Some(first) => vec![self.process(first).await],
                None => Vec::new(),
            };
        }
        results.extend(poison.map(Err));
        results
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use herald_runtime::runner::{Input, ProcessError, Processor};
    use herald_runtime::topics::Topics;
    use herald_schemas::codec::encode;
    use herald_schemas::{NotificationRequested, Priority};
    use herald_store::{Clock, Store, SystemClock};
    use herald_store_sqlite::SqliteStore;

    use super::StoreWriterProcessor;

    fn requested(id: &str) -> Vec<u8> {
        encode(&NotificationRequested {
            notification_id: id.into(),
            tenant: "t".into(),
            idempotency_key: None,
            recipient_user_id: "ann".into(),
            category: "news".into(),
            priority: Priority::Normal,
            template: None,
            inline: None,
            channels: Vec::new(),
            requested_at_ms: SystemClock.now_ms(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_batch_is_written_up_to_its_first_undecodable_record() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("h.db")).await.unwrap());
        let topics = Topics::new("t");
        let mut writer = StoreWriterProcessor::new(Arc::clone(&store), &topics);
        let topic = topics.requested();
        let payloads = [
            requested("n1"),
            requested("n2"),
            b"not avro".to_vec(),
            requested("n3"),
        ];
        let inputs: Vec<Input<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| Input {
                topic: &topic,
                partition: 0,
                offset: i as i64,
                key: None,
                payload,
                timestamp_ms: SystemClock.now_ms(),
                trace: None,
            })
            .collect();

        let results = writer.process_batch(&inputs).await;
        assert_eq!(results.len(), 3);
        assert!(results[..2].iter().all(Result::is_ok));
        assert!(matches!(results[2], Err(ProcessError::Poison(_))));
        for (id, written) in [("n1", true), ("n2", true), ("n3", false)] {
            let found = store.get_notification("t", id).await.unwrap();
            assert_eq!(found.is_some(), written, "{id}");
            if let Some((_, timeline)) = found {
                assert_eq!(timeline.len(), 1, "{id}: its ACCEPTED event");
            }
        }
    }
}
