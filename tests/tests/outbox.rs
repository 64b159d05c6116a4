//! The ingress outbox: with the broker down, `SendNotification` still answers ACCEPTED (the
//! request is kept in the store), and once the broker is back every kept request is replayed to
//! Kafka and leaves the outbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use herald_proto::v1::notification_service_client::NotificationServiceClient;
use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{DeliveryState, InlineContent, SendNotificationRequest};
use herald_schemas::NotificationRequested;
use herald_tests::{Broker, Platform, eventually, read_topic};

const TEST_LIMIT: Duration = Duration::from_secs(240);

fn request(title: &str) -> SendNotificationRequest {
    SendNotificationRequest {
        tenant: "acme".into(),
        recipient_user_id: "ana".into(),
        category: "news".into(),
        content: Some(Content::Inline(InlineContent {
            title: title.into(),
            body: "b".into(),
            action_url: String::new(),
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_accepted_during_a_broker_outage_are_replayed_to_kafka() {
    tokio::time::timeout(TEST_LIMIT, outage())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn outage() -> anyhow::Result<()> {
    let mut broker = Broker::start().await?;
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

    broker.stop().await;
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

    broker.restart().await?;
    // Once the broker is back the outbox empties, and every request is on the topic. (This
    // checks the topic, not the inbox: after a broker restart tansu sometimes leaves consumer
    // groups without partitions for minutes, which is tansu's recovery, not the outbox's.)
    eventually(Duration::from_secs(120), "the outbox to empty", || {
        let store = std::sync::Arc::clone(&store);
        async move {
            let left = store.outbox_pending("ingress.outbox-test", 100).await?;
            Ok(left.is_empty().then_some(()))
        }
    })
    .await?;
    let topic = format!("{}.requested", platform.prefix);
    let bootstrap = broker.bootstrap.clone();
    let values = tokio::task::spawn_blocking(move || read_topic(&bootstrap, &topic)).await??;
    let on_topic: BTreeSet<String> = values
        .iter()
        .map(|v| herald_schemas::codec::decode::<NotificationRequested>(v))
        .map(|r| r.map(|r| r.notification_id))
        .collect::<Result<_, _>>()?;
    assert_eq!(on_topic, sent, "every accepted request reached Kafka");
    Ok(())
}
