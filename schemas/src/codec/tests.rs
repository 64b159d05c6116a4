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
            version: None,
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
    // The framing is the spec's, not ours: apache-avro's own single-object reader agrees — where
    // its canonical form is the specification's (a schema with a logical type on a primitive
    // gets another fingerprint from it; `fingerprints_are_the_specifications` checks ours
    // against fastavro's).
    let schema = E::schema();
    if schema.fingerprint == schema.legacy_fingerprint {
        let reader = GenericSingleObjectReader::new(schema.schema.clone()).expect("reader");
        reader
            .read_value(&mut bytes.as_slice())
            .expect("apache-avro reads our single-object framing");
    }
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
    round_trip(BroadcastRequested {
        broadcast_id: "b".into(),
        tenant: "t".into(),
        topic: "releases".into(),
        category: "news".into(),
        priority: Priority::Low,
        template: None,
        inline: Some(InlineContent {
            title: "v2".into(),
            body: "is out".into(),
            action_url: None,
        }),
        channels: vec![Channel::InApp],
        requested_at_ms: 1_763_800_060_000,
        after: Some("u042".into()),
        expanded: 42,
    });
    round_trip(Change {
        kind: ChangeKind::Template,
        tenant: "t".into(),
        id: "welcome".into(),
        at_ms: 1_763_800_060_000,
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
        not_before_ms: Some(4),
        last_error: Some("503".into()),
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
fn a_dead_letter_round_trips_with_its_bytes() {
    round_trip(DeadLetter {
        source_topic: "p.enriched".into(),
        source_partition: 2,
        source_offset: 41,
        source_timestamp_ms: 6,
        stage: "rate-limit".into(),
        error: "poison record: not an Avro single-object encoded value".into(),
        attempts: 1,
        key: Some(b"t/u".to_vec()),
        value: vec![0, 159, 255, 1],
        headers: vec![
            RecordHeader {
                key: "traceparent".into(),
                value: Some(b"00-abc-def-01".to_vec()),
            },
            RecordHeader {
                key: "empty".into(),
                value: None,
            },
        ],
        at_ms: 7,
    });
}

/// An `enriched` record as a producer of the first schema version (before deferrals) wrote it.
fn enriched_v1() -> Vec<u8> {
    use apache_avro::types::Value;
    let v1 = &NotificationEnriched::history()[0];
    let delivery = Value::Record(vec![
        ("channel".into(), Value::Enum(0, "IN_APP".into())),
        ("address".into(), Value::String("u".into())),
        ("title".into(), Value::String("Hi".into())),
        ("body".into(), Value::String("there".into())),
        ("action_url".into(), Value::Union(0, Box::new(Value::Null))),
    ]);
    let record = Value::Record(vec![
        ("notification_id".into(), Value::String("n".into())),
        ("tenant".into(), Value::String("t".into())),
        ("recipient_user_id".into(), Value::String("u".into())),
        ("category".into(), Value::String("c".into())),
        ("priority".into(), Value::Enum(1, "NORMAL".into())),
        ("requested_at_ms".into(), Value::TimestampMillis(9)),
        ("deliveries".into(), Value::Array(vec![delivery])),
    ]);
    encode_value(v1, record).expect("a v1 record encodes")
}

#[test]
fn a_record_of_the_previous_schema_version_is_read_with_defaults() {
    let bytes = enriched_v1();
    assert_ne!(
        bytes[2..10],
        NotificationEnriched::schema().fingerprint,
        "written with another schema"
    );
    let n: NotificationEnriched = decode(&bytes).expect("an older producer's record is read");
    assert_eq!(n.notification_id, "n");
    assert_eq!(n.deliveries.len(), 1);
    assert_eq!(n.deliveries[0].title, "Hi");
    assert_eq!(n.deferrals, 0, "the field added since gets its default");
    assert_eq!(n.defer_until_ms, None);
}

#[test]
fn a_request_of_the_first_version_is_read_with_no_pinned_template_version() {
    use apache_avro::types::Value;
    let v1 = &NotificationRequested::history()[0];
    let text = |s: &str| Value::String(s.into());
    let template = Value::Record(vec![
        ("template_id".into(), text("welcome")),
        ("locale".into(), Value::Union(0, Box::new(Value::Null))),
        ("variables".into(), Value::Map(HashMap::new())),
    ]);
    let record = Value::Record(vec![
        ("notification_id".into(), text("n")),
        ("tenant".into(), text("t")),
        (
            "idempotency_key".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("recipient_user_id".into(), text("u")),
        ("category".into(), text("c")),
        ("priority".into(), Value::Enum(1, "NORMAL".into())),
        ("template".into(), Value::Union(1, Box::new(template))),
        ("inline".into(), Value::Union(0, Box::new(Value::Null))),
        ("channels".into(), Value::Array(vec![])),
        ("requested_at_ms".into(), Value::TimestampMillis(9)),
    ]);
    let bytes = encode_value(v1, record).expect("a v1 request encodes");
    let n: NotificationRequested = decode(&bytes).expect("read with the current schema");
    let t = n.template.expect("its template");
    assert_eq!((t.template_id.as_str(), t.version), ("welcome", None));
}

#[test]
fn a_dispatch_of_the_first_version_is_read_as_a_first_attempt() {
    use apache_avro::types::Value;
    let v1 = &Dispatch::history()[0];
    let text = |s: &str| Value::String(s.into());
    let record = Value::Record(vec![
        ("delivery_id".into(), text("d")),
        ("notification_id".into(), text("n")),
        ("attempt".into(), Value::Int(1)),
        ("tenant".into(), text("t")),
        ("recipient_user_id".into(), text("u")),
        ("category".into(), text("c")),
        ("priority".into(), Value::Enum(1, "NORMAL".into())),
        ("channel".into(), Value::Enum(4, "EMAIL".into())),
        ("address".into(), text("u@example.com")),
        ("title".into(), text("Hi")),
        ("body".into(), text("there")),
        ("action_url".into(), Value::Union(0, Box::new(Value::Null))),
        ("requested_at_ms".into(), Value::TimestampMillis(9)),
    ]);
    let bytes = encode_value(v1, record).expect("a v1 dispatch encodes");
    let d: Dispatch = decode(&bytes).expect("an older fan-out's dispatch is read");
    assert_eq!((d.channel, d.attempt), (Channel::Email, 1));
    assert_eq!((d.not_before_ms, d.last_error), (None, None));
}

#[test]
fn a_record_of_a_newer_known_version_is_read_without_its_new_field() {
    // A next version that adds a field; a consumer that ships it as known reads such records.
    let mut next = NotificationAdmitted::SCHEMA_JSON.to_owned();
    let at = next.rfind(']').expect("the fields array ends");
    next.insert_str(
        at,
        r#", {"name": "campaign", "type": "string", "default": ""}"#,
    );
    let newer = parse_schema(&next).expect("the next version parses");
    let admitted = NotificationAdmitted {
        notification_id: "n".into(),
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "c".into(),
        priority: Priority::High,
        requested_at_ms: 2,
        deliveries: vec![content()],
    };
    let mut value = apache_avro::to_value(&admitted).expect("to value");
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.push((
            "campaign".into(),
            apache_avro::types::Value::String("spring".into()),
        ));
    }
    let bytes = encode_value(&newer, value).expect("a newer record encodes");
    let unknown = decode::<NotificationAdmitted>(&bytes).expect_err("not known to this build");
    assert!(unknown.is_unknown_schema(), "{unknown}");
    let read: NotificationAdmitted =
        decode_with(&bytes, std::slice::from_ref(&newer)).expect("read once it is known");
    assert_eq!(read, admitted);
}

#[test]
fn a_tiny_record_claiming_a_huge_array_is_an_error() {
    // An `enriched` header, four empty strings, a priority, a time, then an array that claims
    // 2^40 elements in 7 bytes.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&NotificationEnriched::schema().fingerprint);
    bytes.extend_from_slice(&[0, 0, 0, 0, 2, 2]);
    bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    let error = decode::<NotificationEnriched>(&bytes).expect_err("refused, not allocated");
    assert!(!error.is_unknown_schema());
    // A string that claims more than the limit, too.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&NotificationEnriched::schema().fingerprint);
    bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x08]);
    assert!(decode::<NotificationEnriched>(&bytes).is_err());
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
        DeadLetter::schema().fingerprint,
        Change::schema().fingerprint,
        BroadcastRequested::schema().fingerprint,
        NotificationEnriched::history()[0].fingerprint,
        NotificationRequested::history()[0].fingerprint,
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
            template: Some(TemplateRef { template_id: "t".into(), locale: None, variables: vars, version: None }),
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

/// Half a mebibyte in one string decodes (the limit is 1 MiB, a Kafka record's default size).
#[test]
fn values_up_to_the_allocation_limit_decode() {
    let mut big = requested();
    big.template = None;
    big.inline = Some(InlineContent {
        title: "t".into(),
        body: "x".repeat(512 * 1024),
        action_url: None,
    });
    round_trip(big);
}

#[test]
fn a_value_with_a_whole_header_is_read_past_it() {
    let value = encode(&requested()).expect("encode");
    // Header only: recognised as single-object encoded, then the body fails to decode.
    let header_only = &value[..HEADER_LEN];
    assert!(!matches!(
        decode::<NotificationRequested>(header_only),
        Err(SchemaError::NotSingleObject(_)) | Ok(_)
    ));
    assert!(matches!(
        decode::<NotificationRequested>(&value[..HEADER_LEN - 1]),
        Err(SchemaError::NotSingleObject(_))
    ));
}

/// The fingerprints any Avro library computes from the `.avsc` files (these from Python's
/// fastavro: `fastavro.schema.fingerprint(to_parsing_canonical_form(parse_schema(...)),
/// "CRC-64-AVRO")`, the little-endian bytes in hex), and the specification's own example.
#[test]
fn fingerprints_are_the_specifications() {
    let hex = |f: [u8; 8]| f.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        u64::from_le_bytes(super::crc64_avro(b"\"null\"")),
        7_195_948_357_588_979_594
    );
    for (fingerprint, expected) in [
        (DeliveryResult::schema().fingerprint, "3059ebba77ce74b6"),
        (Engagement::schema().fingerprint, "6f4c0e103a0d7f4c"),
        (DeadLetter::schema().fingerprint, "c138f08e8e0c4a11"),
        (Change::schema().fingerprint, "ac9a6270c3a5cb19"),
        (BroadcastRequested::schema().fingerprint, "3aa00d4947b61531"),
        (Dispatch::schema().fingerprint, "3a04df4bba294a26"),
        (Dispatch::history()[0].fingerprint, "7652fe400e26f589"),
        (
            NotificationAdmitted::schema().fingerprint,
            "1767a7693504a1e3",
        ),
        (
            NotificationEnriched::schema().fingerprint,
            "dc445ae36550bf88",
        ),
        (
            NotificationEnriched::history()[0].fingerprint,
            "6afe4055cb759d78",
        ),
        (
            NotificationRequested::schema().fingerprint,
            "4bc7259b6a3ad208",
        ),
        (
            NotificationRequested::history()[0].fingerprint,
            "86fa415b7275ba15",
        ),
    ] {
        assert_eq!(hex(fingerprint), expected);
    }
}

/// Records written before the fingerprint followed the specification are still read.
#[test]
fn a_record_with_the_legacy_fingerprint_is_read() {
    let schema = DeliveryResult::schema();
    assert_ne!(schema.fingerprint, schema.legacy_fingerprint);
    // What apache-avro's own fingerprint gave for this schema, on the wire until 2026-11-30.
    assert_eq!(
        schema.legacy_fingerprint,
        [12, 144, 160, 204, 250, 255, 147, 173]
    );
    let event = DeliveryResult {
        result_id: "r".into(),
        notification_id: "n".into(),
        delivery_id: None,
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        category: "c".into(),
        channel: None,
        state: crate::DeliveryState::Accepted,
        reason: None,
        provider_message_id: None,
        at_ms: 1,
    };
    let mut bytes = encode(&event).expect("encodes");
    assert_eq!(bytes[2..10], schema.fingerprint);
    bytes[2..10].copy_from_slice(&schema.legacy_fingerprint);
    assert_eq!(decode::<DeliveryResult>(&bytes).expect("decodes"), event);
}
