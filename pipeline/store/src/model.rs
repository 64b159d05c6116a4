//! The rows Herald stores, independent of any backend.

use herald_schemas::{Channel, DeliveryState, Priority};

/// A notification as accepted by the ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NotificationRecord {
    pub tenant: String,
    pub notification_id: String,
    pub recipient_user_id: String,
    pub category: String,
    pub priority: Priority,
    pub created_at_ms: i64,
}

/// One state change on a notification's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DeliveryEventRecord {
    pub tenant: String,
    pub notification_id: String,
    /// Deterministic id of the change; the upsert key.
    pub result_id: String,
    pub channel: Option<Channel>,
    pub state: DeliveryState,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// The overall state of a notification: the most advanced state over its timeline
/// (delivered on any channel beats a final failure, which beats dispatched, which beats accepted).
pub fn overall_state(timeline: &[DeliveryEventRecord]) -> DeliveryState {
    fn rank(s: DeliveryState) -> u8 {
        match s {
            DeliveryState::Accepted => 0,
            DeliveryState::Dispatched | DeliveryState::Deferred => 1,
            DeliveryState::Failed
            | DeliveryState::InvalidToken
            | DeliveryState::Suppressed
            | DeliveryState::RateLimited => 2,
            DeliveryState::Delivered => 3,
        }
    }
    timeline
        .iter()
        .map(|e| e.state)
        .max_by_key(|s| rank(*s))
        .unwrap_or(DeliveryState::Accepted)
}

/// One entry in a user's in-app inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct InboxEntryRecord {
    pub tenant: String,
    pub recipient_user_id: String,
    pub notification_id: String,
    pub category: String,
    pub title: String,
    pub body: String,
    pub action_url: Option<String>,
    pub created_at_ms: i64,
    pub read_at_ms: Option<i64>,
}

/// A request for one page of an inbox.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct InboxQuery {
    pub tenant: String,
    pub recipient_user_id: String,
    pub page_size: usize,
    /// Opaque token from a previous [`InboxPage`].
    pub page_token: Option<String>,
}

/// One page of an inbox, newest first.
#[derive(Debug, Clone, Default)]
pub struct InboxPage {
    /// The entries, newest first.
    pub entries: Vec<InboxEntryRecord>,
    /// Where the next page starts; `None` at the end.
    pub next_page_token: Option<String>,
}

/// One way to reach a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The channel this address is for.
    pub channel: Channel,
    /// Device token, e-mail address, phone number or URL.
    pub address: String,
}

/// What the enrich stage needs to know about a recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientProfile {
    /// Known addresses, at most one per channel.
    pub contacts: Vec<Contact>,
    /// (channel, category) pairs the recipient opted out of; category `*` means all categories.
    pub opt_outs: Vec<(Channel, String)>,
}

/// A template for one locale. `{{name}}` placeholders are replaced by request variables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TemplateRecord {
    pub tenant: String,
    pub template_id: String,
    pub locale: String,
    pub title: String,
    pub body: String,
    pub action_url: Option<String>,
}

/// The recorded outcome of calling a provider for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LedgerEntry {
    pub delivery_id: String,
    pub state: DeliveryState,
    pub reason: Option<String>,
    pub provider_message_id: Option<String>,
    pub at_ms: i64,
}

/// What [`crate::Store::ledger_begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerBegin {
    /// No earlier attempt: call the provider.
    Fresh,
    /// An earlier attempt began and never finished: the provider may or may not have it. The
    /// deliver stage calls again with the same idempotency key (the delivery id).
    Unfinished,
    /// The outcome is recorded: re-emit it, do not call the provider.
    Done(LedgerEntry),
}
