//! Crash safety on real infrastructure: 10,000 notifications flow through tansu and `herald run`
//! while component processes are SIGKILLed at random (the supervisor restarts them). Afterwards:
//! nothing lost (every notification reaches its final state on both channels), no provider
//! delivery twice, and every repeated provider call explained by the one window the ledger
//! measures (a crash between the provider's answer and the ledger write). Duplicates in the
//! intermediate topics (expected with at-least-once on a broker without transactions) are
//! counted and printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_proto::v1::notification_service_client::NotificationServiceClient;
use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{InlineContent, SendNotificationRequest};
use herald_schemas::{Channel, DeliveryState};
use herald_tests::{Broker, Platform};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel as GrpcChannel;

const NOTIFICATIONS: usize = 10_000;
const USERS: usize = 500;
/// SIGKILLs while the notifications flow, 1–2.5 s apart.
const KILLS: u64 = 15;
/// The least time between two kills of the same component.
const REJOIN_TIME: Duration = Duration::from_secs(5);
const SENDERS: usize = 16;
/// Each sender waits this long between sends (≈350/s in all), so the flow lasts ~30 s and the
/// kills land while every stage is busy.
const PACE: Duration = Duration::from_millis(45);
const TEST_LIMIT: Duration = Duration::from_secs(540);
/// Component processes the chaos task kills (the query service serves no part of the flow).
const VICTIMS: &[&str] = &[
    "stage enrich",
    "stage rate-limit",
    "stage fan-out",
    "stage deliver",
    "stage store-writer",
    "ingress",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_nothing_delivered_twice_under_sigkill() {
    tokio::time::timeout(TEST_LIMIT, crash())
        .await
        .expect("crash test timed out")
        .unwrap();
}

fn request(i: usize) -> SendNotificationRequest {
    SendNotificationRequest {
        tenant: "acme".into(),
        idempotency_key: format!("crash-{i}"),
        recipient_user_id: format!("user-{}", i % USERS),
        category: "orders".into(),
        priority: 0,
        channels: vec![],
        content: Some(Content::Inline(InlineContent {
            title: format!("order {i}"),
            body: "shipped".into(),
            action_url: String::new(),
        })),
    }
}

/// Sends every notification, retrying each (same idempotency key) until the ingress accepts it.
async fn send_all(channel: GrpcChannel, retries: Arc<AtomicU64>) -> anyhow::Result<Vec<String>> {
    let mut ids = vec![String::new(); NOTIFICATIONS];
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..SENDERS {
        let (channel, retries) = (channel.clone(), Arc::clone(&retries));
        tasks.spawn(async move {
            let mut client = NotificationServiceClient::new(channel);
            let mut out = Vec::new();
            for i in (worker..NOTIFICATIONS).step_by(SENDERS) {
                tokio::time::sleep(PACE).await;
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match client.send_notification(request(i)).await {
                        Ok(r) => {
                            out.push((i, r.into_inner().notification_id));
                            break;
                        }
                        Err(status) if Instant::now() < deadline => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            let _ = status;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(status) => anyhow::bail!("notification {i} never accepted: {status}"),
                    }
                }
            }
            Ok(out)
        });
    }
    while let Some(done) = tasks.join_next().await {
        for (i, id) in done?? {
            ids[i] = id;
        }
    }
    Ok(ids)
}

/// Kills `KILLS` random components, one every 1–2.5 s.
async fn chaos(platform: Arc<Platform>, seed: u64) -> HashMap<&'static str, u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills: HashMap<&'static str, u64> = HashMap::new();
    let mut last_killed: HashMap<&'static str, Instant> = HashMap::new();
    while kills.values().sum::<u64>() < KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..2_500))).await;
        let victim = VICTIMS[rng.random_range(0..VICTIMS.len())];
        // A component is not killed again before it has had time to rejoin its group: tansu's
        // coordinator wedges a group when one static member is replaced several times within
        // seconds (a broker bug this test found; Kafka does not have it, and the stages'
        // `rejoin_if_unassigned_ms` watchdog recovers from it, slowly).
        if last_killed
            .get(victim)
            .is_some_and(|t| t.elapsed() < REJOIN_TIME)
        {
            continue;
        }
        if platform.kill_component(victim) {
            *kills.entry(victim).or_default() += 1;
            last_killed.insert(victim, Instant::now());
        }
    }
    kills
}

async fn crash() -> anyhow::Result<()> {
    let started = Instant::now();
    let broker = Broker::start().await?;
    let limits = "[rate_limit]\nper_recipient = { limit = 1000, window_seconds = 1 }\n\
                  per_tenant = { limit = 1000000, window_seconds = 1 }\n";
    let platform = Platform::configure(&broker, "")?.with_extra_config(limits)?;
    herald_tests::seed_email_contacts(&platform.store_url, "acme", USERS).await?;
    let store = herald_store::open(&platform.store_url).await?;
    let platform = Arc::new(platform.start().await?);
    let seed: u64 = rand::rng().random();
    println!("crash test: seed {seed}, {NOTIFICATIONS} notifications to {USERS} users");

    let chaos_task = tokio::spawn(chaos(Arc::clone(&platform), seed));
    let channel = GrpcChannel::from_shared(Platform::url(platform.ingress))?.connect_lazy();
    let retries = Arc::new(AtomicU64::new(0));
    let ids = send_all(channel, Arc::clone(&retries)).await?;
    let sent_in = started.elapsed();

    // Kills go on while the backlog drains; then wait until every notification is final.
    let kills = chaos_task.await?;
    let total_kills: u64 = kills.values().sum();
    let mut pending: Vec<String> = ids.clone();
    let deadline = Instant::now() + Duration::from_secs(400);
    while !pending.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} notifications never reached a final state, e.g. {:?}\n{}",
            pending.len(),
            &pending[..pending.len().min(3)],
            platform.log_tail()
        );
        let mut still = Vec::new();
        for id in pending {
            if !delivered_on_both(store.as_ref(), &id).await? {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Provider side: one delivery per e-mail, and every repeated call explained by the window.
    let calls = herald_connectors::recording::read_calls(&platform.recording)?;
    let delivered = herald_connectors::recording::delivered_ids(&platform.recording)?;
    let resends = store.ledger_resends().await?;
    let repeated_calls = calls.len() as u64 - delivered;
    println!(
        "crash test: sent in {sent_in:?}, all final after {:?}; kills {total_kills} {kills:?}; \
         ingress retries {}; provider calls {}, deliveries {delivered}, repeated calls {repeated_calls}, \
         ledger window resends {resends}",
        started.elapsed(),
        retries.load(Ordering::Relaxed),
        calls.len(),
    );
    print_topic_duplicates(&broker.bootstrap, &platform.prefix);

    assert_eq!(total_kills, KILLS, "every planned kill found its process");
    assert_eq!(
        delivered, NOTIFICATIONS as u64,
        "every e-mail delivered exactly once"
    );
    assert!(
        repeated_calls <= resends,
        "{repeated_calls} repeated provider calls but only {resends} crashes inside the provider window"
    );
    Ok(())
}

/// Whether both channels (in-app and e-mail) reached DELIVERED, and the inbox holds the entry.
async fn delivered_on_both(store: &dyn herald_store::Store, id: &str) -> anyhow::Result<bool> {
    let Some((_, timeline)) = store.get_notification("acme", id).await? else {
        return Ok(false);
    };
    let delivered = |c| {
        timeline
            .iter()
            .any(|e| e.channel == Some(c) && e.state == DeliveryState::Delivered)
    };
    Ok(delivered(Channel::InApp) && delivered(Channel::Email))
}

/// Counts records that repeat an earlier record's id in each intermediate topic.
fn print_topic_duplicates(bootstrap: &str, prefix: &str) {
    use herald_schemas::codec::decode;
    type IdOf = fn(&[u8]) -> Option<String>;
    let topics: [(&str, IdOf); 5] = [
        ("enriched", |b| {
            decode::<herald_schemas::NotificationEnriched>(b)
                .ok()
                .map(|e| e.notification_id)
        }),
        ("admitted", |b| {
            decode::<herald_schemas::NotificationAdmitted>(b)
                .ok()
                .map(|e| e.notification_id)
        }),
        ("dispatch.email", |b| {
            decode::<herald_schemas::Dispatch>(b)
                .ok()
                .map(|e| e.delivery_id)
        }),
        ("dispatch.in_app", |b| {
            decode::<herald_schemas::Dispatch>(b)
                .ok()
                .map(|e| e.delivery_id)
        }),
        ("delivery-result", |b| {
            decode::<herald_schemas::DeliveryResult>(b)
                .ok()
                .map(|e| e.result_id)
        }),
    ];
    for (suffix, id_of) in topics {
        let topic = format!("{prefix}.{suffix}");
        match herald_tests::read_topic(bootstrap, &topic) {
            Ok(values) => {
                let total = values.len();
                let distinct: std::collections::HashSet<String> =
                    values.iter().filter_map(|v| id_of(v)).collect();
                println!(
                    "crash test: topic {suffix}: {total} records, {} distinct ids, {} duplicates",
                    distinct.len(),
                    total - distinct.len()
                );
            }
            Err(e) => println!("crash test: topic {suffix}: could not read: {e}"),
        }
    }
}
