//! The deliver stage: `dispatch.<channel>` → provider call → `delivery-result`.
//!
//! The delivery ledger keeps a provider from being called twice for the same delivery id: a
//! replayed dispatch whose outcome is already recorded re-emits that outcome. The one window left
//! is a crash after the provider accepted and before the ledger write; providers that take an
//! idempotency key get `delivery_id` to close it on their side.

mod logic;

use std::sync::Arc;

use async_trait::async_trait;
use herald_connectors::{Connector, Outcome};
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::Dispatch;
use herald_store::Store;

pub use logic::{ledger_entry, result};

use crate::wire::{decode, output};

/// Delivers dispatches of one channel through its connector.
pub struct DeliverProcessor {
    store: Arc<dyn Store>,
    connector: Arc<dyn Connector>,
    topics: Topics,
}

impl DeliverProcessor {
    /// A processor calling `connector`, with its ledger in `store`.
    pub fn new(store: Arc<dyn Store>, connector: Arc<dyn Connector>, topics: Topics) -> Self {
        DeliverProcessor {
            store,
            connector,
            topics,
        }
    }
}

#[async_trait]
impl Processor for DeliverProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let d: Dispatch = decode(input.payload)?;
        let retry = |e: herald_store::StoreError| ProcessError::Retry(e.to_string());
        let entry = match self.store.ledger_get(&d.delivery_id).await.map_err(retry)? {
            Some(entry) => entry,
            None => {
                let outcome = self.connector.send(&d).await;
                let Some(entry) = ledger_entry(&d, &outcome, input.timestamp_ms) else {
                    let Outcome::Retry(reason) = outcome else {
                        return Err(ProcessError::Fatal(
                            "no ledger entry for a final outcome".into(),
                        ));
                    };
                    return Err(ProcessError::Retry(reason));
                };
                self.store.ledger_put(&entry).await.map_err(retry)?;
                entry
            }
        };
        let r = result(&d, &entry);
        Ok(vec![output(
            self.topics.delivery_result(),
            &d.tenant,
            &d.recipient_user_id,
            &r,
        )?])
    }
}
