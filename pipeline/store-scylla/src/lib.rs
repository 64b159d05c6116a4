//! Herald's storage trait, [`herald_store::Store`], on ScyllaDB: the production backend
//! (`scylla://host:port,...`), beside the embedded SQLite one.
//!
//! - [`config`]: [`ScyllaConfig`] and its URL form.
//! - [`migrate`](mod@migrate): `herald migrate`, the versioned CQL files in `migrations/`.
//! - `store.rs`: [`ScyllaStore`], the session and the trait; `ops/` one file per area
//!   (notifications and failures, inbox, read state, recipients and templates, ingress, ledger).
//! - `statements.rs`: every statement, prepared once at connect.
//! - `tiers.rs`: the hot/archive split in time (TTLs on write, routing on read).
//!
//! ## Two tiers, no deletes
//! Time-series rows (notifications, timelines, failures, inbox, inbox feed) are written to two
//! keyspaces: `herald` (hot, 90 days) and `herald_archive` (365 days), each row with TTL = its
//! own time + the tier's days - now, from the injected clock. Time-window compaction then
//! drops whole SSTables of expired rows, so [`herald_store::Store::enforce_retention`] has
//! nothing to do. Reads ask the hot tier for buckets wholly inside it and the archive for
//! older ones; reaching back beyond 365 days is [`herald_store::StoreError::BeyondRetention`].
//!
//! ## The inbox feed
//! `WatchInbox` follows `inbox_feed`, clustered by delivery time: a watch re-reads the last
//! [`FEED_OVERLAP_MS`] of it, so a write landing up to that late is still pushed; one landing
//! later (a deliver instance with a skewed clock, a write stalled longer) reaches ListInbox but
//! not a running watch. The embedded store keeps exact write order instead.
//!
//! ## Consistency
//! Every write is an upsert of a deterministic key, so retries and replays are harmless.
//! Lightweight transactions are used only where a race must have one winner: idempotency keys
//! and the delivery ledger.
//!
//! ## Testing
//! `tests/kassandra.rs` runs what the in-process kassandra server supports over the real CQL
//! protocol; `tests/scylla.rs` runs the whole conformance suite and a real TTL expiry against
//! a ScyllaDB named by `HERALD_TEST_SCYLLA` (ignored otherwise).

mod codec;
pub mod config;
mod cql;
mod error;
pub mod migrate;
mod ops;
mod statements;
mod store;
mod tiers;

pub use config::{HotTablets, Replication, ReplicationClass, ScyllaConfig};
pub use error::{Error, Result};
pub use migrate::{MigrationReport, migrate};
pub use ops::inbox::FEED_OVERLAP_MS;
pub use ops::inbox::INBOX_SCAN_LIMIT;
pub use ops::read_state::UNREAD_SCAN_LIMIT;
pub use store::{CqlServer, ScyllaStore, StoreOptions, connect_session, session_builder};
