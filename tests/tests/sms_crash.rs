//! The crash test over a real provider protocol: SMS through the Twilio-compatible stand-in
//! (HTTPS, basic auth, no idempotency key) while the deliver stage is SIGKILLed again and again.
//! Every notification's text reaches the provider, every timeline ends DELIVERED, and no text
//! arrives twice beyond the resends the delivery ledger counted: calls made again for attempts
//! a kill left between the provider's answer and the recorded outcome (the provider window, at
//! most `CONCURRENT_RECIPIENTS` calls in flight per kill), since this provider takes no
//! idempotency key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Duration;

use herald_schemas::{Channel, DeliveryState};
use herald_stages::deliver::CONCURRENT_RECIPIENTS;
use herald_store::Contact;
use herald_tests::sms::{Api, Provider};
use herald_tests::{Broker, Platform, inline_request, settled};

const TEST_LIMIT: Duration = Duration::from_secs(300);
const NOTIFICATIONS: usize = 400;
const USERS: usize = 80;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_deliveries_survive_deliver_kills_once_each_but_for_the_provider_window() {
    tokio::time::timeout(TEST_LIMIT, crash())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn crash() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let twilio = Provider::start(Api::Twilio).await?;
    let platform = Platform::configure(&broker, "")?;
    let secret = platform.write_file("sms.secret", Provider::SECRET)?;
    let ca = platform.write_file("twilio.pem", &twilio.server.ca_pem)?;
    let limits = "[rate_limit]\nper_recipient = { limit = 100000, window_seconds = 1 }\n\
                  per_tenant = { limit = 1000000, window_seconds = 1 }\n";
    let platform = platform
        .with_extra_config(&twilio.config(&secret, &ca))?
        .with_extra_config(limits)?;
    {
        let store = herald_stores::open(&platform.store_url).await?;
        for u in 0..USERS {
            let sms = Contact {
                channel: Channel::Sms,
                address: format!("+1555020{u:04}"),
            };
            store.put_contact("acme", &format!("u{u}"), &sms).await?;
        }
    }
    let platform = platform.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut sent = BTreeMap::new();
    let mut kills = 0;
    for i in 0..NOTIFICATIONS {
        let title = format!("crash {i}");
        let mut request = inline_request("acme", &format!("u{}", i % USERS), "orders", &title);
        request.idempotency_key = format!("sms-crash-{i}");
        request.channels = vec![herald_proto::v1::Channel::Sms as i32];
        let id = loop {
            match ingress.send_notification(request.clone()).await {
                Ok(r) => break r.into_inner().notification_id,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        sent.insert(title, id);
        if i % (NOTIFICATIONS / (KILLS + 1)) == NOTIFICATIONS / (KILLS + 1) - 1 && kills < KILLS {
            // Kill the deliver stage mid-flight: once the provider starts getting this burst.
            let before = twilio.calls();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while twilio.calls() < before + 3 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if platform.kill_component("stage deliver") {
                kills += 1;
            }
        }
    }
    anyhow::ensure!(
        kills == KILLS,
        "deliver was killed {kills} times, not {KILLS}"
    );

    // Every text reaches the provider.
    let received = settled(
        Duration::from_secs(180),
        "every text at the provider",
        || {
            let received = twilio.sent();
            let sent = &sent;
            async move {
                let all = sent.keys().all(|title| {
                    received
                        .iter()
                        .any(|r| r.text.starts_with(&format!("{title}\n")))
                });
                Ok(all.then_some(received))
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", platform.log_tail()))?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &received {
        let title = r.text.split('\n').next().unwrap_or_default();
        *counts.entry(title).or_default() += 1;
    }
    let repeats: usize = counts.values().map(|n| n - 1).sum();
    // The ledger counts every call made again for an attempt whose outcome a kill left
    // unrecorded: the only way a text may arrive twice.
    let store = herald_stores::open(&platform.store_url).await?;
    let resends = usize::try_from(store.ledger_resends().await?)?;
    println!(
        "{} texts for {NOTIFICATIONS} notifications, {repeats} repeated, {resends} resends \
         counted, after {kills} kills",
        received.len()
    );
    assert_eq!(
        counts.len(),
        NOTIFICATIONS,
        "a text per notification, none unknown"
    );
    assert!(
        repeats <= resends,
        "{repeats} texts repeated but only {resends} resends counted in the provider window"
    );
    assert!(
        resends <= kills * CONCURRENT_RECIPIENTS,
        "{resends} resends: more than {kills} kills × {CONCURRENT_RECIPIENTS} calls in flight"
    );

    // Every timeline ends DELIVERED.
    let undelivered = settled(Duration::from_secs(60), "every timeline delivered", || {
        let (store, sent) = (&store, &sent);
        async move {
            let mut undelivered = 0;
            for id in sent.values() {
                let done = store
                    .get_notification("acme", id)
                    .await?
                    .is_some_and(|(_, t)| {
                        t.iter().any(|e| {
                            e.channel == Some(Channel::Sms) && e.state == DeliveryState::Delivered
                        })
                    });
                undelivered += usize::from(!done);
            }
            Ok((undelivered == 0).then_some(undelivered))
        }
    })
    .await;
    undelivered.map_err(|e| anyhow::anyhow!("{e}\n{}", platform.log_tail()))?;
    Ok(())
}
