//! The webhook channel over its real protocol, with retries through `<p>.retry.webhook.30s`: a
//! receiver (HTTPS, a certificate made by the test) that answers 503 with `Retry-After` twice
//! per notification gets each one three times — signed, with a new idempotency key per
//! attempt — and accepts it the third time; the timeline says DEFERRED, DEFERRED, DELIVERED.
//! A receiver that is down gets each notification `max_attempts` times; then the dispatch is in
//! the dead-letter topic and the channel FAILED with the last error. The in-app channel of the
//! same notifications is delivered meanwhile, and nothing is delivered twice. Once the receiver
//! is fixed, `herald replay` re-drives the dead letter: delivered, once, after two replays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use herald_schemas::codec::decode;
use herald_schemas::{Channel, DeadLetter, DeliveryState};
use herald_store::Contact;
use herald_tests::receiver::Receiver;
use herald_tests::topic::read_records;
use herald_tests::{Broker, Platform, inline_request, settled};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const SECRET: &str = "a-webhook-secret-of-some-length";
const FLAKY: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_receiver_gets_each_notification_after_retries_and_a_dead_one_fails_it() {
    tokio::time::timeout(TEST_LIMIT, webhooks())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn webhooks() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let receiver = Receiver::start(SECRET.as_bytes()).await?;
    let platform = Platform::configure(&broker, "")?;
    let secret = platform.write_file("webhook.secret", &format!("{SECRET}\n"))?;
    let ca = platform.write_file("ca.pem", &receiver.ca_pem)?;
    let platform = platform.with_extra_config(&format!(
        "[provider.webhook]\nsecret_file = \"{}\"\nca_file = \"{}\"\ntimeout_ms = 5000\n\
         [deliver.retry]\nmax_attempts = 3\nfirst_backoff_ms = 300\nmax_backoff_ms = 2000\n",
        secret.display(),
        ca.display(),
    ))?;
    {
        let store = herald_stores::open(&platform.store_url).await?;
        for u in 0..FLAKY {
            let hook = Contact {
                channel: Channel::Webhook,
                address: receiver.url("/flaky/2"),
            };
            store
                .put_contact("acme", &format!("flaky-{u}"), &hook)
                .await?;
        }
        let down = Contact {
            channel: Channel::Webhook,
            address: receiver.url("/down"),
        };
        store.put_contact("acme", "gone", &down).await?;
    }
    let platform = platform.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut sent = BTreeMap::new();
    for user in (0..FLAKY)
        .map(|u| format!("flaky-{u}"))
        .chain(["gone".to_owned()])
    {
        let request = inline_request("acme", &user, "general", &format!("hello {user}"));
        let id = ingress
            .send_notification(request)
            .await?
            .into_inner()
            .notification_id;
        sent.insert(id, user);
    }

    // Settled: every flaky notification accepted once, the dead one tried three times.
    let calls = settled(Duration::from_secs(150), "the receiver's requests", || {
        let requests = receiver.requests();
        async move {
            let accepted = requests.iter().filter(|r| r.status == 200).count();
            let refused_dead = requests.iter().filter(|r| r.path == "/down").count();
            Ok((accepted >= FLAKY && refused_dead >= 3).then_some(requests))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", platform.log_tail()))?;
    assert!(
        calls.iter().all(|r| r.signed),
        "every request signed: {calls:?}"
    );
    for (id, user) in &sent {
        let mine: Vec<_> = calls.iter().filter(|r| &r.notification_id == id).collect();
        let statuses: Vec<u16> = mine.iter().map(|r| r.status).collect();
        let attempts: Vec<i64> = mine.iter().map(|r| r.attempt).collect();
        let expected = if user == "gone" {
            [503, 503, 503]
        } else {
            [503, 503, 200]
        };
        assert_eq!(statuses, expected, "{user}: {mine:?}");
        assert_eq!(attempts, [1, 2, 3], "{user}");
        let keys: std::collections::BTreeSet<_> = mine.iter().map(|r| &r.idempotency_key).collect();
        assert_eq!(keys.len(), 3, "a new delivery id per attempt: {mine:?}");
    }

    // The timelines.
    let store = herald_stores::open(&platform.store_url).await?;
    for (id, user) in &sent {
        let webhook_states = settled(Duration::from_secs(60), "the timeline", || {
            let store = &store;
            async move {
                let Some((_, timeline)) = store.get_notification("acme", id).await? else {
                    return Ok(None);
                };
                let states: Vec<(DeliveryState, Option<String>)> = timeline
                    .iter()
                    .filter(|e| e.channel == Some(Channel::Webhook))
                    .map(|e| (e.state, e.reason.clone()))
                    .collect();
                let in_app = timeline.iter().any(|e| {
                    e.channel == Some(Channel::InApp) && e.state == DeliveryState::Delivered
                });
                let done = states.last().is_some_and(|(s, _)| s.is_final());
                Ok((done && in_app).then_some(states))
            }
        })
        .await?;
        let states: Vec<DeliveryState> = webhook_states.iter().map(|(s, _)| *s).collect();
        let last = if user == "gone" {
            DeliveryState::Failed
        } else {
            DeliveryState::Delivered
        };
        // Events stamped in the same millisecond sort by id: compare as a multiset, and the
        // final state last.
        let mut sorted = states.clone();
        sorted.sort_by_key(|s| s.as_str());
        let mut expected = vec![
            DeliveryState::Dispatched,
            DeliveryState::Deferred,
            DeliveryState::Deferred,
            last,
        ];
        expected.sort_by_key(|s| s.as_str());
        assert_eq!(sorted, expected, "{user}: {webhook_states:?}");
        assert_eq!(states.last(), Some(&last), "{user}: {webhook_states:?}");
        if user == "gone" {
            let reason = webhook_states
                .last()
                .and_then(|(_, r)| r.clone())
                .unwrap_or_default();
            assert!(
                reason.contains("gave up after 3 attempts") && reason.contains("503"),
                "{reason}"
            );
        }
    }

    // The dead one's dispatch is in the dead-letter topic, once.
    let (b, t) = (
        broker.bootstrap.clone(),
        format!("{}.dead-letter", platform.prefix),
    );
    let letters: Vec<DeadLetter> = tokio::task::spawn_blocking(move || read_records(&b, &t))
        .await??
        .iter()
        .map(|r| decode(&r.value))
        .collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].stage, "deliver");
    assert_eq!(
        letters[0].source_topic,
        format!("{}.retry.webhook.30s", platform.prefix)
    );

    // The receiver is fixed; `herald replay` re-drives the dead letter and it is delivered —
    // once, however many times it is replayed.
    receiver.heal();
    let dry = platform
        .run_command(&["replay", "--stage", "deliver", "--dry-run"])
        .await?;
    assert!(dry.contains("1 of 1 dead letters selected"), "{dry}");
    let gone_id = sent
        .iter()
        .find(|(_, user)| *user == "gone")
        .map(|(id, _)| id.clone())
        .expect("the dead one");
    let delivered = |calls: &[herald_tests::receiver::Received]| {
        calls
            .iter()
            .filter(|r| r.notification_id == gone_id && r.status == 200)
            .count()
    };
    for _ in 0..2 {
        let out = platform
            .run_command(&[
                "replay",
                "--stage",
                "deliver",
                "--source",
                "retry.webhook.30s",
            ])
            .await?;
        assert!(out.contains("replayed 1 of 1"), "{out}");
        settled(Duration::from_secs(60), "the replayed delivery", || {
            let calls = receiver.requests();
            async move { Ok((delivered(&calls) >= 1).then_some(delivered(&calls))) }
        })
        .await?;
    }
    assert_eq!(
        delivered(&receiver.requests()),
        1,
        "delivered once after two replays"
    );
    let timeline = store
        .get_notification("acme", &gone_id)
        .await?
        .expect("known");
    assert!(
        timeline
            .1
            .iter()
            .any(|e| e.channel == Some(Channel::Webhook) && e.state == DeliveryState::Delivered),
        "{timeline:?}"
    );
    Ok(())
}
