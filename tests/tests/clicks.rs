//! Click tracking and opens, end to end: a notification's action URL reaches the user as a
//! signed link to the click redirect; following it records one CLICKED engagement event and
//! redirects to the target; a tampered, expired or malformed link answers 400 and records
//! nothing; `RecordOpened` records one OPENED event and refuses another user's notification.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_auth::links::{Click, Links};
use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{InlineContent, ListInboxRequest, RecordOpenedRequest};
use herald_schemas::EngagementKind;
use herald_tests::{Broker, Platform, eventually, inline_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const TARGET: &str = "https://acme.example/orders/7?from=push";

/// `GET path` on the redirect: (status code, Location header).
async fn get(platform: &Platform, path: &str) -> anyhow::Result<(u16, Option<String>)> {
    let mut stream = tokio::net::TcpStream::connect(platform.links).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: links\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let location = answer
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::to_owned);
    Ok((status, location))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_link_records_one_click_and_redirects_and_a_bad_one_records_nothing() {
    tokio::time::timeout(TEST_LIMIT, clicks())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn clicks() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut request = inline_request("acme", "cleo", "general", "your order");
    request.content = Some(Content::Inline(InlineContent {
        title: "your order".into(),
        body: "has shipped".into(),
        action_url: TARGET.into(),
    }));
    let id = ingress
        .send_notification(request)
        .await?
        .into_inner()
        .notification_id;
    let query = platform.query_client("acme").await?;
    let link = eventually(Duration::from_secs(90), "the inbox entry", || {
        let mut query = query.clone();
        async move {
            let page = query
                .list_inbox(ListInboxRequest {
                    tenant: "acme".into(),
                    recipient_user_id: "cleo".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(page.entries.first().map(|e| e.action_url.clone()))
        }
    })
    .await?;
    let prefix = format!("http://{}", platform.links);
    let path = link
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link} is not a tracked link"))
        .to_owned();
    assert!(path.starts_with("/c/"), "{path}");

    // Bad links first: none of them may record anything.
    let token = &path["/c/".len()..];
    let flipped = {
        let mut t = token.as_bytes().to_vec();
        t[5] = if t[5] == b'A' { b'B' } else { b'A' };
        String::from_utf8(t)?
    };
    let secret = std::fs::read(platform.config_path().with_file_name("link-secret"))?;
    let expired = Links::new(secret.trim_ascii(), &prefix, 1)
        .unwrap()
        .link(&Click {
            notification_id: id.clone(),
            tenant: "acme".into(),
            recipient_user_id: "cleo".into(),
            channel: "in_app".into(),
            target: TARGET.into(),
            expires_at_ms: 1_000,
        });
    let expired_path = expired.strip_prefix(&prefix).unwrap().to_owned();
    for (bad, why) in [
        (format!("/c/{flipped}"), "tampered"),
        (expired_path, "expired"),
        ("/c/not-a-token".to_owned(), "malformed"),
        (format!("/c/{}", "x".repeat(9_000)), "huge"),
    ] {
        let (status, location) = get(&platform, &bad).await?;
        assert_eq!((status, location), (400, None), "{why}");
    }
    assert_eq!(get(&platform, "/elsewhere").await?.0, 404);

    // The real link redirects to the target.
    let (status, location) = get(&platform, &path).await?;
    assert_eq!(status, 302);
    assert_eq!(location.as_deref(), Some(TARGET));

    // Opens: one of her own notification, at once (what is in her inbox is recorded); another
    // user's is not found.
    let mut query = query.clone();
    let opened = query
        .record_opened(RecordOpenedRequest {
            tenant: "acme".into(),
            recipient_user_id: "cleo".into(),
            notification_id: id.clone(),
            channel: herald_proto::v1::Channel::InApp as i32,
        })
        .await?
        .into_inner();
    assert_eq!(
        opened.event_id,
        herald_schemas::ids::engagement_id(&id, EngagementKind::Opened)
    );
    let not_hers = query
        .record_opened(RecordOpenedRequest {
            tenant: "acme".into(),
            recipient_user_id: "mallory".into(),
            notification_id: id.clone(),
            channel: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(not_hers.code(), tonic::Code::NotFound);

    // Exactly one CLICKED and one OPENED event, for this notification and user.
    let events =
        herald_tests::topic::engagement_events(&broker.bootstrap, &platform.prefix, 2).await?;
    let mut kinds: Vec<EngagementKind> = events.iter().map(|e| e.kind).collect();
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        kinds,
        [EngagementKind::Clicked, EngagementKind::Opened],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(
            (e.notification_id.as_str(), e.recipient_user_id.as_str()),
            (id.as_str(), "cleo")
        );
        assert_eq!(e.channel, Some(herald_schemas::Channel::InApp));
    }
    Ok(())
}
