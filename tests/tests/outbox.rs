//! Broker outages of 30 s while requests keep arriving at ~500/s: the broker frozen (SIGSTOP:
//! it holds its port and answers nothing), and the broker stopped and started again later.
//! Every request is answered — ACCEPTED, or an explicit RESOURCE_EXHAUSTED / UNAVAILABLE that a
//! client retries — and once the broker is back the ingress's outbox drains and every accepted
//! notification reaches its user's inbox exactly once (counted when the platform is quiet).
//! And an instance replaced under another name while records waited in its outbox: a live one
//! takes its outbox over once its lease runs out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_proto::v1::DeliveryState;
use herald_tests::audit::{inbox_ids, wait_quiet};
use herald_tests::clients::{IngressClient, ingress_on};
use herald_tests::{Broker, Platform, eventually, inline_request};
use tokio::sync::Semaphore;
use tonic::transport::Channel as GrpcChannel;

const TEST_LIMIT: Duration = Duration::from_secs(420);
const RATE_PER_S: u64 = 500;
const BEFORE: Duration = Duration::from_secs(5);
const OUTAGE: Duration = Duration::from_secs(30);
const AFTER: Duration = Duration::from_secs(5);
const USERS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_for_30_s_at_500_requests_per_second_loses_nothing() {
    tokio::time::timeout(TEST_LIMIT, outage(Outage::Freeze))
        .await
        .expect("test timed out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_for_30_s_at_500_requests_per_second_loses_nothing() {
    tokio::time::timeout(TEST_LIMIT, outage(Outage::StopAndStart))
        .await
        .expect("test timed out")
        .unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Outage {
    Freeze,
    StopAndStart,
}

/// What the client got for one request.
#[derive(Debug)]
enum Answer {
    Accepted(String),
    Refused(tonic::Code),
}

/// Offers `RATE_PER_S` requests per second (open loop, at most 512 in flight) until `stop`,
/// through `acme` (a client calling as tenant acme).
async fn offer(acme: IngressClient, stop: Instant) -> Vec<(String, Answer)> {
    let in_flight = Arc::new(Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_S));
    let mut n = 0_usize;
    while Instant::now() < stop {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let mut client = acme.clone();
        let user = format!("user-{}", n % USERS);
        let mut request = inline_request("acme", &user, "news", &format!("n{n}"));
        request.idempotency_key = format!("outage-{n}");
        request.channels = vec![herald_proto::v1::Channel::InApp as i32];
        tasks.spawn(async move {
            let answer = match client.send_notification(request).await {
                Ok(r) => {
                    let r = r.into_inner();
                    assert_eq!(r.status, DeliveryState::Accepted as i32);
                    Answer::Accepted(r.notification_id)
                }
                Err(status) => Answer::Refused(status.code()),
            };
            drop(permit);
            (user, answer)
        });
        n += 1;
    }
    let mut answers = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        answers.push(done.expect("a sender task panicked"));
    }
    answers
}

async fn outage(kind: Outage) -> anyhow::Result<()> {
    let mut broker = Broker::start().await?;
    let limits = "[rate_limit]\nper_recipient = { limit = 100000, window_seconds = 1 }\n\
                  per_tenant = { limit = 1000000, window_seconds = 1 }\n";
    let platform = Platform::configure(&broker, "instance_id = \"outage\"")?
        .with_extra_config(limits)?
        .start()
        .await?;
    let channel = GrpcChannel::from_shared(Platform::url(platform.ingress))?.connect_lazy();
    let acme = ingress_on(channel, &platform.api_key("acme").await?)?;
    let started = Instant::now();
    let sender = tokio::spawn(offer(acme, started + BEFORE + OUTAGE + AFTER));

    tokio::time::sleep(BEFORE).await;
    match kind {
        Outage::Freeze => broker.pause()?,
        Outage::StopAndStart => broker.kill().await?,
    }
    tokio::time::sleep(OUTAGE).await;
    match kind {
        Outage::Freeze => broker.resume()?,
        Outage::StopAndStart => broker.restart().await?,
    }
    let answers = sender.await?;

    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut accepted: HashMap<String, String> = HashMap::new();
    for (user, answer) in &answers {
        match answer {
            Answer::Accepted(id) => {
                accepted.insert(id.clone(), user.clone());
            }
            Answer::Refused(code) => *refused.entry(format!("{code:?}")).or_default() += 1,
        }
    }
    for code in refused.keys() {
        assert!(
            code == "ResourceExhausted" || code == "Unavailable",
            "only explicit, retriable refusals: {refused:?}"
        );
    }

    // Drained and quiet, then count: every accepted notification in its inbox, once.
    wait_quiet(
        &broker.bootstrap,
        &platform.prefix,
        &platform.recording,
        Duration::from_secs(5),
        Duration::from_secs(240),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", platform.log_tail()))?;
    // Quiet is not drained either: the ingress may still be backing off before its replay.
    let store = herald_stores::open(&platform.store_url).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let left = loop {
        let left = store.outbox_pending("ingress.outage", 10).await?;
        if left.is_empty() || std::time::Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(left.is_empty(), "the outbox drained: {} left", left.len());
    let mut query = platform.query_client("acme").await?;
    // Quiet is not done: a stage can sit in a reconnect backoff after the outage for longer
    // than the quiet spell. Read the inboxes until every accepted notification is there, or
    // for two minutes — what is lost never arrives, so the count below still fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (listed, missing) = loop {
        let mut listed: HashMap<String, usize> = HashMap::new();
        for u in 0..USERS {
            for id in inbox_ids(&mut query, "acme", &format!("user-{u}")).await? {
                *listed.entry(id).or_default() += 1;
            }
        }
        let missing = accepted
            .keys()
            .filter(|id| !listed.contains_key(*id))
            .count();
        if missing == 0 || std::time::Instant::now() >= deadline {
            break (listed, missing);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let twice = listed.values().filter(|n| **n > 1).count();
    let unknown = listed
        .keys()
        .filter(|id| !accepted.contains_key(*id))
        .count();
    println!(
        "outage ({kind:?}, {}): {} requests in {:?}, {} accepted, refused {refused:?}; \
         {missing} accepted not in an inbox, {twice} listed twice, {unknown} unknown",
        broker.name(),
        answers.len(),
        BEFORE + OUTAGE + AFTER,
        accepted.len(),
    );
    assert!(
        answers.len() as u64 >= RATE_PER_S * (BEFORE + OUTAGE + AFTER).as_secs() * 9 / 10,
        "the load was offered"
    );
    if missing > 0 {
        // Where they wait: each runner's lag, and what the components said.
        let lag = platform
            .run_command(&["lag"])
            .await
            .unwrap_or_else(|e| e.to_string());
        println!(
            "lag:\n{lag}\ncomponents:\n{}",
            platform.log_lines_with(&["WARN", "ERROR", "exited", "restart"])
        );
    }
    assert_eq!(missing, 0, "every accepted notification delivered");
    assert_eq!(twice, 0, "none delivered twice");
    assert_eq!(unknown, 0, "nothing delivered that was not accepted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_left_by_a_replaced_instance_is_replayed_by_a_live_one() {
    tokio::time::timeout(TEST_LIMIT, killed_with_records_in_its_outbox("new-pod"))
        .await
        .expect("test timed out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_killed_with_records_in_its_outbox_replays_them_when_it_restarts() {
    tokio::time::timeout(TEST_LIMIT, killed_with_records_in_its_outbox("old-pod"))
        .await
        .expect("test timed out")
        .unwrap();
}

/// An ingress (`old-pod`) keeps five requests in its outbox while the broker is frozen and is
/// SIGKILLed; the platform then comes up as `comes_back_as` (the same pod restarted, or a new
/// one that must adopt the old pod's outbox once its lease ran out).
async fn killed_with_records_in_its_outbox(comes_back_as: &str) -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform =
        Platform::configure(&broker, "instance_id = \"old-pod\"\noutbox_lease_ms = 3000")?;
    // The old pod runs only its ingress: its stages would be consumer-group members dying
    // while the broker is frozen, and noida-db never expires such members (docs/BROKERS.md).
    platform.run_command(&["topics"]).await?;
    platform.run_command(&["migrate"]).await?;
    let old_pod = platform
        .spawn_component(&["ingress"], Some(platform.ingress))
        .await?;
    // The key is made (in the store) before the outage; checking it needs no broker.
    let mut ingress = platform.ingress_client("acme").await?;
    broker.pause()?;
    let mut kept = HashMap::new();
    for i in 0..5 {
        let mut request = inline_request("acme", "ana", "news", &format!("kept {i}"));
        request.idempotency_key = format!("adopt-{i}");
        request.channels = vec![herald_proto::v1::Channel::InApp as i32];
        let r = tokio::time::timeout(Duration::from_secs(20), ingress.send_notification(request))
            .await
            .expect("the ingress answers during an outage")?
            .into_inner();
        kept.insert(r.notification_id, i);
    }
    let store = herald_stores::open(&platform.store_url).await?;
    assert_eq!(store.outbox_count("ingress.old-pod", 100).await?, 5);
    // The old pod is killed; it (or a new one, under another name) comes up with the broker.
    drop(old_pod);
    broker.resume()?;
    platform.set_config("instance_id", &format!("{comes_back_as:?}"))?;
    let platform = platform.start().await?;
    // The new pod first waits out the old pod's outbox lease; wait for the
    // condition, then for quiet (so a late duplicate would be counted), then compare exactly.
    let mut query = platform.query_client("acme").await?;
    let seen = eventually(
        Duration::from_secs(150),
        "the kept requests in the inbox",
        || {
            let mut query = query.clone();
            let n = kept.len();
            async move {
                let ids = inbox_ids(&mut query, "acme", "ana").await?;
                Ok((ids.len() >= n).then_some(ids))
            }
        },
    )
    .await;
    if let Err(e) = seen {
        anyhow::bail!(
            "{e}\noutbox left: {}\n{}",
            store.outbox_count("ingress.old-pod", 100).await?,
            platform.log_lines_with(&["outbox", "error", "rror"])
        );
    }
    wait_quiet(
        &broker.bootstrap,
        &platform.prefix,
        &platform.recording,
        Duration::from_secs(8),
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(
        store.outbox_count("ingress.old-pod", 100).await?,
        0,
        "{comes_back_as} replayed the old pod's outbox\n{}",
        platform.log_lines_with(&["outbox"])
    );
    let listed = inbox_ids(&mut query, "acme", "ana").await?;
    let mut sorted = listed.clone();
    sorted.sort();
    let mut want: Vec<String> = kept.keys().cloned().collect();
    want.sort();
    assert_eq!(
        sorted, want,
        "each kept request in the inbox once: {listed:?}"
    );
    Ok(())
}
