//! The deliver stage's batches on the embedded store: an idempotent connector (the inbox) gets
//! a batch in one call, any other connector is called for several recipients at once, each
//! recipient's dispatches in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_connectors::in_app::InAppConnector;
use herald_connectors::{Connector, Outcome};
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::codec::{decode, encode};
use herald_schemas::{Channel, DeliveryResult, DeliveryState, Dispatch, Priority};
use herald_store::{Clock, InboxQuery, Store, SystemClock};
use herald_store_sqlite::SqliteStore;
use tokio::sync::Notify;

use super::DeliverProcessor;
use super::retry::RetryPolicy;

fn processor(
    store: &Arc<dyn Store>,
    connector: Arc<dyn Connector>,
    policy: RetryPolicy,
    clock: impl Clock + 'static,
) -> DeliverProcessor {
    DeliverProcessor::new(
        Arc::clone(store),
        connector,
        Topics::new("t"),
        policy,
        Arc::new(clock),
    )
}

fn dispatch(user: &str, n: u32) -> Dispatch {
    Dispatch {
        delivery_id: format!("d-{user}-{n}"),
        notification_id: format!("n-{user}-{n}"),
        attempt: 1,
        tenant: "t".into(),
        recipient_user_id: user.into(),
        category: "news".into(),
        priority: Priority::Normal,
        channel: Channel::InApp,
        address: user.into(),
        title: format!("title {n}"),
        body: "body".into(),
        action_url: None,
        requested_at_ms: SystemClock.now_ms() - 60_000 + i64::from(n),
        not_before_ms: None,
        last_error: None,
    }
}

/// The records as the runner hands them over: (key, payload).
fn records(dispatches: &[Dispatch]) -> Vec<(Vec<u8>, Vec<u8>)> {
    dispatches
        .iter()
        .map(|d| {
            let key = format!("{}/{}", d.tenant, d.recipient_user_id).into_bytes();
            (key, encode(d).unwrap())
        })
        .collect()
}

fn inputs(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<Input<'_>> {
    records
        .iter()
        .enumerate()
        .map(|(i, (key, payload))| Input {
            topic: "dispatch.in-app",
            partition: 0,
            offset: i as i64,
            key: Some(key),
            payload,
            timestamp_ms: SystemClock.now_ms(),
            trace: None,
        })
        .collect()
}

/// The notification id and state of each result.
fn results(
    outputs: &[Result<Vec<Output>, ProcessError>],
) -> Vec<Result<(String, DeliveryState), String>> {
    outputs
        .iter()
        .map(|r| match r {
            Ok(out) => {
                let r: DeliveryResult = decode(&out[0].payload).unwrap();
                Ok((r.notification_id, r.state))
            }
            Err(e) => Err(e.to_string()),
        })
        .collect()
}

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("herald.db"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

#[tokio::test]
async fn in_app_dispatches_are_written_together_and_answered_in_order_up_to_a_poison_one() {
    let (_dir, store) = store().await;
    let connector = Arc::new(InAppConnector::new(Arc::clone(&store)));
    let mut deliver = processor(&store, connector, RetryPolicy::default(), SystemClock);
    let mut batch = records(&[dispatch("ann", 1), dispatch("bob", 1), dispatch("ann", 2)]);
    batch.push((b"t/ann".to_vec(), b"not avro".to_vec()));
    batch.extend(records(&[dispatch("bob", 2)]));

    let out = deliver.process_batch(&inputs(&batch)).await;
    let got = results(&out);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[..3],
        [
            Ok(("n-ann-1".to_owned(), DeliveryState::Delivered)),
            Ok(("n-bob-1".to_owned(), DeliveryState::Delivered)),
            Ok(("n-ann-2".to_owned(), DeliveryState::Delivered)),
        ]
    );
    assert!(matches!(out[3], Err(ProcessError::Poison(_))), "{got:?}");
    let inbox = store
        .list_inbox(&InboxQuery::first_page("t", "ann", 10))
        .await
        .unwrap();
    let ids: Vec<&str> = inbox
        .entries
        .iter()
        .map(|e| e.notification_id.as_str())
        .collect();
    assert_eq!(ids, ["n-ann-2", "n-ann-1"]);
}

/// A provider whose first call for `ann` waits until a call for `bob` has begun, noting the
/// order of calls.
struct Rendezvous {
    bob_called: Notify,
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl Connector for Rendezvous {
    async fn send(&self, d: &Dispatch) -> Outcome {
        self.calls.lock().unwrap().push(d.notification_id.clone());
        if d.notification_id == "n-ann-1" {
            self.bob_called.notified().await;
        } else {
            self.bob_called.notify_one();
        }
        Outcome::Delivered {
            provider_message_id: None,
        }
    }
}

#[tokio::test]
async fn a_slow_call_for_one_recipient_does_not_hold_up_the_others_nor_reorder_its_own() {
    let (_dir, store) = store().await;
    let provider = Arc::new(Rendezvous {
        bob_called: Notify::new(),
        calls: Mutex::default(),
    });
    let connector: Arc<dyn Connector> = Arc::clone(&provider) as Arc<dyn Connector>;
    let mut deliver = processor(&store, connector, RetryPolicy::default(), SystemClock);
    // ann's first call waits for bob's: delivered one at a time, this would never finish.
    let batch = records(&[dispatch("ann", 1), dispatch("ann", 2), dispatch("bob", 1)]);
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        deliver.process_batch(&inputs(&batch)),
    )
    .await
    .expect("the call for bob was made while ann's waited");
    let got = results(&out);
    let delivered = |id: &str| Ok((id.to_owned(), DeliveryState::Delivered));
    assert_eq!(
        got,
        [
            delivered("n-ann-1"),
            delivered("n-ann-2"),
            delivered("n-bob-1")
        ]
    );
    let calls = provider.calls.lock().unwrap().clone();
    let ann: Vec<&String> = calls.iter().filter(|c| c.starts_with("n-ann")).collect();
    assert_eq!(
        ann,
        ["n-ann-1", "n-ann-2"],
        "ann's calls in order: {calls:?}"
    );
}

/// A provider answering from a script, one outcome per call.
struct Scripted {
    outcomes: Mutex<std::collections::VecDeque<Outcome>>,
}

impl Scripted {
    fn new(outcomes: impl IntoIterator<Item = Outcome>) -> Arc<Scripted> {
        Arc::new(Scripted {
            outcomes: Mutex::new(outcomes.into_iter().collect()),
        })
    }
}

#[async_trait]
impl Connector for Scripted {
    async fn send(&self, _d: &Dispatch) -> Outcome {
        self.outcomes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Outcome::Failed("the script ran out".into()))
    }
}

fn sms(n: u32) -> Dispatch {
    Dispatch {
        channel: Channel::Sms,
        address: "+15550100".into(),
        ..dispatch("ann", n)
    }
}

fn one(payload: &[u8], at_ms: i64) -> Input<'_> {
    Input {
        topic: "t.retry.sms.5m",
        partition: 0,
        offset: 0,
        key: Some(b"t/ann"),
        payload,
        timestamp_ms: at_ms,
        trace: None,
    }
}

#[tokio::test]
async fn a_failure_for_now_is_retried_from_the_retry_topic_once_due_without_holding_the_partition()
{
    let (_dir, store) = store().await;
    let now = SystemClock.now_ms();
    let clock = herald_store::ManualClock::at(now);
    let provider = Scripted::new([
        Outcome::Retry {
            reason: "503 Service Unavailable".into(),
            after: Some(Duration::from_secs(60)),
        },
        Outcome::Delivered {
            provider_message_id: Some("sm-1".into()),
        },
    ]);
    let mut deliver = processor(&store, provider, RetryPolicy::default(), clock.clone());

    // Attempt 1 fails for now: the next attempt goes to the retry topic, with a DEFERRED result.
    let payload = encode(&sms(1)).unwrap();
    let out = deliver.process(&one(&payload, now)).await.expect("handled");
    assert_eq!(out.len(), 2, "{out:?}");
    // A wait of a minute or so goes to the 5-minute tier.
    assert_eq!(out[0].topic, "t.retry.sms.5m");
    let next: Dispatch = decode(&out[0].payload).unwrap();
    assert_eq!(next.attempt, 2);
    assert_eq!(next.last_error.as_deref(), Some("503 Service Unavailable"));
    let due = next.not_before_ms.expect("a not-before time");
    assert!(
        due >= now + 60_000,
        "the provider's Retry-After is honoured"
    );
    let deferred: DeliveryResult = decode(&out[1].payload).unwrap();
    assert_eq!(deferred.state, DeliveryState::Deferred);
    assert!(deferred.reason.unwrap().contains("503"));

    // Read back before it is due: the runner is told to wait, and nothing is called.
    let retry = out[0].payload.clone();
    match deliver.process(&one(&retry, now + 1)).await {
        Err(ProcessError::NotDue(wait)) => {
            assert_eq!(wait, Duration::from_millis((due - now) as u64));
        }
        other => panic!("{other:?}"),
    }
    clock.set(due);
    let out = deliver
        .process(&one(&retry, now + 1))
        .await
        .expect("delivered");
    let delivered: DeliveryResult = decode(&out[0].payload).unwrap();
    assert_eq!(
        (delivered.state, delivered.delivery_id),
        (DeliveryState::Delivered, Some(next.delivery_id))
    );
}

#[tokio::test]
async fn a_spent_budget_dead_letters_the_dispatch_and_fails_the_channel_with_the_last_error() {
    let (_dir, store) = store().await;
    let provider = Scripted::new([Outcome::retry("connection refused")]);
    let policy = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let mut deliver = processor(&store, provider, policy, SystemClock);
    let payload = encode(&sms(1)).unwrap();
    let out = deliver
        .process(&one(&payload, SystemClock.now_ms()))
        .await
        .expect("handled");
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].topic, Topics::new("t").dead_letter());
    let letter: herald_schemas::DeadLetter = decode(&out[0].payload).unwrap();
    assert_eq!(letter.value, payload, "the dispatch, whole");
    assert!(
        letter.error.contains("connection refused"),
        "{}",
        letter.error
    );
    assert_eq!((letter.stage.as_str(), letter.attempts), ("deliver", 1));
    let failed: DeliveryResult = decode(&out[1].payload).unwrap();
    assert_eq!(failed.state, DeliveryState::Failed);
    assert!(failed.reason.unwrap().contains("connection refused"));
}

#[tokio::test]
async fn a_retry_due_later_than_any_retry_waits_is_poison_not_a_parked_partition() {
    let (_dir, store) = store().await;
    let provider = Scripted::new([]);
    let mut deliver = processor(&store, provider, RetryPolicy::default(), SystemClock);
    let now = SystemClock.now_ms();
    let longest = RetryPolicy::default().longest_wait().as_millis() as i64;
    for not_before in [
        now + longest + 60_000,
        now + 10 * 365 * 86_400_000,
        i64::MAX,
    ] {
        let far = Dispatch {
            attempt: 2,
            not_before_ms: Some(not_before),
            ..sms(1)
        };
        let payload = encode(&far).unwrap();
        match deliver.process(&one(&payload, now)).await {
            Err(ProcessError::Poison(reason)) => assert!(reason.contains("later than"), "{reason}"),
            other => panic!("not before {not_before}: {other:?}"),
        }
    }
    // The longest planned wait itself is only waited for.
    let edge = Dispatch {
        attempt: 2,
        not_before_ms: Some(now + longest - 1_000),
        ..sms(1)
    };
    let payload = encode(&edge).unwrap();
    assert!(matches!(
        deliver.process(&one(&payload, now)).await,
        Err(ProcessError::NotDue(_))
    ));
}

#[tokio::test]
async fn an_address_the_provider_refuses_is_removed_from_the_contacts_once_reported() {
    let (_dir, store) = store().await;
    let phone = herald_store::Contact {
        channel: Channel::Sms,
        address: "+15550100".into(),
    };
    let email = herald_store::Contact {
        channel: Channel::Email,
        address: "ann@example.com".into(),
    };
    store.put_contact("t", "ann", &phone).await.unwrap();
    store.put_contact("t", "ann", &email).await.unwrap();
    let provider = Scripted::new([Outcome::InvalidToken(
        "twilio answered 400: 21211 Invalid 'To' Phone Number".into(),
    )]);
    let mut deliver = processor(&store, provider, RetryPolicy::default(), SystemClock);
    let payload = encode(&sms(1)).unwrap();
    let out = deliver.process(&one(&payload, 1)).await.expect("handled");
    let result: DeliveryResult = decode(&out[0].payload).unwrap();
    assert_eq!(result.state, DeliveryState::InvalidToken);
    assert!(result.reason.unwrap().contains("21211"));
    let profile = store.recipient_profile("t", "ann").await.unwrap();
    assert_eq!(profile.contacts, vec![email.clone()]);
    // Enrich caches are told to drop her profile.
    assert_eq!(out.len(), 2);
    assert!(out[1].topic.ends_with(".changes"), "{}", out[1].topic);
    let change: herald_schemas::Change = decode(&out[1].payload).unwrap();
    assert_eq!(
        (change.kind, change.tenant.as_str(), change.id.as_str()),
        (herald_schemas::ChangeKind::Recipient, "t", "ann")
    );
    assert_eq!(out[1].key, "recipient/t/ann");

    // A replay reports the recorded outcome again without a call; the number registered
    // since then is kept.
    let new_phone = herald_store::Contact {
        address: "+15550199".into(),
        ..phone
    };
    store.put_contact("t", "ann", &new_phone).await.unwrap();
    let again = deliver.process(&one(&payload, 1)).await.expect("handled");
    assert_eq!(again.len(), 2);
    let profile = store.recipient_profile("t", "ann").await.unwrap();
    assert_eq!(profile.contacts, vec![email, new_phone]);
}
