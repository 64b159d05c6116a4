//! The ingress outbox: with the broker frozen (SIGSTOP: it holds its port and answers nothing),
//! `SendNotification` still answers ACCEPTED (the request is kept in the store), and once the
//! broker runs again every kept request is replayed to Kafka, leaves the outbox, and reaches the
//! inbox exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use herald_proto::v1::notification_service_client::NotificationServiceClient;
use herald_proto::v1::query_service_client::QueryServiceClient;
use herald_proto::v1::{DeliveryState, ListInboxRequest, SendNotificationRequest};
use herald_schemas::NotificationRequested;
use herald_tests::{Broker, Platform, eventually, inline_request, read_topic};

const TEST_LIMIT: Duration = Duration::from_secs(240);

fn request(title: &str) -> SendNotificationRequest {
    inline_request("acme", "ana", "news", title)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_accepted_during_a_broker_outage_are_replayed_and_delivered_once() {
    tokio::time::timeout(TEST_LIMIT, outage())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn outage() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "instance_id = \"outbox-test\"")?
        .start()
        .await?;
    let mut ingress = NotificationServiceClient::connect(Platform::url(platform.ingress)).await?;
    let store = herald_store::open(&platform.store_url).await?;

    let mut sent = BTreeSet::new();
    let r = ingress
        .send_notification(request("before"))
        .await?
        .into_inner();
    sent.insert(r.notification_id);

    broker.pause()?;
    for i in 0..5 {
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            ingress.send_notification(request(&format!("during {i}"))),
        )
        .await
        .expect("the ingress answers during an outage")?
        .into_inner();
        assert_eq!(r.status, DeliveryState::Accepted as i32);
        sent.insert(r.notification_id);
    }
    let kept = store.outbox_pending("ingress.outbox-test", 100).await?;
    assert_eq!(kept.len(), 5, "the five requests wait in the outbox");

    broker.resume()?;
    // Once the broker is back the outbox empties, and every request is on the topic.
    eventually(Duration::from_secs(120), "the outbox to empty", || {
        let store = std::sync::Arc::clone(&store);
        async move {
            let left = store.outbox_pending("ingress.outbox-test", 100).await?;
            Ok(left.is_empty().then_some(()))
        }
    })
    .await
    .map_err(|e| {
        let lines = platform.log_lines_with(&["outbox", "ingress", "rdkafka", "Kafka"]);
        anyhow::anyhow!("{e}\n{lines}")
    })?;
    let topic = format!("{}.requested", platform.prefix);
    let bootstrap = broker.bootstrap.clone();
    let values = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic)).await??;
    let on_topic: BTreeSet<String> = values
        .iter()
        .map(|v| herald_schemas::codec::decode::<NotificationRequested>(v))
        .map(|r| r.map(|r| r.notification_id))
        .collect::<Result<_, _>>()?;
    assert_eq!(on_topic, sent, "every accepted request reached Kafka");

    // And through the pipeline into the inbox, once each.
    let query = QueryServiceClient::connect(Platform::url(platform.query)).await?;
    let inbox = eventually(Duration::from_secs(120), "all six in the inbox", || {
        let mut query = query.clone();
        let n = sent.len();
        async move {
            let r = query
                .list_inbox(ListInboxRequest {
                    tenant: "acme".into(),
                    recipient_user_id: "ana".into(),
                    page_size: 100,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((r.entries.len() >= n).then_some(r))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", platform.log_tail()))?;
    let in_inbox: Vec<String> = inbox
        .entries
        .iter()
        .map(|e| e.notification_id.clone())
        .collect();
    assert_eq!(
        in_inbox.len(),
        sent.len(),
        "each exactly once: {in_inbox:?}"
    );
    assert_eq!(in_inbox.into_iter().collect::<BTreeSet<_>>(), sent);
    Ok(())
}
