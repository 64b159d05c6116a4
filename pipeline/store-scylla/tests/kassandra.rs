//! The ScyllaDB backend over the real CQL protocol, against kassandra (an in-process CQL server,
//! see TEST-INFRA.md): the production migrations and statements, as written.
//!
//! kassandra has no TTL, no lightweight transactions, no clustering order (always ascending),
//! no LIMIT and no range predicates. What needs those is not emulated here; these conformance
//! functions run only against a real ScyllaDB (`tests/scylla.rs`):
//! - `failures_by_tenant_and_time`, `inbox_pages_newest_first`, `inbox_filters_and_read_state`,
//!   `inbox_feed_follows_new_writes`: range slices and DESC clustering order;
//! - `tenants_are_isolated`: `mark_all_read`, `inbox_feed` and `list_failures` use range
//!   predicates (its point-read half runs below, in `tenants_are_isolated_for_point_reads`);
//! - `idempotency_keys`, `ledger_keeps_the_first_outcome`, `an_invalid_address_is_removed_unless_replaced`,
//!   `outbox_leases_go_to_one_holder_until_they_expire`: lightweight transactions (below: they
//!   fail loudly here rather than pretending);
//! - `retention_keeps_a_year_and_refuses_older`: failures and inbox ranges, real TTLs.
//!
//! The one accommodation is [`CqlServer::KassandraForTests`]: kassandra's parser drops
//! `USING TTL ?`, so its prepared statements list no `[ttl]` marker; the store then binds no TTL
//! (ScyllaDB mode refuses such a server, see the last test).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_store::conformance::{self, NOW};
use herald_store::{IdempotencyRecord, ManualClock, Retention, Store, StoreError};
use herald_store_scylla::{
    CqlServer, Error, ScyllaConfig, ScyllaStore, StoreOptions, migrate, session_builder,
};
use kassandra_tester::KassandraTester;
use kassandra_tester::kassandra::session::KassandraSession;
use scylla::client::session::Session;

/// No test may run longer than this.
const LIMIT: Duration = Duration::from_secs(60);

/// Starts kassandra on a free port, runs `body` with its address, and stops it.
async fn on_kassandra<F, Fut>(body: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut body = Some(body);
    let server = KassandraTester::new(KassandraSession::new()).in_scope(|addr| {
        let body = body.take();
        async move {
            if let Some(body) = body {
                body(addr).await;
            }
            Ok::<(), std::convert::Infallible>(())
        }
    });
    tokio::time::timeout(LIMIT, server)
        .await
        .expect("the test timed out")
        .expect("kassandra stopped");
}

async fn session(addr: SocketAddr) -> (Arc<Session>, ScyllaConfig) {
    let config = ScyllaConfig {
        nodes: vec![addr.to_string()],
        ..ScyllaConfig::default()
    };
    let session = session_builder(&config)
        // kassandra has no peers table: without this every DDL fails refreshing metadata.
        .refresh_metadata_on_auto_schema_agreement(false)
        .build()
        .await
        .expect("connect to kassandra");
    (Arc::new(session), config)
}

async fn store(session: &Arc<Session>, config: &ScyllaConfig, clock: &ManualClock) -> ScyllaStore {
    let options = StoreOptions {
        retention: Retention::default(),
        clock: Arc::new(clock.clone()),
        server: CqlServer::KassandraForTests,
    };
    ScyllaStore::with_session(Arc::clone(session), config, options)
        .await
        .expect("prepare every statement")
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_edits() {
    on_kassandra(|addr| async move {
        let (session, config) = session(addr).await;
        let first = migrate(&session, &config).await.unwrap();
        assert_eq!(
            first.applied.len(),
            herald_store_scylla::migrate::MIGRATIONS.len()
        );
        assert!(first.already_applied.is_empty());
        let again = migrate(&session, &config).await.unwrap();
        assert!(again.applied.is_empty(), "{again:?}");
        assert_eq!(again.already_applied, first.applied);

        // Someone edited 0002 after it was applied.
        session
            .query_unpaged(
                "INSERT INTO herald.schema_migrations (scope, version, name, checksum, \
                 applied_at_ms) VALUES (?, ?, ?, ?, ?)",
                (
                    "herald",
                    2_i32,
                    "0002_hot_time_series.cql",
                    "sha256:edited",
                    0_i64,
                ),
            )
            .await
            .unwrap();
        let refused = migrate(&session, &config).await;
        assert!(
            matches!(refused, Err(Error::ChecksumMismatch { version: 2, .. })),
            "{refused:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn conformance_point_reads_and_writes() {
    on_kassandra(|addr| async move {
        let (session, config) = session(addr).await;
        migrate(&session, &config).await.unwrap();
        let clock = ManualClock::at(NOW);
        let store = store(&session, &config, &clock).await;
        conformance::notifications_and_timeline(&store, &clock).await;
        conformance::contacts_preferences_templates(&store, &clock).await;
        conformance::template_versions_and_channels(&store, &clock).await;
        conformance::outbox_per_owner(&store, &clock).await;
        conformance::api_keys_by_id_and_by_tenant(&store, &clock).await;
    })
    .await;
}

#[tokio::test]
async fn erasing_a_recipient() {
    on_kassandra(|addr| async move {
        let (session, config) = session(addr).await;
        migrate(&session, &config).await.unwrap();
        let clock = ManualClock::at(NOW);
        let store = store(&session, &config, &clock).await;
        conformance::erasing_a_recipient_leaves_nothing_of_theirs(&store, &clock).await;
    })
    .await;
}

#[tokio::test]
async fn quiet_hours_and_held_notifications() {
    on_kassandra(|addr| async move {
        let (session, config) = session(addr).await;
        migrate(&session, &config).await.unwrap();
        let clock = ManualClock::at(NOW);
        let store = store(&session, &config, &clock).await;
        conformance::quiet_hours_and_held_notifications(&store, &clock).await;
    })
    .await;
}

#[tokio::test]
async fn tenants_are_isolated_for_point_reads() {
    on_kassandra(|addr| async move {
        let (session, config) = session(addr).await;
        migrate(&session, &config).await.unwrap();
        let clock = ManualClock::at(NOW);
        let store = store(&session, &config, &clock).await;
        conformance::tenants_are_isolated_for_point_reads(&store, &clock).await;
    })
    .await;
}

/// kassandra ignores `IF`: the store must say so, not report a claim it never made.
#[tokio::test]
async fn lightweight_transactions_fail_loudly_without_lwt_support() {
    on_kassandra(|addr| async move {
        let (session, config) = session(addr).await;
        migrate(&session, &config).await.unwrap();
        let clock = ManualClock::at(NOW);
        let store = store(&session, &config, &clock).await;
        let claim = store
            .claim_idempotency_key(&IdempotencyRecord {
                tenant: "t1".into(),
                key: "k".into(),
                request_hash: "h".into(),
                notification_id: "n".into(),
                at_ms: NOW,
            })
            .await;
        assert!(matches!(claim, Err(StoreError::Corrupt(_))), "{claim:?}");
        let begin = store.ledger_begin("d1", NOW).await;
        assert!(matches!(begin, Err(StoreError::Corrupt(_))), "{begin:?}");
        let lease = store.outbox_lease("o", "o", NOW, NOW + 1).await;
        assert!(matches!(lease, Err(StoreError::Corrupt(_))), "{lease:?}");
    })
    .await;
}

/// In production mode a server that would drop `USING TTL` is refused at connect.
#[tokio::test]
async fn scylla_mode_refuses_a_server_without_ttl_markers() {
    on_kassandra(|addr| async move {
        let (session, config) = session(addr).await;
        migrate(&session, &config).await.unwrap();
        let refused = ScyllaStore::with_session(session, &config, StoreOptions::default()).await;
        assert!(
            matches!(refused, Err(Error::MissingTtlMarker(_))),
            "{:?}",
            refused.err()
        );
    })
    .await;
}
