#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use herald_store::conformance::{self, NOW, feed_ids};
use herald_store::retention::DAY_MS;
use herald_store::{
    Clock, FeedCursor, InboxEntryRecord, InboxQuery, ManualClock, Month, Retention, Store,
};

use crate::SqliteStore;

async fn open_at(path: &Path, clock: &ManualClock) -> SqliteStore {
    SqliteStore::open_with(path, Retention::default(), Arc::new(clock.clone()))
        .await
        .unwrap()
}

herald_store::conformance_tests!(
    #[tokio::test]
    |scenario| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(NOW);
        let store = open_at(&dir.path().join("herald.db"), &clock).await;
        scenario(&store, &clock).await;
    }
);

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/herald.db");
    let clock = ManualClock::at(NOW);
    {
        let store = open_at(&path, &clock).await;
        conformance::notifications_and_timeline(&store, &clock).await;
    }
    let store = open_at(&path, &clock).await;
    let (_, timeline) = store.get_notification("t1", "n1").await.unwrap().unwrap();
    assert_eq!(timeline.len(), 3);
}

#[tokio::test]
async fn retention_deletes_whole_month_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let clock = ManualClock::at(NOW);
    let store = open_at(&path, &clock).await;
    for age_days in [0, 40, 80] {
        let e = InboxEntryRecord {
            tenant: "t".into(),
            recipient_user_id: "u".into(),
            notification_id: format!("n{age_days}"),
            category: "c".into(),
            title: "t".into(),
            body: "b".into(),
            action_url: None,
            created_at_ms: NOW - age_days * DAY_MS,
            delivered_at_ms: NOW - age_days * DAY_MS,
            read_at_ms: None,
        };
        store.upsert_inbox_entry(&e).await.unwrap();
    }
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("herald.db.months"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".db"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(files(), ["2025-12.db", "2026-01.db", "2026-03.db"]);
    assert!(store.enforce_retention().await.unwrap().dropped.is_empty());
    // 2027-01-02: December 2025 is entirely older than 365 days, January 2026 is not.
    clock.set(
        Month {
            year: 2027,
            month: 1,
        }
        .start_ms()
            + DAY_MS,
    );
    let report = store.enforce_retention().await.unwrap();
    assert_eq!(report.dropped, ["2025-12"]);
    assert_eq!(files(), ["2026-01.db", "2026-03.db"]);
    // A late write into an expired month does not recreate it.
    let late = InboxEntryRecord {
        notification_id: "late".into(),
        created_at_ms: NOW - 80 * DAY_MS,
        ..store
            .list_inbox(&InboxQuery::first_page("t", "u", 1))
            .await
            .unwrap()
            .entries
            .remove(0)
    };
    store.upsert_inbox_entry(&late).await.unwrap();
    assert_eq!(files(), ["2026-01.db", "2026-03.db"]);
}

#[tokio::test]
async fn refuses_a_store_in_the_old_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE notifications (x INTEGER);")
        .unwrap();
    drop(c);
    let err = SqliteStore::open(&path).await.err().unwrap();
    assert!(
        matches!(err, herald_store::StoreError::Corrupt(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("older Herald"), "{err}");
}

#[tokio::test]
async fn a_directory_it_cannot_create_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the store's directory should be.
    std::fs::write(dir.path().join("blocked"), b"").unwrap();
    let err = SqliteStore::open(&dir.path().join("blocked/herald.db"))
        .await
        .err()
        .unwrap();
    assert!(err.is_retriable(), "{err:?}");
}

/// Retention passes running while the store serves: reads and writes never fail, what is
/// written meanwhile is kept, months inside the year stay readable, the expired one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_pass_while_serving_keeps_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(NOW);
    let store = Arc::new(open_at(&dir.path().join("herald.db"), &clock).await);
    let entry = |id: String, at: i64| InboxEntryRecord {
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        notification_id: id,
        category: "c".into(),
        title: "t".into(),
        body: "b".into(),
        action_url: None,
        created_at_ms: at,
        delivered_at_ms: at,
        read_at_ms: None,
    };
    for age_days in [0, 40, 80] {
        store
            .upsert_inbox_entry(&entry(format!("old{age_days}"), NOW - age_days * DAY_MS))
            .await
            .unwrap();
    }
    // 2027-01-02: December 2025 has expired, January and March 2026 have not.
    let now = Month {
        year: 2027,
        month: 1,
    }
    .start_ms()
        + DAY_MS;
    clock.set(now);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .upsert_inbox_entry(&entry(format!("new{i}"), now + i))
                    .await
                    .unwrap();
            }
        })
    };
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..300 {
                store
                    .list_inbox(&InboxQuery::first_page("t", "u", 50))
                    .await
                    .unwrap();
            }
        })
    };
    let mut dropped = Vec::new();
    for _ in 0..20 {
        dropped.extend(store.enforce_retention().await.unwrap().dropped);
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    reader.await.unwrap();
    assert_eq!(dropped, ["2025-12"], "dropped once");
    let mut ids = Vec::new();
    let mut query = InboxQuery::first_page("t", "u", 100);
    loop {
        let page = store.list_inbox(&query).await.unwrap();
        ids.extend(page.entries.into_iter().map(|e| e.notification_id));
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => break,
        }
    }
    assert_eq!(ids.len(), 302, "300 new and two kept months: {ids:?}");
    assert!(ids.contains(&"old0".to_owned()) && ids.contains(&"old40".to_owned()));
    assert!(!ids.contains(&"old80".to_owned()));
}

fn feed_entry(id: &str, created_at_ms: i64, delivered_at_ms: i64) -> InboxEntryRecord {
    InboxEntryRecord {
        tenant: "t".into(),
        recipient_user_id: "u".into(),
        notification_id: id.into(),
        category: "c".into(),
        title: "t".into(),
        body: "b".into(),
        action_url: None,
        created_at_ms,
        delivered_at_ms,
        read_at_ms: None,
    }
}

/// The embedded store's feed is in write order: an entry written an hour late (delivered and
/// created in the month before, as a deferred notification crossing a month boundary may be)
/// is new to a cursor taken after newer entries were read, exactly once, and a cursor outlives
/// a reopened store.
#[tokio::test]
async fn the_feed_follows_write_order_however_late_and_across_months() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let start_of_month = Month::of_ms(NOW).start_ms();
    let clock = ManualClock::at(start_of_month + 10 * 60_000);
    let store = open_at(&path, &clock).await;
    let now = clock.now_ms();
    let start = store.feed_start("t", "u").await.unwrap();
    store
        .upsert_inbox_entry(&feed_entry("new", now - 1_000, now))
        .await
        .unwrap();
    let page = store.inbox_feed("t", "u", &start, 100).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let late = feed_entry("late", now - 2 * 3_600_000, now - 3_600_000);
    assert_ne!(Month::of_ms(late.created_at_ms), Month::of_ms(now));
    store.upsert_inbox_entry(&late).await.unwrap();
    drop(store);
    let store = open_at(&path, &clock).await;
    let next = store.inbox_feed("t", "u", &page.next, 100).await.unwrap();
    assert_eq!(
        feed_ids(&next),
        ["late"],
        "a late write is new, and nothing read is repeated"
    );
    // A repeat write (a redelivery) of entries already read adds nothing to the feed.
    store.upsert_inbox_entry(&late).await.unwrap();
    store
        .upsert_inbox_entry(&feed_entry("new", now - 1_000, now))
        .await
        .unwrap();
    let after = store.inbox_feed("t", "u", &next.next, 100).await.unwrap();
    assert!(after.items.is_empty());
    // A watch started now does not see either.
    let fresh = store.feed_start("t", "u").await.unwrap();
    assert!(
        store
            .inbox_feed("t", "u", &fresh, 100)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Writers in several processes share the month file; the write-order numbers they assign
/// are unique and follow commit order (the insert takes the write lock first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_and_repeat_nothing_in_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let clock = ManualClock::at(NOW);
    let reader = open_at(&path, &clock).await;
    let start = reader.feed_start("t", "u").await.unwrap();
    let mut writers = Vec::new();
    for w in 0..4 {
        // Separate stores: separate connections, as separate processes would have.
        let store = open_at(&path, &clock).await;
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                store
                    .upsert_inbox_entry(&feed_entry(&format!("w{w}-{i}"), NOW, NOW))
                    .await
                    .unwrap();
            }
        }));
    }
    // The reader follows the feed while the writers write: nothing it has passed is written
    // behind its cursor, so it ends with every entry, each once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor = start;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 200 read",
            seen.len()
        );
        let page = reader.inbox_feed("t", "u", &cursor, 7).await.unwrap();
        for item in &page.items {
            assert!(seen.insert(item.entry.notification_id.clone()));
        }
        cursor = page.next;
        if !page.more {
            tokio::task::yield_now().await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let after = reader.inbox_feed("t", "u", &cursor, 7).await.unwrap();
    assert!(after.items.is_empty());
}

/// Several processes opening a fresh store at once (the stages of `herald run`, or stages
/// started by hand) all succeed: the layout check and the schema are one write transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_openers_of_a_fresh_store_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let clock = ManualClock::at(NOW);
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (path, clock) = (path.clone(), clock.clone());
                tokio::spawn(async move {
                    let store =
                        SqliteStore::open_with(&path, Retention::default(), Arc::new(clock))
                            .await?;
                    // The first write opens (creates) this month's file too.
                    store
                        .upsert_inbox_entry(&feed_entry("n", NOW, NOW))
                        .await
                        .map(|()| store)
                })
            })
            .collect();
        for opener in openers {
            opener.await.unwrap().unwrap();
        }
    }
}

/// A store written by the previous layout (2: inbox rows without a write-order number) is
/// upgraded when it opens: its entries keep their place in delivery order and new writes follow.
#[tokio::test]
async fn a_layout_2_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let months = dir.path().join("herald.db.months");
    std::fs::create_dir_all(&months).unwrap();
    let clock = ManualClock::at(NOW);
    {
        let month =
            rusqlite::Connection::open(months.join(format!("{}.db", Month::of_ms(NOW)))).unwrap();
        month
            .execute_batch(
                "CREATE TABLE inbox (
                     tenant TEXT NOT NULL, recipient_user_id TEXT NOT NULL,
                     notification_id TEXT NOT NULL, category TEXT NOT NULL, title TEXT NOT NULL,
                     body TEXT NOT NULL, action_url TEXT, created_at_ms INTEGER NOT NULL,
                     delivered_at_ms INTEGER NOT NULL, read_at_ms INTEGER,
                     PRIMARY KEY (tenant, recipient_user_id, notification_id)) WITHOUT ROWID;
                 CREATE INDEX inbox_by_delivery
                     ON inbox (tenant, recipient_user_id, delivered_at_ms, notification_id);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        for (id, delivered) in [("second", NOW - 1_000), ("first", NOW - 2_000)] {
            month
                .execute(
                    "INSERT INTO inbox VALUES ('t', 'u', ?1, 'c', 't', 'b', NULL, ?2, ?2, NULL)",
                    rusqlite::params![id, delivered],
                )
                .unwrap();
        }
        let main = rusqlite::Connection::open(&path).unwrap();
        main.execute_batch("PRAGMA user_version = 2;").unwrap();
    }
    let store = open_at(&path, &clock).await;
    let everything = FeedCursor(String::new());
    store
        .upsert_inbox_entry(&feed_entry("third", NOW, NOW))
        .await
        .unwrap();
    let page = store.inbox_feed("t", "u", &everything, 10).await.unwrap();
    assert_eq!(feed_ids(&page), ["first", "second", "third"]);
    // Reopened: already in the current layout.
    drop(store);
    let store = open_at(&path, &clock).await;
    assert_eq!(
        store
            .inbox_feed("t", "u", &everything, 10)
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}
