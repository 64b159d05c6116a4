//! Crash safety on real infrastructure: 10,000 notifications flow through `herald run` while its
//! component processes are SIGKILLed at random (the supervisor restarts them), once with the
//! stages exactly-once on a broker with transactions and once at-least-once. Afterwards, when
//! the platform has gone quiet:
//!
//! - every notification the ingress accepted reached a final state: delivered on both channels,
//!   or rate-limited before either (some users get more than the default per-recipient limit
//!   allows; a replay may admit what a first decision dropped, never deliver half);
//! - the provider was called once per delivery id, except ids whose repeated calls each
//!   straddle a kill of the deliver stage (the provider window, counted by this test from the
//!   call log and the kill times, not by the ledger under test), listed by id;
//! - every delivered notification is in its user's inbox exactly once, and nothing else is;
//! - exactly-once: no hop wrote a record more often than it read its input, for a
//!   `read_committed` reader of every topic of the flow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{InlineContent, SendNotificationRequest};
use herald_schemas::{Channel, DeliveryState, ids};
use herald_tests::audit::{ProviderAudit, TopicCounts, inbox_ids, wait_quiet};
use herald_tests::chaos::{self, ChaosPlan, VICTIMS};
use herald_tests::clients::{IngressClient, ingress_on};
use herald_tests::{Broker, Platform};
use rand::Rng;
use tonic::transport::Channel as GrpcChannel;

const NOTIFICATIONS: usize = 10_000;
/// Users with an e-mail address; each gets 18 notifications, within the default limit of 20
/// per minute.
const USERS: usize = 500;
/// Every tenth notification goes to one of these instead: 200 each, far over the limit, so the
/// limiter drops most of them — and decides again whenever the rate-limit stage replays.
const HOT_USERS: usize = 5;
const SENDERS: usize = 16;
/// Each sender waits this long between sends (≈350/s in all), so sending lasts ~30 s and the
/// kills land while every stage is busy.
const PACE: Duration = Duration::from_millis(45);
const TEST_LIMIT: Duration = Duration::from_secs(600);
const CHANNELS: [Channel; 2] = [Channel::InApp, Channel::Email];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_nothing_lost_nothing_twice_under_sigkill() {
    tokio::time::timeout(TEST_LIMIT, async {
        let broker = Broker::transactional().await?;
        crash(&broker, true).await
    })
    .await
    .expect("crash test timed out")
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_nothing_lost_nothing_delivered_twice_under_sigkill() {
    tokio::time::timeout(TEST_LIMIT, async {
        let broker = Broker::start().await?;
        crash(&broker, false).await
    })
    .await
    .expect("crash test timed out")
    .unwrap();
}

fn user(i: usize) -> String {
    if i.is_multiple_of(10) {
        format!("hot-{}", (i / 10) % HOT_USERS)
    } else {
        format!("user-{}", i % USERS)
    }
}

fn request(i: usize) -> SendNotificationRequest {
    SendNotificationRequest {
        tenant: "acme".into(),
        idempotency_key: format!("crash-{i}"),
        recipient_user_id: user(i),
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

/// Sends every notification through `acme` (a client calling as tenant acme), retrying each
/// (same idempotency key) until the ingress accepts it; returns the notification id of each
/// request, by request number.
async fn send_all(acme: IngressClient, retries: Arc<AtomicU64>) -> anyhow::Result<Vec<String>> {
    let mut ids = vec![String::new(); NOTIFICATIONS];
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..SENDERS {
        let (mut client, retries) = (acme.clone(), Arc::clone(&retries));
        tasks.spawn(async move {
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
                        Err(_) if Instant::now() < deadline => {
                            retries.fetch_add(1, Ordering::Relaxed);
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

/// Where one notification stands in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Moving,
    Delivered,
    RateLimited,
}

/// Which channels delivered a notification, and whether the limiter dropped it.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    in_app: bool,
    email: bool,
    limited: bool,
}

impl Outcome {
    fn fate(self) -> Fate {
        if self.in_app && self.email {
            Fate::Delivered
        } else if self.limited && !self.in_app && !self.email {
            Fate::RateLimited
        } else {
            Fate::Moving
        }
    }
}

async fn outcome(store: &dyn herald_store::Store, id: &str) -> anyhow::Result<Outcome> {
    let Some((_, timeline)) = store.get_notification("acme", id).await? else {
        return Ok(Outcome::default());
    };
    let delivered = |c| {
        timeline
            .iter()
            .any(|e| e.channel == Some(c) && e.state == DeliveryState::Delivered)
    };
    Ok(Outcome {
        in_app: delivered(Channel::InApp),
        email: delivered(Channel::Email),
        limited: timeline
            .iter()
            .any(|e| e.state == DeliveryState::RateLimited),
    })
}

async fn fate(store: &dyn herald_store::Store, id: &str) -> anyhow::Result<Fate> {
    Ok(outcome(store, id).await?.fate())
}

/// Waits until every notification is final (delivered on both channels, or rate-limited).
async fn wait_final(
    store: &dyn herald_store::Store,
    platform: &Platform,
    ids: &[String],
) -> anyhow::Result<()> {
    let mut pending: Vec<String> = ids.to_vec();
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
            if fate(store, &id).await? == Fate::Moving {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

async fn crash(broker: &Broker, exactly_once: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mode = if exactly_once {
        "exactly-once"
    } else {
        "at-least-once"
    };
    let platform = Platform::configure_mode(broker, exactly_once, "")?;
    herald_tests::seed_email_contacts(&platform.store_url, "acme", USERS).await?;
    let store = herald_stores::open(&platform.store_url).await?;
    for h in 0..HOT_USERS {
        let email = herald_store::Contact {
            channel: Channel::Email,
            address: format!("hot-{h}@example.com"),
        };
        store
            .put_contact("acme", &format!("hot-{h}"), &email)
            .await?;
    }
    let platform = Arc::new(platform.start().await?);
    let seed: u64 = rand::rng().random();
    println!(
        "crash test ({mode} on {}): seed {seed}, {NOTIFICATIONS} notifications to {USERS} users \
         and {HOT_USERS} over their limit",
        broker.name()
    );

    let key = platform.api_key("acme").await?;
    let sent = Arc::new(AtomicBool::new(false));
    let chaos_task = tokio::spawn(chaos::run(
        Arc::clone(&platform),
        seed,
        ChaosPlan::default(),
        Arc::clone(&sent),
    ));
    let channel = GrpcChannel::from_shared(Platform::url(platform.ingress))?.connect_lazy();
    let retries = Arc::new(AtomicU64::new(0));
    let ids = send_all(ingress_on(channel, &key)?, Arc::clone(&retries)).await?;
    sent.store(true, Ordering::Release);
    let sent_in = started.elapsed();

    let kills = chaos_task.await?;
    wait_final(store.as_ref(), &platform, &ids).await?;
    wait_quiet(
        &broker.bootstrap,
        &platform.prefix,
        &platform.recording,
        Duration::from_secs(5),
        Duration::from_secs(120),
    )
    .await?;

    // The kills, as they happened.
    let mut per_victim: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &kills {
        *per_victim.entry(k.victim).or_default() += 1;
    }
    let t0 = kills.first().map_or(0, |k| k.at_ms);
    let timeline: Vec<String> = kills
        .iter()
        .map(|k| {
            let phase = if k.draining { " (drain)" } else { "" };
            format!("+{}ms {}{phase}", k.at_ms - t0, k.victim)
        })
        .collect();
    println!("crash test: kills {per_victim:?}: {}", timeline.join(", "));

    // Once quiet, each notification's outcome: both channels delivered, or dropped by the
    // limiter before either; anything in between lost a delivery.
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), NOTIFICATIONS, "one id per accepted request");
    let mut outcomes = HashMap::new();
    for id in &ids {
        outcomes.insert(id, outcome(store.as_ref(), id).await?);
    }
    let partial: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| o.fate() == Fate::Moving)
        .map(|(id, o)| format!("{id}: {o:?}"))
        .collect();
    let delivered: HashSet<&String> = outcomes
        .iter()
        .filter(|(_, o)| o.in_app)
        .map(|(id, _)| *id)
        .collect();
    let mut query = platform.query_client("acme").await?;
    let mut inbox_problems = Vec::new();
    let users: HashSet<String> = (0..NOTIFICATIONS).map(user).collect();
    let owner: HashMap<&String, String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id, user(i)))
        .collect();
    for u in &users {
        let listed = inbox_ids(&mut query, "acme", u).await?;
        let mut seen = HashSet::new();
        for id in &listed {
            if !seen.insert(id.clone()) {
                inbox_problems.push(format!("{u}: {id} listed twice"));
            }
            if !delivered.contains(id) {
                inbox_problems.push(format!("{u}: {id} is listed but not delivered in-app"));
            }
        }
        for (id, _) in owner
            .iter()
            .filter(|(id, o)| *o == u && delivered.contains(*id))
        {
            if !seen.contains(*id) {
                inbox_problems.push(format!("{u}: delivered {id} is not in the inbox"));
            }
        }
    }

    // The provider: one call per delivery id but for the provider window, and nothing delivered
    // that the store does not know as delivered.
    let provider = ProviderAudit::read(&platform.recording, &kills)?;
    let email_delivered: HashSet<String> = outcomes
        .iter()
        .filter(|(_, o)| o.email)
        .map(|(id, _)| ids::delivery_id(id, Channel::Email, 1))
        .collect();
    let called: HashSet<String> = provider.calls.keys().cloned().collect();
    let never_called: Vec<_> = email_delivered.difference(&called).collect();
    let not_recorded: Vec<_> = called.difference(&email_delivered).collect();

    let counts = TopicCounts::read(&broker.bootstrap, &platform.prefix, &CHANNELS)?;
    let hops = counts.hop_violations(&CHANNELS);
    let limited = outcomes
        .values()
        .filter(|o| o.fate() == Fate::RateLimited)
        .count();
    println!(
        "crash test: sent in {sent_in:?}, quiet after {:?}; ingress retries {}; delivered {}, \
         rate-limited {limited}; provider calls {} for {} ids, window resends {:?}; \
         hops that wrote a record more or fewer times than they read it: {}",
        started.elapsed(),
        retries.load(Ordering::Relaxed),
        delivered.len(),
        provider.calls.values().map(Vec::len).sum::<usize>(),
        provider.calls.len(),
        provider.window_resends,
        hops.len(),
    );
    for line in hops.iter().take(10) {
        println!("crash test:   {line}");
    }

    for victim in VICTIMS {
        assert!(
            per_victim.contains_key(victim),
            "{victim} was never killed ({per_victim:?})"
        );
    }
    assert!(
        kills.iter().any(|k| k.draining),
        "no kill landed after sending"
    );
    assert!(
        partial.is_empty(),
        "{} notifications delivered on one channel only: {:?}",
        partial.len(),
        &partial[..partial.len().min(5)]
    );
    assert!(inbox_problems.is_empty(), "inbox: {inbox_problems:?}");
    assert!(
        provider.duplicates.is_empty(),
        "{} delivery ids called more than once, not explained by a deliver kill in their \
         provider window, e.g. {:?}",
        provider.duplicates.len(),
        &provider.duplicates[..provider.duplicates.len().min(10)]
    );
    assert!(
        never_called.is_empty(),
        "{} e-mails recorded as delivered that the provider never received, e.g. {:?}",
        never_called.len(),
        never_called.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        not_recorded.is_empty(),
        "{} e-mails the provider received whose delivery the store does not show, e.g. {:?}",
        not_recorded.len(),
        not_recorded.iter().take(3).collect::<Vec<_>>()
    );
    if exactly_once {
        assert!(
            hops.is_empty(),
            "{} duplicates or losses visible to read_committed readers, e.g. {:?}",
            hops.len(),
            &hops[..hops.len().min(5)]
        );
    }
    Ok(())
}
