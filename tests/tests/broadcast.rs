//! Broadcasts and the bulk lane against a running platform: a broadcast to a topic reaches each
//! subscriber once (more subscribers than one chunk of the expander), not those who left or
//! never came, and travels the bulk lane's topics only; sending it again delivers nothing twice.
//! Under the crash test's kills, a broadcast and two batches still reach each recipient exactly
//! once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_proto::v1::{
    BatchRecipient, BroadcastRequest, Channel, EraseRecipientRequest, ExportRecipientRequest,
    InlineContent, SendBatchRequest, SubscribeRequest, broadcast_request, send_batch_request,
};
use herald_schemas::{NotificationRequested, ids};
use herald_tests::audit::{inbox_ids, wait_quiet};
use herald_tests::chaos::{self, ChaosPlan};
use herald_tests::clients::{IngressClient, ManagementClient, QueryClient};
use herald_tests::topic::read_records;
use herald_tests::{Broker, Platform, eventually};
use rand::Rng;
use tonic::Code;

const TEST_LIMIT: Duration = Duration::from_secs(540);

fn user(i: usize) -> String {
    format!("sub-{i:05}")
}

async fn subscribe(manage: &ManagementClient, users: &[String], subscribed: bool) {
    for chunk in users.chunks(50) {
        let calls = chunk.iter().map(|u| {
            let mut manage = manage.clone();
            let request = SubscribeRequest {
                tenant: "acme".into(),
                recipient_user_id: u.clone(),
                topic: "releases".into(),
                subscribed,
            };
            // Subscribing is idempotent: a call cut off in transit is made again, as a client
            // would (once a connection was reset right after the platform started).
            async move {
                let mut last = None;
                for _ in 0..5 {
                    match manage.subscribe(request.clone()).await {
                        Ok(r) => return Ok(r),
                        Err(e) if matches!(e.code(), Code::Unknown | Code::Unavailable) => {
                            last = Some(e);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(last.unwrap_or_else(|| tonic::Status::unknown("no attempt")))
            }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
    }
}

fn broadcast(key: &str) -> BroadcastRequest {
    BroadcastRequest {
        tenant: "acme".into(),
        broadcast_key: key.into(),
        topic: "releases".into(),
        category: "news".into(),
        channels: vec![Channel::InApp as i32],
        content: Some(broadcast_request::Content::Inline(InlineContent {
            title: "2.0 is out".into(),
            body: "read all about it".into(),
            action_url: String::new(),
        })),
        ..Default::default()
    }
}

/// Sends `request` until the ingress takes it (it may be down, killed), at most 60 s.
async fn broadcast_until_taken(ingress: &IngressClient, request: BroadcastRequest) -> String {
    eventually(Duration::from_secs(60), "the broadcast accepted", || {
        let (mut ingress, request) = (ingress.clone(), request.clone());
        async move {
            Ok(ingress
                .broadcast(request)
                .await
                .ok()
                .map(|r| r.into_inner().broadcast_id))
        }
    })
    .await
    .unwrap()
}

/// Each user's inbox, read until every one holds what `expected` says (or 180 s passed):
/// the ids that are not as expected, by user.
async fn inbox_mismatches(
    query: &QueryClient,
    expected: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut wrong = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut pending: Vec<&String> = expected.keys().collect();
    while !pending.is_empty() {
        wrong.clear();
        let mut still = Vec::new();
        for user in pending {
            let mut got = inbox_ids(&mut query.clone(), "acme", user).await.unwrap();
            got.sort();
            let mut want = expected[user].clone();
            want.sort();
            if got != want {
                wrong.insert(user.clone(), (want, got));
                still.push(user);
            }
        }
        pending = still;
        if pending.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_each_subscriber_once_on_the_bulk_lane() {
    tokio::time::timeout(TEST_LIMIT, reach())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn reach() -> anyhow::Result<()> {
    // Two full chunks of the expander and a part of a third.
    const SUBSCRIBERS: usize = 2 * herald_stages::broadcast::CHUNK + 100;
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let manage = platform.management_client("acme", None).await?;
    let ingress = platform.ingress_client("acme").await?;
    let query = platform.query_client("acme").await?;

    let users: Vec<String> = (0..SUBSCRIBERS + 1).map(user).collect();
    subscribe(&manage, &users, true).await;
    // The last one leaves again; another never subscribed.
    subscribe(&manage, &users[SUBSCRIBERS..], false).await;

    let mut refused = ingress.clone();
    let status = refused
        .broadcast(BroadcastRequest {
            topic: "no spaces".into(),
            ..broadcast("bad")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let id = broadcast_until_taken(&ingress, broadcast("release-2.0")).await;
    let again = broadcast_until_taken(&ingress, broadcast("release-2.0")).await;
    assert_eq!(id, again, "the same broadcast key is the same broadcast");

    let mut expected: BTreeMap<String, Vec<String>> = users[..SUBSCRIBERS]
        .iter()
        .map(|u| (u.clone(), vec![ids::broadcast_notification_id(&id, u)]))
        .collect();
    expected.insert(user(SUBSCRIBERS), Vec::new());
    expected.insert("never-subscribed".into(), Vec::new());
    let wrong = inbox_mismatches(&query, &expected).await;
    assert!(
        wrong.is_empty(),
        "{} inboxes not as expected, e.g. {:?}",
        wrong.len(),
        wrong.iter().next()
    );

    // The notifications travelled the bulk lane, none the main one.
    let bulk = read_records(
        &broker.bootstrap,
        &format!("{}.requested.bulk", platform.prefix),
    )?;
    let main = read_records(&broker.bootstrap, &format!("{}.requested", platform.prefix))?;
    let on_bulk: HashSet<String> = bulk
        .iter()
        .map(|r| herald_schemas::codec::decode::<NotificationRequested>(&r.value))
        .map(|n| n.map(|n| n.recipient_user_id))
        .collect::<Result<_, _>>()?;
    assert_eq!(on_bulk.len(), SUBSCRIBERS);
    assert!(main.is_empty(), "{} records on the main lane", main.len());

    // A subscriber's export names the topic; erasure counts it.
    let mut manage = manage.clone();
    let export = manage
        .export_recipient(ExportRecipientRequest {
            tenant: "acme".into(),
            recipient_user_id: user(0),
        })
        .await?
        .into_inner();
    assert_eq!(export.topics, ["releases"]);
    let erased = manage
        .erase_recipient(EraseRecipientRequest {
            tenant: "acme".into(),
            recipient_user_id: user(0),
        })
        .await?
        .into_inner();
    assert_eq!((erased.subscriptions, erased.inbox_entries), (1, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_and_batches_reach_each_recipient_once_under_sigkill() {
    tokio::time::timeout(TEST_LIMIT, bulk_under_kills())
        .await
        .expect("test timed out")
        .unwrap();
}

fn batch(key: &str, users: &[String]) -> SendBatchRequest {
    SendBatchRequest {
        tenant: "acme".into(),
        batch_key: key.into(),
        category: "digest".into(),
        channels: vec![Channel::InApp as i32],
        content: Some(send_batch_request::Content::Inline(InlineContent {
            title: "your digest".into(),
            body: "of the week".into(),
            action_url: String::new(),
        })),
        recipients: users
            .iter()
            .map(|u| BatchRecipient {
                recipient_user_id: u.clone(),
                variables: Default::default(),
            })
            .collect(),
        ..Default::default()
    }
}

async fn bulk_under_kills() -> anyhow::Result<()> {
    const SUBSCRIBERS: usize = 800;
    let broker = Broker::transactional().await?;
    let platform = Arc::new(Platform::configure(&broker, "")?.start().await?);
    let manage = platform.management_client("acme", None).await?;
    let ingress = platform.ingress_client("acme").await?;
    let query = platform.query_client("acme").await?;
    let users: Vec<String> = (0..SUBSCRIBERS).map(user).collect();
    subscribe(&manage, &users, true).await;

    let seed: u64 = rand::rng().random();
    println!("bulk crash test: seed {seed}, a broadcast to {SUBSCRIBERS} and two batches of 400");
    let sent = Arc::new(AtomicBool::new(false));
    let plan = ChaosPlan {
        kills: 8,
        drain_kills: 2,
        ..ChaosPlan::default()
    };
    let chaos_task = tokio::spawn(chaos::run(
        Arc::clone(&platform),
        seed,
        plan,
        Arc::clone(&sent),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = broadcast_until_taken(&ingress, broadcast("release-3.0")).await;
    let mut batch_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, part) in [("digest-a", &users[..400]), ("digest-b", &users[400..])] {
        // Retried with the same key until taken whole: the same ids each time.
        let answer = eventually(Duration::from_secs(60), "the batch accepted", || {
            let (mut ingress, request) = (ingress.clone(), batch(key, part));
            async move { Ok(ingress.send_batch(request).await.ok()) }
        })
        .await?
        .into_inner();
        for item in answer.items {
            batch_ids
                .entry(item.recipient_user_id)
                .or_default()
                .push(item.notification_id);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    sent.store(true, Ordering::Release);
    let kills = chaos_task.await?;
    println!(
        "bulk crash test: {} kills: {:?}",
        kills.len(),
        kills.iter().map(|k| k.victim).collect::<Vec<_>>()
    );
    wait_quiet(
        &broker.bootstrap,
        &platform.prefix,
        &platform.recording,
        Duration::from_secs(5),
        Duration::from_secs(180),
    )
    .await?;

    let expected: BTreeMap<String, Vec<String>> = users
        .iter()
        .map(|u| {
            let mut want = batch_ids.remove(u).unwrap_or_default();
            want.push(ids::broadcast_notification_id(&id, u));
            (u.clone(), want)
        })
        .collect();
    assert!(
        expected.values().all(|w| w.len() == 2),
        "a batch entry for everyone"
    );
    let wrong = inbox_mismatches(&query, &expected).await;
    assert!(
        wrong.is_empty(),
        "{} inboxes not exactly once each (seed {seed}), e.g. {:?}",
        wrong.len(),
        wrong.iter().next()
    );
    Ok(())
}
