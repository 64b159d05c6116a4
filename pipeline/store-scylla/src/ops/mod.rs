//! The [`herald_store::Store`] operations, one file per area, as methods of the store's inner
//! state.

mod audience;
mod held;
pub(crate) mod inbox;
mod ingress;
mod keys;
mod ledger;
mod notifications;
pub(crate) mod read_state;
mod reference;
