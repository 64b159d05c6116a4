//! Herald's stream stages. Each folder holds a stage's pure logic (`logic.rs`, no I/O, no Kafka)
//! and its processor (`mod.rs`: decode → look up → logic → encode) that the generic runner in
//! `herald-runtime` drives as its own consumer group.
//!
//! | stage | reads | writes |
//! |---|---|---|
//! | [`broadcast`] | `broadcasts` | `requested.bulk` (one per subscriber), `broadcasts` (the next chunk) |
//! | [`enrich`] | `requested`, `released` | `enriched`, `delivery-result` (suppressed, held); the store (held) |
//! | [`rate_limit`] | `enriched` | `admitted` |
//! | [`fan_out`] | `admitted` | `dispatch.<channel>`, `delivery-result` (dispatched) |
//! | [`deliver`] | `dispatch.<channel>` | `delivery-result` (delivered / failed / invalid token) |
//! | [`store_writer`] | `requested` (both lanes), `delivery-result` | the store (notifications, timeline) |
//!
//! Every stage but the store writer and the broadcast expander runs once per lane
//! (`herald_runtime::topics::Lane`): the bulk lane's runners read and write the `.bulk` topics.

pub mod broadcast;
pub mod deliver;
pub mod enrich;
pub mod fan_out;
pub mod rate_limit;
pub mod store_writer;

mod wire;

pub use wire::{Subject, attempt_result, result_for};
