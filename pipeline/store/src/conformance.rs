//! One test body for every [`Store`] backend: each scenario takes a fresh store whose clock is
//! a [`ManualClock`] at [`NOW`], and panics on the first broken expectation. Backends run every
//! scenario as a test of its own with [`conformance_tests!`](crate::conformance_tests) (or call
//! the scenarios their server supports).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::pin::Pin;

use herald_schemas::{Channel, DeliveryState, Priority};

use crate::retention::DAY_MS;
use crate::*;

/// The clock at the start of every test: 2026-03-10T12:00:00Z.
pub const NOW: i64 = 1_773_144_000_000;

/// One scenario, as a value: what [`conformance_tests!`](crate::conformance_tests) hands to the
/// body that builds a fresh store.
pub type Scenario =
    for<'a> fn(&'a dyn Store, &'a ManualClock) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Generates one test per conformance scenario, in a module `conformance_suite`. Give the test
/// attribute(s) (any `#[tokio::test(..)]`, `#[ignore = ".."]`, …), then a closure-like
/// `|scenario| <async expression>` whose expression builds a fresh store and [`ManualClock`]
/// (at [`NOW`]), runs `scenario(&store, &clock).await`, and cleans up:
///
/// ```ignore
/// herald_store::conformance_tests!(#[tokio::test] |scenario| async {
///     let dir = tempfile::tempdir().unwrap();
///     let clock = ManualClock::at(NOW);
///     let store = MyStore::open(dir.path(), Arc::new(clock.clone())).await.unwrap();
///     scenario(&store, &clock).await;
/// });
/// ```
///
/// The module imports everything from the invoking one (`use super::*`).
#[macro_export]
macro_rules! conformance_tests {
    ($(#[$attr:meta])* |$scenario:ident| $body:expr $(,)?) => {
        mod conformance_suite {
            #[allow(unused_imports)]
            use super::*;

            $crate::conformance_tests!(@each [$(#[$attr])*] $scenario $body;
                notifications_and_timeline
                failures_by_tenant_and_time
                inbox_pages_newest_first
                inbox_filters_and_read_state
                inbox_feed_follows_new_writes
                tenants_are_isolated
                tenants_are_isolated_for_point_reads
                contacts_preferences_templates
                template_versions_and_channels
                an_invalid_address_is_removed_unless_replaced
                api_keys_by_id_and_by_tenant
                erasing_a_recipient_leaves_nothing_of_theirs
                quiet_hours_and_held_notifications
                subscribers_page_by_user_id
                idempotency_keys
                idempotency_key_claims_race
                outbox_per_owner
                outbox_leases_go_to_one_holder_until_they_expire
                ledger_keeps_the_first_outcome
                retention_keeps_a_year_and_refuses_older
                a_batch_of_writes_does_what_each_write_does
            );
        }
    };
    (@each $attrs:tt $scenario:ident $body:expr; $($name:ident)*) => {
        $(
            $crate::conformance_tests!(@one $attrs $scenario $body; $name);
        )*
    };
    (@one [$(#[$attr:meta])*] $scenario:ident $body:expr; $name:ident) => {
        $(#[$attr])*
        async fn $name() {
            let $scenario: $crate::conformance::Scenario =
                |store, clock| ::std::boxed::Box::pin($crate::conformance::$name(store, clock));
            $body.await;
        }
    };
}

fn notification(tenant: &str, id: &str, at: i64) -> NotificationRecord {
    NotificationRecord {
        tenant: tenant.into(),
        notification_id: id.into(),
        recipient_user_id: "alice".into(),
        category: "news".into(),
        priority: Priority::High,
        created_at_ms: at,
    }
}

fn event(
    tenant: &str,
    id: &str,
    channel: Option<Channel>,
    state: DeliveryState,
    at: i64,
) -> DeliveryEventRecord {
    DeliveryEventRecord {
        tenant: tenant.into(),
        notification_id: id.into(),
        result_id: format!("{id}/{channel:?}/{state:?}"),
        recipient_user_id: "alice".into(),
        category: "news".into(),
        channel,
        state,
        reason: is_failure(state).then(|| format!("{state:?} reason")),
        at_ms: at,
    }
}

fn entry(tenant: &str, user: &str, id: &str, at: i64) -> InboxEntryRecord {
    InboxEntryRecord {
        tenant: tenant.into(),
        recipient_user_id: user.into(),
        notification_id: id.into(),
        category: "news".into(),
        title: format!("title {id}"),
        body: "body".into(),
        action_url: None,
        created_at_ms: at,
        delivered_at_ms: at + 50,
        read_at_ms: None,
    }
}

/// Reads every page of `q` (page size 10 unless set), checking page sizes on the way.
async fn all_pages(store: &dyn Store, mut q: InboxQuery) -> Vec<InboxEntryRecord> {
    let mut seen = Vec::new();
    loop {
        let page = store.list_inbox(&q).await.unwrap();
        assert!(page.entries.len() <= q.page_size);
        seen.extend(page.entries);
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => return seen,
        }
    }
}

fn newest_first(entries: &mut [InboxEntryRecord]) {
    entries.sort_by(|a, b| {
        (b.created_at_ms, &b.notification_id).cmp(&(a.created_at_ms, &a.notification_id))
    });
}

pub async fn notifications_and_timeline(store: &dyn Store, _clock: &ManualClock) {
    assert!(store.get_notification("t1", "n1").await.unwrap().is_none());
    // Created in the last second of February; its outcome lands in March.
    let created = Month::of_ms(NOW).start_ms() - 1_000;
    let n = notification("t1", "n1", created);
    store.upsert_notification(&n).await.unwrap();
    store.upsert_notification(&n).await.unwrap();
    let accepted = event("t1", "n1", None, DeliveryState::Accepted, created);
    let failed = event(
        "t1",
        "n1",
        Some(Channel::Sms),
        DeliveryState::Failed,
        created + 900,
    );
    let delivered = event(
        "t1",
        "n1",
        Some(Channel::Email),
        DeliveryState::Delivered,
        created + 1_500,
    );
    // Out of order and twice: replays must not duplicate the timeline.
    for e in [
        &delivered, &accepted, &failed, &delivered, &accepted, &failed,
    ] {
        store.record_delivery_event(e).await.unwrap();
    }
    let (got, timeline) = store.get_notification("t1", "n1").await.unwrap().unwrap();
    assert_eq!(got, n);
    assert_eq!(timeline, vec![accepted, failed, delivered]);
    assert_eq!(overall_state(&timeline), DeliveryState::Delivered);
}

pub async fn failures_by_tenant_and_time(store: &dyn Store, _clock: &ManualClock) {
    let mut expected = Vec::new();
    // Failures over 40 days (two calendar months), some delivered events and another tenant's
    // failures in between, each recorded twice.
    for i in 0..12_i64 {
        let at = NOW - 40 * DAY_MS + i * 3 * DAY_MS;
        let id = format!("f{i:02}");
        let state = [
            DeliveryState::Failed,
            DeliveryState::Delivered,
            DeliveryState::Suppressed,
        ][(i % 3) as usize];
        let e = event("t5", &id, Some(Channel::Email), state, at);
        let other = event("t6", &id, Some(Channel::Email), DeliveryState::Failed, at);
        for e in [&e, &other, &e] {
            store.record_delivery_event(e).await.unwrap();
        }
        if is_failure(state) {
            expected.push(FailureRecord {
                tenant: e.tenant.clone(),
                notification_id: e.notification_id.clone(),
                result_id: e.result_id.clone(),
                recipient_user_id: e.recipient_user_id.clone(),
                category: e.category.clone(),
                channel: e.channel,
                state: e.state,
                reason: e.reason.clone(),
                at_ms: e.at_ms,
            });
        }
    }
    expected.reverse();
    let query = |from_ms, to_ms, token| FailureQuery {
        tenant: "t5".into(),
        from_ms,
        to_ms,
        page_size: 3,
        page_token: token,
    };
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_failures(&query(NOW - 60 * DAY_MS, NOW, token.take()))
            .await
            .unwrap();
        assert!(page.failures.len() <= 3);
        seen.extend(page.failures);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    // A narrower range: [from, to).
    let (from, to) = (expected[5].at_ms, expected[1].at_ms);
    let mut narrow = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_failures(&query(from, to, token.take()))
            .await
            .unwrap();
        narrow.extend(page.failures);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(narrow, expected[2..=5].to_vec());
    let bad = store
        .list_failures(&query(NOW - DAY_MS, NOW, Some("nope".into())))
        .await;
    assert!(matches!(bad, Err(StoreError::BadPageToken)), "{bad:?}");
    // A range ending in the far future is read from now, at once.
    let far = store
        .list_failures(&query(NOW - 60 * DAY_MS, i64::MAX, None))
        .await
        .unwrap();
    assert_eq!(far.failures, expected[..3].to_vec());
    // Another tenant's token is refused.
    let token = far.next_page_token.expect("more than one page");
    let swapped = store
        .list_failures(&FailureQuery {
            tenant: "t6".into(),
            ..query(NOW - 60 * DAY_MS, NOW, Some(token))
        })
        .await;
    assert!(
        matches!(swapped, Err(StoreError::BadPageToken)),
        "{swapped:?}"
    );
    let too_old = store
        .list_failures(&query(NOW - 400 * DAY_MS, NOW, None))
        .await;
    assert!(
        matches!(too_old, Err(StoreError::BeyondRetention { days: 365, .. })),
        "{too_old:?}"
    );
}

pub async fn inbox_pages_newest_first(store: &dyn Store, _clock: &ManualClock) {
    // 25 entries over two months, two sharing a timestamp, inserted out of order, some twice.
    let mut expected = Vec::new();
    for i in (0..25_i64).rev() {
        let at = if i == 10 {
            NOW - 9 * DAY_MS
        } else {
            NOW - 40 * DAY_MS + i * 2 * DAY_MS
        };
        let e = entry("t1", "bob", &format!("n{i:02}"), at);
        store.upsert_inbox_entry(&e).await.unwrap();
        if i % 7 == 0 {
            store.upsert_inbox_entry(&e).await.unwrap();
        }
        expected.push(e);
    }
    newest_first(&mut expected);
    let seen = all_pages(store, InboxQuery::first_page("t1", "bob", 10)).await;
    assert_eq!(seen, expected);
    // Starting below a time.
    let before = InboxQuery {
        before_ms: Some(expected[20].created_at_ms),
        ..InboxQuery::first_page("t1", "bob", 10)
    };
    assert_eq!(all_pages(store, before).await, expected[21..].to_vec());
    let bad = store
        .list_inbox(&InboxQuery {
            page_token: Some("not-a-token".into()),
            ..InboxQuery::first_page("t1", "bob", 10)
        })
        .await;
    assert!(matches!(bad, Err(StoreError::BadPageToken)), "{bad:?}");
    // A token belongs to its listing: another user's, another tenant's or another filter's
    // listing refuses it.
    let first = store
        .list_inbox(&InboxQuery::first_page("t1", "bob", 10))
        .await
        .unwrap();
    let token = first.next_page_token.expect("more than one page");
    for other in [
        InboxQuery::first_page("t1", "carol", 10),
        InboxQuery::first_page("t2", "bob", 10),
        InboxQuery {
            unread_only: true,
            ..InboxQuery::first_page("t1", "bob", 10)
        },
    ] {
        let swapped = store
            .list_inbox(&InboxQuery {
                page_token: Some(token.clone()),
                ..other
            })
            .await;
        assert!(
            matches!(swapped, Err(StoreError::BadPageToken)),
            "{swapped:?}"
        );
    }
    // A bound in the far future reads from now, at once.
    let far = InboxQuery {
        before_ms: Some(i64::MAX),
        ..InboxQuery::first_page("t1", "bob", 10)
    };
    assert_eq!(all_pages(store, far).await, expected);
}

pub async fn inbox_filters_and_read_state(store: &dyn Store, _clock: &ManualClock) {
    let mut all = Vec::new();
    for i in 0..10_i64 {
        let mut e = entry(
            "t1",
            "erin",
            &format!("r{i}"),
            NOW - 35 * DAY_MS + i * 3 * DAY_MS,
        );
        if i % 2 == 1 {
            e.category = "billing".into();
        }
        store.upsert_inbox_entry(&e).await.unwrap();
        all.push(e);
    }
    // Someone else's entry with the same id is not touched.
    store
        .upsert_inbox_entry(&entry("t1", "frank", "r3", NOW))
        .await
        .unwrap();
    assert_eq!(store.unread_count("t1", "erin", 100).await.unwrap(), 10);
    assert_eq!(
        store.unread_count("t1", "erin", 4).await.unwrap(),
        4,
        "capped"
    );

    let ids = |v: &[InboxEntryRecord]| {
        v.iter()
            .map(|e| e.notification_id.clone())
            .collect::<Vec<_>>()
    };
    let read_at = NOW + 1;
    let newly = store
        .mark_read(
            "t1",
            "erin",
            &["r3".into(), "r0".into(), "missing".into()],
            read_at,
        )
        .await
        .unwrap();
    let mut got = ids(&newly);
    got.sort();
    assert_eq!(got, ["r0", "r3"]);
    assert!(newly.iter().all(|e| e.read_at_ms == Some(read_at)));
    let again = store
        .mark_read("t1", "erin", &["r3".into()], NOW + 2)
        .await
        .unwrap();
    assert!(again.is_empty(), "already read: {again:?}");
    assert_eq!(store.unread_count("t1", "erin", 100).await.unwrap(), 8);
    assert_eq!(store.unread_count("t1", "frank", 100).await.unwrap(), 1);

    for e in &mut all {
        if ["r0", "r3"].contains(&e.notification_id.as_str()) {
            e.read_at_ms = Some(read_at);
        }
    }
    newest_first(&mut all);
    let unread = all_pages(
        store,
        InboxQuery {
            unread_only: true,
            page_size: 3,
            ..InboxQuery::first_page("t1", "erin", 3)
        },
    )
    .await;
    let want: Vec<_> = all
        .iter()
        .filter(|e| e.read_at_ms.is_none())
        .cloned()
        .collect();
    assert_eq!(unread, want);
    let billing = all_pages(
        store,
        InboxQuery {
            category: Some("billing".into()),
            unread_only: true,
            ..InboxQuery::first_page("t1", "erin", 2)
        },
    )
    .await;
    let want: Vec<_> = all
        .iter()
        .filter(|e| e.read_at_ms.is_none() && e.category == "billing")
        .cloned()
        .collect();
    assert_eq!(billing, want);

    // Everything up to r5's creation: r1, r2, r4, r5 (r0 and r3 were already read).
    let up_to = NOW - 35 * DAY_MS + 5 * 3 * DAY_MS;
    let mut newly = ids(&store
        .mark_all_read("t1", "erin", up_to, NOW + 3, 100)
        .await
        .unwrap());
    newly.sort();
    assert_eq!(newly, ["r1", "r2", "r4", "r5"]);
    assert_eq!(store.unread_count("t1", "erin", 100).await.unwrap(), 4);
    // In bounded batches: 3, then the last 1, then none.
    let mut newly = ids(&store
        .mark_all_read("t1", "erin", NOW, NOW + 4, 3)
        .await
        .unwrap());
    assert_eq!(newly.len(), 3, "at most the limit: {newly:?}");
    let rest = ids(&store
        .mark_all_read("t1", "erin", NOW, NOW + 4, 3)
        .await
        .unwrap());
    assert_eq!(rest.len(), 1, "{rest:?}");
    newly.extend(rest);
    newly.sort();
    assert_eq!(newly, ["r6", "r7", "r8", "r9"]);
    assert_eq!(store.unread_count("t1", "erin", 100).await.unwrap(), 0);
    assert!(
        store
            .mark_all_read("t1", "erin", NOW, NOW + 5, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The first read time sticks.
    let page = store
        .list_inbox(&InboxQuery::first_page("t1", "erin", 100))
        .await
        .unwrap();
    let r3 = page
        .entries
        .iter()
        .find(|e| e.notification_id == "r3")
        .unwrap();
    assert_eq!(r3.read_at_ms, Some(read_at));
    assert_eq!(store.unread_count("t1", "frank", 100).await.unwrap(), 1);
}

/// The ids of a feed page, in its order.
pub fn feed_ids(page: &FeedPage) -> Vec<String> {
    page.items
        .iter()
        .map(|i| i.entry.notification_id.clone())
        .collect()
}

pub async fn inbox_feed_follows_new_writes(store: &dyn Store, _clock: &ManualClock) {
    // Written before the watch starts: not in its feed.
    let mut before = entry("t1", "gina", "old", NOW - 60_000);
    before.delivered_at_ms = NOW - 59_000;
    store.upsert_inbox_entry(&before).await.unwrap();
    let start = store.feed_start("t1", "gina").await.unwrap();
    let at = |id: &str, created: i64, delivered: i64| {
        let mut e = entry("t1", "gina", id, created);
        e.delivered_at_ms = delivered;
        e
    };
    for e in [at("w0", NOW, NOW + 1_000), at("w1", NOW, NOW + 2_000)] {
        store.upsert_inbox_entry(&e).await.unwrap();
    }
    let page = store.inbox_feed("t1", "gina", &start, 100).await.unwrap();
    assert_eq!(feed_ids(&page), ["w0", "w1"]);
    assert!(!page.more);
    // Written after a newer entry was read, and delivered before it (within a second: inside
    // every backend's overlap): still in the feed past the cursor read then.
    store
        .upsert_inbox_entry(&at("w2", NOW, NOW + 1_500))
        .await
        .unwrap();
    // A repeat write of an entry read already (a redelivery) may be read again in a backend
    // with an overlap; callers skip ids they pushed. What is new is only w2.
    store
        .upsert_inbox_entry(&at("w0", NOW, NOW + 1_000))
        .await
        .unwrap();
    let next = store
        .inbox_feed("t1", "gina", &page.next, 100)
        .await
        .unwrap();
    let new: Vec<String> = feed_ids(&next)
        .into_iter()
        .filter(|id| !["w0", "w1"].contains(&id.as_str()))
        .collect();
    assert_eq!(new, ["w2"]);
    // Past one item, the rest follows; a page cut at its limit says so.
    let rest = store
        .inbox_feed("t1", "gina", &page.items[0].after, 100)
        .await
        .unwrap();
    assert!(feed_ids(&rest).contains(&"w1".to_owned()));
    assert!(feed_ids(&rest).contains(&"w2".to_owned()));
    let first = store.inbox_feed("t1", "gina", &start, 1).await.unwrap();
    assert_eq!(
        (feed_ids(&first), first.more),
        (vec!["w0".to_owned()], true)
    );
    // Another user's and another tenant's feeds are empty.
    for (tenant, user) in [("t2", "gina"), ("t1", "hugo")] {
        let other = store.feed_start(tenant, user).await.unwrap();
        for cursor in [&start, &other] {
            let page = store.inbox_feed(tenant, user, cursor, 100).await.unwrap();
            assert!(
                page.items.is_empty(),
                "{tenant}/{user}: {:?}",
                feed_ids(&page)
            );
        }
    }
    let forged = FeedCursor("not a cursor".into());
    assert!(matches!(
        store.inbox_feed("t1", "gina", &forged, 100).await,
        Err(StoreError::BadPageToken)
    ));
}

pub async fn a_batch_of_writes_does_what_each_write_does(store: &dyn Store, _clock: &ManualClock) {
    store.write_many(&[]).await.unwrap();
    let start = store.feed_start("t1", "ivan").await.unwrap();
    // Across two month files, with a repeat and a row older than the archive keeps.
    let created = Month::of_ms(NOW).start_ms() - 1_000;
    let n = notification("t1", "b1", created);
    let accepted = event("t1", "b1", None, DeliveryState::Accepted, created);
    let failed = event(
        "t1",
        "b1",
        Some(Channel::Sms),
        DeliveryState::Failed,
        NOW - 5_000,
    );
    let (first, second) = (
        entry("t1", "ivan", "e1", NOW - 2_000),
        entry("t1", "ivan", "e2", NOW),
    );
    let mut repeat = first.clone();
    repeat.title = "a repeat keeps the first entry".into();
    let too_old = event(
        "t1",
        "b0",
        None,
        DeliveryState::Accepted,
        NOW - 400 * DAY_MS,
    );
    let batch = [
        Write::Notification(n.clone()),
        Write::DeliveryEvent(accepted.clone()),
        Write::InboxEntry(first.clone()),
        Write::DeliveryEvent(failed.clone()),
        Write::InboxEntry(second.clone()),
        Write::InboxEntry(repeat),
        Write::DeliveryEvent(too_old),
    ];
    // Twice: a replayed batch changes nothing.
    for _ in 0..2 {
        store.write_many(&batch).await.unwrap();
        let (got, timeline) = store.get_notification("t1", "b1").await.unwrap().unwrap();
        assert_eq!(got, n);
        assert_eq!(timeline, vec![accepted.clone(), failed.clone()]);
        let failures = store
            .list_failures(&FailureQuery {
                tenant: "t1".into(),
                from_ms: NOW - DAY_MS,
                to_ms: NOW + DAY_MS,
                page_size: 10,
                page_token: None,
            })
            .await
            .unwrap();
        let ids: Vec<&str> = failures
            .failures
            .iter()
            .map(|f| f.notification_id.as_str())
            .collect();
        assert_eq!(ids, ["b1"]);
        let inbox = all_pages(store, InboxQuery::first_page("t1", "ivan", 10)).await;
        assert_eq!(inbox, vec![second.clone(), first.clone()]);
    }
    // The feed has each entry once, in the batch's order.
    let page = store.inbox_feed("t1", "ivan", &start, 100).await.unwrap();
    let mut fed = feed_ids(&page);
    fed.dedup();
    assert_eq!(fed, ["e1", "e2"]);
}

pub async fn tenants_are_isolated(store: &dyn Store, _clock: &ManualClock) {
    let feed_start = store.feed_start("t3", "carol").await.unwrap();
    store
        .upsert_notification(&notification("t2", "secret", NOW))
        .await
        .unwrap();
    store
        .upsert_inbox_entry(&entry("t2", "carol", "secret", NOW))
        .await
        .unwrap();
    store
        .record_delivery_event(&event(
            "t2",
            "secret",
            Some(Channel::Sms),
            DeliveryState::Failed,
            NOW,
        ))
        .await
        .unwrap();
    assert!(
        store
            .get_notification("t3", "secret")
            .await
            .unwrap()
            .is_none()
    );
    let page = store
        .list_inbox(&InboxQuery::first_page("t3", "carol", 10))
        .await
        .unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(store.unread_count("t3", "carol", 10).await.unwrap(), 0);
    assert!(
        store
            .mark_read("t3", "carol", &["secret".into()], NOW)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .mark_all_read("t3", "carol", NOW, NOW, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .inbox_feed("t3", "carol", &feed_start, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let failures = store
        .list_failures(&FailureQuery {
            tenant: "t3".into(),
            from_ms: NOW - DAY_MS,
            to_ms: NOW + DAY_MS,
            page_size: 10,
            page_token: None,
        })
        .await
        .unwrap();
    assert!(failures.failures.is_empty());
    assert_eq!(
        store.unread_count("t2", "carol", 10).await.unwrap(),
        1,
        "the owner still sees it"
    );
}

pub async fn contacts_preferences_templates(store: &dyn Store, _clock: &ManualClock) {
    assert_eq!(
        store.recipient_profile("t1", "dave").await.unwrap(),
        RecipientProfile::default()
    );
    let email = Contact {
        channel: Channel::Email,
        address: "old@example.com".into(),
    };
    store.put_contact("t1", "dave", &email).await.unwrap();
    let email = Contact {
        channel: Channel::Email,
        address: "dave@example.com".into(),
    };
    store.put_contact("t1", "dave", &email).await.unwrap();
    let profile = store.recipient_profile("t1", "dave").await.unwrap();
    assert_eq!(profile.contacts, vec![email]);
    for (category, out) in [("promo", true), ("*", true), ("*", false), ("promo", true)] {
        store
            .set_opt_out("t1", "dave", Channel::Sms, category, out)
            .await
            .unwrap();
    }
    let profile = store.recipient_profile("t1", "dave").await.unwrap();
    assert_eq!(profile.opt_outs, vec![(Channel::Sms, "promo".to_owned())]);
    assert!(
        store
            .recipient_profile("t2", "dave")
            .await
            .unwrap()
            .opt_outs
            .is_empty()
    );

    let template = |locale: &str, title: &str| TemplateRecord {
        tenant: "t1".into(),
        template_id: "welcome".into(),
        locale: locale.into(),
        channel: None,
        version: 1,
        title: title.into(),
        body: "Hello {{name}}".into(),
        action_url: None,
    };
    store
        .put_template(&template("en", "Welcome"))
        .await
        .unwrap();
    store
        .put_template(&template("pt-BR", "Bem-vindo"))
        .await
        .unwrap();
    let title = |t: Option<TemplateRecord>| t.map(|t| t.title);
    assert_eq!(
        title(
            store
                .template("t1", "welcome", Some("pt-BR"))
                .await
                .unwrap()
        )
        .as_deref(),
        Some("Bem-vindo")
    );
    assert_eq!(
        title(
            store
                .template("t1", "welcome", Some("en-GB"))
                .await
                .unwrap()
        )
        .as_deref(),
        Some("Welcome")
    );
    assert!(
        store
            .template("t1", "welcome", Some("de"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .template("t1", "missing", None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .template("t2", "welcome", None)
            .await
            .unwrap()
            .is_none()
    );
    // Every template of a tenant, by id then locale; another tenant's are not listed.
    let listed = store.templates_of("t1").await.unwrap();
    let keys: Vec<(&str, &str)> = listed
        .iter()
        .map(|t| (t.template_id.as_str(), t.locale.as_str()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    assert!(!listed.is_empty() && listed.iter().all(|t| t.tenant == "t1"));
    assert!(store.templates_of("nobody").await.unwrap().is_empty());
}

/// A contact a provider refused is removed, once, and only while it is still the address;
/// another channel's, another user's and another tenant's stay.
pub async fn an_invalid_address_is_removed_unless_replaced(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    let contact = |channel, address: &str| Contact {
        channel,
        address: address.into(),
    };
    let token = contact(Channel::PushApns, "aa11");
    let email = contact(Channel::Email, "erin@example.com");
    for (tenant, user) in [("t1", "erin"), ("t1", "frank"), ("t2", "erin")] {
        store.put_contact(tenant, user, &token).await.unwrap();
        store.put_contact(tenant, user, &email).await.unwrap();
    }
    assert!(store.disable_contact("t1", "erin", &token).await.unwrap());
    assert!(!store.disable_contact("t1", "erin", &token).await.unwrap());
    let contacts = |tenant: &'static str, user: &'static str| async move {
        store
            .recipient_profile(tenant, user)
            .await
            .unwrap()
            .contacts
    };
    assert_eq!(contacts("t1", "erin").await, vec![email.clone()]);
    assert_eq!(contacts("t1", "frank").await.len(), 2);
    assert_eq!(contacts("t2", "erin").await.len(), 2);
    // The app registered a new token before the refusal of the old one came back.
    let new_token = contact(Channel::PushApns, "bb22");
    store.put_contact("t1", "frank", &new_token).await.unwrap();
    assert!(!store.disable_contact("t1", "frank", &token).await.unwrap());
    assert!(contacts("t1", "frank").await.contains(&new_token));
    // A disabled address registered again is used again.
    store.put_contact("t1", "erin", &token).await.unwrap();
    assert!(contacts("t1", "erin").await.contains(&token));
}

/// Erasure removes a recipient's contacts, opt-outs and inbox entries of every month, and only
/// theirs; erasing again removes nothing more.
pub async fn erasing_a_recipient_leaves_nothing_of_theirs(store: &dyn Store, _clock: &ManualClock) {
    let email = Contact {
        channel: Channel::Email,
        address: "gone@example.com".into(),
    };
    let sms = Contact {
        channel: Channel::Sms,
        address: "+14155550100".into(),
    };
    for (tenant, user) in [("t1", "gone"), ("t1", "stays"), ("t2", "gone")] {
        store.put_contact(tenant, user, &email).await.unwrap();
        store
            .set_opt_out(tenant, user, Channel::Sms, "news", true)
            .await
            .unwrap();
        for (i, days) in [1_i64, 40, 100].iter().enumerate() {
            let e = entry(
                tenant,
                user,
                &format!("{tenant}-{user}-{i}"),
                NOW - days * DAY_MS,
            );
            store.upsert_inbox_entry(&e).await.unwrap();
        }
    }
    store.put_contact("t1", "gone", &sms).await.unwrap();
    store
        .set_opt_out("t1", "gone", Channel::Email, "*", true)
        .await
        .unwrap();
    store
        .mark_read("t1", "gone", &["t1-gone-0".into()], NOW)
        .await
        .unwrap();

    store
        .subscribe("t1", "gone", "releases", true)
        .await
        .unwrap();
    store
        .subscribe("t1", "stays", "releases", true)
        .await
        .unwrap();
    let night = QuietHours::parse("22:00", "07:00", "Asia/Seoul").unwrap();
    store
        .set_quiet_hours("t1", "gone", Some(&night))
        .await
        .unwrap();
    let erased = store.erase_recipient("t1", "gone").await.unwrap();
    assert_eq!(
        erased,
        Erasure {
            contacts: 2,
            opt_outs: 2,
            inbox_entries: 3,
            subscriptions: 1,
        }
    );
    assert_eq!(
        store.recipient_profile("t1", "gone").await.unwrap(),
        RecipientProfile::default()
    );
    assert!(
        all_pages(store, InboxQuery::first_page("t1", "gone", 10))
            .await
            .is_empty()
    );
    assert_eq!(store.unread_count("t1", "gone", 100).await.unwrap(), 0);
    assert!(
        store
            .subscriptions_of("t1", "gone")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.subscriptions_of("t1", "stays").await.unwrap(),
        ["releases"]
    );
    // Everyone else is untouched.
    for (tenant, user) in [("t1", "stays"), ("t2", "gone")] {
        let profile = store.recipient_profile(tenant, user).await.unwrap();
        assert_eq!(profile.contacts, vec![email.clone()], "{tenant}/{user}");
        assert_eq!(profile.opt_outs.len(), 1);
        let q = InboxQuery::first_page(tenant, user, 10);
        assert_eq!(all_pages(store, q).await.len(), 3, "{tenant}/{user}");
    }
    assert_eq!(
        store.erase_recipient("t1", "gone").await.unwrap(),
        Erasure::default()
    );
}

/// Every variant of a template is kept (locale × channel × version) and read back in order; a
/// variant written again is replaced, not added; the lookup by locale takes the latest version
/// of the every-channel variant.
pub async fn template_versions_and_channels(store: &dyn Store, _clock: &ManualClock) {
    let variant =
        |locale: &str, channel: Option<Channel>, version: u32, title: &str| TemplateRecord {
            tenant: "tv".into(),
            template_id: "code".into(),
            locale: locale.into(),
            channel,
            version,
            title: title.into(),
            body: "{{ code }}".into(),
            action_url: None,
        };
    let rows = [
        variant("en", None, 1, "v1"),
        variant("en", Some(Channel::Sms), 2, "sms v2"),
        variant("en", None, 3, "v3"),
        variant("de", None, 3, "de v3"),
    ];
    store.put_templates(&rows).await.unwrap();
    store
        .put_template(&variant("en", None, 3, "v3 fixed"))
        .await
        .unwrap();
    let got = store.template_variants("tv", "code").await.unwrap();
    let keys: Vec<(&str, Option<Channel>, u32, &str)> = got
        .iter()
        .map(|t| (t.locale.as_str(), t.channel, t.version, t.title.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("de", None, 3, "de v3"),
            ("en", None, 1, "v1"),
            ("en", None, 3, "v3 fixed"),
            ("en", Some(Channel::Sms), 2, "sms v2"),
        ]
    );
    let latest = store.template("tv", "code", Some("en")).await.unwrap();
    assert_eq!(latest.map(|t| t.title).as_deref(), Some("v3 fixed"));
    assert_eq!(store.templates_of("tv").await.unwrap(), got);
    assert!(
        store
            .template_variants("t2", "code")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Quiet hours are set, replaced and cleared per recipient; held notifications come back once
/// due, earliest first, until forgotten; holding one again changes nothing.
pub async fn quiet_hours_and_held_notifications(store: &dyn Store, _clock: &ManualClock) {
    let night = QuietHours::parse("22:00", "07:00", "Asia/Seoul").unwrap();
    let lunch = QuietHours::parse("12:00", "13:30", "Europe/Berlin").unwrap();
    store
        .set_quiet_hours("t1", "qa", Some(&night))
        .await
        .unwrap();
    store
        .set_quiet_hours("t1", "qa", Some(&lunch))
        .await
        .unwrap();
    store
        .set_quiet_hours("t2", "qa", Some(&night))
        .await
        .unwrap();
    let profile = store.recipient_profile("t1", "qa").await.unwrap();
    assert_eq!(profile.quiet_hours, Some(lunch));
    store.set_quiet_hours("t1", "qa", None).await.unwrap();
    assert_eq!(
        store
            .recipient_profile("t1", "qa")
            .await
            .unwrap()
            .quiet_hours,
        None
    );
    assert_eq!(
        store
            .recipient_profile("t2", "qa")
            .await
            .unwrap()
            .quiet_hours,
        Some(night)
    );

    let held = |tenant: &str, id: &str, release_at_ms: i64| HeldRecord {
        tenant: tenant.into(),
        notification_id: id.into(),
        recipient_user_id: "qa".into(),
        release_at_ms,
        payload: format!("request {id}").into_bytes(),
    };
    let hour = 3_600_000;
    // Across hours and days, and one far behind the clock (a releaser that was down).
    let rows = [
        held("t1", "late", NOW + 5 * hour),
        held("t2", "b", NOW - 2),
        held("t1", "a", NOW - 2),
        held("t1", "old", NOW - 40 * hour),
        held("t1", "now", NOW),
        held("t1", "c", NOW - hour),
    ];
    for h in rows.iter().chain(&rows[..2]) {
        store.hold(h).await.unwrap();
    }
    let due = store.held_due(NOW, 10).await.unwrap();
    let ids: Vec<_> = due.iter().map(|h| h.notification_id.as_str()).collect();
    assert_eq!(
        ids,
        ["old", "c", "a", "b", "now"],
        "earliest first, each once"
    );
    assert_eq!(due[0], rows[3], "read back whole");
    let first = store.held_due(NOW, 2).await.unwrap();
    assert_eq!(first, due[..2]);
    store.forget_held(&first).await.unwrap();
    store.forget_held(&first).await.unwrap();
    let ids: Vec<_> = store.held_due(NOW, 10).await.unwrap();
    assert_eq!(ids, due[2..]);
    store.forget_held(&due[2..]).await.unwrap();
    assert!(store.held_due(NOW, 10).await.unwrap().is_empty());
    let later = store.held_due(NOW + 5 * hour, 10).await.unwrap();
    assert_eq!(later, vec![rows[0].clone()]);
}

/// A topic's subscribers come back in user id order, a page at a time from where the last
/// ended; subscribing twice is once; tenants and topics are apart.
pub async fn subscribers_page_by_user_id(store: &dyn Store, _clock: &ManualClock) {
    for (tenant, user, topic) in [
        ("t1", "u03", "releases"),
        ("t1", "u01", "releases"),
        ("t1", "u02", "releases"),
        ("t1", "u01", "alerts"),
        ("t1", "u01", "releases"),
        ("t2", "u00", "releases"),
    ] {
        store.subscribe(tenant, user, topic, true).await.unwrap();
    }
    let page = |after: Option<&'static str>, limit| async move {
        store
            .subscribers("t1", "releases", after, limit)
            .await
            .unwrap()
    };
    assert_eq!(page(None, 2).await, ["u01", "u02"]);
    assert_eq!(page(Some("u02"), 2).await, ["u03"]);
    assert!(page(Some("u03"), 2).await.is_empty());
    assert!(page(None, 0).await.is_empty());
    assert_eq!(page(None, 10).await, ["u01", "u02", "u03"]);
    store
        .subscribe("t1", "u02", "releases", false)
        .await
        .unwrap();
    store
        .subscribe("t1", "u02", "releases", false)
        .await
        .unwrap();
    assert_eq!(page(None, 10).await, ["u01", "u03"]);
    assert_eq!(
        store.subscriptions_of("t1", "u01").await.unwrap(),
        ["alerts", "releases"]
    );
    assert_eq!(
        store.subscribers("t2", "releases", None, 10).await.unwrap(),
        ["u00"]
    );
    assert!(
        store
            .subscribers("t1", "none", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// API keys are read back by id, listed per tenant oldest first, and replaced whole (a
/// revocation or an expiry is a replacement).
pub async fn api_keys_by_id_and_by_tenant(store: &dyn Store, _clock: &ManualClock) {
    let key = |id: &str, tenant: &str, at: i64| ApiKeyRecord {
        key_id: id.into(),
        tenant: tenant.into(),
        name: format!("{id} backend"),
        scopes: vec!["send".into(), "read".into()],
        secret_hash: format!("{id:0>64}"),
        created_at_ms: at,
        expires_at_ms: None,
        revoked_at_ms: None,
    };
    assert_eq!(store.api_key("k1").await.unwrap(), None);
    assert!(store.api_keys("t1").await.unwrap().is_empty());
    let (k2, k1, other) = (
        key("k2", "t1", NOW),
        key("k1", "t1", NOW + 1),
        key("k3", "t2", NOW),
    );
    for k in [&k1, &k2, &other] {
        store.put_api_key(k).await.unwrap();
    }
    assert_eq!(store.api_key("k1").await.unwrap(), Some(k1.clone()));
    assert_eq!(
        store.api_keys("t1").await.unwrap(),
        vec![k2.clone(), k1.clone()]
    );
    assert_eq!(store.api_keys("t2").await.unwrap(), vec![other]);
    let revoked = ApiKeyRecord {
        revoked_at_ms: Some(NOW + 5),
        expires_at_ms: Some(NOW + 10),
        scopes: Vec::new(),
        ..k1
    };
    store.put_api_key(&revoked).await.unwrap();
    assert_eq!(store.api_key("k1").await.unwrap(), Some(revoked.clone()));
    assert_eq!(store.api_keys("t1").await.unwrap(), vec![k2, revoked]);
}

/// Isolation through the operations that read one partition by its full key (what every CQL
/// server can serve): notifications, recipients, templates, and read state.
pub async fn tenants_are_isolated_for_point_reads(store: &dyn Store, _clock: &ManualClock) {
    let n = notification("t7", "secret", NOW);
    store.upsert_notification(&n).await.unwrap();
    let mut e = entry("t7", "carol", "secret", NOW);
    store.upsert_inbox_entry(&e).await.unwrap();
    let contact = Contact {
        channel: Channel::Email,
        address: "carol@example.com".into(),
    };
    store.put_contact("t7", "carol", &contact).await.unwrap();
    let template = TemplateRecord {
        tenant: "t7".into(),
        template_id: "welcome".into(),
        locale: "en".into(),
        channel: None,
        version: 1,
        title: "Hi".into(),
        body: "Hello".into(),
        action_url: None,
    };
    store.put_template(&template).await.unwrap();

    assert!(
        store
            .get_notification("t8", "secret")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .get_notification("t7", "secret")
            .await
            .unwrap()
            .unwrap()
            .0,
        n
    );
    assert!(
        store
            .recipient_profile("t8", "carol")
            .await
            .unwrap()
            .contacts
            .is_empty()
    );
    assert_eq!(
        store
            .recipient_profile("t7", "carol")
            .await
            .unwrap()
            .contacts,
        [contact]
    );
    assert!(
        store
            .template("t8", "welcome", Some("en"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.template("t7", "welcome", Some("en")).await.unwrap(),
        Some(template)
    );
    // Read state: the other tenant's mark finds nothing; the owner's marks the entry once.
    assert_eq!(store.unread_count("t8", "carol", 10).await.unwrap(), 0);
    assert!(
        store
            .mark_read("t8", "carol", &["secret".into()], NOW)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.unread_count("t7", "carol", 10).await.unwrap(), 1);
    let marked = store
        .mark_read("t7", "carol", &["secret".into()], NOW + 1)
        .await
        .unwrap();
    e.read_at_ms = Some(NOW + 1);
    assert_eq!(marked, [e]);
    assert_eq!(store.unread_count("t7", "carol", 10).await.unwrap(), 0);
    assert!(
        store
            .mark_read("t7", "carol", &["secret".into()], NOW + 2)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn idempotency_keys(store: &dyn Store, _clock: &ManualClock) {
    let first = IdempotencyRecord {
        tenant: "t1".into(),
        key: "order-42".into(),
        request_hash: "h1".into(),
        notification_id: "n-42".into(),
        at_ms: NOW,
    };
    assert_eq!(
        store.claim_idempotency_key(&first).await.unwrap(),
        IdempotencyClaim::Claimed
    );
    let reuse = IdempotencyRecord {
        request_hash: "h2".into(),
        notification_id: "n-43".into(),
        at_ms: NOW + 10,
        ..first.clone()
    };
    assert_eq!(
        store.claim_idempotency_key(&reuse).await.unwrap(),
        IdempotencyClaim::Existing(first.clone())
    );
    let other_tenant = IdempotencyRecord {
        tenant: "t2".into(),
        ..reuse
    };
    assert_eq!(
        store.claim_idempotency_key(&other_tenant).await.unwrap(),
        IdempotencyClaim::Claimed
    );
}

/// Ingress instances racing to claim one key for different requests: exactly one claims it,
/// and every other sees the winner's record.
pub async fn idempotency_key_claims_race(store: &dyn Store, _clock: &ManualClock) {
    let claims: Vec<IdempotencyRecord> = (0..16)
        .map(|i| IdempotencyRecord {
            tenant: "t1".into(),
            key: "race".into(),
            request_hash: format!("h{i}"),
            notification_id: format!("n-{i}"),
            at_ms: NOW + i,
        })
        .collect();
    let results =
        futures::future::join_all(claims.iter().map(|c| store.claim_idempotency_key(c))).await;
    let winners: Vec<usize> = (0..claims.len())
        .filter(|i| matches!(results[*i], Ok(IdempotencyClaim::Claimed)))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one claim wins: {results:?}");
    let winner = &claims[winners[0]];
    for (i, r) in results.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(
                r.as_ref().unwrap(),
                &IdempotencyClaim::Existing(winner.clone())
            );
        }
    }
}

fn record(owner: &str, id: &str, at: i64) -> OutboxRecord {
    OutboxRecord {
        owner: owner.into(),
        id: id.into(),
        topic: "herald.requested".into(),
        key: id.as_bytes().to_vec(),
        payload: vec![0xC3, 0x01, 7, 0, 255],
        headers: vec![("traceparent".into(), b"00-abc".to_vec())],
        created_at_ms: at,
    }
}

pub async fn outbox_per_owner(store: &dyn Store, _clock: &ManualClock) {
    assert!(
        store
            .outbox_pending("ingress-a", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let (a, b, c) = (
        record("ingress-a", "x", NOW + 2),
        record("ingress-a", "y", NOW + 1),
        record("ingress-a", "z", NOW + 3),
    );
    for r in [&a, &b, &c, &a, &record("ingress-b", "x", NOW)] {
        store.outbox_put(r).await.unwrap();
    }
    assert_eq!(
        store.outbox_pending("ingress-a", 10).await.unwrap(),
        vec![b.clone(), a.clone(), c.clone()]
    );
    assert_eq!(
        store.outbox_pending("ingress-a", 2).await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    store.outbox_remove("ingress-a", "y").await.unwrap();
    store.outbox_remove("ingress-a", "y").await.unwrap();
    assert_eq!(
        store.outbox_pending("ingress-a", 10).await.unwrap(),
        vec![a, c]
    );
    assert_eq!(
        store.outbox_pending("ingress-b", 10).await.unwrap().len(),
        1
    );
    // Several at once; counting up to a cap.
    store
        .outbox_put(&record("ingress-a", "w", NOW + 4))
        .await
        .unwrap();
    assert_eq!(store.outbox_count("ingress-a", 100).await.unwrap(), 3);
    assert_eq!(store.outbox_count("ingress-a", 2).await.unwrap(), 2);
    store
        .outbox_remove_many("ingress-a", &["x".into(), "w".into(), "gone".into()])
        .await
        .unwrap();
    assert_eq!(store.outbox_count("ingress-a", 100).await.unwrap(), 1);
}

pub async fn outbox_leases_go_to_one_holder_until_they_expire(
    store: &dyn Store,
    _clock: &ManualClock,
) {
    // Every owner that kept a record is found (the outbox of a replaced instance too).
    for owner in ["ingress-a", "ingress-b"] {
        store.outbox_put(&record(owner, "x", NOW)).await.unwrap();
    }
    let owners = store.outbox_owners().await.unwrap();
    for owner in ["ingress-a", "ingress-b"] {
        assert!(owners.iter().any(|o| o == owner), "{owners:?}");
    }
    let lease = |holder: &'static str, now: i64| async move {
        store
            .outbox_lease("ingress-old", holder, now, now + 30_000)
            .await
            .unwrap()
    };
    assert!(
        lease("ingress-old", NOW).await,
        "the owner takes its own first"
    );
    assert!(lease("ingress-old", NOW + 10_000).await, "and renews it");
    assert!(
        !lease("ingress-new", NOW + 20_000).await,
        "not while it is valid"
    );
    // The old instance is gone and stops renewing: once the lease runs out, another takes it,
    // and then holds it against a third.
    assert!(lease("ingress-new", NOW + 40_001).await);
    assert!(!lease("ingress-other", NOW + 50_000).await);
    assert!(
        lease("ingress-new", NOW + 50_000).await,
        "renewed by its new holder"
    );
}

pub async fn ledger_keeps_the_first_outcome(store: &dyn Store, _clock: &ManualClock) {
    assert_eq!(
        store.ledger_begin("d1", NOW + 1).await.unwrap(),
        LedgerBegin::Fresh
    );
    // A crash before finishing: the next attempt learns it is inside the provider window.
    assert_eq!(
        store.ledger_begin("d1", NOW + 2).await.unwrap(),
        LedgerBegin::Unfinished
    );
    assert_eq!(store.ledger_resends().await.unwrap(), 1);
    let first = LedgerEntry {
        delivery_id: "d1".into(),
        state: DeliveryState::Delivered,
        reason: None,
        provider_message_id: Some("p-1".into()),
        at_ms: NOW + 5,
    };
    store.ledger_finish(&first).await.unwrap();
    let second = LedgerEntry {
        state: DeliveryState::Failed,
        ..first.clone()
    };
    store.ledger_finish(&second).await.unwrap();
    assert_eq!(
        store.ledger_begin("d1", NOW + 9).await.unwrap(),
        LedgerBegin::Done(first)
    );
    assert_eq!(
        store.ledger_resends().await.unwrap(),
        1,
        "a finished delivery is not a resend"
    );
    // A provider's "retry later" withdraws the attempt: the next one is fresh, not a resend.
    assert_eq!(
        store.ledger_begin("d3", NOW + 1).await.unwrap(),
        LedgerBegin::Fresh
    );
    store.ledger_abandon("d3").await.unwrap();
    assert_eq!(
        store.ledger_begin("d3", NOW + 2).await.unwrap(),
        LedgerBegin::Fresh
    );
    assert_eq!(
        store.ledger_begin("d3", NOW + 3).await.unwrap(),
        LedgerBegin::Unfinished
    );
    assert_eq!(store.ledger_resends().await.unwrap(), 2);
    // Finishing without beginning (a connector that records directly) also works.
    let other = LedgerEntry {
        delivery_id: "d2".into(),
        ..second
    };
    store.ledger_finish(&other).await.unwrap();
    assert_eq!(
        store.ledger_begin("d2", NOW + 9).await.unwrap(),
        LedgerBegin::Done(other)
    );
}

pub async fn retention_keeps_a_year_and_refuses_older(store: &dyn Store, clock: &ManualClock) {
    // One set of rows 10 days old (hot tier), one 100 days old (archive tier).
    for (id, age_days) in [("hot", 10), ("archived", 100)] {
        let at = NOW - age_days * DAY_MS;
        store
            .upsert_notification(&notification("t9", id, at))
            .await
            .unwrap();
        store
            .record_delivery_event(&event(
                "t9",
                id,
                Some(Channel::Sms),
                DeliveryState::Failed,
                at,
            ))
            .await
            .unwrap();
        store
            .upsert_inbox_entry(&entry("t9", "olga", id, at))
            .await
            .unwrap();
    }
    let failures = |from_ms: i64| FailureQuery {
        tenant: "t9".into(),
        from_ms,
        to_ms: clock.now_ms(),
        page_size: 10,
        page_token: None,
    };
    let inbox_ids = || async {
        let page = store
            .list_inbox(&InboxQuery::first_page("t9", "olga", 10))
            .await
            .unwrap();
        page.entries
            .into_iter()
            .map(|e| e.notification_id)
            .collect::<Vec<_>>()
    };
    // Both tiers answer, invisibly to the caller.
    assert!(
        store
            .get_notification("t9", "archived")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(inbox_ids().await, ["hot", "archived"]);
    assert_eq!(
        store
            .list_failures(&failures(NOW - 365 * DAY_MS))
            .await
            .unwrap()
            .failures
            .len(),
        2
    );
    assert_eq!(store.unread_count("t9", "olga", 10).await.unwrap(), 2);

    // 300 days later the 100-day-old rows are 400 days old: gone; the others are 310 days old.
    clock.advance_days(300);
    store.enforce_retention().await.unwrap();
    assert!(
        store
            .get_notification("t9", "archived")
            .await
            .unwrap()
            .is_none()
    );
    let (_, timeline) = store.get_notification("t9", "hot").await.unwrap().unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(inbox_ids().await, ["hot"]);
    assert_eq!(store.unread_count("t9", "olga", 10).await.unwrap(), 1);
    let listed = store
        .list_failures(&failures(clock.now_ms() - 365 * DAY_MS))
        .await
        .unwrap();
    assert_eq!(listed.failures.len(), 1);
    // Asking for more than a year back is an error, not an empty success.
    let err = store
        .list_failures(&failures(clock.now_ms() - 366 * DAY_MS))
        .await;
    assert!(
        matches!(err, Err(StoreError::BeyondRetention { .. })),
        "{err:?}"
    );
    let err = store
        .list_inbox(&InboxQuery {
            before_ms: Some(clock.now_ms() - 366 * DAY_MS),
            ..InboxQuery::first_page("t9", "olga", 10)
        })
        .await;
    assert!(
        matches!(err, Err(StoreError::BeyondRetention { .. })),
        "{err:?}"
    );
    // A very late replay of an expired row does not bring it back.
    store
        .upsert_inbox_entry(&entry("t9", "olga", "archived", NOW - 100 * DAY_MS))
        .await
        .unwrap();
    store
        .upsert_notification(&notification("t9", "archived", NOW - 100 * DAY_MS))
        .await
        .unwrap();
    assert_eq!(inbox_ids().await, ["hot"]);
    assert!(
        store
            .get_notification("t9", "archived")
            .await
            .unwrap()
            .is_none()
    );
    clock.set(NOW);
}
