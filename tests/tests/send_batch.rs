//! `SendBatch` end to end: one template to 40 recipients with their own variables gives 40 ids
//! and 40 inbox entries rendered per recipient; sending the same batch again gives the same ids
//! and delivers nothing twice; a batch with one bad recipient is refused whole, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_proto::v1::{
    BatchRecipient, ListInboxRequest, SendBatchRequest, TemplateRef, send_batch_request,
};
use herald_store::TemplateRecord;
use herald_tests::{Broker, Platform, settled};
use tonic::Code;

const TEST_LIMIT: Duration = Duration::from_secs(240);
const RECIPIENTS: usize = 40;

fn batch(users: &[String]) -> SendBatchRequest {
    SendBatchRequest {
        tenant: "acme".into(),
        batch_key: "welcome-2026-11".into(),
        category: "onboarding".into(),
        content: Some(send_batch_request::Content::Template(TemplateRef {
            template_id: "welcome".into(),
            locale: "en".into(),
            variables: [("team".to_owned(), "Acme".to_owned())].into(),
            version: 0,
        })),
        recipients: users
            .iter()
            .map(|u| BatchRecipient {
                recipient_user_id: u.clone(),
                variables: [("name".to_owned(), format!("Dear {u}"))].into(),
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reaches_each_recipient_once_with_their_own_variables() {
    tokio::time::timeout(TEST_LIMIT, batches())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn batches() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let store = herald_stores::open(&platform.store_url).await?;
    store
        .put_template(&TemplateRecord {
            tenant: "acme".into(),
            template_id: "welcome".into(),
            locale: "en".into(),
            title: "Welcome, {{name}}".into(),
            body: "The {{team}} team".into(),
            action_url: None,
            channel: None,
            version: 1,
        })
        .await?;
    let users: Vec<String> = (0..RECIPIENTS).map(|i| format!("b{i:02}")).collect();
    let mut ingress = platform.ingress_client("acme").await?;
    let first = ingress.send_batch(batch(&users)).await?.into_inner();
    assert_eq!(first.items.len(), RECIPIENTS);
    for (item, user) in first.items.iter().zip(&users) {
        assert_eq!(&item.recipient_user_id, user, "in the request's order");
    }
    // The same batch again: the same ids.
    let again = ingress.send_batch(batch(&users)).await?.into_inner();
    assert_eq!(again, first);

    // A bad recipient refuses the whole batch, naming it.
    let mut bad = users.clone();
    bad[7] = "x".repeat(200);
    let mut refused = batch(&bad);
    refused.batch_key = "another".into();
    let status = ingress.send_batch(refused).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("recipients[7].recipient_user_id"),
        "{status:?}"
    );

    // Each recipient's inbox: one entry, their own title.
    let query = platform.query_client("acme").await?;
    let titles = settled(Duration::from_secs(120), "every inbox", || {
        let (query, users) = (query.clone(), users.clone());
        async move {
            let mut titles = Vec::new();
            for user in users {
                let page = query
                    .clone()
                    .list_inbox(ListInboxRequest {
                        tenant: "acme".into(),
                        recipient_user_id: user,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                titles.push(
                    page.entries
                        .iter()
                        .map(|e| e.title.clone())
                        .collect::<Vec<_>>(),
                );
            }
            Ok(titles.iter().all(|t| !t.is_empty()).then_some(titles))
        }
    })
    .await?;
    for (user, titles) in users.iter().zip(&titles) {
        assert_eq!(titles, &[format!("Welcome, Dear {user}")], "{user}");
    }
    Ok(())
}
