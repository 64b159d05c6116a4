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
    /// The trait's error type has no CQL variant yet: transient driver failures become
    /// [`StoreError::Worker`] (retry), undecodable data and edited migrations
    /// [`StoreError::Corrupt`].
    fn from(e: Error) -> Self {
        match e {
            Error::Decode(_) | Error::ChecksumMismatch { .. } | Error::MissingTtlMarker(_) => {
                StoreError::Corrupt(e.to_string())
            }
            Error::Config(_)
            | Error::Connect(_)
            | Error::Prepare { .. }
            | Error::Execution(_)
            | Error::Contention(_) => StoreError::Worker(e.to_string()),
        }
    }
}

/// A row that breaks an invariant of ours (an unknown enum symbol, a missing column).
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Decode(what.to_string())
}
