//! The query API through the whole pipeline: notifications sent over gRPC to the ingress, carried
//! by every stage on a real tansu broker, then read, filtered, marked read, watched and listed as
//! failures through the query service; read marks come out as engagement events on Kafka.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use herald_proto::v1::{
    Channel, DeliveryState, GetNotificationRequest, ListFailuresRequest, ListInboxRequest,
    ListInboxResponse, MarkAllReadRequest, MarkReadRequest, SendNotificationRequest,
    UnreadCountRequest, WatchInboxRequest, WatchInboxResponse,
};
use herald_schemas::EngagementKind;
use herald_store::{Clock, SystemClock};
use herald_tests::clients::{IngressClient as Ingress, QueryClient as Query};
use herald_tests::{Broker, Platform, eventually, inline_request, settled};
use tonic::{Code, Streaming};

const TEST_LIMIT: Duration = Duration::from_secs(240);
const DAY_MS: i64 = 86_400_000;

async fn send(ingress: &mut Ingress, req: SendNotificationRequest) -> anyhow::Result<String> {
    Ok(ingress
        .send_notification(req)
        .await?
        .into_inner()
        .notification_id)
}

fn inbox(tenant: &str, user: &str) -> ListInboxRequest {
    ListInboxRequest {
        tenant: tenant.into(),
        recipient_user_id: user.into(),
        page_size: 100,
        ..Default::default()
    }
}

fn ids(r: &ListInboxResponse) -> BTreeSet<String> {
    r.entries
        .iter()
        .map(|e| e.notification_id.clone())
        .collect()
}

async fn unread(query: &mut Query, tenant: &str, user: &str) -> anyhow::Result<u32> {
    let r = query
        .unread_count(UnreadCountRequest {
            tenant: tenant.into(),
            recipient_user_id: user.into(),
        })
        .await?
        .into_inner();
    assert!(!r.capped);
    Ok(r.unread)
}

/// The next `n` messages of a watch (each within 60 s).
async fn next(
    watch: &mut Streaming<WatchInboxResponse>,
    n: usize,
) -> anyhow::Result<Vec<WatchInboxResponse>> {
    let mut got = Vec::new();
    while got.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(60), watch.message())
            .await
            .map_err(|_| anyhow::anyhow!("no watch message within 60 s ({} so far)", got.len()))??
            .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
        got.push(message);
    }
    Ok(got)
}

fn watch_request(user: &str, resume_token: &str) -> WatchInboxRequest {
    WatchInboxRequest {
        tenant: "acme".into(),
        recipient_user_id: user.into(),
        resume_token: resume_token.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_read_state_watch_and_failures_through_the_pipeline() {
    tokio::time::timeout(TEST_LIMIT, query_api())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn query_api() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut query = platform.query_client("acme").await?;

    // A watcher connected before anything is sent.
    let mut watch = query
        .watch_inbox(watch_request("ana", ""))
        .await?
        .into_inner();

    let mut sent = Vec::new();
    for i in 0..6 {
        let category = if i % 2 == 0 { "news" } else { "billing" };
        let title = format!("n{i}");
        sent.push(
            send(
                &mut ingress,
                inline_request("acme", "ana", category, &title),
            )
            .await?,
        );
    }
    // Tenant "other" sends with its own key.
    let other_tenant = send(
        &mut platform.ingress_client("other").await?,
        inline_request("other", "ana", "news", "theirs"),
    )
    .await?;
    // E-mail only, and bob has no address: suppressed, a failure the caller can look up.
    let suppressed = send(
        &mut ingress,
        SendNotificationRequest {
            channels: vec![Channel::Email as i32],
            ..inline_request("acme", "bob", "news", "nowhere")
        },
    )
    .await?;
    let want: BTreeSet<String> = sent.iter().cloned().collect();

    // The watcher sees exactly the six, once each.
    let pushed = next(&mut watch, 6).await?;
    let pushed_ids: Vec<String> = pushed
        .iter()
        .map(|m| m.entry.as_ref().unwrap().notification_id.clone())
        .collect();
    assert_eq!(pushed_ids.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(pushed_ids.len(), 6, "no repeats within one watch");
    let resume_after_third = pushed[2].resume_token.clone();

    let all = settled(Duration::from_secs(60), "ana's inbox", || {
        let mut query = query.clone();
        async move {
            let r = query.list_inbox(inbox("acme", "ana")).await?.into_inner();
            Ok((r.entries.len() >= 6).then_some(r))
        }
    })
    .await?;
    assert_eq!(ids(&all), want);
    assert!(all.entries.iter().all(|e| !e.read));

    // Filters.
    let billing = query
        .list_inbox(ListInboxRequest {
            category: "billing".into(),
            ..inbox("acme", "ana")
        })
        .await?
        .into_inner();
    assert_eq!(
        ids(&billing),
        [&sent[1], &sent[3], &sent[5]]
            .into_iter()
            .cloned()
            .collect()
    );
    assert_eq!(unread(&mut query, "acme", "ana").await?, 6);

    // MarkRead: unknown ids are skipped; a repeat marks nothing.
    let r = query
        .mark_read(MarkReadRequest {
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            notification_ids: vec![sent[0].clone(), sent[1].clone(), "unknown".into()],
        })
        .await?
        .into_inner();
    let newly: BTreeSet<String> = r.newly_read.into_iter().collect();
    assert_eq!(newly, [&sent[0], &sent[1]].into_iter().cloned().collect());
    let r = query
        .mark_read(MarkReadRequest {
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            notification_ids: vec![sent[0].clone()],
        })
        .await?
        .into_inner();
    assert!(r.newly_read.is_empty());
    assert_eq!(unread(&mut query, "acme", "ana").await?, 4);
    let unread_page = query
        .list_inbox(ListInboxRequest {
            unread_only: true,
            ..inbox("acme", "ana")
        })
        .await?
        .into_inner();
    let still_unread: BTreeSet<String> = sent[2..].iter().cloned().collect();
    assert_eq!(ids(&unread_page), still_unread);

    // Each newly read entry is one READ engagement event on Kafka, with a stable id.
    let events =
        herald_tests::topic::engagement_events(&broker.bootstrap, &platform.prefix, 2).await?;
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e.kind, EngagementKind::Read);
        assert_eq!(
            (e.tenant.as_str(), e.recipient_user_id.as_str()),
            ("acme", "ana")
        );
        assert_eq!(
            e.event_id,
            herald_schemas::ids::engagement_id(&e.notification_id, EngagementKind::Read)
        );
    }
    let read_ids: BTreeSet<String> = events.iter().map(|e| e.notification_id.clone()).collect();
    assert_eq!(read_ids, newly);

    // MarkAllRead.
    let r = query
        .mark_all_read(MarkAllReadRequest {
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            up_to_ms: 0,
        })
        .await?
        .into_inner();
    assert_eq!(r.marked, 4);
    assert_eq!(unread(&mut query, "acme", "ana").await?, 0);

    // Failures: bob's e-mail was suppressed.
    let failures = eventually(Duration::from_secs(60), "bob's failure", || {
        let mut query = query.clone();
        async move {
            let r = query
                .list_failures(ListFailuresRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((!r.failures.is_empty()).then_some(r))
        }
    })
    .await?;
    assert_eq!(failures.failures.len(), 1, "{failures:?}");
    let f = &failures.failures[0];
    assert_eq!(f.notification_id, suppressed);
    assert_eq!(f.recipient_user_id, "bob");
    assert_eq!(f.state, DeliveryState::Suppressed as i32);
    assert!(!f.reason.is_empty());

    // Another tenant's data is never visible to it (calling with its own key), whatever the ids.
    let mut other = platform.query_client("other").await?;
    let theirs = other.list_inbox(inbox("other", "ana")).await?.into_inner();
    assert!(
        theirs
            .entries
            .iter()
            .all(|e| e.notification_id == other_tenant)
    );
    let err = other
        .get_notification(GetNotificationRequest {
            tenant: "other".into(),
            notification_id: sent[2].clone(),
        })
        .await
        .expect_err("another tenant's notification");
    assert_eq!(err.code(), Code::NotFound);
    let r = other
        .mark_read(MarkReadRequest {
            tenant: "other".into(),
            recipient_user_id: "ana".into(),
            notification_ids: vec![sent[2].clone()],
        })
        .await?
        .into_inner();
    assert!(r.newly_read.is_empty());
    let r = other
        .list_failures(ListFailuresRequest {
            tenant: "other".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(r.failures.is_empty());
    // And acme's key cannot ask as another tenant.
    let err = query
        .get_notification(GetNotificationRequest {
            tenant: "other".into(),
            notification_id: other_tenant.clone(),
        })
        .await
        .expect_err("acme's key naming another tenant");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Older than 365 days: a clear error, not an empty success.
    let long_ago = SystemClock.now_ms() - 400 * DAY_MS;
    let err = query
        .list_inbox(ListInboxRequest {
            before_ms: long_ago,
            ..inbox("acme", "ana")
        })
        .await
        .expect_err("beyond retention");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("365 days"), "{}", err.message());
    let err = query
        .list_failures(ListFailuresRequest {
            tenant: "acme".into(),
            from_ms: long_ago,
            ..Default::default()
        })
        .await
        .expect_err("beyond retention");
    assert_eq!(err.code(), Code::OutOfRange);

    // Resuming a watch continues after the token: entries 4..6 (and, around the resume point,
    // possibly some again), then new ones.
    drop(watch);
    let mut resumed = query
        .watch_inbox(watch_request("ana", &resume_after_third))
        .await?
        .into_inner();
    let late = send(&mut ingress, inline_request("acme", "ana", "news", "late")).await?;
    let mut seen = BTreeSet::new();
    while !seen.contains(&late) {
        let m = next(&mut resumed, 1).await?.remove(0);
        seen.insert(m.entry.unwrap().notification_id);
    }
    for id in &pushed_ids[3..] {
        assert!(seen.contains(id), "resumed watch skipped {id}");
    }
    assert!(seen.iter().all(|id| want.contains(id) || *id == late));

    // Bad input is refused with a reason.
    let err = query
        .watch_inbox(watch_request("ana", "garbage"))
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = query
        .mark_read(MarkReadRequest {
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            notification_ids: vec![],
        })
        .await
        .expect_err("no ids");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("notification_ids"));

    // Tokens belong to the listing that issued them: ana's resume token does not resume bob's
    // watch, and ana's page token does not page bob's inbox.
    let err = query
        .watch_inbox(watch_request("bob", &resume_after_third))
        .await
        .expect_err("another user's resume token");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let page = query
        .list_inbox(ListInboxRequest {
            page_size: 1,
            ..inbox("acme", "ana")
        })
        .await?
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let err = query
        .list_inbox(ListInboxRequest {
            page_token: page.next_page_token,
            ..inbox("acme", "bob")
        })
        .await
        .expect_err("another user's page token");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // The far future as a bound is answered at once, as "from now".
    let r = query
        .list_inbox(ListInboxRequest {
            before_ms: i64::MAX,
            ..inbox("acme", "ana")
        })
        .await?
        .into_inner();
    assert!(!r.entries.is_empty());
    for (from_ms, to_ms) in [(0, i64::MAX), (1, i64::MAX)] {
        query
            .list_failures(ListFailuresRequest {
                tenant: "acme".into(),
                from_ms,
                to_ms,
                ..Default::default()
            })
            .await
            .map(drop)
            .or_else(|e| {
                if e.code() == Code::OutOfRange {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
    }
    let err = query
        .list_failures(ListFailuresRequest {
            tenant: "acme".into(),
            from_ms: i64::MIN,
            ..Default::default()
        })
        .await
        .expect_err("negative time");
    assert_eq!(err.code(), Code::InvalidArgument);
    let marked = query
        .mark_all_read(MarkAllReadRequest {
            tenant: "acme".into(),
            recipient_user_id: "nobody".into(),
            up_to_ms: i64::MAX,
        })
        .await?
        .into_inner();
    assert_eq!(marked.marked, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_a_query_service_restart() {
    tokio::time::timeout(TEST_LIMIT, resume_across_restart())
        .await
        .expect("test timed out")
        .unwrap();
}

/// A watcher holds the resume token of its third entry; the query service is SIGKILLed (and
/// restarted by the supervisor) while three more notifications are sent; the watch resumed
/// with the token on the new process gets those three (repeats of entries near the token are
/// allowed, clients deduplicate by id) and nothing else; then an entry written an hour after
/// its delivery time reaches the running watch too.
async fn resume_across_restart() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut query = platform.query_client("acme").await?;
    let mut watch = query
        .watch_inbox(watch_request("cleo", ""))
        .await?
        .into_inner();
    let mut before = BTreeSet::new();
    for i in 0..3 {
        before.insert(
            send(
                &mut ingress,
                inline_request("acme", "cleo", "news", &format!("b{i}")),
            )
            .await?,
        );
    }
    let pushed = next(&mut watch, 3).await?;
    let token = pushed[2].resume_token.clone();

    assert!(platform.kill_component("query"), "no query service to kill");
    let mut after = BTreeSet::new();
    for i in 0..3 {
        after.insert(
            send(
                &mut ingress,
                inline_request("acme", "cleo", "news", &format!("a{i}")),
            )
            .await?,
        );
    }
    herald_tests::wait_for_port(
        platform.query,
        Duration::from_secs(60),
        "the restarted query service",
    )
    .await?;
    let mut query = platform.query_client("acme").await?;
    let mut resumed = query
        .watch_inbox(watch_request("cleo", &token))
        .await?
        .into_inner();
    let mut seen = BTreeSet::new();
    while !after.is_subset(&seen) {
        let m = next(&mut resumed, 1).await?.remove(0);
        let id = m
            .entry
            .as_ref()
            .map(|e| e.notification_id.clone())
            .unwrap_or_default();
        assert!(
            after.contains(&id) || before.contains(&id),
            "the resumed watch pushed {id}, which was never sent to cleo"
        );
        seen.insert(id);
    }

    // An entry whose write lands an hour after its delivery time (a deliver instance with a
    // skewed clock, a write that stalled) is still pushed to the running watch.
    let now = SystemClock.now_ms();
    let late = herald_store::InboxEntryRecord {
        tenant: "acme".into(),
        recipient_user_id: "cleo".into(),
        notification_id: "late-write".into(),
        category: "news".into(),
        title: "late".into(),
        body: "written an hour after its delivery time".into(),
        action_url: None,
        created_at_ms: now - 3_601_000,
        delivered_at_ms: now - 3_600_000,
        read_at_ms: None,
    };
    herald_stores::open(&platform.store_url)
        .await?
        .upsert_inbox_entry(&late)
        .await?;
    loop {
        let m = next(&mut resumed, 1).await?.remove(0);
        if m.entry.is_some_and(|e| e.notification_id == "late-write") {
            break;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_capped_per_user_and_a_closed_one_frees_its_place() {
    tokio::time::timeout(TEST_LIMIT, watch_caps())
        .await
        .expect("test timed out")
        .unwrap();
}

/// One user opens the most watches a user may have (16 by default); the next is refused with
/// RESOURCE_EXHAUSTED saying why, another user of the same tenant is still served, and once the
/// first user closes one watch they can open one again.
async fn watch_caps() -> anyhow::Result<()> {
    let per_user = herald_query::watchers::WatchLimits::default().per_user;
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?;
    let _query = platform
        .spawn_component(&["query"], Some(platform.query))
        .await?;
    let mut query = platform.query_client("acme").await?;
    let mut open = Vec::new();
    for _ in 0..per_user {
        open.push(
            query
                .watch_inbox(watch_request("dana", ""))
                .await?
                .into_inner(),
        );
    }
    let refused = query
        .watch_inbox(watch_request("dana", ""))
        .await
        .expect_err("one watch past the user's cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("this user"), "{refused:?}");
    let _other = query.watch_inbox(watch_request("eli", "")).await?;

    drop(open.pop());
    eventually(
        Duration::from_secs(30),
        "a closed watch's place given back",
        || {
            let mut q = query.clone();
            async move {
                Ok(q.watch_inbox(watch_request("dana", ""))
                    .await
                    .ok()
                    .map(drop))
            }
        },
    )
    .await?;
    Ok(())
}
