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

/// The id of a broadcast sent with `broadcast_key`: a retried `Broadcast` is the same one.
pub fn broadcast_id(tenant: &str, broadcast_key: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("b/{tenant}/{broadcast_key}").as_bytes())
}

/// The notification id of one subscriber's copy of a broadcast: expanding it again (after a
/// crash, a retried request) gives the same ids, so each subscriber gets it once.
pub fn broadcast_notification_id(broadcast_id: &str, user_id: &str) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("bn/{broadcast_id}/{user_id}").as_bytes(),
    )
    .to_string()
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

/// A digest of what a client asked for in a request — everything but the time it arrived and
/// the id derived from its key — in a canonical form: template variables sorted by name and
/// channels as a set, so the same request gives the same digest however its maps were ordered.
/// An idempotency key is refused for a request whose digest differs from its first use's.
pub fn request_digest(r: &crate::NotificationRequested) -> String {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    fn optional(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                field(out, v.as_bytes());
            }
        }
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"request/v1");
    field(&mut out, r.tenant.as_bytes());
    optional(&mut out, r.idempotency_key.as_deref());
    field(&mut out, r.recipient_user_id.as_bytes());
    field(&mut out, r.category.as_bytes());
    field(&mut out, r.priority.as_str().as_bytes());
    match &r.template {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            field(&mut out, t.template_id.as_bytes());
            optional(&mut out, t.locale.as_deref());
            let sorted: std::collections::BTreeMap<&String, &String> = t.variables.iter().collect();
            out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
            for (k, v) in sorted {
                field(&mut out, k.as_bytes());
                field(&mut out, v.as_bytes());
            }
            // Only when pinned, so digests of requests from before versions stay the same.
            if let Some(version) = t.version {
                out.extend_from_slice(b"version");
                out.extend_from_slice(&version.to_le_bytes());
            }
        }
    }
    match &r.inline {
        None => out.push(0),
        Some(i) => {
            out.push(1);
            field(&mut out, i.title.as_bytes());
            field(&mut out, i.body.as_bytes());
            optional(&mut out, i.action_url.as_deref());
        }
    }
    let channels: std::collections::BTreeSet<&str> =
        r.channels.iter().map(|c| c.as_str()).collect();
    out.extend_from_slice(&(channels.len() as u64).to_le_bytes());
    for c in channels {
        field(&mut out, c.as_bytes());
    }
    content_digest(&out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::{NotificationRequested, Priority, TemplateRef};

    fn templated(variables: HashMap<String, String>) -> NotificationRequested {
        NotificationRequested {
            notification_id: "n".into(),
            tenant: "acme".into(),
            idempotency_key: Some("k".into()),
            recipient_user_id: "u".into(),
            category: "c".into(),
            priority: Priority::Normal,
            template: Some(TemplateRef {
                template_id: "welcome".into(),
                locale: None,
                variables,
                version: None,
            }),
            inline: None,
            channels: vec![Channel::Email, Channel::InApp],
            requested_at_ms: 1,
        }
    }

    fn channel() -> impl Strategy<Value = Channel> {
        proptest::sample::select(Channel::ALL.to_vec())
    }

    proptest! {
        /// Delivery ids, for any attempt (a retry's attempt 2, 3, ... as well as the first):
        /// the same (notification, channel, attempt) always gives the same id, and any
        /// difference gives another, even with `/` in the notification id.
        #[test]
        fn delivery_and_result_ids_are_one_to_one(
            a in ("[a-z0-9/-]{1,12}", channel(), any::<i32>()),
            b in ("[a-z0-9/-]{1,12}", channel(), any::<i32>()),
        ) {
            prop_assert_eq!(delivery_id(&a.0, a.1, a.2), delivery_id(&a.0, a.1, a.2));
            prop_assert_eq!(delivery_id(&a.0, a.1, a.2) == delivery_id(&b.0, b.1, b.2), a == b);
            let state = DeliveryState::Delivered;
            prop_assert_eq!(
                result_id(&a.0, Some(a.1), a.2, state) == result_id(&b.0, Some(b.1), b.2, state),
                a == b
            );
            prop_assert_ne!(result_id(&a.0, None, a.2, state), result_id(&a.0, Some(a.1), a.2, state));
        }

        #[test]
        fn any_map_order_gives_one_digest(
            pairs in proptest::collection::btree_map("[a-z]{1,6}", "\\PC{0,8}", 0..12),
            seed in any::<u64>(),
        ) {
            // The same entries inserted in two different orders (HashMap iteration differs).
            let mut forward = HashMap::new();
            for (k, v) in &pairs {
                forward.insert(k.clone(), v.clone());
            }
            let mut shuffled: Vec<_> = pairs.iter().collect();
            let n = shuffled.len().max(1);
            shuffled.rotate_left((seed as usize) % n);
            shuffled.reverse();
            let mut backward = HashMap::with_capacity(pairs.len() * 3 + 1);
            for (k, v) in shuffled {
                backward.insert(k.clone(), v.clone());
            }
            let mut a = templated(forward);
            let mut b = templated(backward);
            b.channels.reverse();
            b.requested_at_ms = 99;
            b.notification_id = "other".into();
            prop_assert_eq!(request_digest(&a), request_digest(&b));
            // Any change to what was asked for changes it.
            a.recipient_user_id.push('x');
            prop_assert_ne!(request_digest(&a), request_digest(&b));
        }

        #[test]
        fn a_different_variable_value_gives_another_digest(
            pairs in proptest::collection::btree_map("[a-z]{1,6}", "[a-z]{0,8}", 1..8),
        ) {
            let original: HashMap<String, String> = pairs.clone().into_iter().collect();
            let mut changed = original.clone();
            if let Some(v) = changed.values_mut().next() {
                v.push('!');
            }
            prop_assert_ne!(
                request_digest(&templated(original)),
                request_digest(&templated(changed))
            );
        }
    }

    #[test]
    fn fresh_notification_ids_are_distinct_and_not_nil() {
        let (a, b) = (new_notification_id(), new_notification_id());
        assert_ne!(a, b);
        assert!(!a.is_nil());
    }

    #[test]
    fn engagement_ids_are_one_per_notification_and_kind() {
        use crate::EngagementKind::{Clicked, Opened, Read};
        let id = engagement_id("n1", Read);
        assert_eq!(id, engagement_id("n1", Read));
        assert_eq!(Uuid::parse_str(&id).map(|u| u.get_version_num()), Ok(5));
        assert_ne!(id, engagement_id("n2", Read));
        assert_ne!(id, engagement_id("n1", Opened));
        assert_ne!(engagement_id("n1", Opened), engagement_id("n1", Clicked));
    }

    #[test]
    fn optional_fields_count_in_the_digest() {
        let base = templated(HashMap::new());
        let mut other_locale = base.clone();
        if let Some(t) = other_locale.template.as_mut() {
            t.locale = Some("de".into());
        }
        assert_ne!(request_digest(&base), request_digest(&other_locale));
        let mut unkeyed = base.clone();
        unkeyed.idempotency_key = None;
        assert_ne!(request_digest(&base), request_digest(&unkeyed));
    }

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
