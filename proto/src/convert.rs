//! Conversions between the gRPC enums (`herald.v1`) and the event enums (`herald-schemas`), and
//! from the store's rows to their wire form.

use herald_schemas as ev;

use crate::v1;

/// The wire form of an inbox entry.
pub fn inbox_entry(e: herald_store::InboxEntryRecord) -> v1::InboxEntry {
    v1::InboxEntry {
        notification_id: e.notification_id,
        category: e.category,
        title: e.title,
        body: e.body,
        action_url: e.action_url.unwrap_or_default(),
        created_at_ms: e.created_at_ms,
        read: e.read_at_ms.is_some(),
    }
}

/// A gRPC channel value to an event channel; `None` for UNSPECIFIED or unknown numbers.
pub fn channel_from_proto(value: i32) -> Option<ev::Channel> {
    match v1::Channel::try_from(value).ok()? {
        v1::Channel::Unspecified => None,
        v1::Channel::InApp => Some(ev::Channel::InApp),
        v1::Channel::PushApns => Some(ev::Channel::PushApns),
        v1::Channel::PushFcm => Some(ev::Channel::PushFcm),
        v1::Channel::Sms => Some(ev::Channel::Sms),
        v1::Channel::Email => Some(ev::Channel::Email),
        v1::Channel::Webhook => Some(ev::Channel::Webhook),
    }
}

/// An event channel to its gRPC value.
pub fn channel_to_proto(c: ev::Channel) -> v1::Channel {
    match c {
        ev::Channel::InApp => v1::Channel::InApp,
        ev::Channel::PushApns => v1::Channel::PushApns,
        ev::Channel::PushFcm => v1::Channel::PushFcm,
        ev::Channel::Sms => v1::Channel::Sms,
        ev::Channel::Email => v1::Channel::Email,
        ev::Channel::Webhook => v1::Channel::Webhook,
    }
}

/// A gRPC priority value to an event priority (UNSPECIFIED is NORMAL); `None` if unknown.
pub fn priority_from_proto(value: i32) -> Option<ev::Priority> {
    Some(match v1::Priority::try_from(value).ok()? {
        v1::Priority::Unspecified | v1::Priority::Normal => ev::Priority::Normal,
        v1::Priority::Low => ev::Priority::Low,
        v1::Priority::High => ev::Priority::High,
        v1::Priority::Critical => ev::Priority::Critical,
    })
}

/// An event priority to its gRPC value.
pub fn priority_to_proto(p: ev::Priority) -> v1::Priority {
    match p {
        ev::Priority::Low => v1::Priority::Low,
        ev::Priority::Normal => v1::Priority::Normal,
        ev::Priority::High => v1::Priority::High,
        ev::Priority::Critical => v1::Priority::Critical,
    }
}

/// An event delivery state to its gRPC value.
pub fn state_to_proto(s: ev::DeliveryState) -> v1::DeliveryState {
    match s {
        ev::DeliveryState::Accepted => v1::DeliveryState::Accepted,
        ev::DeliveryState::Dispatched => v1::DeliveryState::Dispatched,
        ev::DeliveryState::Delivered => v1::DeliveryState::Delivered,
        ev::DeliveryState::Failed => v1::DeliveryState::Failed,
        ev::DeliveryState::InvalidToken => v1::DeliveryState::InvalidToken,
        ev::DeliveryState::Suppressed => v1::DeliveryState::Suppressed,
        ev::DeliveryState::RateLimited => v1::DeliveryState::RateLimited,
        ev::DeliveryState::Deferred => v1::DeliveryState::Deferred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_round_trips_and_unspecified_is_rejected() {
        for c in ev::Channel::ALL {
            assert_eq!(channel_from_proto(channel_to_proto(c) as i32), Some(c));
        }
        assert_eq!(channel_from_proto(0), None);
        assert_eq!(channel_from_proto(99), None);
        assert_eq!(priority_from_proto(0), Some(ev::Priority::Normal));
        assert_eq!(priority_from_proto(-1), None);
        for p in [
            ev::Priority::Low,
            ev::Priority::Normal,
            ev::Priority::High,
            ev::Priority::Critical,
        ] {
            assert_eq!(priority_from_proto(priority_to_proto(p) as i32), Some(p));
        }
    }
}
