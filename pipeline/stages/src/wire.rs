//! Decoding inputs and encoding outputs, with the runner's error classes.

use herald_runtime::runner::{Output, ProcessError};
use herald_schemas::codec::{self, Event};
use herald_schemas::{Change, Channel, DeliveryResult, DeliveryState, ids};

/// Decodes an input record; an undecodable record is poison.
pub(crate) fn decode<E: Event>(payload: &[u8]) -> Result<E, ProcessError> {
    codec::decode(payload).map_err(|e| ProcessError::Poison(e.to_string()))
}

/// Encodes an output record keyed by tenant/recipient. Failing to encode our own event is a bug.
pub(crate) fn output<E: Event>(
    topic: String,
    tenant: &str,
    recipient: &str,
    event: &E,
) -> Result<Output, ProcessError> {
    let payload = codec::encode(event).map_err(|e| ProcessError::Fatal(e.to_string()))?;
    Ok(Output {
        topic,
        key: format!("{tenant}/{recipient}"),
        payload,
        partition: None,
    })
}

/// `change` as a record of `topic` (`<p>.changes`), keyed by what changed.
pub(crate) fn change_output(topic: String, change: &Change) -> Result<Output, ProcessError> {
    let payload = codec::encode(change).map_err(|e| ProcessError::Fatal(e.to_string()))?;
    Ok(Output {
        topic,
        key: change.key(),
        payload,
        partition: None,
    })
}

/// The identity fields shared by every result of one notification.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Notification id.
    pub notification_id: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// Recipient.
    pub recipient_user_id: &'a str,
    /// Category.
    pub category: &'a str,
}

/// A state change of a first attempt, with its deterministic id.
pub fn result_for(
    subject: Subject<'_>,
    channel: Option<Channel>,
    state: DeliveryState,
    reason: Option<String>,
    at_ms: i64,
) -> DeliveryResult {
    attempt_result(subject, channel, 1, state, reason, at_ms)
}

/// A state change of delivery attempt `attempt`, with its deterministic id.
pub fn attempt_result(
    subject: Subject<'_>,
    channel: Option<Channel>,
    attempt: i32,
    state: DeliveryState,
    reason: Option<String>,
    at_ms: i64,
) -> DeliveryResult {
    DeliveryResult {
        result_id: ids::result_id(subject.notification_id, channel, attempt, state),
        notification_id: subject.notification_id.to_owned(),
        delivery_id: channel.map(|c| ids::delivery_id(subject.notification_id, c, attempt)),
        tenant: subject.tenant.to_owned(),
        recipient_user_id: subject.recipient_user_id.to_owned(),
        category: subject.category.to_owned(),
        channel,
        state,
        reason,
        provider_message_id: None,
        at_ms,
    }
}
