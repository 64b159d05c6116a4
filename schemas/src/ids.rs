//! Deterministic identities. Reprocessing an event after a crash must produce records with the
//! same ids, so every downstream effect (store upserts, the delivery ledger) is idempotent.

use uuid::Uuid;

use crate::{Channel, DeliveryState};

/// Namespace for Herald's UUIDv5 ids (a fixed random UUID; never change it).
const NAMESPACE: Uuid = Uuid::from_u128(0x6d2f_4f0e_8a57_4c1b_9a0b_3c55_e1f2_7a19);

/// The notification id for a request carrying a client idempotency key: the same tenant and key
/// always give the same id, so a retried `SendNotification` is recognised downstream.
pub fn notification_id_for_key(tenant: &str, idempotency_key: &str) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("n/{tenant}/{idempotency_key}").as_bytes(),
    )
}

/// A fresh, time-ordered notification id for a request without an idempotency key.
pub fn new_notification_id() -> Uuid {
    Uuid::now_v7()
}

/// The id of one delivery attempt of a notification on a channel.
pub fn delivery_id(notification_id: &str, channel: Channel, attempt: i32) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("d/{notification_id}/{}/{attempt}", channel.as_str()).as_bytes(),
    )
    .to_string()
}

/// The id of one state change; `channel` is `None` for notification-wide states.
pub fn result_id(
    notification_id: &str,
    channel: Option<Channel>,
    attempt: i32,
    state: DeliveryState,
) -> String {
    let channel = channel.map_or("-", Channel::as_str);
    Uuid::new_v5(
        &NAMESPACE,
        format!("r/{notification_id}/{channel}/{attempt}/{state:?}").as_bytes(),
    )
    .to_string()
}

/// The id of a user's reaction to a notification: one id per (notification, kind), so a
/// repeated emission (a retry, a replayed outbox) is recognisable downstream.
pub fn engagement_id(notification_id: &str, kind: crate::EngagementKind) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("e/{notification_id}/{kind:?}").as_bytes(),
    )
    .to_string()
}

/// A stable digest of some bytes (e.g. an encoded request), to tell "the same again" from
/// "something else under the same key".
pub fn content_digest(bytes: &[u8]) -> String {
    let mut name = Vec::with_capacity(bytes.len() + 2);
    name.extend_from_slice(b"c/");
    name.extend_from_slice(bytes);
    Uuid::new_v5(&NAMESPACE, &name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = notification_id_for_key("acme", "k1");
        assert_eq!(a, notification_id_for_key("acme", "k1"));
        assert_ne!(a, notification_id_for_key("acme", "k2"));
        assert_ne!(a, notification_id_for_key("other", "k1"));
        let d = delivery_id("n", Channel::Email, 1);
        assert_eq!(d, delivery_id("n", Channel::Email, 1));
        assert_ne!(d, delivery_id("n", Channel::Email, 2));
        assert_ne!(d, delivery_id("n", Channel::Sms, 1));
        let r = result_id("n", Some(Channel::Email), 1, DeliveryState::Delivered);
        assert_ne!(
            r,
            result_id("n", Some(Channel::Email), 1, DeliveryState::Failed)
        );
        assert_ne!(r, result_id("n", None, 1, DeliveryState::Delivered));
    }
}
