//! The whole conformance suite (one test per scenario) and real TTL expiry, against a real
//! ScyllaDB named by `HERALD_TEST_SCYLLA` (`host:port`, or a `scylla://` URL to set e.g.
//! `?tablets=server_default` for ScyllaDB before 6.0). Ignored unless asked for (`make test-scylla` runs them with
//! `--run-ignored`); asked for without the variable, they fail instead of passing silently.
//! Every test works in keyspaces of its own, dropped at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herald_schemas::{Channel, DeliveryState, Priority};
use herald_store::conformance::NOW;
use herald_store::retention::DAY_MS;
use herald_store::{
    Clock, DeliveryEventRecord, ManualClock, NotificationRecord, Retention, Store, SystemClock,
};
use herald_store_scylla::{
    CqlServer, ScyllaConfig, ScyllaStore, StoreOptions, connect_session, migrate,
};
use scylla::client::session::Session;

const NEEDS: &str = "needs a ScyllaDB: set HERALD_TEST_SCYLLA=host:port and run make test-scylla";

/// A config for the server under test, with keyspaces no other run uses.
fn config() -> ScyllaConfig {
    let target = std::env::var("HERALD_TEST_SCYLLA").unwrap_or_default();
    assert!(
        !target.is_empty(),
        "HERALD_TEST_SCYLLA is not set: this test {NEEDS} (it must not pass without a server)"
    );
    let mut config = if target.starts_with("scylla://") {
        ScyllaConfig::from_url(&target).expect("HERALD_TEST_SCYLLA is not a valid scylla:// URL")
    } else {
        ScyllaConfig {
            nodes: target.split(',').map(str::to_owned).collect(),
            ..ScyllaConfig::default()
        }
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    config.hot_keyspace = format!("herald_test_{}", &run[..12]);
    config.archive_keyspace = format!("{}_archive", config.hot_keyspace);
    config
}

/// Connects, migrates fresh keyspaces, runs `body`, drops the keyspaces; all within `limit`.
async fn with_scylla<F, Fut>(limit: Duration, body: F)
where
    F: FnOnce(Arc<Session>, ScyllaConfig) -> Fut,
    Fut: Future<Output = ()>,
{
    let config = config();
    let run = async {
        let session = Arc::new(connect_session(&config).await.expect("connect to ScyllaDB"));
        let report = migrate(&session, &config).await.expect("migrate");
        assert_eq!(
            report.applied.len(),
            herald_store_scylla::migrate::MIGRATIONS.len()
        );
        let again = migrate(&session, &config).await.expect("migrate again");
        assert!(
            again.applied.is_empty(),
            "migrations are applied once: {again:?}"
        );
        body(Arc::clone(&session), config.clone()).await;
        for ks in [&config.hot_keyspace, &config.archive_keyspace] {
            session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), &[])
                .await
                .expect("drop the test keyspace");
        }
    };
    tokio::time::timeout(limit, run)
        .await
        .expect("the test timed out");
}

async fn store(session: Arc<Session>, config: &ScyllaConfig, clock: &ManualClock) -> ScyllaStore {
    let options = StoreOptions {
        retention: Retention::default(),
        clock: Arc::new(clock.clone()),
        server: CqlServer::Scylla,
    };
    ScyllaStore::with_session(session, config, options)
        .await
        .expect("prepare")
}

// Every conformance scenario, each a test of its own in keyspaces of its own.
herald_store::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a ScyllaDB: set HERALD_TEST_SCYLLA=host:port and run make test-scylla"]
    |scenario| with_scylla(Duration::from_secs(300), |session, config| async move {
        let clock = ManualClock::at(NOW);
        let store = store(session, &config, &clock).await;
        scenario(&store, &clock).await;
    })
);

/// Rows really leave: one stamped 2 s short of the archive tier's end (so never written to the
/// hot tier) is gone after 4 s; one stamped 2 s short of the hot tier's end leaves the hot keyspace but is still
/// read, from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a ScyllaDB: set HERALD_TEST_SCYLLA=host:port and run make test-scylla"]
async fn rows_expire_by_ttl() {
    with_scylla(Duration::from_secs(120), |session, config| async move {
        let clock = ManualClock::at(SystemClock.now_ms());
        let store = store(Arc::clone(&session), &config, &clock).await;
        let retention = Retention::default();
        let now = clock.now_ms();
        let notification = |id: &str, at: i64| NotificationRecord {
            tenant: "t".into(),
            notification_id: id.into(),
            recipient_user_id: "u".into(),
            category: "c".into(),
            priority: Priority::Normal,
            created_at_ms: at,
        };
        let leaving_archive = now - retention.archive_days * DAY_MS + 2_000;
        let leaving_hot = now - retention.hot_days * DAY_MS + 2_000;
        for (id, at) in [("old", leaving_archive), ("warm", leaving_hot)] {
            store
                .upsert_notification(&notification(id, at))
                .await
                .unwrap();
            let event = DeliveryEventRecord {
                tenant: "t".into(),
                notification_id: id.into(),
                result_id: format!("{id}/r"),
                recipient_user_id: "u".into(),
                category: "c".into(),
                channel: Some(Channel::Sms),
                state: DeliveryState::Failed,
                reason: None,
                at_ms: at,
            };
            store.record_delivery_event(&event).await.unwrap();
        }
        let (hot, archive) = (&config.hot_keyspace, &config.archive_keyspace);
        assert!(store.get_notification("t", "old").await.unwrap().is_some());
        assert!(
            !stored(&session, hot, "old").await,
            "too old for the hot tier: not written"
        );
        assert!(stored(&session, archive, "old").await);
        assert!(stored(&session, hot, "warm").await && stored(&session, archive, "warm").await);

        tokio::time::sleep(Duration::from_secs(4)).await;
        clock.set(SystemClock.now_ms());
        assert!(
            !stored(&session, archive, "old").await,
            "expired from the archive by TTL"
        );
        assert!(store.get_notification("t", "old").await.unwrap().is_none());
        assert!(
            !stored(&session, hot, "warm").await,
            "expired from the hot tier by TTL"
        );
        assert!(stored(&session, archive, "warm").await);
        let (n, timeline) = store.get_notification("t", "warm").await.unwrap().unwrap();
        assert_eq!(
            (n.created_at_ms, timeline.len()),
            (leaving_hot, 1),
            "read from the archive"
        );
    })
    .await;
}

/// Whether keyspace `ks` holds notification `id` of tenant `t`, asked directly.
async fn stored(session: &Session, ks: &str, id: &str) -> bool {
    session
        .query_unpaged(
            format!(
                "SELECT notification_id FROM {ks}.notifications WHERE tenant = ? AND \
                 notification_id = ?"
            ),
            ("t", id),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num()
        > 0
}
