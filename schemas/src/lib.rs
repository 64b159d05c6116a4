//! Herald's event contracts: one Avro schema per topic (the `.avsc` files beside this crate),
//! the Rust types that mirror them, and the wire framing.
//!
//! | topic (after the prefix) | event | schema file |
//! |---|---|---|
//! | `requested` | [`NotificationRequested`] | `notification_requested.avsc` |
//! | `enriched`, `deferred` | [`NotificationEnriched`] | `notification_enriched.avsc` |
//! | `admitted` | [`NotificationAdmitted`] | `notification_admitted.avsc` |
//! | `dispatch.<channel>` | [`Dispatch`] | `dispatch.avsc` |
//! | `delivery-result` | [`DeliveryResult`] | `delivery_result.avsc` |
//! | `engagement` | [`Engagement`] | `engagement.avsc` |
//! | `changes` | [`Change`] | `change.avsc` |
//! | `broadcasts` | [`BroadcastRequested`] | `broadcast_requested.avsc` |
//!
//! Every record value on every topic is framed with Avro *single-object encoding*
//! (`C3 01`, the 8-byte CRC-64-AVRO fingerprint of the writer schema, then the Avro binary body):
//! see [`codec`] and ARCHITECTURE.md for why.

pub mod codec;
mod events;
pub mod ids;

pub use codec::{Event, SchemaError};
pub use events::*;
