#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use herald_store::conformance::{self, NOW};
use herald_store::retention::DAY_MS;
use herald_store::{InboxEntryRecord, InboxQuery, ManualClock, Month, Retention, Store};

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
