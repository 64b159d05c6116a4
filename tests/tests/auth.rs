//! Who may call what: every RPC of both services × every kind of credential → the exact status
//! code, against the real servers. Then nothing of one tenant or user is reachable by another
//! through page tokens, resume tokens, ListFailures or read marks; and no credential appears in
//! any log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use herald_auth::{Scope, keys, users};
use herald_proto::v1::management_service_client::ManagementServiceClient;
use herald_proto::v1::notification_service_client::NotificationServiceClient;
use herald_proto::v1::query_service_client::QueryServiceClient;
use herald_proto::v1::{
    BatchRecipient, ExportRecipientRequest, GetNotificationRequest, InlineContent,
    ListFailuresRequest, ListInboxRequest, MarkAllReadRequest, MarkReadRequest,
    RecordOpenedRequest, SendBatchRequest, UnreadCountRequest, WatchInboxRequest,
    send_batch_request,
};
use herald_store::{Clock, SystemClock};
use herald_tests::{Broker, Platform, inline_request, settled};
use tonic::transport::Channel;
use tonic::{Code, Request};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const USER_SECRET: &str = "acme-user-token-secret-of-32-bytes-or-more";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rpc {
    Send,
    Get,
    ListInbox,
    ListFailures,
    UnreadCount,
    MarkRead,
    MarkAllRead,
    Watch,
    SendBatch,
    RecordOpened,
    ExportRecipient,
}

const RPCS: [Rpc; 11] = [
    Rpc::Send,
    Rpc::Get,
    Rpc::ListInbox,
    Rpc::ListFailures,
    Rpc::UnreadCount,
    Rpc::MarkRead,
    Rpc::MarkAllRead,
    Rpc::Watch,
    Rpc::SendBatch,
    Rpc::RecordOpened,
    Rpc::ExportRecipient,
];

fn with<T>(credential: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(c) = credential {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {c}").parse().unwrap());
    }
    request
}

/// A credential by name, and the code each RPC answers it.
type Case = (&'static str, Option<String>, Vec<(Rpc, Code)>);

struct Servers {
    ingress: Channel,
    query: Channel,
    /// acme's notification for ana.
    notification: String,
}

/// What `rpc` answers for ana's data of tenant acme, called with `credential`.
async fn code(s: &Servers, rpc: Rpc, credential: Option<&str>) -> Code {
    let mut ingress = NotificationServiceClient::new(s.ingress.clone());
    let mut query = QueryServiceClient::new(s.query.clone());
    let mut manage = ManagementServiceClient::new(s.query.clone());
    let (tenant, user) = ("acme".to_owned(), "ana".to_owned());
    let result = match rpc {
        Rpc::Send => ingress
            .send_notification(with(
                credential,
                inline_request("acme", "ana", "general", "matrix"),
            ))
            .await
            .map(|_| ()),
        Rpc::Get => query
            .get_notification(with(
                credential,
                GetNotificationRequest {
                    tenant,
                    notification_id: s.notification.clone(),
                },
            ))
            .await
            .map(|_| ()),
        Rpc::ListInbox => query
            .list_inbox(with(
                credential,
                ListInboxRequest {
                    tenant,
                    recipient_user_id: user,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        Rpc::ListFailures => query
            .list_failures(with(
                credential,
                ListFailuresRequest {
                    tenant,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        Rpc::UnreadCount => query
            .unread_count(with(
                credential,
                UnreadCountRequest {
                    tenant,
                    recipient_user_id: user,
                },
            ))
            .await
            .map(|_| ()),
        Rpc::MarkRead => query
            .mark_read(with(
                credential,
                MarkReadRequest {
                    tenant,
                    recipient_user_id: user,
                    notification_ids: vec![s.notification.clone()],
                },
            ))
            .await
            .map(|_| ()),
        Rpc::MarkAllRead => query
            .mark_all_read(with(
                credential,
                MarkAllReadRequest {
                    tenant,
                    recipient_user_id: user,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        Rpc::Watch => query
            .watch_inbox(with(
                credential,
                WatchInboxRequest {
                    tenant,
                    recipient_user_id: user,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        Rpc::SendBatch => ingress
            .send_batch(with(
                credential,
                SendBatchRequest {
                    tenant,
                    batch_key: "matrix".into(),
                    category: "general".into(),
                    content: Some(send_batch_request::Content::Inline(InlineContent {
                        title: "matrix".into(),
                        body: "batch".into(),
                        action_url: String::new(),
                    })),
                    recipients: vec![BatchRecipient {
                        recipient_user_id: user,
                        variables: Default::default(),
                    }],
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        Rpc::RecordOpened => query
            .record_opened(with(
                credential,
                RecordOpenedRequest {
                    tenant,
                    recipient_user_id: user,
                    notification_id: s.notification.clone(),
                    channel: 0,
                },
            ))
            .await
            .map(|_| ()),
        Rpc::ExportRecipient => manage
            .export_recipient(with(
                credential,
                ExportRecipientRequest {
                    tenant,
                    recipient_user_id: user,
                },
            ))
            .await
            .map(|_| ()),
    };
    result.err().map_or(Code::Ok, |s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_credential_with_its_exact_code_and_no_key_is_logged() {
    tokio::time::timeout(TEST_LIMIT, matrix())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn matrix() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?;
    let dir = platform.config_path().parent().unwrap().to_owned();
    let secret = platform.write_file("acme-users.secret", USER_SECRET)?;
    let platform = platform.with_extra_config(&format!(
        "[auth.user_tokens.acme]\nsecret_file = \"{}\"\nmax_lifetime_s = 7200\n",
        secret.display()
    ))?;
    // The keys, made in the store before anything reads them (revocation is then not cached).
    let store = herald_stores::open(&platform.store_url).await?;
    let now = SystemClock.now_ms();
    let mut keyring = BTreeMap::new();
    for (name, tenant, scopes) in [
        ("acme", "acme", &Scope::ALL[..]),
        ("umbrella", "umbrella", &Scope::ALL[..]),
        ("send only", "acme", &[Scope::Send][..]),
        ("read only", "acme", &[Scope::Read][..]),
        ("revoked", "acme", &Scope::ALL[..]),
    ] {
        let new = keys::make(tenant, scopes, name, now, None);
        let record = if name == "revoked" {
            keys::revoke(&new.record, now)
        } else {
            new.record.clone()
        };
        store.put_api_key(&record).await?;
        keyring.insert(name, new.key);
    }
    let expired_key = keys::make(
        "acme",
        &Scope::ALL,
        "expired",
        now - 10_000,
        Some(Duration::from_secs(1)),
    );
    store.put_api_key(&expired_key.record).await?;
    let unknown = keys::make("acme", &Scope::ALL, "never stored", now, None).key;
    let now_s = now / 1_000;
    let token = |user: &str, iat: i64| {
        users::mint_hs256(USER_SECRET.as_bytes(), "acme", user, "herald", iat, 3_600).unwrap()
    };
    let (ana, bob, expired_token) = (
        token("ana", now_s),
        token("bob", now_s),
        token("ana", now_s - 7_000),
    );
    let platform = platform.start().await?;

    let ingress = Channel::from_shared(Platform::url(platform.ingress))?
        .connect()
        .await?;
    let query = Channel::from_shared(Platform::url(platform.query))?
        .connect()
        .await?;
    // ana's notification, delivered to her inbox.
    let notification = NotificationServiceClient::new(ingress.clone())
        .send_notification(with(
            Some(&keyring["acme"]),
            inline_request("acme", "ana", "general", "hello ana"),
        ))
        .await?
        .into_inner()
        .notification_id;
    let servers = Servers {
        ingress,
        query,
        notification: notification.clone(),
    };
    settled(
        Duration::from_secs(90),
        "ana's notification in her inbox",
        || {
            let servers = &servers;
            let key = keyring["acme"].clone();
            async move { Ok((code(servers, Rpc::Get, Some(&key)).await == Code::Ok).then_some(())) }
        },
    )
    .await?;

    use Code::{NotFound, PermissionDenied, Unauthenticated};
    use Rpc::*;
    let anyone = |code: Code| RPCS.map(|rpc| (rpc, code)).to_vec();
    let queries = [
        Get,
        ListInbox,
        ListFailures,
        UnreadCount,
        MarkRead,
        MarkAllRead,
        Watch,
        RecordOpened,
    ];
    let inbox_rpcs = [
        ListInbox,
        UnreadCount,
        MarkRead,
        MarkAllRead,
        Watch,
        RecordOpened,
    ];
    let cases: Vec<Case> = vec![
        ("no credential", None, anyone(Unauthenticated)),
        (
            "malformed",
            Some("hk_123_xyz".into()),
            anyone(Unauthenticated),
        ),
        (
            "garbage token",
            Some("a.b.c".into()),
            anyone(Unauthenticated),
        ),
        ("unknown key", Some(unknown), anyone(Unauthenticated)),
        (
            "revoked key",
            Some(keyring["revoked"].clone()),
            anyone(Unauthenticated),
        ),
        (
            "expired key",
            Some(expired_key.key.clone()),
            anyone(Unauthenticated),
        ),
        (
            "another tenant's key",
            Some(keyring["umbrella"].clone()),
            anyone(PermissionDenied),
        ),
        (
            "a key without read",
            Some(keyring["send only"].clone()),
            [
                (Send, Code::Ok),
                (SendBatch, Code::Ok),
                (ExportRecipient, PermissionDenied),
            ]
            .into_iter()
            .chain(queries.map(|rpc| (rpc, PermissionDenied)))
            .collect(),
        ),
        (
            "a key without send",
            Some(keyring["read only"].clone()),
            [
                (Send, PermissionDenied),
                (SendBatch, PermissionDenied),
                (ExportRecipient, PermissionDenied),
            ]
            .into_iter()
            .chain(queries.map(|rpc| (rpc, Code::Ok)))
            .collect(),
        ),
        (
            "another user's token",
            Some(bob),
            [
                (Send, PermissionDenied),
                (SendBatch, PermissionDenied),
                (ExportRecipient, PermissionDenied),
                (Get, NotFound),
                (ListFailures, PermissionDenied),
            ]
            .into_iter()
            .chain(inbox_rpcs.map(|rpc| (rpc, PermissionDenied)))
            .collect(),
        ),
        (
            "an expired user token",
            Some(expired_token),
            anyone(Unauthenticated),
        ),
        (
            "the user's own token",
            Some(ana.clone()),
            [
                (Send, PermissionDenied),
                (SendBatch, PermissionDenied),
                (ExportRecipient, PermissionDenied),
                (Get, Code::Ok),
                (ListFailures, PermissionDenied),
            ]
            .into_iter()
            .chain(inbox_rpcs.map(|rpc| (rpc, Code::Ok)))
            .collect(),
        ),
        (
            "the tenant's key",
            Some(keyring["acme"].clone()),
            anyone(Code::Ok),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, credential, expected) in &cases {
        for (rpc, want) in expected {
            let got = code(&servers, *rpc, credential.as_deref()).await;
            if got != *want {
                wrong.push(format!("{name} × {rpc:?}: {got:?}, expected {want:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        cases.iter().map(|c| c.2.len()).sum::<usize>(),
        cases.len() * RPCS.len()
    );

    leaks(&servers, &keyring, &ana).await?;

    // No credential in any log.
    let log = std::fs::read_to_string(dir.join("herald.log"))?;
    for (name, key) in &keyring {
        let secret = keys::parse(key).unwrap().1;
        assert!(
            !log.contains(secret),
            "the {name} key's secret is in the log"
        );
    }
    assert!(!log.contains(&ana), "a user token is in the log");
    Ok(())
}

/// Tokens handed to one tenant or user are refused to another, and neither ListFailures nor
/// MarkRead reaches across.
async fn leaks(s: &Servers, keyring: &BTreeMap<&str, String>, ana: &str) -> anyhow::Result<()> {
    let mut query = QueryServiceClient::new(s.query.clone());
    let (acme, umbrella) = (keyring["acme"].as_str(), keyring["umbrella"].as_str());
    // A page token of acme's listing, replayed by umbrella for a user of its own.
    let mut send = NotificationServiceClient::new(s.ingress.clone());
    let mut sent = Vec::new();
    for i in 0..3 {
        let request = inline_request("acme", "ana", "general", &format!("n{i}"));
        let id = send
            .send_notification(with(Some(acme), request))
            .await?
            .into_inner()
            .notification_id;
        sent.push(id);
    }
    let page = settled(Duration::from_secs(60), "a second page", || {
        let mut query = query.clone();
        async move {
            let page = query
                .list_inbox(with(
                    Some(acme),
                    ListInboxRequest {
                        tenant: "acme".into(),
                        recipient_user_id: "ana".into(),
                        page_size: 1,
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            Ok((!page.next_page_token.is_empty()).then_some(page.next_page_token))
        }
    })
    .await?;
    let replayed = query
        .list_inbox(with(
            Some(umbrella),
            ListInboxRequest {
                tenant: "umbrella".into(),
                recipient_user_id: "ana".into(),
                page_size: 1,
                page_token: page.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        replayed.map(|_| ()).unwrap_err().code(),
        Code::InvalidArgument
    );

    // A resume token of ana's watch, replayed by umbrella.
    let mut stream = query
        .watch_inbox(with(
            Some(acme),
            WatchInboxRequest {
                tenant: "acme".into(),
                recipient_user_id: "ana".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    // A watch pushes what arrives after it starts.
    send.send_notification(with(
        Some(acme),
        inline_request("acme", "ana", "general", "watched"),
    ))
    .await?;
    let first = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await??
        .expect("an entry");
    drop(stream);
    let resumed = query
        .watch_inbox(with(
            Some(umbrella),
            WatchInboxRequest {
                tenant: "umbrella".into(),
                recipient_user_id: "ana".into(),
                resume_token: first.resume_token,
            },
        ))
        .await;
    assert_eq!(
        resumed.map(|_| ()).unwrap_err().code(),
        Code::InvalidArgument
    );

    // umbrella's failures are its own: none.
    let failures = query
        .list_failures(with(Some(umbrella), ListFailuresRequest::default()))
        .await?
        .into_inner();
    assert!(failures.failures.is_empty(), "{failures:?}");

    // bob marking one of ana's notifications read reaches bob's inbox only: hers stays unread.
    let target = sent[0].clone();
    let ana_entry = |query: &QueryServiceClient<Channel>| {
        let (mut query, ana, target) = (query.clone(), ana.to_owned(), target.clone());
        async move {
            let page = query
                .list_inbox(with(
                    Some(&ana),
                    ListInboxRequest {
                        page_size: 100,
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            anyhow::Ok(
                page.entries
                    .into_iter()
                    .find(|e| e.notification_id == target),
            )
        }
    };
    let entry = settled(Duration::from_secs(60), "ana's new notification", || {
        ana_entry(&query)
    })
    .await?;
    assert!(!entry.read);
    let bob = users::mint_hs256(
        USER_SECRET.as_bytes(),
        "acme",
        "bob",
        "herald",
        SystemClock.now_ms() / 1_000,
        600,
    )
    .unwrap();
    let marked = query
        .mark_read(with(
            Some(&bob),
            MarkReadRequest {
                notification_ids: vec![target.clone()],
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert!(marked.newly_read.is_empty(), "{marked:?}");
    let entry = ana_entry(&query).await?.expect("still listed");
    assert!(!entry.read, "bob's mark reached ana's inbox");
    Ok(())
}
