//! Herald's storage trait, [`herald_store::Store`], on embedded SQLite: the single-machine
//! default (`sqlite://path`), beside the ScyllaDB one (`herald-store-scylla`, laid out the same
//! way). SQLite files in WAL mode, so the query service reads while the stages write, from other
//! processes. SQLite is bundled into the binary, needs no server, survives restarts, and gives
//! the upserts and ordered range scans the trait needs.
//!
//! - `store.rs`: [`SqliteStore`], its files and clock, and the trait running `ops/` on the
//!   blocking pool; `ops/` one file per area (notifications and failures, inbox, read state,
//!   recipients and templates, ingress, ledger, retention).
//! - `files.rs`: opening one file (pragmas, schema, layout version); `schema/main.sql` and
//!   `schema/month.sql` hold the tables.
//! - `months.rs`: the month files, and which of them a read walks.
//! - `feed.rs`: the inbox feed's cursor (write order per month file).
//! - `codec.rs`: rows to records.
//! - `error.rs`: SQLite's errors by meaning ([`herald_store::StoreError`]).
//!
//! ## Two kinds of file, no deletes
//! `path` holds what does not age (contacts, opt-outs, templates, the outbox) and commits with
//! `synchronous = FULL`: an accepted request survives power loss. `path.months/YYYY-MM.db` holds
//! everything that ages, one file per calendar month by the row's own time, and commits with
//! `synchronous = NORMAL` (survives a killed process). Retention deletes whole month files once
//! the entire month is older than the archive tier, the embedded form of ScyllaDB's TTL +
//! time-window compaction; reads also hide rows older than the tier, so what callers see does
//! not depend on when a pass last ran.

mod codec;
mod error;
mod feed;
mod files;
mod months;
mod ops;
mod store;

pub use store::SqliteStore;

#[cfg(test)]
mod tests;
