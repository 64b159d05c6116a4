//! The enrich stage's caches against a running platform: entries live for ten minutes here, so
//! only the changes topic can make enrich see a new opt-out or a new template within seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{
    Channel, ContactAddress, DeliveryState, ListInboxRequest, Preference, PutContactRequest,
    PutTemplateRequest, SetPreferenceRequest, TemplateRef,
};
use herald_tests::clients::{QueryClient, first_event};
use herald_tests::{Broker, Platform, eventually, inline_request};

const TEST_LIMIT: Duration = Duration::from_secs(240);

/// How long a change may take to reach enrich: "within seconds".
const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_enrich_caches_within_seconds() {
    tokio::time::timeout(TEST_LIMIT, invalidate())
        .await
        .expect("test timed out")
        .unwrap();
}

/// The final state of `id` on `channel`.
async fn final_state(query: &QueryClient, id: &str, channel: Channel) -> i32 {
    let finals = [
        DeliveryState::Delivered as i32,
        DeliveryState::Suppressed as i32,
    ];
    first_event(query, "acme", id, |e| {
        (e.channel == channel as i32 && finals.contains(&e.state)).then_some(e.state)
    })
    .await
    .unwrap()
}

async fn invalidate() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "[enrich]\ncache_ttl_ms = 600000\n")?
        .start()
        .await?;
    let mut manage = platform.management_client("acme", None).await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let query = platform.query_client("acme").await?;
    manage
        .put_contact(PutContactRequest {
            tenant: "acme".into(),
            recipient_user_id: "omar".into(),
            contact: Some(ContactAddress {
                channel: Channel::Sms as i32,
                address: "+14155550123".into(),
            }),
        })
        .await?;
    let sms = |title: &str| {
        let mut request = inline_request("acme", "omar", "news", title);
        request.channels = vec![Channel::Sms as i32];
        request
    };

    // Delivered, and omar's profile is cached now.
    let first = ingress.send_notification(sms("first")).await?.into_inner();
    let delivered = DeliveryState::Delivered as i32;
    assert_eq!(
        final_state(&query, &first.notification_id, Channel::Sms).await,
        delivered
    );

    // He opts out of news by SMS: within seconds, a news SMS is suppressed.
    manage
        .set_preference(SetPreferenceRequest {
            tenant: "acme".into(),
            recipient_user_id: "omar".into(),
            preference: Some(Preference {
                channel: Channel::Sms as i32,
                category: "news".into(),
            }),
            opted_out: true,
        })
        .await?;
    let suppressed = DeliveryState::Suppressed as i32;
    let mut sent = 0;
    eventually(WITHIN, "a news SMS suppressed after the opt-out", || {
        sent += 1;
        let (mut ingress, query) = (ingress.clone(), query.clone());
        let title = format!("after {sent}");
        async move {
            let id = ingress.send_notification(sms(&title)).await?.into_inner();
            let state = final_state(&query, &id.notification_id, Channel::Sms).await;
            Ok((state == suppressed).then_some(()))
        }
    })
    .await?;

    // A template replaced: within seconds, notifications use the new text.
    let template = |title: &str| PutTemplateRequest {
        tenant: "acme".into(),
        template_id: "digest".into(),
        locale: "en".into(),
        title: title.into(),
        body: "b".into(),
        action_url: String::new(),
        channel: 0,
    };
    let in_app = || {
        let mut request = inline_request("acme", "omar", "digest", "unused");
        request.channels = vec![Channel::InApp as i32];
        request.content = Some(Content::Template(TemplateRef {
            template_id: "digest".into(),
            locale: "en".into(),
            variables: Default::default(),
            version: 0,
        }));
        request
    };
    let newest_title = |query: &QueryClient| {
        let mut query = query.clone();
        async move {
            let page = query
                .list_inbox(ListInboxRequest {
                    tenant: "acme".into(),
                    recipient_user_id: "omar".into(),
                    category: "digest".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::Ok(page.entries.first().map(|e| e.title.clone()))
        }
    };
    manage.put_template(template("Digest v1")).await?;
    ingress.send_notification(in_app()).await?;
    let v1 = eventually(Duration::from_secs(60), "the first digest", || async {
        newest_title(&query).await
    })
    .await?;
    assert_eq!(v1, "Digest v1");
    manage.put_template(template("Digest v2")).await?;
    eventually(WITHIN, "a digest with the new title", || {
        let (mut ingress, query) = (ingress.clone(), query.clone());
        let request = in_app();
        async move {
            ingress.send_notification(request).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(newest_title(&query).await?.filter(|t| t == "Digest v2"))
        }
    })
    .await?;
    Ok(())
}
