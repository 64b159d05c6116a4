//! Records no stage can process go to `<p>.dead-letter`, whole and explained, and the stages go
//! on: garbage and records written with a schema this build does not know, put on every topic a
//! stage consumes, each come back once as a dead letter naming its source topic, partition,
//! offset and stage; a record written with the previous schema version is processed instead; and
//! a notification sent afterwards is delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use herald_runtime::topics::Topics;
use herald_schemas::codec::{MAGIC, decode};
use herald_schemas::{Channel, DeadLetter, DeliveryState};
use herald_tests::topic::read_records;
use herald_tests::{Broker, Platform, eventually, inline_request, settled};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const TEST_LIMIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_unknown_records_become_dead_letters_on_every_consumed_topic() {
    tokio::time::timeout(TEST_LIMIT, dead_letters())
        .await
        .expect("test timed out")
        .unwrap();
}

/// A value framed as Avro single-object encoding with a fingerprint nobody knows.
fn unknown_schema_record() -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF, 0, 1, 2, 3]);
    v.extend_from_slice(b"\x02a");
    v
}

/// An `enriched` record as written by the first schema version (before deferrals existed).
fn enriched_v1(tenant: &str, user: &str, id: &str) -> Vec<u8> {
    use apache_avro::types::Value;
    use herald_schemas::NotificationEnriched;
    use herald_schemas::codec::{Event, encode_value};
    let delivery = Value::Record(vec![
        ("channel".into(), Value::Enum(0, "IN_APP".into())),
        ("address".into(), Value::String(user.into())),
        (
            "title".into(),
            Value::String("from an older producer".into()),
        ),
        ("body".into(), Value::String("v1".into())),
        ("action_url".into(), Value::Union(0, Box::new(Value::Null))),
    ]);
    let record = Value::Record(vec![
        ("notification_id".into(), Value::String(id.into())),
        ("tenant".into(), Value::String(tenant.into())),
        ("recipient_user_id".into(), Value::String(user.into())),
        ("category".into(), Value::String("general".into())),
        ("priority".into(), Value::Enum(1, "NORMAL".into())),
        ("requested_at_ms".into(), Value::TimestampMillis(now_ms())),
        ("deliveries".into(), Value::Array(vec![delivery])),
    ]);
    encode_value(&NotificationEnriched::history()[0], record).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn dead_letters() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let topics = Topics::new(&platform.prefix);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()?;

    // Each consumed topic, with the stages (consumer groups) that read it.
    let mut consumed: Vec<(String, Vec<String>)> = vec![
        (
            topics.requested(),
            vec!["enrich".into(), "store-writer".into()],
        ),
        (topics.enriched(), vec!["rate-limit".into()]),
        (topics.deferred(), vec!["rate-limit.deferred".into()]),
        (topics.admitted(), vec!["fan-out".into()]),
        (topics.delivery_result(), vec!["store-writer".into()]),
    ];
    for c in Channel::ALL {
        consumed.push((topics.dispatch(c), vec![format!("deliver.{}", c.as_str())]));
    }
    // What we put where: (topic, partition, offset) of each bad record.
    let mut sent = Vec::new();
    for (topic, _) in &consumed {
        for (i, value) in [b"not avro at all".to_vec(), unknown_schema_record()]
            .into_iter()
            .enumerate()
        {
            let headers = OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            });
            let delivered = producer
                .send(
                    FutureRecord::to(topic)
                        .key(&format!("acme/bad-{i}"))
                        .payload(&value)
                        .headers(headers),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)?;
            sent.push((topic.clone(), delivered.partition, delivered.offset, value));
        }
    }
    // A record of the previous `enriched` schema: read, not dead-lettered.
    producer
        .send(
            FutureRecord::to(&topics.enriched())
                .key("acme/old-producer")
                .payload(&enriched_v1("acme", "old-producer", "v1-notification")),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    // Every bad record comes back once per stage that read it.
    let want: usize = consumed.iter().map(|(_, s)| s.len() * 2).sum();
    let dlq = topics.dead_letter();
    let bootstrap = broker.bootstrap.clone();
    let letters: Vec<DeadLetter> = settled(Duration::from_secs(120), "every dead letter", || {
        let (b, t) = (bootstrap.clone(), dlq.clone());
        async move {
            let records = tokio::task::spawn_blocking(move || read_records(&b, &t)).await??;
            let letters: Vec<DeadLetter> = records
                .iter()
                .map(|r| decode(&r.value))
                .collect::<Result<_, _>>()?;
            Ok((letters.len() >= want).then_some(letters))
        }
    })
    .await?;
    assert_eq!(
        letters.len(),
        want,
        "one dead letter per bad record and stage"
    );

    let mut by_source: BTreeMap<(String, i32, i64), Vec<&DeadLetter>> = BTreeMap::new();
    for l in &letters {
        by_source
            .entry((l.source_topic.clone(), l.source_partition, l.source_offset))
            .or_default()
            .push(l);
    }
    for (topic, partition, offset, value) in &sent {
        let stages: Vec<String> = consumed
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, s)| s.clone())
            .unwrap();
        let got = by_source
            .get(&(topic.clone(), *partition, *offset))
            .unwrap_or_else(|| panic!("no dead letter for {topic}[{partition}]@{offset}"));
        let mut got_stages: Vec<String> = got.iter().map(|l| l.stage.clone()).collect();
        got_stages.sort();
        let mut want_stages = stages.clone();
        want_stages.sort();
        assert_eq!(got_stages, want_stages, "{topic}@{offset}");
        for l in got {
            assert_eq!(&l.value, value, "the original value, whole");
            assert_eq!(
                l.key.as_deref().map(|k| k.starts_with(b"acme/bad-")),
                Some(true)
            );
            assert_eq!(l.headers.len(), 1, "the original headers");
            assert!(!l.error.is_empty());
            if value.starts_with(&MAGIC) {
                assert!(l.error.contains("unknown writer schema"), "{}", l.error);
            }
        }
    }

    // The stages went on: a notification sent now is delivered, and so was the v1 record.
    let mut ingress = platform.ingress_client("acme").await?;
    let id = ingress
        .send_notification(inline_request("acme", "after", "general", "still flowing"))
        .await?
        .into_inner()
        .notification_id;
    let store = herald_stores::open(&platform.store_url).await?;
    for (user, id) in [("after", id.as_str()), ("old-producer", "v1-notification")] {
        eventually(
            Duration::from_secs(60),
            "delivery after the bad records",
            || {
                let store = store.clone();
                async move {
                    let page = store
                        .list_inbox(&herald_store::InboxQuery::first_page("acme", user, 10))
                        .await?;
                    Ok(page
                        .entries
                        .iter()
                        .any(|e| e.notification_id == id)
                        .then_some(()))
                }
            },
        )
        .await?;
    }
    eventually(Duration::from_secs(60), "the DELIVERED state", || {
        let (store, id) = (store.clone(), id.clone());
        async move {
            let delivered = store
                .get_notification("acme", &id)
                .await?
                .is_some_and(|(_, t)| t.iter().any(|e| e.state == DeliveryState::Delivered));
            Ok(delivered.then_some(()))
        }
    })
    .await?;
    Ok(())
}
