//! Deliver, the pure part: turn a provider outcome into a ledger entry and a result.

use herald_connectors::Outcome;
use herald_schemas::{DeliveryResult, DeliveryState, Dispatch};
use herald_store::LedgerEntry;

use crate::{Subject, attempt_result};

/// The ledger entry to record for an outcome; `None` for a retry (nothing final happened).
pub fn ledger_entry(d: &Dispatch, outcome: &Outcome, now_ms: i64) -> Option<LedgerEntry> {
    let (state, reason, provider_message_id) = match outcome {
        Outcome::Delivered {
            provider_message_id,
        } => (DeliveryState::Delivered, None, provider_message_id.clone()),
        Outcome::Failed(r) => (DeliveryState::Failed, Some(r.clone()), None),
        Outcome::InvalidToken(r) => (DeliveryState::InvalidToken, Some(r.clone()), None),
        Outcome::Retry { .. } => return None,
    };
    Some(LedgerEntry {
        delivery_id: d.delivery_id.clone(),
        state,
        reason,
        provider_message_id,
        at_ms: now_ms,
    })
}

/// The result event for a recorded delivery. Built from the ledger, so a redelivered dispatch
/// re-emits exactly the record the first attempt emitted.
pub fn result(d: &Dispatch, entry: &LedgerEntry) -> DeliveryResult {
    let subject = Subject {
        notification_id: &d.notification_id,
        tenant: &d.tenant,
        recipient_user_id: &d.recipient_user_id,
        category: &d.category,
    };
    DeliveryResult {
        provider_message_id: entry.provider_message_id.clone(),
        ..attempt_result(
            subject,
            Some(d.channel),
            d.attempt,
            entry.state,
            entry.reason.clone(),
            entry.at_ms,
        )
    }
}
