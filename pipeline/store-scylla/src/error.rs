//! This crate's errors, and how they map onto the trait's [`StoreError`].

use herald_store::StoreError;
use scylla::errors::{
    DeserializationError, ExecutionError, IntoRowsResultError, MaybeFirstRowError, NewSessionError,
    PrepareError, RowsError,
};

/// What can go wrong talking to ScyllaDB.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (caller's fault: fix the config).
    #[error("invalid ScyllaDB config: {0}")]
    Config(String),
    /// No contact point answered (dependency: retry with backoff).
    #[error("cannot connect to ScyllaDB: {0}")]
    Connect(Box<NewSessionError>),
    /// A statement could not be prepared; usually the schema is missing or older than this
    /// Herald (run `herald migrate`).
    #[error("cannot prepare `{statement}` (has `herald migrate` run?): {source}")]
    Prepare {
        /// The CQL text.
        statement: String,
        /// The driver's error.
        source: Box<PrepareError>,
    },
    /// A prepared `USING TTL ?` statement came back without a `[ttl]` bind marker: the server
    /// would store the row forever.
    #[error("the server reports no TTL bind marker for `{0}`")]
    MissingTtlMarker(String),
    /// A request failed (dependency: timeouts, unavailable replicas; retry with backoff).
    #[error("CQL request failed: {0}")]
    Execution(Box<ExecutionError>),
    /// A conditional write kept losing to concurrent ones (dependency: retry).
    #[error("contention: {0}")]
    Contention(String),
    /// A result this version cannot decode (ours: a schema mismatch or corrupt value).
    #[error("unreadable CQL result: {0}")]
    Decode(String),
    /// `herald migrate` found an applied migration whose file has since changed.
    #[error(
        "migration {version} ({name}) was applied with checksum {applied} but the file now has \
         {current}; applied migrations must not be edited: add a new one"
    )]
    ChecksumMismatch {
        /// The migration's number.
        version: u32,
        /// The migration's file name.
        name: String,
        /// The checksum recorded when it was applied.
        applied: String,
        /// The checksum of the file in this build.
        current: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<NewSessionError> for Error {
    fn from(e: NewSessionError) -> Self {
        Error::Connect(Box::new(e))
    }
}

impl From<ExecutionError> for Error {
    fn from(e: ExecutionError) -> Self {
        Error::Execution(Box::new(e))
    }
}

impl From<IntoRowsResultError> for Error {
    fn from(e: IntoRowsResultError) -> Self {
        Error::Decode(e.to_string())
    }
}

impl From<RowsError> for Error {
    fn from(e: RowsError) -> Self {
        Error::Decode(e.to_string())
    }
}

impl From<DeserializationError> for Error {
    fn from(e: DeserializationError) -> Self {
        Error::Decode(e.to_string())
    }
}

impl From<MaybeFirstRowError> for Error {
    fn from(e: MaybeFirstRowError) -> Self {
        Error::Decode(e.to_string())
    }
}

impl From<Error> for StoreError {
    /// By meaning: what a retry can fix (a failed request, no contact point, a lost race) is
    /// [`StoreError::Unavailable`]; data this version cannot read, an edited migration and a
    /// server that would not do what the data needs (no TTL marker, no lightweight
    /// transactions) are [`StoreError::Corrupt`]; a statement that does not prepare or a
    /// request this crate built wrong, and a config that passed `ScyllaConfig::from_url`'s
    /// checks yet is unusable, are ours: [`StoreError::Internal`].
    fn from(e: Error) -> Self {
        match e {
            Error::Execution(ref inner) if matches!(**inner, ExecutionError::BadQuery(_)) => {
                StoreError::Internal(e.to_string())
            }
            Error::Connect(_) | Error::Execution(_) | Error::Contention(_) => {
                StoreError::Unavailable(e.to_string())
            }
            Error::Decode(_) | Error::ChecksumMismatch { .. } | Error::MissingTtlMarker(_) => {
                StoreError::Corrupt(e.to_string())
            }
            Error::Config(_) | Error::Prepare { .. } => StoreError::Internal(e.to_string()),
        }
    }
}

/// A row that breaks an invariant of ours (an unknown enum symbol, a missing column).
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Decode(what.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use scylla::errors::BadQuery;

    use super::*;

    #[test]
    fn driver_errors_by_meaning() {
        let timeout = Error::from(ExecutionError::RequestTimeout(Duration::from_secs(1)));
        assert!(matches!(
            StoreError::from(timeout),
            StoreError::Unavailable(_)
        ));
        let lost = Error::Contention("the ledger row kept changing".into());
        assert!(StoreError::from(lost).is_retriable());
        let built_wrong = Error::from(ExecutionError::BadQuery(BadQuery::PartitionKeyExtraction));
        assert!(matches!(
            StoreError::from(built_wrong),
            StoreError::Internal(_)
        ));
        for e in [
            corrupt("unknown channel"),
            Error::MissingTtlMarker("INSERT ...".into()),
            Error::ChecksumMismatch {
                version: 2,
                name: "0002".into(),
                applied: "a".into(),
                current: "b".into(),
            },
        ] {
            assert!(matches!(StoreError::from(e), StoreError::Corrupt(_)));
        }
        assert!(matches!(
            StoreError::from(Error::Config("at least one node is needed".into())),
            StoreError::Internal(_)
        ));
    }
}
