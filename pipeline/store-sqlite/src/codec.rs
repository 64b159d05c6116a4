//! Rows to records: the column lists the statements share, and the decoders. A value this
//! version does not know (an unknown channel, state or priority) is a conversion failure,
//! classified as [`herald_store::StoreError::Corrupt`].

use herald_schemas::{Channel, DeliveryState, Priority};
use herald_store::{
    DeliveryEventRecord, FailureRecord, InboxEntryRecord, NotificationRecord, TemplateRecord,
};
use rusqlite::Row;

pub(crate) fn text_enum<T>(
    idx: usize,
    value: String,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    parse(&value).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown symbol {value:?}").into(),
        )
    })
}

fn opt_channel(idx: usize, value: Option<String>) -> rusqlite::Result<Option<Channel>> {
    value.map(|c| text_enum(idx, c, Channel::parse)).transpose()
}

pub(crate) fn notification_row(r: &Row<'_>) -> rusqlite::Result<NotificationRecord> {
    Ok(NotificationRecord {
        tenant: r.get(0)?,
        notification_id: r.get(1)?,
        recipient_user_id: r.get(2)?,
        category: r.get(3)?,
        priority: text_enum(4, r.get(4)?, Priority::parse)?,
        created_at_ms: r.get(5)?,
    })
}

/// The columns of `delivery_events` and `failures`, in [`event_row`]'s order.
pub(crate) const EVENT_COLUMNS: &str = "tenant, notification_id, result_id, recipient_user_id, category, channel, state, reason, at_ms";

pub(crate) fn event_row(r: &Row<'_>) -> rusqlite::Result<DeliveryEventRecord> {
    Ok(DeliveryEventRecord {
        tenant: r.get(0)?,
        notification_id: r.get(1)?,
        result_id: r.get(2)?,
        recipient_user_id: r.get(3)?,
        category: r.get(4)?,
        channel: opt_channel(5, r.get(5)?)?,
        state: text_enum(6, r.get(6)?, DeliveryState::parse)?,
        reason: r.get(7)?,
        at_ms: r.get(8)?,
    })
}

pub(crate) fn failure_row(r: &Row<'_>) -> rusqlite::Result<FailureRecord> {
    let e = event_row(r)?;
    Ok(FailureRecord {
        tenant: e.tenant,
        notification_id: e.notification_id,
        result_id: e.result_id,
        recipient_user_id: e.recipient_user_id,
        category: e.category,
        channel: e.channel,
        state: e.state,
        reason: e.reason,
        at_ms: e.at_ms,
    })
}

/// The columns of `inbox`, in [`inbox_row`]'s order.
pub(crate) const INBOX_COLUMNS: &str = "tenant, recipient_user_id, notification_id, category, title, body, \
     action_url, created_at_ms, delivered_at_ms, read_at_ms";

pub(crate) fn inbox_row(r: &Row<'_>) -> rusqlite::Result<InboxEntryRecord> {
    Ok(InboxEntryRecord {
        tenant: r.get(0)?,
        recipient_user_id: r.get(1)?,
        notification_id: r.get(2)?,
        category: r.get(3)?,
        title: r.get(4)?,
        body: r.get(5)?,
        action_url: r.get(6)?,
        created_at_ms: r.get(7)?,
        delivered_at_ms: r.get(8)?,
        read_at_ms: r.get(9)?,
    })
}

/// The columns [`template_row`] reads, in order.
pub(crate) const TEMPLATE_COLUMNS: &str =
    "tenant, template_id, locale, channel, version, title, body, action_url";

/// A `template_versions` row (channel `''`: every channel).
pub(crate) fn template_row(r: &Row<'_>) -> rusqlite::Result<TemplateRecord> {
    let channel: String = r.get(3)?;
    Ok(TemplateRecord {
        tenant: r.get(0)?,
        template_id: r.get(1)?,
        locale: r.get(2)?,
        channel: if channel.is_empty() {
            None
        } else {
            Some(text_enum(3, channel, Channel::parse)?)
        },
        version: r.get(4)?,
        title: r.get(5)?,
        body: r.get(6)?,
        action_url: r.get(7)?,
    })
}
