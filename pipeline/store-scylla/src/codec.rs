//! Rows as stored ↔ the trait's records, outbox headers as a blob, and opaque page tokens.

use herald_schemas::{Channel, DeliveryState, Priority};
use herald_store::{DeliveryEventRecord, FailureRecord, InboxEntryRecord, NotificationRecord};

use crate::Result;
use crate::error::corrupt;

/// `notifications`: tenant, notification_id, recipient_user_id, category, priority, created_at_ms.
pub(crate) type NotificationRow = (String, String, String, String, String, i64);
/// `delivery_events`: tenant, notification_id, result_id, recipient_user_id, category,
/// channel, state, reason, at_ms.
pub(crate) type EventRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
);
/// `failures`: tenant, at_ms, result_id, notification_id, recipient_user_id, category,
/// channel, state, reason.
pub(crate) type FailureRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);
/// `inbox` and `inbox_feed` ([`crate::statements::INBOX_COLUMNS`]).
pub(crate) type InboxRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

pub(crate) fn channel(value: &str) -> Result<Channel> {
    Channel::parse(value).ok_or_else(|| corrupt(format!("unknown channel {value:?}")))
}

/// A minute of the day as stored (quiet hours).
pub(crate) fn minute(value: i32) -> Result<u16> {
    u16::try_from(value)
        .ok()
        .filter(|m| *m < herald_store::quiet::MINUTES_PER_DAY)
        .ok_or_else(|| corrupt(format!("minute of the day {value} out of range")))
}

fn opt_channel(value: Option<String>) -> Result<Option<Channel>> {
    value.as_deref().map(channel).transpose()
}

fn state(value: &str) -> Result<DeliveryState> {
    DeliveryState::parse(value).ok_or_else(|| corrupt(format!("unknown delivery state {value:?}")))
}

pub(crate) fn ledger_state(value: &str) -> Result<DeliveryState> {
    state(value)
}

pub(crate) fn notification(r: NotificationRow) -> Result<NotificationRecord> {
    let (tenant, notification_id, recipient_user_id, category, priority, created_at_ms) = r;
    Ok(NotificationRecord {
        tenant,
        notification_id,
        recipient_user_id,
        category,
        priority: Priority::parse(&priority)
            .ok_or_else(|| corrupt(format!("unknown priority {priority:?}")))?,
        created_at_ms,
    })
}

pub(crate) fn event(r: EventRow) -> Result<DeliveryEventRecord> {
    let (tenant, notification_id, result_id, recipient_user_id, category, ch, st, reason, at_ms) =
        r;
    Ok(DeliveryEventRecord {
        tenant,
        notification_id,
        result_id,
        recipient_user_id,
        category,
        channel: opt_channel(ch)?,
        state: state(&st)?,
        reason,
        at_ms,
    })
}

pub(crate) fn failure(r: FailureRow) -> Result<FailureRecord> {
    let (tenant, at_ms, result_id, notification_id, recipient_user_id, category, ch, st, reason) =
        r;
    Ok(FailureRecord {
        tenant,
        notification_id,
        result_id,
        recipient_user_id,
        category,
        channel: opt_channel(ch)?,
        state: state(&st)?,
        reason,
        at_ms,
    })
}

pub(crate) fn inbox(r: InboxRow) -> InboxEntryRecord {
    let (tenant, user, id, category, title, body, action_url, created, delivered, read) = r;
    InboxEntryRecord {
        tenant,
        recipient_user_id: user,
        notification_id: id,
        category,
        title,
        body,
        action_url,
        created_at_ms: created,
        delivered_at_ms: delivered,
        read_at_ms: read,
    }
}
