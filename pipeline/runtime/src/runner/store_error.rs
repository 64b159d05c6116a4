//! What a store error makes the runner do with the record: the one conversion every stage
//! uses (`?` on a store call inside [`super::Processor::process`]).
//!
//! | [`StoreError`] | [`ProcessError`] | The runner |
//! |---|---|---|
//! | `Unavailable` | `Retry` | retries with backoff, within the retry budget |
//! | `Corrupt`, `BeyondRetention`, `BadPageToken` | `Poison` | dead-letters the record, goes on |
//! | `BadUrl`, `Internal` | `Fatal` | stops; the process exits non-zero and restarts |

use herald_store::StoreError;

use super::ProcessError;

impl From<StoreError> for ProcessError {
    fn from(e: StoreError) -> Self {
        let reason = e.to_string();
        match e {
            StoreError::Unavailable(_) => ProcessError::Retry(reason),
            StoreError::Corrupt(_)
            | StoreError::BeyondRetention { .. }
            | StoreError::BadPageToken => ProcessError::Poison(reason),
            StoreError::BadUrl { .. } | StoreError::Internal(_) => ProcessError::Fatal(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(e: StoreError) -> &'static str {
        match ProcessError::from(e) {
            ProcessError::Retry(_) => "retry",
            ProcessError::Poison(_) => "poison",
            ProcessError::Fatal(_) => "fatal",
            ProcessError::NotDue(_) => "not due",
        }
    }

    #[test]
    fn store_errors_by_what_the_runner_does() {
        assert_eq!(class(StoreError::Unavailable("locked".into())), "retry");
        assert_eq!(class(StoreError::Corrupt("unknown state".into())), "poison");
        assert_eq!(
            class(StoreError::BeyondRetention {
                oldest_ms: 0,
                days: 365
            }),
            "poison"
        );
        assert_eq!(class(StoreError::BadPageToken), "poison");
        assert_eq!(class(StoreError::Internal("poisoned lock".into())), "fatal");
        let bad_url = StoreError::BadUrl {
            url: "x://".into(),
            reason: "unknown scheme",
        };
        assert_eq!(class(bad_url), "fatal");
    }

    #[test]
    fn the_reason_says_what_failed() {
        match ProcessError::from(StoreError::Unavailable("database is locked".into())) {
            ProcessError::Retry(reason) => assert!(reason.contains("database is locked")),
            other => panic!("{other:?}"),
        }
    }
}
