//! [`StoreError`]: what went wrong, classified once by what the caller should do about it.
//!
//! Backends map their own errors onto these variants by meaning, so that every caller decides
//! the same way: the stage runner (retry / dead-letter / stop, in `herald-runtime`) and the
//! gRPC servers (a status code, in `herald-proto`).
//!
//! | Variant | Whose fault | What to do |
//! |---|---|---|
//! | [`StoreError::Unavailable`] | a dependency's (disk, database, cluster) | retry with backoff |
//! | [`StoreError::BadPageToken`], [`StoreError::BeyondRetention`] | the caller's | fix the request |
//! | [`StoreError::Corrupt`] | the data's | give up on this item: a retry reads the same bytes |
//! | [`StoreError::BadUrl`] | the operator's | fix the configuration and restart |
//! | [`StoreError::Internal`] | ours (a defect) | stop; a restart may clear it |

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is malformed or names an unknown backend.
    #[error("invalid store url {url:?}: {reason}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A page token that this store did not issue.
    #[error("invalid page token")]
    BadPageToken,
    /// The request reaches back further than anything is kept.
    #[error("data older than {days} days is not kept (oldest available: {oldest_ms} ms)")]
    BeyondRetention {
        /// The oldest instant still kept, in milliseconds since the epoch.
        oldest_ms: i64,
        /// The retention in days.
        days: i64,
    },
    /// The store cannot do it now, and the same call later can succeed: a busy or locked
    /// database, an I/O error, a connection failure, a timeout, unavailable replicas, a
    /// conditional write that kept losing to concurrent ones.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that this version cannot read (a newer layout or schema, a corrupt file or
    /// value, a server that does not do what the data needs). A retry reads the same data.
    #[error("unreadable stored data: {0}")]
    Corrupt(String),
    /// A defect of ours: a poisoned lock, a panicked worker, an API misused, a statement that
    /// does not prepare.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the same call, repeated later, can succeed (only [`StoreError::Unavailable`]).
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_worth_retrying() {
        let all = [
            StoreError::BadUrl {
                url: "x://".into(),
                reason: "r",
            },
            StoreError::BadPageToken,
            StoreError::BeyondRetention {
                oldest_ms: 0,
                days: 365,
            },
            StoreError::Unavailable("busy".into()),
            StoreError::Corrupt("bad".into()),
            StoreError::Internal("bug".into()),
        ];
        let retriable: Vec<bool> = all.iter().map(StoreError::is_retriable).collect();
        assert_eq!(retriable, [false, false, false, true, false, false]);
    }
}
