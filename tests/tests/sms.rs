//! SMS over the providers' real APIs, with failover: a Twilio-compatible provider (primary) and
//! Vonage (secondary) stand in over HTTPS. The primary is down: its first calls fail, its circuit
//! opens (the timeline says so), and every notification is delivered once through the secondary.
//! A number both refuse is INVALID_TOKEN and leaves the recipient's contacts. Then the primary
//! comes back, a probe finds it healthy, and it delivers again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use herald_schemas::{Channel, DeliveryState};
use herald_store::Contact;
use herald_tests::sms::{Api, INVALID_NUMBER, Provider};
use herald_tests::{Broker, Platform, inline_request, settled};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const USERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_provider_fails_over_to_the_other_and_comes_back_after_a_probe() {
    tokio::time::timeout(TEST_LIMIT, failover())
        .await
        .expect("test timed out")
        .unwrap();
}

fn phone(u: usize) -> String {
    format!("+1555010{u:04}")
}

async fn failover() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let twilio = Provider::start(Api::Twilio).await?;
    let vonage = Provider::start(Api::Vonage).await?;
    twilio.set_down(true);
    let platform = Platform::configure(&broker, "")?;
    let secret = platform.write_file("sms.secret", &format!("{}\n", Provider::SECRET))?;
    let twilio_ca = platform.write_file("twilio.pem", &twilio.server.ca_pem)?;
    let vonage_ca = platform.write_file("vonage.pem", &vonage.server.ca_pem)?;
    let platform = platform.with_extra_config(&format!(
        "{}{}[provider.routes]\nsms = [\"twilio\", \"vonage\"]\n\
         [provider.limits.twilio.breaker]\nwindow = 4\nmin_calls = 2\nfailure_ratio = 1.0\n\
         open_for_ms = 3000\n\
         [deliver.retry]\nmax_attempts = 8\nfirst_backoff_ms = 300\nmax_backoff_ms = 1500\n",
        twilio.config(&secret, &twilio_ca),
        vonage.config(&secret, &vonage_ca),
    ))?;
    {
        let store = herald_stores::open(&platform.store_url).await?;
        for u in 0..USERS {
            let sms = Contact {
                channel: Channel::Sms,
                address: phone(u),
            };
            store.put_contact("acme", &format!("u{u}"), &sms).await?;
        }
        let bad = Contact {
            channel: Channel::Sms,
            address: INVALID_NUMBER.into(),
        };
        store.put_contact("acme", "bad", &bad).await?;
    }
    let platform = platform.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut sent = BTreeMap::new();
    for user in (0..USERS)
        .map(|u| format!("u{u}"))
        .chain(["bad".to_owned()])
    {
        let request = inline_request("acme", &user, "general", &format!("hello {user}"));
        let id = ingress
            .send_notification(request)
            .await?
            .into_inner()
            .notification_id;
        sent.insert(id, user);
    }

    // Every valid number gets its message once, through the secondary; the primary only saw
    // the calls that opened its circuit (at most one per notification, made at once).
    let delivered = settled(Duration::from_secs(150), "the secondary's messages", || {
        let sent = vonage.sent();
        async move { Ok((sent.len() >= USERS).then_some(sent)) }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", platform.log_tail()))?;
    let mut numbers: Vec<String> = delivered.iter().map(|s| format!("+{}", s.to)).collect();
    numbers.sort();
    let expected: Vec<String> = (0..USERS).map(phone).collect();
    assert_eq!(numbers, expected, "each number once: {delivered:?}");
    assert!(twilio.sent().is_empty());
    assert!(twilio.calls() >= 2, "the primary was tried first");

    let store = herald_stores::open(&platform.store_url).await?;
    for (id, user) in &sent {
        let timeline = settled(Duration::from_secs(60), "the timeline", || {
            let store = &store;
            async move {
                let Some((_, timeline)) = store.get_notification("acme", id).await? else {
                    return Ok(None);
                };
                let sms: Vec<(DeliveryState, String)> = timeline
                    .iter()
                    .filter(|e| e.channel == Some(Channel::Sms))
                    .map(|e| (e.state, e.reason.clone().unwrap_or_default()))
                    .collect();
                let done = sms.last().is_some_and(|(s, _)| s.is_final());
                Ok(done.then_some(sms))
            }
        })
        .await?;
        let last = timeline.last().map(|(s, _)| *s);
        if user == "bad" {
            assert_eq!(last, Some(DeliveryState::InvalidToken), "{timeline:?}");
        } else {
            assert_eq!(last, Some(DeliveryState::Delivered), "{user}: {timeline:?}");
        }
    }
    let profile = store.recipient_profile("acme", "bad").await?;
    assert!(profile.contacts.is_empty(), "{profile:?}");
    let deferrals: Vec<String> = {
        let mut all = Vec::new();
        for id in sent.keys() {
            if let Some((_, timeline)) = store.get_notification("acme", id).await? {
                all.extend(timeline.into_iter().filter_map(|e| e.reason));
            }
        }
        all
    };
    assert!(
        deferrals
            .iter()
            .any(|r| r.contains("twilio's circuit opened")),
        "the circuit's opening is in a timeline: {deferrals:?}"
    );

    // The primary comes back: past the cool-down a probe reaches it and it delivers again.
    twilio.set_down(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while twilio.sent().is_empty() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "no notification reached the primary after it came back\n{}",
                platform.log_tail()
            );
        }
        let request = inline_request("acme", "u0", "general", "are you back?");
        ingress.send_notification(request).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
