//! The deliver stage: `dispatch.<channel>` → provider call → `delivery-result`.
//!
//! The delivery ledger keeps a provider from being called twice for the same delivery id: the
//! attempt is recorded before the call and its outcome after, and a replayed dispatch whose
//! outcome is recorded re-emits that outcome. The one window left is a crash after the provider
//! accepted and before the outcome was recorded: the replay finds the unfinished attempt, counts
//! it (`resends`) and calls again with the same `delivery_id`, which providers that take an
//! idempotency key use to drop the repeat; others may deliver twice in that window. Since a
//! channel calls its provider for up to [`CONCURRENT_RECIPIENTS`] recipients at once, a crash
//! can leave that many deliveries in the window.
//!
//! A batch of dispatches goes to an idempotent connector (the inbox) in one call, written in one
//! store transaction; any other connector is called for different recipients concurrently, each
//! recipient's dispatches in order.

mod logic;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use herald_connectors::{Connector, Outcome};
use herald_runtime::runner::{Input, Output, ProcessError, Processor, lanes};
use herald_runtime::topics::Topics;
use herald_schemas::Dispatch;
use herald_store::{LedgerBegin, LedgerEntry, Store};
use tracing::warn;

pub use logic::{ledger_entry, result};

use crate::wire::{decode, output};

/// How many recipients' dispatches a non-idempotent connector is called for at once (the keys
/// of a batch are tenant and recipient).
pub const CONCURRENT_RECIPIENTS: usize = 32;

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

impl DeliverProcessor {
    /// Records the outcome, retrying in place while the store is unavailable: failing here and
    /// reprocessing the record would call the provider again for a delivery it has already
    /// accepted. An error no retry can fix is returned at once, classified (a corrupt ledger
    /// dead-letters the dispatch rather than calling the provider again).
    async fn finish_with_retries(&self, entry: &LedgerEntry) -> Result<(), ProcessError> {
        let mut delay = std::time::Duration::from_millis(50);
        for _ in 0..6 {
            match self.store.ledger_finish(entry).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retriable() => {
                    warn!(error = %e, delivery_id = %entry.delivery_id, "recording the outcome failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ProcessError::Retry(format!(
            "could not record the outcome of delivery {}",
            entry.delivery_id
        )))
    }
}

/// The ledger entry for a final outcome; a temporary failure becomes a retry of the record.
fn final_entry(d: &Dispatch, outcome: Outcome, at_ms: i64) -> Result<LedgerEntry, ProcessError> {
    match ledger_entry(d, &outcome, at_ms) {
        Some(entry) => Ok(entry),
        None => match outcome {
            Outcome::Retry(reason) => Err(ProcessError::Retry(reason)),
            _ => Err(ProcessError::Fatal(
                "no ledger entry for a final outcome".into(),
            )),
        },
    }
}

impl DeliverProcessor {
    /// Delivers one dispatch: its result record.
    async fn deliver(&self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let d: Dispatch = decode(input.payload)?;
        let entry = if self.connector.idempotent() {
            // A repeat is harmless: no ledger round trips.
            let outcome = self.connector.send(&d).await;
            final_entry(&d, outcome, input.timestamp_ms)?
        } else {
            // Store errors convert by meaning: retry, dead-letter, or stop.
            let begun = self
                .store
                .ledger_begin(&d.delivery_id, input.timestamp_ms)
                .await?;
            match begun {
                LedgerBegin::Done(entry) => entry,
                LedgerBegin::Fresh | LedgerBegin::Unfinished => {
                    if begun == LedgerBegin::Unfinished {
                        warn!(delivery_id = %d.delivery_id, "resending a delivery whose earlier attempt crashed inside the provider window");
                    }
                    let outcome = self.connector.send(&d).await;
                    if let Outcome::Retry(reason) = &outcome {
                        self.store.ledger_abandon(&d.delivery_id).await?;
                        return Err(ProcessError::Retry(reason.clone()));
                    }
                    let entry = final_entry(&d, outcome, input.timestamp_ms)?;
                    self.finish_with_retries(&entry).await?;
                    entry
                }
            }
        };
        self.emitted(&d, &entry)
    }

    /// The result record of `d`, delivered as `entry` says.
    fn emitted(&self, d: &Dispatch, entry: &LedgerEntry) -> Result<Vec<Output>, ProcessError> {
        let r = result(d, entry);
        Ok(vec![output(
            self.topics.delivery_result(),
            &d.tenant,
            &d.recipient_user_id,
            &r,
        )?])
    }

    /// Through an idempotent connector, every dispatch up to the first undecodable one in one
    /// call ([`Connector::send_many`]; the inbox writes them in one store transaction).
    async fn deliver_together(
        &self,
        inputs: &[Input<'_>],
    ) -> Vec<Result<Vec<Output>, ProcessError>> {
        let mut dispatches = Vec::with_capacity(inputs.len());
        let mut poison = None;
        for input in inputs {
            match decode::<Dispatch>(input.payload) {
                Ok(d) => dispatches.push(d),
                Err(e) => {
                    poison = Some(e);
                    break;
                }
            }
        }
        let outcomes = self.connector.send_many(&dispatches).await;
        if outcomes.len() != dispatches.len() {
            return vec![Err(ProcessError::Fatal(format!(
                "the connector returned {} outcomes for {} dispatches",
                outcomes.len(),
                dispatches.len()
            )))];
        }
        let mut results = Vec::with_capacity(inputs.len());
        for ((d, outcome), input) in dispatches.iter().zip(outcomes).zip(inputs) {
            let result = final_entry(d, outcome, input.timestamp_ms)
                .and_then(|entry| self.emitted(d, &entry));
            let failed = result.is_err();
            results.push(result);
            if failed {
                return results;
            }
        }
        results.extend(poison.map(Err));
        results
    }
}

#[async_trait]
impl Processor for DeliverProcessor {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        self.deliver(input).await
    }

    /// An idempotent connector gets the batch at once; any other gets the dispatches of up to
    /// [`CONCURRENT_RECIPIENTS`] recipients at a time, each recipient's in order, so one slow
    /// provider call does not hold up the calls for other recipients behind it.
    async fn process_batch(
        &mut self,
        inputs: &[Input<'_>],
    ) -> Vec<Result<Vec<Output>, ProcessError>> {
        if self.connector.idempotent() {
            return self.deliver_together(inputs).await;
        }
        let keys: Vec<Option<&[u8]>> = inputs.iter().map(|i| i.key).collect();
        let this = &*self;
        lanes::by_key(&keys, CONCURRENT_RECIPIENTS, |i| this.deliver(&inputs[i])).await
    }
}
