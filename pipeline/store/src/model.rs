//! The rows Herald stores, independent of any backend.

use herald_schemas::{Channel, DeliveryState, Priority};

use crate::quiet::QuietHours;

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
    pub recipient_user_id: String,
    pub category: String,
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

/// One write of a batch ([`crate::Store::write_many`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// [`crate::Store::upsert_notification`].
    Notification(NotificationRecord),
    /// [`crate::Store::record_delivery_event`].
    DeliveryEvent(DeliveryEventRecord),
    /// [`crate::Store::upsert_inbox_entry`].
    InboxEntry(InboxEntryRecord),
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
    /// When the in-app connector put it in the inbox; `WatchInbox` follows this order.
    pub delivered_at_ms: i64,
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
    /// Start below this creation time instead of at the newest entry (ignored with a token).
    pub before_ms: Option<i64>,
    /// Only entries not yet read.
    pub unread_only: bool,
    /// Only entries of this category.
    pub category: Option<String>,
}

impl InboxQuery {
    /// The first page of a user's inbox, unfiltered.
    pub fn first_page(tenant: &str, user: &str, page_size: usize) -> InboxQuery {
        InboxQuery {
            tenant: tenant.into(),
            recipient_user_id: user.into(),
            page_size,
            page_token: None,
            before_ms: None,
            unread_only: false,
            category: None,
        }
    }
}

/// One page of an inbox, newest first.
#[derive(Debug, Clone, Default)]
pub struct InboxPage {
    /// The entries, newest first.
    pub entries: Vec<InboxEntryRecord>,
    /// Where the next page starts; `None` at the end.
    pub next_page_token: Option<String>,
}

/// Where a reader of one user's inbox feed stands (what `WatchInbox` follows). The text is the
/// backend's own and opaque to callers; a backend refuses one it cannot read with
/// [`crate::StoreError::BadPageToken`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor(pub String);

/// One entry of a feed page, with the cursor just past it (what a resume token carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    /// The entry.
    pub entry: InboxEntryRecord,
    /// Reading on from here never returns this entry again in a backend that keeps exact
    /// write order, and may return it again (an overlap) in one ordered by delivery time.
    pub after: FeedCursor,
}

/// A page of a user's inbox feed: entries in the order they became readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// The entries; one read in an overlap before may appear again (callers skip ids they have
    /// just pushed).
    pub items: Vec<FeedItem>,
    /// Where the next read starts.
    pub next: FeedCursor,
    /// The page was cut at its limit: read again at once.
    pub more: bool,
}

/// A final outcome other than delivered, kept per tenant by time so calling services can find
/// what did not reach its recipient (sending is asynchronous).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FailureRecord {
    pub tenant: String,
    pub notification_id: String,
    pub result_id: String,
    pub recipient_user_id: String,
    pub category: String,
    pub channel: Option<Channel>,
    pub state: DeliveryState,
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// The states listed as failures: final, and not delivered.
pub fn is_failure(state: DeliveryState) -> bool {
    matches!(
        state,
        DeliveryState::Failed
            | DeliveryState::InvalidToken
            | DeliveryState::Suppressed
            | DeliveryState::RateLimited
    )
}

/// A request for one page of a tenant's failures in `[from_ms, to_ms)`, newest first.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct FailureQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub page_size: usize,
    pub page_token: Option<String>,
}

/// One page of failures, newest first.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct FailurePage {
    pub failures: Vec<FailureRecord>,
    pub next_page_token: Option<String>,
}

/// A request the ingress accepted while Kafka was unreachable, kept until it is replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OutboxRecord {
    /// Which ingress instance owns (and replays) it.
    pub owner: String,
    /// Unique per owner; the notification id.
    pub id: String,
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub created_at_ms: i64,
}

impl OutboxRecord {
    /// The headers as one blob, for backends that store them in a column:
    /// `(u32 name length, name, u32 value length, value)*`, big-endian lengths.
    pub fn headers_blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            for part in [name.as_bytes(), value.as_slice()] {
                out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }

    /// The inverse of [`OutboxRecord::headers_blob`]; `None` if malformed.
    pub fn parse_headers_blob(mut bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
        fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
            let (len, rest) = bytes.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            let (value, rest) = (rest.get(..len)?, rest.get(len..)?);
            *bytes = rest;
            Some(value)
        }
        let mut headers = Vec::new();
        while !bytes.is_empty() {
            let name = String::from_utf8(part(&mut bytes)?.to_vec()).ok()?;
            headers.push((name, part(&mut bytes)?.to_vec()));
        }
        Some(headers)
    }
}

/// An idempotency key as first seen by the ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct IdempotencyRecord {
    pub tenant: String,
    pub key: String,
    /// A digest of the request, to tell a retry from a different request reusing the key.
    pub request_hash: String,
    pub notification_id: String,
    pub at_ms: i64,
}

/// An API key as stored: its public id, whom it serves, and a hash of its secret (the secret
/// itself is shown once, when the key is made, and never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's public id (the part of the key before its secret).
    pub key_id: String,
    /// The one tenant the key acts for.
    pub tenant: String,
    /// A label for people (`billing backend`).
    pub name: String,
    /// The operations it may call (`send`, `read`, `manage`).
    pub scopes: Vec<String>,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    /// When it was made.
    pub created_at_ms: i64,
    /// When it stops working (a rotated key's overlap ends), if ever.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// What [`crate::Store::claim_idempotency_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was new and now belongs to this request.
    Claimed,
    /// The key was already used; this is the first use.
    Existing(IdempotencyRecord),
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// The units dropped whole (embedded: month files), oldest first.
    pub dropped: Vec<String>,
}

/// What [`crate::Store::erase_recipient`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Contact addresses.
    pub contacts: u32,
    /// Opt-outs.
    pub opt_outs: u32,
    /// Inbox entries.
    pub inbox_entries: u32,
    /// Topic subscriptions.
    pub subscriptions: u32,
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
    /// When their notifications wait (none: never).
    pub quiet_hours: Option<QuietHours>,
}

/// A notification held during its recipient's quiet hours, until `release_at_ms`
/// ([`crate::Store::hold`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct HeldRecord {
    pub tenant: String,
    pub notification_id: String,
    pub recipient_user_id: String,
    pub release_at_ms: i64,
    /// The request as it was read (a framed `NotificationRequested`), released unchanged.
    pub payload: Vec<u8>,
}

/// One variant of a template: for a locale, a channel (or every channel without a variant of
/// its own) and a version; title, body and action URL in Jinja syntax (`herald-templates`),
/// rendered with the request's variables. [`crate::variants`] picks what a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TemplateRecord {
    pub tenant: String,
    pub template_id: String,
    pub locale: String,
    /// The channel this variant is for; `None`: every channel without one of its own.
    pub channel: Option<Channel>,
    /// 1, 2, …: every upload of a template makes a new version; a request may pin one.
    pub version: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_headers_round_trip() {
        let record = OutboxRecord {
            owner: "o".into(),
            id: "i".into(),
            topic: "t".into(),
            key: vec![],
            payload: vec![],
            headers: vec![("a".to_owned(), vec![1, 2]), (String::new(), vec![])],
            created_at_ms: 0,
        };
        assert_eq!(
            OutboxRecord::parse_headers_blob(&record.headers_blob()),
            Some(record.headers)
        );
        assert_eq!(OutboxRecord::parse_headers_blob(&[0, 0, 0, 9, 1]), None);
    }
}
