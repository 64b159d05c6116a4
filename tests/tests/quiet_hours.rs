//! Quiet hours against a running platform: bad hours are refused naming the field; a
//! notification arriving in the recipient's quiet hours is held (a DEFERRED result says until
//! when) while a critical one goes through; the enrich stage is killed while it is held; it is
//! delivered once, after the hours end; with the hours cleared, nothing waits. And the releaser
//! alone, on an injected clock: nothing before its time, each held request once when due, and a
//! new releaser over the same store (a restart) finds what the first one left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_proto::v1::{
    Channel, DeliveryState, ExportRecipientRequest, GetNotificationRequest, ListInboxRequest,
    QuietHours, SetQuietHoursRequest,
};
use herald_tests::clients::{QueryClient, first_event};
use herald_tests::{Broker, Platform, eventually, inline_request};
use tonic::Code;
use tonic_types::StatusExt;

/// The hold lasts up to ~75 s (quiet hours end on a minute), plus a platform's start.
const TEST_LIMIT: Duration = Duration::from_secs(300);

fn quiet(start: &str, end: &str, zone: &str) -> SetQuietHoursRequest {
    SetQuietHoursRequest {
        tenant: "acme".into(),
        recipient_user_id: "noor".into(),
        quiet_hours: Some(QuietHours {
            start: start.into(),
            end: end.into(),
            time_zone: zone.into(),
        }),
    }
}

fn hhmm(minute: u64) -> String {
    let minute = minute % 1440;
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn now_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(now.as_millis()).unwrap()
}

/// The time of `state` on `channel` in `id`'s timeline, once there is one.
async fn at(query: &QueryClient, id: &str, channel: Option<Channel>, state: DeliveryState) -> i64 {
    let channel = channel.map_or(0, |c| c as i32);
    first_event(query, "acme", id, |e| {
        (e.channel == channel && e.state == state as i32).then_some(e.at_ms)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_a_notification_until_they_end_across_a_restart() {
    tokio::time::timeout(TEST_LIMIT, hold_and_release())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn hold_and_release() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?.start().await?;
    let mut manage = platform.management_client("acme", None).await?;

    for (request, field) in [
        (quiet("25:00", "07:00", "UTC"), "quiet_hours.start"),
        (quiet("22:00", "7:00", "UTC"), "quiet_hours.end"),
        (quiet("22:00", "22:00", "UTC"), "quiet_hours.end"),
        (
            quiet("22:00", "07:00", "Mars/Olympus"),
            "quiet_hours.time_zone",
        ),
    ] {
        let status = manage.set_quiet_hours(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            field
        );
    }

    // Quiet from the minute before now until a minute boundary at least 20 s ahead, in UTC.
    let now = now_ms();
    let minute = now / 60_000;
    let end_minute = if now % 60_000 < 40_000 {
        minute + 1
    } else {
        minute + 2
    };
    let release_ms = i64::try_from(end_minute * 60_000)?;
    manage
        .set_quiet_hours(quiet(&hhmm(minute - 1), &hhmm(end_minute), "UTC"))
        .await?;

    let mut ingress = platform.ingress_client("acme").await?;
    let query = platform.query_client("acme").await?;
    let send = |category: &str| {
        let mut request = inline_request("acme", "noor", category, category);
        request.channels = vec![Channel::InApp as i32];
        request
    };
    let news = ingress.send_notification(send("news")).await?.into_inner();
    let security = ingress
        .send_notification(send("security"))
        .await?
        .into_inner();

    let reason = first_event(&query, "acme", &news.notification_id, |e| {
        (e.state == DeliveryState::Deferred as i32).then(|| e.reason.clone())
    })
    .await?;
    assert!(reason.contains("quiet hours"), "{reason}");
    assert!(reason.contains("+00:00"), "says until when: {reason}");
    // The critical one is not held.
    let security_at = at(
        &query,
        &security.notification_id,
        Some(Channel::InApp),
        DeliveryState::Delivered,
    )
    .await;
    assert!(
        security_at < release_ms,
        "security delivered before the hours end"
    );

    // The stage that held it dies while it waits; the supervisor starts it again.
    assert!(
        platform.kill_component("stage enrich"),
        "enrich was running"
    );

    let delivered = at(
        &query,
        &news.notification_id,
        Some(Channel::InApp),
        DeliveryState::Delivered,
    )
    .await;
    assert!(
        delivered >= release_ms,
        "delivered at {delivered}, before the quiet hours ended at {release_ms}"
    );
    let inbox = eventually(Duration::from_secs(30), "both entries", || {
        let mut query = query.clone();
        async move {
            let page = query
                .list_inbox(ListInboxRequest {
                    tenant: "acme".into(),
                    recipient_user_id: "noor".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.entries.len() >= 2).then_some(page.entries))
        }
    })
    .await?;
    let mut ids: Vec<&str> = inbox.iter().map(|e| e.notification_id.as_str()).collect();
    ids.sort_unstable();
    let mut want = [
        news.notification_id.as_str(),
        security.notification_id.as_str(),
    ];
    want.sort_unstable();
    assert_eq!(ids, want, "each delivered once");

    // The export shows the hours; once cleared, nothing waits.
    let export = manage
        .export_recipient(ExportRecipientRequest {
            tenant: "acme".into(),
            recipient_user_id: "noor".into(),
        })
        .await?
        .into_inner();
    assert_eq!(export.quiet_hours.unwrap().end, hhmm(end_minute));
    manage
        .set_quiet_hours(SetQuietHoursRequest {
            quiet_hours: None,
            ..quiet("", "", "")
        })
        .await?;
    let later = ingress.send_notification(send("news")).await?.into_inner();
    at(
        &query,
        &later.notification_id,
        Some(Channel::InApp),
        DeliveryState::Delivered,
    )
    .await;
    let timeline = query
        .clone()
        .get_notification(GetNotificationRequest {
            tenant: "acme".into(),
            notification_id: later.notification_id,
        })
        .await?
        .into_inner()
        .timeline;
    assert!(
        timeline
            .iter()
            .all(|e| e.state != DeliveryState::Deferred as i32),
        "not held once the hours are cleared: {timeline:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_releaser_follows_an_injected_clock_across_a_restart() {
    tokio::time::timeout(TEST_LIMIT, release_by_the_clock())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn release_by_the_clock() -> anyhow::Result<()> {
    use std::sync::Arc;

    use herald_runtime::KafkaConfig;
    use herald_runtime::release::Releaser;
    use herald_runtime::topics::{Topics, ensure_topics};
    use herald_store::{HeldRecord, ManualClock, Store};

    let broker = Broker::transactional().await?;
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        topic_prefix: herald_tests::random_name("rel"),
        partitions: 1,
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka).await?;
    let topic = Topics::new(&kafka.topic_prefix).released();
    let dir = herald_tests::test_dir()?;
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let held = |id: &str, at: i64| HeldRecord {
        tenant: "acme".into(),
        notification_id: id.into(),
        recipient_user_id: "noor".into(),
        release_at_ms: at,
        payload: format!("request {id}").into_bytes(),
    };
    let clock = ManualClock::at(1_000);
    {
        let store: Arc<dyn Store> = herald_stores::open(&url).await?;
        for h in [held("early", 5_000), held("late", 9_000)] {
            store.hold(&h).await?;
        }
        let releaser = Releaser::new(
            &kafka,
            Arc::clone(&store),
            topic.clone(),
            Arc::new(clock.clone()),
        )?;
        assert_eq!(
            releaser.release_due().await?.released,
            0,
            "nothing is due at 1 s"
        );
        clock.set(5_000);
        assert_eq!(
            releaser.release_due().await?.released,
            1,
            "the early one at 5 s"
        );
        assert_eq!(releaser.release_due().await?.released, 0, "and only once");
    }
    // A new process over the same store: the late one is still held, and goes when due.
    let store: Arc<dyn Store> = herald_stores::open(&url).await?;
    let releaser = Releaser::new(
        &kafka,
        Arc::clone(&store),
        topic.clone(),
        Arc::new(clock.clone()),
    )?;
    clock.set(8_999);
    assert_eq!(releaser.release_due().await?.released, 0);
    clock.set(9_000);
    assert_eq!(releaser.release_due().await?.released, 1);
    assert!(
        store.held_due(i64::MAX, 10).await?.is_empty(),
        "nothing left held"
    );
    let records = herald_tests::topic::read_records(&broker.bootstrap, &topic)?;
    let payloads: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(
        payloads,
        ["request early", "request late"],
        "each released once, in order"
    );
    assert!(
        records.iter().all(|r| r.key == b"acme/noor"),
        "keyed as the stages key"
    );
    Ok(())
}
