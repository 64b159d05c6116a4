//! The one mapping from store errors to gRPC statuses, for both servers (the ingress and the
//! query service).
//!
//! | [`StoreError`] | Code | Message |
//! |---|---|---|
//! | `Unavailable` | `UNAVAILABLE` | generic: retry with backoff |
//! | `BadPageToken` | `INVALID_ARGUMENT` | names the field |
//! | `BeyondRetention` | `OUT_OF_RANGE` | how far back data is kept |
//! | `Corrupt`, `Internal` | `INTERNAL` | generic |
//! | `BadUrl` | `INTERNAL` | generic |
//!
//! `UNAVAILABLE` only where a retry can succeed: clients retry it automatically. `BadUrl` is
//! the operator's configuration, which the caller can neither fix nor wait out, so not
//! `FAILED_PRECONDITION` (a state the client can change) but `INTERNAL`; in practice it stops
//! the server at start-up, before any request. Server-side details (file paths, hosts, driver
//! messages) are logged, never sent: the messages above are all a client sees.

use herald_store::StoreError;
use tonic::Status;
use tracing::{error, warn};

/// The status a handler returns for `e`; logs the detail it leaves out.
pub fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::BadPageToken => {
            Status::invalid_argument("page_token: not a token this service issued")
        }
        StoreError::BeyondRetention { .. } => Status::out_of_range(e.to_string()),
        StoreError::Unavailable(_) => {
            warn!(error = %e, "store unavailable");
            Status::unavailable("the store is unavailable right now; retry with backoff")
        }
        StoreError::Corrupt(_) => {
            error!(error = %e, "store holds data this version cannot read");
            Status::internal("the store holds data this server cannot read")
        }
        StoreError::Internal(_) | StoreError::BadUrl { .. } => {
            error!(error = %e, "store failed");
            Status::internal("internal error in the store")
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn codes_by_meaning() {
        let cases = [
            (
                StoreError::Unavailable("database is locked".into()),
                Code::Unavailable,
            ),
            (StoreError::BadPageToken, Code::InvalidArgument),
            (
                StoreError::BeyondRetention {
                    oldest_ms: 1,
                    days: 365,
                },
                Code::OutOfRange,
            ),
            (StoreError::Corrupt("bad".into()), Code::Internal),
            (StoreError::Internal("bug".into()), Code::Internal),
            (
                StoreError::BadUrl {
                    url: "mysql://x".into(),
                    reason: "unknown scheme",
                },
                Code::Internal,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(store_status(&e).code(), code, "{e:?}");
        }
    }

    #[test]
    fn no_server_detail_reaches_the_client() {
        let path = "/var/lib/herald/store.db.months/2026-03.db";
        for e in [
            StoreError::Corrupt(format!("{path} has layout version 3")),
            StoreError::Internal(format!("{path}: connection mutex poisoned")),
            StoreError::Unavailable(format!("create {path}: permission denied")),
            StoreError::BadUrl {
                url: format!("sqlite://{path}"),
                reason: "r",
            },
        ] {
            let status = store_status(&e);
            assert!(!status.message().contains("/var/lib"), "{status:?}");
            assert!(!status.message().contains("store.db"), "{status:?}");
        }
    }
}
