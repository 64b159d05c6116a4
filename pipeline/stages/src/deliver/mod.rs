//! The deliver stage: `dispatch.<channel>` and `retry.<channel>` → provider call →
//! `delivery-result` (and `retry.<channel>` or `dead-letter` for a delivery that failed for now).
//!
//! Each attempt follows the ledger protocol of [`attempt`], a pure state machine: the delivery
//! ledger keeps a provider from being called twice for the same delivery id — the attempt is
//! recorded before the call and its outcome after, and a replayed dispatch whose outcome is
//! recorded re-emits that outcome. The one window left is a crash after the provider accepted
//! and before the outcome was recorded: the replay finds the unfinished attempt, counts it
//! (`resends`) and calls again with the same `delivery_id`, which providers that take an
//! idempotency key use to drop the repeat; others may deliver twice in that window. Since a
//! channel calls its provider for up to [`CONCURRENT_RECIPIENTS`] recipients at once, a crash
//! can leave that many deliveries in the window.
//!
//! An address the provider refused (`INVALID_TOKEN`) is removed from the recipient's contacts,
//! so the next notification does not try it; one registered since is kept.
//!
//! A delivery that fails for now never holds its partition: [`retry`] plans the next attempt,
//! which goes to a retry topic of its channel with a not-before time (and a `DEFERRED`
//! result), and the stage reads it back when due — the runner sets a retry partition aside
//! until its head is due. The retry topics are tiered by wait (`retry.<channel>.30s`, `.5m`,
//! `.1h`), so a retry waits behind others of its own tier only. When the channel's budget is spent, the dispatch goes to the dead-letter topic with
//! the last error and the channel's result is `FAILED` with that reason.
//!
//! A batch of dispatches goes to an idempotent connector (the inbox) in one call, written in one
//! store transaction; any other connector is called for different recipients concurrently, each
//! recipient's dispatches in order.

pub mod attempt;
mod logic;
pub mod retry;
#[cfg(test)]
mod tests;

/// A dispatch for the deliver stage's tests.
#[cfg(test)]
pub(crate) fn test_dispatch(channel: herald_schemas::Channel, attempt: i32) -> Dispatch {
    Dispatch {
        delivery_id: herald_schemas::ids::delivery_id("n1", channel, attempt),
        notification_id: "n1".into(),
        attempt,
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "news".into(),
        priority: herald_schemas::Priority::Normal,
        channel,
        address: "+15550100".into(),
        title: "Hi".into(),
        body: "there".into(),
        action_url: None,
        requested_at_ms: 1,
        not_before_ms: None,
        last_error: None,
    }
}

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_connectors::Connector;
use herald_runtime::runner::{self, Failed, Input, Output, ProcessError, Processor, lanes};
use herald_runtime::topics::Topics;
use herald_schemas::{Change, ChangeKind, DeliveryState, Dispatch};
use herald_store::{Clock, Contact, LedgerEntry, Store};
use tracing::{Instrument, info, warn};

use attempt::{Attempt, Event, Verdict};
pub use logic::{ledger_entry, result};
use retry::{Plan, RetryPolicy};

use crate::rate_limit::wait_for;
use crate::wire::{change_output, decode, output};
use crate::{Subject, attempt_result};

/// How many recipients' dispatches a non-idempotent connector is called for at once (the keys
/// of a batch are tenant and recipient).
pub const CONCURRENT_RECIPIENTS: usize = 32;

/// The stage's name in dead letters.
const STAGE: &str = "deliver";

/// Delivers dispatches of one channel through its connector.
pub struct DeliverProcessor {
    store: Arc<dyn Store>,
    connector: Arc<dyn Connector>,
    topics: Topics,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
}

impl DeliverProcessor {
    /// A processor calling `connector`, with its ledger in `store`, retrying by `policy`, and
    /// telling by `clock` whether a retry is due.
    pub fn new(
        store: Arc<dyn Store>,
        connector: Arc<dyn Connector>,
        topics: Topics,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        DeliverProcessor {
            store,
            connector,
            topics,
            policy,
            clock,
        }
    }

    /// Records the outcome, retrying in place while the store is unavailable: failing here and
    /// reprocessing the record would call the provider again for a delivery it has already
    /// accepted. An error no retry can fix is returned at once, classified (a corrupt ledger
    /// dead-letters the dispatch rather than calling the provider again).
    async fn finish_with_retries(&self, entry: &LedgerEntry) -> Result<(), ProcessError> {
        let mut delay = Duration::from_millis(50);
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

    /// Removes the address of `d`, which its provider refused, from the recipient's contacts.
    async fn disable(&self, d: &Dispatch) -> Result<(), ProcessError> {
        let contact = Contact {
            channel: d.channel,
            address: d.address.clone(),
        };
        let removed = self
            .store
            .disable_contact(&d.tenant, &d.recipient_user_id, &contact)
            .await?;
        if removed {
            info!(tenant = %d.tenant, channel = %d.channel.as_str(), delivery_id = %d.delivery_id, "removed a contact its provider refused");
        }
        Ok(())
    }

    /// The dispatch in `input`, if it is due. One due later than any retry is planned (a
    /// corrupt record, a wrong clock) is poison: it must not hold its partition.
    fn due(&self, input: &Input<'_>) -> Result<Dispatch, ProcessError> {
        let d: Dispatch = decode(input.payload)?;
        let wait = wait_for(d.not_before_ms, self.clock.now_ms());
        if wait > self.policy.longest_wait() {
            return Err(ProcessError::Poison(format!(
                "not before {:?} ms, {wait:?} from now: later than any retry waits ({:?})",
                d.not_before_ms,
                self.policy.longest_wait()
            )));
        }
        if !wait.is_zero() {
            return Err(ProcessError::NotDue(wait));
        }
        Ok(d)
    }

    /// Delivers one dispatch, driving its attempt through the ledger protocol.
    async fn deliver(&self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let d = self.due(input)?;
        let mut state = Attempt::start(!self.connector.idempotent());
        let verdict = loop {
            // Store errors convert by meaning: retry in place, dead-letter, or stop.
            let event = match &state {
                Attempt::Done(verdict) => break verdict.clone(),
                Attempt::Begin => Event::Begun(
                    self.store
                        .ledger_begin(&d.delivery_id, input.timestamp_ms)
                        .await?,
                ),
                Attempt::Calling { resend, .. } => {
                    if *resend {
                        warn!(delivery_id = %d.delivery_id, "resending a delivery whose earlier attempt crashed inside the provider window");
                    }
                    let call = herald_telemetry::trace::child_of(
                        "provider.send",
                        d.channel.as_str(),
                        input.trace,
                    );
                    Event::Called(self.connector.send(&d).instrument(call).await)
                }
                Attempt::Finishing(entry) => {
                    self.finish_with_retries(entry).await?;
                    Event::Finished
                }
                Attempt::Abandoning(_) => {
                    self.store.ledger_abandon(&d.delivery_id).await?;
                    Event::Abandoned
                }
                Attempt::Disabling(_) => {
                    self.disable(&d).await?;
                    Event::Disabled
                }
            };
            state = state
                .step(event, &d, input.timestamp_ms)
                .map_err(ProcessError::Fatal)?;
        };
        self.emitted(&d, verdict, input)
    }

    /// Records the time from the notification's acceptance to this final outcome.
    fn observe(&self, d: &Dispatch, state: DeliveryState) {
        let took_ms = self.clock.now_ms().saturating_sub(d.requested_at_ms).max(0);
        metrics::histogram!(
            herald_telemetry::metrics::DELIVERY_SECONDS,
            "channel" => d.channel.as_str(),
            "outcome" => state.as_str().to_ascii_lowercase(),
        )
        .record(took_ms as f64 / 1_000.0);
    }

    /// What an attempt that ended as `verdict` writes: its result; for a failure for now, also
    /// the next attempt — or, with the budget spent, the dead letter.
    fn emitted(
        &self,
        d: &Dispatch,
        verdict: Verdict,
        input: &Input<'_>,
    ) -> Result<Vec<Output>, ProcessError> {
        let results = self.topics.delivery_result();
        let result_of = |state, reason| {
            let subject = Subject {
                notification_id: &d.notification_id,
                tenant: &d.tenant,
                recipient_user_id: &d.recipient_user_id,
                category: &d.category,
            };
            attempt_result(
                subject,
                Some(d.channel),
                d.attempt,
                state,
                Some(reason),
                input.timestamp_ms,
            )
        };
        let later = match verdict {
            Verdict::Report(entry) => {
                self.observe(d, entry.state);
                let r = result(d, &entry);
                let mut out = vec![output(results, &d.tenant, &d.recipient_user_id, &r)?];
                if entry.state == DeliveryState::InvalidToken {
                    // The refused address was removed: enrich caches must drop the recipient.
                    let change = Change {
                        kind: ChangeKind::Recipient,
                        tenant: d.tenant.clone(),
                        id: d.recipient_user_id.clone(),
                        at_ms: input.timestamp_ms,
                    };
                    out.push(change_output(self.topics.changes(), &change)?);
                }
                return Ok(out);
            }
            Verdict::Later(later) => later,
        };
        match self.policy.plan(d, &later, input.timestamp_ms) {
            Plan::Again(next) => {
                let reason = format!(
                    "attempt {} failed: {}; attempt {} not before {} ms",
                    d.attempt,
                    later.reason,
                    next.attempt,
                    next.not_before_ms.unwrap_or_default()
                );
                let deferred = result_of(DeliveryState::Deferred, reason);
                let wait = wait_for(next.not_before_ms, input.timestamp_ms);
                Ok(vec![
                    output(
                        self.topics.retry(d.channel, wait),
                        &next.tenant,
                        &next.recipient_user_id,
                        &*next,
                    )?,
                    output(results, &d.tenant, &d.recipient_user_id, &deferred)?,
                ])
            }
            Plan::GiveUp(reason) => {
                warn!(delivery_id = %d.delivery_id, %reason, "giving the delivery up");
                let failed = Failed {
                    stage: STAGE,
                    error: &reason,
                    attempts: u32::try_from(d.attempt).unwrap_or(0),
                };
                let letter =
                    runner::dead_letter(&self.topics.dead_letter(), input, Vec::new(), &failed)
                        .map_err(|e| ProcessError::Fatal(format!("encoding a dead letter: {e}")))?;
                let failed = result_of(DeliveryState::Failed, reason);
                self.observe(d, DeliveryState::Failed);
                Ok(vec![
                    letter,
                    output(results, &d.tenant, &d.recipient_user_id, &failed)?,
                ])
            }
        }
    }

    /// Through an idempotent connector, every due dispatch up to the first undecodable or
    /// not-yet-due one in one call ([`Connector::send_many`]; the inbox writes them in one store
    /// transaction).
    async fn deliver_together(
        &self,
        inputs: &[Input<'_>],
    ) -> Vec<Result<Vec<Output>, ProcessError>> {
        let mut dispatches = Vec::with_capacity(inputs.len());
        let mut stopped = None;
        for input in inputs {
            match self.due(input) {
                Ok(d) => dispatches.push(d),
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            }
        }
        let call = herald_telemetry::trace::child_of(
            "provider.send_many",
            dispatches.first().map_or("", |d| d.channel.as_str()),
            inputs.first().and_then(|i| i.trace),
        );
        let outcomes = self.connector.send_many(&dispatches).instrument(call).await;
        if outcomes.len() != dispatches.len() {
            return vec![Err(ProcessError::Fatal(format!(
                "the connector returned {} outcomes for {} dispatches",
                outcomes.len(),
                dispatches.len()
            )))];
        }
        let mut results = Vec::with_capacity(inputs.len());
        for ((d, outcome), input) in dispatches.iter().zip(outcomes).zip(inputs) {
            let result = Attempt::start(false)
                .step(Event::Called(outcome), d, input.timestamp_ms)
                .map_err(ProcessError::Fatal);
            let result = match result {
                Ok(Attempt::Done(verdict)) => self.emitted(d, verdict, input),
                Ok(Attempt::Disabling(entry)) => match self.disable(d).await {
                    Ok(()) => self.emitted(d, Verdict::Report(entry), input),
                    Err(e) => Err(e),
                },
                Ok(other) => Err(ProcessError::Fatal(format!(
                    "an attempt without a ledger ended in {other:?}"
                ))),
                Err(e) => Err(e),
            };
            let failed = result.is_err();
            results.push(result);
            if failed {
                return results;
            }
        }
        results.extend(stopped.map(Err));
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
