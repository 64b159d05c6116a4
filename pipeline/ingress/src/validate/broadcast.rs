//! `Broadcast`, pure: a request becomes one `BroadcastRequested` event, its content and
//! channels checked as a `SendNotification`'s are, its id derived from the broadcast key (a
//! retried broadcast is the same one, and so is each subscriber's notification).

use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{BroadcastRequest, SendNotificationRequest, broadcast_request};
use herald_schemas::{BroadcastRequested, ids};

use super::{FieldViolation, Policy, limits, name, printable_ascii, tenant_char, to_event_with};

/// A subscription topic's name: as a tenant's (`[A-Za-z0-9._-]`, up to 64 bytes).
pub fn topic(field: &str, value: &str) -> Result<(), FieldViolation> {
    name(field, value, tenant_char, limits::NAME)
}

/// The event of `req`, or the first field refused.
pub fn to_broadcast(
    req: BroadcastRequest,
    now_ms: i64,
    policy: &Policy,
) -> Result<BroadcastRequested, FieldViolation> {
    name(
        "broadcast_key",
        &req.broadcast_key,
        printable_ascii,
        limits::ID,
    )?;
    topic("topic", &req.topic)?;
    let content = req.content.map(|c| match c {
        broadcast_request::Content::Template(t) => Content::Template(t),
        broadcast_request::Content::Inline(i) => Content::Inline(i),
    });
    // The checks of a single notification; the recipient is each subscriber, named later.
    let single = SendNotificationRequest {
        tenant: req.tenant,
        idempotency_key: String::new(),
        recipient_user_id: "subscriber".into(),
        category: req.category,
        priority: req.priority,
        content,
        channels: req.channels,
    };
    let event = to_event_with(single, now_ms, policy)?;
    Ok(BroadcastRequested {
        broadcast_id: ids::broadcast_id(&event.tenant, &req.broadcast_key).to_string(),
        tenant: event.tenant,
        topic: req.topic,
        category: event.category,
        priority: event.priority,
        template: event.template,
        inline: event.inline,
        channels: event.channels,
        requested_at_ms: now_ms,
        after: None,
        expanded: 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use herald_proto::v1::InlineContent;

    use super::*;

    fn request() -> BroadcastRequest {
        BroadcastRequest {
            tenant: "acme".into(),
            broadcast_key: "release-2.0".into(),
            topic: "releases".into(),
            category: "news".into(),
            content: Some(broadcast_request::Content::Inline(InlineContent {
                title: "2.0".into(),
                body: "is out".into(),
                action_url: String::new(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_broadcast_is_one_event_with_an_id_stable_per_key() {
        let policy = Policy::default();
        let b = to_broadcast(request(), 5, &policy).unwrap();
        assert_eq!(
            (b.topic.as_str(), b.after, b.expanded),
            ("releases", None, 0)
        );
        let again = to_broadcast(request(), 9, &policy).unwrap();
        assert_eq!(b.broadcast_id, again.broadcast_id);
        let other = BroadcastRequest {
            broadcast_key: "release-2.1".into(),
            ..request()
        };
        assert_ne!(
            to_broadcast(other, 5, &policy).unwrap().broadcast_id,
            b.broadcast_id
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let policy = Policy::default();
        let field = |r: BroadcastRequest| to_broadcast(r, 0, &policy).unwrap_err().field;
        assert_eq!(
            field(BroadcastRequest {
                broadcast_key: String::new(),
                ..request()
            }),
            "broadcast_key"
        );
        assert_eq!(
            field(BroadcastRequest {
                topic: "a b".into(),
                ..request()
            }),
            "topic"
        );
        assert_eq!(
            field(BroadcastRequest {
                topic: "t".repeat(65),
                ..request()
            }),
            "topic"
        );
        assert_eq!(
            field(BroadcastRequest {
                category: String::new(),
                ..request()
            }),
            "category"
        );
        assert_eq!(
            field(BroadcastRequest {
                content: None,
                ..request()
            }),
            "content"
        );
        assert_eq!(
            field(BroadcastRequest {
                channels: vec![99],
                ..request()
            }),
            "channels[0]"
        );
    }
}
