//! Herald's stream stages. Each folder holds a stage's pure logic (`logic.rs`, no I/O, no Kafka)
//! and its processor (`mod.rs`: decode → look up → logic → encode) that the generic runner in
//! `herald-runtime` drives as its own consumer group.
//!
//! | stage | reads | writes |
//! |---|---|---|
//! | [`enrich`] | `requested` | `enriched`, `delivery-result` (suppressed channels) |
//! | [`rate_limit`] | `enriched` | `admitted` |
//! | [`fan_out`] | `admitted` | `dispatch.<channel>`, `delivery-result` (dispatched) |
//! | [`deliver`] | `dispatch.<channel>` | `delivery-result` (delivered / failed / invalid token) |
//! | [`store_writer`] | `requested`, `delivery-result` | the store (notifications, timeline) |

pub mod deliver;
pub mod enrich;
pub mod fan_out;
pub mod rate_limit;
pub mod store_writer;

mod wire;

pub use wire::{Subject, attempt_result, result_for};
