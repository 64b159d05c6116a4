//! Releasing notifications held in the store (quiet hours): every interval, the held records due
//! by the injected clock are produced to a topic and, once the broker acknowledged each, forgotten.
//!
//! A crash between the acknowledgement and the forgetting releases a record again; it carries
//! the same notification id, so the stages downstream (the delivery ledger) deliver it once.
//! Several releasers over one store release the same records as many times, harmlessly, so one
//! runs per store (the enrich stage's first instance in the chart).

use std::sync::Arc;
use std::time::Duration;

use herald_store::{Clock, HeldRecord, Store, StoreError};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{KafkaConfig, Result};

/// How many held records one round releases at most.
pub const BATCH: usize = 500;

/// How long one record's acknowledgement may take before the round gives up on it (it stays
/// held and is tried again).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Moves due held records from the store to a topic.
pub struct Releaser {
    store: Arc<dyn Store>,
    producer: FutureProducer,
    topic: String,
    clock: Arc<dyn Clock>,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Produced, acknowledged and forgotten.
    pub released: usize,
    /// Due but not acknowledged: still held, tried next round.
    pub kept: usize,
}

impl Releaser {
    /// A releaser producing to `topic` with `kafka`'s idempotent producer settings.
    pub fn new(
        kafka: &KafkaConfig,
        store: Arc<dyn Store>,
        topic: String,
        clock: Arc<dyn Clock>,
    ) -> Result<Releaser> {
        Ok(Releaser {
            store,
            producer: kafka.producer().create()?,
            topic,
            clock,
        })
    }

    /// Releases up to [`BATCH`] records due now.
    pub async fn release_due(&self) -> std::result::Result<Released, StoreError> {
        let due = self.store.held_due(self.clock.now_ms(), BATCH).await?;
        if due.is_empty() {
            return Ok(Released::default());
        }
        // The stages' key: tenant/recipient, so a recipient's notifications stay in order.
        let keys: Vec<String> = due
            .iter()
            .map(|h| format!("{}/{}", h.tenant, h.recipient_user_id))
            .collect();
        let sends = due.iter().zip(&keys).map(|(h, key)| {
            let record = FutureRecord::to(&self.topic)
                .key(key.as_bytes())
                .payload(&h.payload[..]);
            self.producer.send(record, ACK_TIMEOUT)
        });
        let acks = futures::future::join_all(sends).await;
        let mut acked: Vec<HeldRecord> = Vec::with_capacity(due.len());
        let mut kept = 0;
        for (h, ack) in due.into_iter().zip(acks) {
            match ack {
                Ok(_) => acked.push(h),
                Err((e, _)) => {
                    kept += 1;
                    warn!(notification_id = %h.notification_id, error = %e,
                          "releasing a held notification failed; it stays held");
                }
            }
        }
        self.store.forget_held(&acked).await?;
        Ok(Released {
            released: acked.len(),
            kept,
        })
    }

    /// Releases every `every` until `shutdown`; a full round goes on at once.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        info!(topic = %self.topic, ?every, "releasing held notifications when due");
        loop {
            let round = self.release_due().await;
            let full = match round {
                Ok(r) => {
                    if r.released > 0 {
                        info!(
                            released = r.released,
                            kept = r.kept,
                            "released held notifications"
                        );
                    }
                    r.released + r.kept >= BATCH && r.kept == 0
                }
                Err(e) => {
                    warn!(error = %e, "reading held notifications failed; trying again");
                    false
                }
            };
            if full && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
