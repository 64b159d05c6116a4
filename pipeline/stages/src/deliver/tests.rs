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
    let mut deliver = DeliverProcessor::new(Arc::clone(&store), connector, Topics::new("t"));
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
    let mut deliver = DeliverProcessor::new(Arc::clone(&store), connector, Topics::new("t"));
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
