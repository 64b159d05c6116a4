//! Rust mirrors of the `.avsc` schemas. Field names and enum symbols must match the schema files;
//! the round-trip tests in `codec` check every one.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::codec::Event;

/// A delivery channel; one dispatch topic per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum Channel {
    InApp,
    PushApns,
    PushFcm,
    Sms,
    Email,
    Webhook,
}

impl Channel {
    /// Every channel, in a stable order.
    pub const ALL: [Channel; 6] = [
        Channel::InApp,
        Channel::PushApns,
        Channel::PushFcm,
        Channel::Sms,
        Channel::Email,
        Channel::Webhook,
    ];

    /// The short lowercase name used in topic names, metrics labels and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::PushApns => "push_apns",
            Channel::PushFcm => "push_fcm",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    /// The inverse of [`Channel::as_str`].
    pub fn parse(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// How urgent a notification is. `Critical` (security codes, OTPs) bypasses rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

/// Where a notification, or one of its channels, stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum DeliveryState {
    Accepted,
    Dispatched,
    Delivered,
    Failed,
    InvalidToken,
    Suppressed,
    RateLimited,
    /// Over a rate limit and scheduled to be tried again later.
    Deferred,
}

impl DeliveryState {
    /// Whether no further change is expected for this channel.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeliveryState::Accepted | DeliveryState::Dispatched | DeliveryState::Deferred
        )
    }
}

/// A template to render per channel and locale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TemplateRef {
    pub template_id: String,
    pub locale: Option<String>,
    pub variables: HashMap<String, String>,
    /// A pinned version; `None`: the latest.
    #[serde(default)]
    pub version: Option<i32>,
}

/// Content given in the request itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct InlineContent {
    pub title: String,
    pub body: String,
    pub action_url: Option<String>,
}

/// Topic `requested`: a validated SendNotification, written by the ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct NotificationRequested {
    pub notification_id: String,
    pub tenant: String,
    pub idempotency_key: Option<String>,
    pub recipient_user_id: String,
    pub category: String,
    pub priority: Priority,
    pub template: Option<TemplateRef>,
    pub inline: Option<InlineContent>,
    /// Empty: every channel the recipient allows.
    pub channels: Vec<Channel>,
    pub requested_at_ms: i64,
}

/// Rendered content for one channel, addressed to one contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ChannelContent {
    pub channel: Channel,
    /// Device token, e-mail address, phone number, URL, or the user id for in-app.
    pub address: String,
    pub title: String,
    pub body: String,
    pub action_url: Option<String>,
}

/// Topic `enriched`: contacts resolved, preferences applied, content rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct NotificationEnriched {
    pub notification_id: String,
    pub tenant: String,
    pub recipient_user_id: String,
    pub category: String,
    pub priority: Priority,
    pub requested_at_ms: i64,
    pub deliveries: Vec<ChannelContent>,
    /// How often the rate-limit stage has deferred it.
    pub deferrals: i32,
    /// On the `deferred` topic: not to be re-evaluated before this time.
    pub defer_until_ms: Option<i64>,
}

/// Topic `admitted`: within its rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct NotificationAdmitted {
    pub notification_id: String,
    pub tenant: String,
    pub recipient_user_id: String,
    pub category: String,
    pub priority: Priority,
    pub requested_at_ms: i64,
    pub deliveries: Vec<ChannelContent>,
}

/// Topic `dispatch.<channel>`: one delivery to hand to that channel's provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Dispatch {
    /// Derived from (notification id, channel, attempt): see [`crate::ids::delivery_id`].
    pub delivery_id: String,
    pub notification_id: String,
    pub attempt: i32,
    pub tenant: String,
    pub recipient_user_id: String,
    pub category: String,
    pub priority: Priority,
    pub channel: Channel,
    pub address: String,
    pub title: String,
    pub body: String,
    pub action_url: Option<String>,
    pub requested_at_ms: i64,
    /// A retry: not to be attempted before this time (ms since the epoch).
    pub not_before_ms: Option<i64>,
    /// A retry: why the previous attempt failed.
    pub last_error: Option<String>,
}

/// Topic `delivery-result`: one state change of a notification or of one of its channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct DeliveryResult {
    /// Derived from (notification id, channel, attempt, state): see [`crate::ids::result_id`].
    pub result_id: String,
    pub notification_id: String,
    pub delivery_id: Option<String>,
    pub tenant: String,
    pub recipient_user_id: String,
    pub category: String,
    /// `None` for notification-wide states (e.g. nothing to deliver at all).
    pub channel: Option<Channel>,
    pub state: DeliveryState,
    pub reason: Option<String>,
    pub provider_message_id: Option<String>,
    pub at_ms: i64,
}

/// What a user did with a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum EngagementKind {
    Opened,
    Clicked,
    Read,
}

/// Topic `engagement`: opens, clicks and reads, for analysts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Engagement {
    pub event_id: String,
    pub notification_id: String,
    pub tenant: String,
    pub recipient_user_id: String,
    pub channel: Option<Channel>,
    pub kind: EngagementKind,
    pub at_ms: i64,
}

/// Topic `broadcasts`: one notification to every subscriber of a topic, expanded in chunks by
/// the broadcast stage (which writes the record again with [`BroadcastRequested::after`]
/// advanced, in the transaction of the chunk it wrote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BroadcastRequested {
    pub broadcast_id: String,
    pub tenant: String,
    /// The subscription topic.
    pub topic: String,
    pub category: String,
    pub priority: Priority,
    pub template: Option<TemplateRef>,
    pub inline: Option<InlineContent>,
    pub channels: Vec<Channel>,
    pub requested_at_ms: i64,
    /// The last subscriber expanded so far (user ids ascending).
    pub after: Option<String>,
    /// Notifications written so far.
    pub expanded: i64,
}

/// A [`ChangeKind::Template`] change with this id names every template of its tenant (an
/// import).
pub const ALL_TEMPLATES: &str = "*";

/// What changed ([`Change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeKind {
    /// A recipient's contacts, opt-outs or quiet hours.
    Recipient,
    /// A template, any of its locales.
    Template,
}

/// Topic `changes` (compacted): a recipient's or a template's stored data changed; enrich
/// instances drop it from their caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Change {
    pub kind: ChangeKind,
    pub tenant: String,
    /// The recipient's user id or the template id.
    pub id: String,
    pub at_ms: i64,
}

impl Change {
    /// The record key: one per changed thing, so compaction keeps the latest.
    pub fn key(&self) -> String {
        let kind = match self.kind {
            ChangeKind::Recipient => "recipient",
            ChangeKind::Template => "template",
        };
        format!("{kind}/{}/{}", self.tenant, self.id)
    }
}

/// Topic `dead-letter`: an input record a stage could not process, whole, with where it came
/// from and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub source_timestamp_ms: i64,
    pub stage: String,
    pub error: String,
    pub attempts: i32,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub value: Vec<u8>,
    pub headers: Vec<RecordHeader>,
    pub at_ms: i64,
}

/// One Kafka record header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RecordHeader {
    pub key: String,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub value: Option<Vec<u8>>,
}

/// `event!(Type, "current.avsc", ["history/older.v1.avsc", …])`: the schema a type is written
/// with, and the earlier versions of it that records on the topics may still carry.
macro_rules! event {
    ($ty:ty, $file:literal $(, [$($old:literal),* $(,)?])?) => {
        impl Event for $ty {
            const SCHEMA_JSON: &'static str = include_str!(concat!("../", $file));
            const PREVIOUS: &'static [&'static str] =
                &[$($(include_str!(concat!("../", $old))),*)?];
            fn schema() -> &'static crate::codec::EventSchema {
                static SCHEMA: std::sync::OnceLock<crate::codec::EventSchema> =
                    std::sync::OnceLock::new();
                SCHEMA.get_or_init(|| crate::codec::EventSchema::parse_or_abort(Self::SCHEMA_JSON))
            }
            fn history() -> &'static [crate::codec::EventSchema] {
                static HISTORY: std::sync::OnceLock<Vec<crate::codec::EventSchema>> =
                    std::sync::OnceLock::new();
                HISTORY.get_or_init(|| {
                    Self::PREVIOUS
                        .iter()
                        .map(|json| crate::codec::EventSchema::parse_or_abort(json))
                        .collect()
                })
            }
        }
    };
}

event!(
    NotificationRequested,
    "notification_requested.avsc",
    ["history/notification_requested.v1.avsc"]
);
event!(
    NotificationEnriched,
    "notification_enriched.avsc",
    ["history/notification_enriched.v1.avsc"]
);
event!(NotificationAdmitted, "notification_admitted.avsc");
event!(Dispatch, "dispatch.avsc", ["history/dispatch.v1.avsc"]);
event!(DeliveryResult, "delivery_result.avsc");
event!(Engagement, "engagement.avsc");
event!(DeadLetter, "dead_letter.avsc");
event!(Change, "change.avsc");
event!(BroadcastRequested, "broadcast_requested.avsc");

macro_rules! symbols {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The Avro enum symbol, also used in storage and logs.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),* }
            }
            /// The inverse of `as_str`.
            pub fn parse(symbol: &str) -> Option<$ty> {
                match symbol { $($name => Some(<$ty>::$variant),)* _ => None }
            }
        }
    };
}

symbols!(Priority { Low => "LOW", Normal => "NORMAL", High => "HIGH", Critical => "CRITICAL" });
symbols!(DeliveryState {
    Accepted => "ACCEPTED",
    Dispatched => "DISPATCHED",
    Delivered => "DELIVERED",
    Failed => "FAILED",
    InvalidToken => "INVALID_TOKEN",
    Suppressed => "SUPPRESSED",
    RateLimited => "RATE_LIMITED",
    Deferred => "DEFERRED",
});
