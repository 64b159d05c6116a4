use std::collections::HashMap;

use apache_avro::GenericSingleObjectReader;
use proptest::prelude::*;

use super::*;
use crate::*;

fn requested() -> NotificationRequested {
    NotificationRequested {
        notification_id: "0192f0a4-0000-7000-8000-000000000001".into(),
        tenant: "acme".into(),
        idempotency_key: Some("order-42".into()),
        recipient_user_id: "user-1".into(),
        category: "order_update".into(),
        priority: Priority::High,
        template: Some(TemplateRef {
            template_id: "order_shipped".into(),
            locale: Some("pt-BR".into()),
            variables: HashMap::from([("order".into(), "42".into())]),
        }),
        inline: None,
        channels: vec![Channel::Email, Channel::InApp],
        requested_at_ms: 1_763_800_000_000,
    }
}

fn content() -> ChannelContent {
    ChannelContent {
        channel: Channel::PushApns,
        address: "device-token".into(),
        title: "Shipped".into(),
        body: "Order 42 is on its way".into(),
        action_url: None,
    }
}

fn round_trip<E: Event + PartialEq + std::fmt::Debug>(event: E) {
    let bytes = encode(&event).expect("encode");
    assert_eq!(bytes[..2], MAGIC);
    assert_eq!(decode::<E>(&bytes).expect("decode"), event);
    // The framing is the spec's, not ours: apache-avro's own single-object reader agrees.
    let reader = GenericSingleObjectReader::new(E::schema().schema.clone()).expect("reader");
    reader
        .read_value(&mut bytes.as_slice())
        .expect("apache-avro reads our single-object framing");
}

#[test]
fn every_schema_round_trips() {
    round_trip(requested());
    round_trip(NotificationRequested {
        idempotency_key: None,
        template: None,
        inline: Some(InlineContent {
            title: "Hi".into(),
            body: "there".into(),
            action_url: Some("https://example.com/x".into()),
        }),
        channels: vec![],
        priority: Priority::Critical,
        ..requested()
    });
    round_trip(NotificationEnriched {
        notification_id: "n".into(),
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "c".into(),
        priority: Priority::Low,
        requested_at_ms: 1,
        deliveries: vec![content()],
        deferrals: 2,
        defer_until_ms: Some(1_763_800_060_000),
    });
    round_trip(NotificationAdmitted {
        notification_id: "n".into(),
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "c".into(),
        priority: Priority::Normal,
        requested_at_ms: 2,
        deliveries: vec![content(), content()],
    });
    round_trip(Dispatch {
        delivery_id: ids::delivery_id("n", Channel::Sms, 1),
        notification_id: "n".into(),
        attempt: 1,
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "c".into(),
        priority: Priority::Normal,
        channel: Channel::Sms,
        address: "+15550100".into(),
        title: "t".into(),
        body: "b".into(),
        action_url: Some("https://x".into()),
        requested_at_ms: 3,
    });
    for state in [
        DeliveryState::Accepted,
        DeliveryState::Dispatched,
        DeliveryState::Delivered,
        DeliveryState::Failed,
        DeliveryState::InvalidToken,
        DeliveryState::Suppressed,
        DeliveryState::RateLimited,
        DeliveryState::Deferred,
    ] {
        round_trip(DeliveryResult {
            result_id: ids::result_id("n", None, 0, state),
            notification_id: "n".into(),
            delivery_id: None,
            tenant: "t".into(),
            recipient_user_id: "u".into(),
            category: "c".into(),
            channel: if state == DeliveryState::Accepted {
                None
            } else {
                Some(Channel::Webhook)
            },
            state,
            reason: Some("why".into()),
            provider_message_id: None,
            at_ms: 4,
        });
    }
    for kind in [
        EngagementKind::Opened,
        EngagementKind::Clicked,
        EngagementKind::Read,
    ] {
        round_trip(Engagement {
            event_id: "e".into(),
            notification_id: "n".into(),
            tenant: "t".into(),
            recipient_user_id: "u".into(),
            channel: Some(Channel::InApp),
            kind,
            at_ms: 5,
        });
    }
}

#[test]
fn fingerprints_differ_between_schemas() {
    let all = [
        NotificationRequested::schema().fingerprint,
        NotificationEnriched::schema().fingerprint,
        NotificationAdmitted::schema().fingerprint,
        Dispatch::schema().fingerprint,
        DeliveryResult::schema().fingerprint,
        Engagement::schema().fingerprint,
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn decoding_the_wrong_type_names_the_fingerprint() {
    let bytes = encode(&requested()).expect("encode");
    match decode::<Dispatch>(&bytes) {
        Err(SchemaError::UnknownWriterSchema(fp)) => {
            assert_eq!(
                fp.to_le_bytes(),
                NotificationRequested::schema().fingerprint
            )
        }
        other => panic!("expected UnknownWriterSchema, got {other:?}"),
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(matches!(
        decode::<Dispatch>(b""),
        Err(SchemaError::NotSingleObject(_))
    ));
    assert!(matches!(
        decode::<Dispatch>(b"{\"json\": true}"),
        Err(SchemaError::NotSingleObject(_))
    ));
    let mut truncated = encode(&requested()).expect("encode");
    truncated.truncate(truncated.len() - 5);
    assert!(matches!(
        decode::<NotificationRequested>(&truncated),
        Err(SchemaError::Avro(_))
    ));
}

proptest! {
    #[test]
    fn requested_round_trips_for_any_text(
        tenant in "\\PC{0,20}",
        user in "\\PC{0,40}",
        vars in proptest::collection::hash_map("\\PC{0,8}", "\\PC{0,16}", 0..4),
        at in any::<i64>(),
    ) {
        let event = NotificationRequested {
            tenant,
            recipient_user_id: user,
            template: Some(TemplateRef { template_id: "t".into(), locale: None, variables: vars }),
            requested_at_ms: at,
            ..requested()
        };
        let bytes = encode(&event).expect("encode");
        prop_assert_eq!(decode::<NotificationRequested>(&bytes).expect("decode"), event);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&NotificationRequested::schema().fingerprint);
        framed.extend_from_slice(&bytes);
        let _ = decode::<NotificationRequested>(&framed);
    }
}
