//! The [`herald_store::Store`] operations, one file per area, as synchronous methods of the
//! store's inner state (`store.rs` runs them on the blocking pool).

mod audience;
mod batch;
mod held;
mod inbox;
mod ingress;
mod keys;
mod ledger;
mod notifications;
mod read_state;
mod reference;
mod retention;
