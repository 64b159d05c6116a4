//! The local broker SIGKILLed under load: notifications flow at ~150/s through `herald run`, the
//! broker is killed, restarted on the same data a few seconds later, and sending goes on. Every
//! notification the ingress accepted must then be delivered exactly once (provider call log and
//! inbox), with no help from outside Herald.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_schemas::{Channel, DeliveryState, ids};
use herald_tests::audit::{ProviderAudit, inbox_ids};
use herald_tests::clients::{IngressClient, ingress_on};
use herald_tests::{Broker, BrokerKind, Platform, inline_request};
use tonic::transport::Channel as GrpcChannel;

const USERS: usize = 50;
/// One send every `PACE` per sender: ~150/s with `SENDERS`.
const SENDERS: usize = 6;
const PACE: Duration = Duration::from_millis(40);
const BEFORE: Duration = Duration::from_secs(8);
const DOWN: Duration = Duration::from_secs(5);
const AFTER: Duration = Duration::from_secs(8);
const TEST_LIMIT: Duration = Duration::from_secs(420);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_notification_is_delivered_once_after_a_broker_sigkill() {
    tokio::time::timeout(TEST_LIMIT, async {
        let kind = BrokerKind::default_local()?;
        broker_kill(kind).await
    })
    .await
    .expect("test timed out")
    .unwrap();
}

/// Sends through `client` (calling as tenant acme) until `stop`, retrying each request (same
/// idempotency key) until it is answered; returns the accepted notification ids.
async fn sender(
    mut client: IngressClient,
    worker: usize,
    stop: Instant,
    retries: Arc<AtomicU64>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut accepted = Vec::new();
    let mut n = 0;
    while Instant::now() < stop {
        tokio::time::sleep(PACE).await;
        let user = format!("user-{}", (worker * 7 + n) % USERS);
        let mut request = inline_request("acme", &user, "orders", &format!("w{worker} n{n}"));
        request.idempotency_key = format!("bk-{worker}-{n}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client.send_notification(request.clone()).await {
                Ok(r) => {
                    accepted.push((r.into_inner().notification_id, user));
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => anyhow::bail!("request {worker}/{n} never accepted: {status}"),
            }
        }
        n += 1;
    }
    Ok(accepted)
}

async fn broker_kill(kind: BrokerKind) -> anyhow::Result<()> {
    let mut broker = Broker::start_kind(kind).await?;
    // Limits far above this load: every notification must be delivered.
    let limits = "[rate_limit]\nper_recipient = { limit = 100000, window_seconds = 1 }\n\
                  per_tenant = { limit = 1000000, window_seconds = 1 }\n";
    let platform = Platform::configure(&broker, "")?.with_extra_config(limits)?;
    herald_tests::seed_email_contacts(&platform.store_url, "acme", USERS).await?;
    let platform = platform.start().await?;
    let store = herald_stores::open(&platform.store_url).await?;
    let channel = GrpcChannel::from_shared(Platform::url(platform.ingress))?.connect_lazy();
    let acme = ingress_on(channel, &platform.api_key("acme").await?)?;
    let retries = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + BEFORE + DOWN + AFTER;
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..SENDERS {
        senders.spawn(sender(acme.clone(), worker, stop, Arc::clone(&retries)));
    }
    tokio::time::sleep(BEFORE).await;
    broker.kill().await?;
    let killed_at = Instant::now();
    tokio::time::sleep(DOWN).await;
    broker.restart().await?;
    println!(
        "broker kill ({}): killed, restarted after {:?}",
        kind.name(),
        killed_at.elapsed()
    );
    let mut accepted = Vec::new();
    while let Some(done) = senders.join_next().await {
        accepted.extend(done??);
    }

    // Wait until every accepted notification is delivered on both channels (or time runs out).
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut pending: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in pending {
            let delivered = match store.get_notification("acme", &id).await? {
                Some((_, timeline)) => [Channel::InApp, Channel::Email].iter().all(|c| {
                    timeline
                        .iter()
                        .any(|e| e.channel == Some(*c) && e.state == DeliveryState::Delivered)
                }),
                None => false,
            };
            if !delivered {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // Late duplicates get their chance to show.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let provider = ProviderAudit::read(&platform.recording, &[])?;
    let mut query = platform.query_client("acme").await?;
    let mut in_inbox = HashSet::new();
    let mut twice = Vec::new();
    for u in 0..USERS {
        for id in inbox_ids(&mut query, "acme", &format!("user-{u}")).await? {
            if !in_inbox.insert(id.clone()) {
                twice.push(id);
            }
        }
    }
    let missing_in_inbox = accepted
        .iter()
        .filter(|(id, _)| !in_inbox.contains(id))
        .count();
    let not_called = accepted
        .iter()
        .filter(|(id, _)| {
            !provider
                .calls
                .contains_key(&ids::delivery_id(id, Channel::Email, 1))
        })
        .count();
    println!(
        "broker kill ({}): {} accepted (client retries {}), {} not delivered after the wait, \
         {missing_in_inbox} missing from the inbox, {} listed twice, {not_called} e-mails never \
         sent, {} sent more than once",
        kind.name(),
        accepted.len(),
        retries.load(Ordering::Relaxed),
        pending.len(),
        twice.len(),
        provider.duplicates.len(),
    );
    assert!(
        pending.is_empty(),
        "{} accepted notifications were not delivered, e.g. {:?}\n{}\n{}",
        pending.len(),
        &pending[..pending.len().min(3)],
        platform.log_tail(),
        broker.log_tail()
    );
    assert_eq!(
        missing_in_inbox, 0,
        "every accepted notification in the inbox"
    );
    assert!(twice.is_empty(), "inbox entries listed twice: {twice:?}");
    assert_eq!(not_called, 0, "every accepted e-mail sent");
    assert!(
        provider.duplicates.is_empty(),
        "e-mails sent more than once: {:?}",
        provider.duplicates
    );
    Ok(())
}
