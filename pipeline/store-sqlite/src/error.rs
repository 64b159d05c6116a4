//! This crate's errors, and how SQLite's map onto the trait's [`StoreError`] ([`classify`]).

use std::fmt::Display;
use std::path::Path;

use herald_store::StoreError;
use rusqlite::ErrorCode;

/// What the operations return inside this crate: SQLite's own error, classified when it leaves
/// the crate, or one already classified (a refused page token, a poisoned lock, …).
#[derive(Debug)]
pub(crate) enum Error {
    /// SQLite failed.
    Sql(rusqlite::Error),
    /// Anything else, already classified.
    Store(StoreError),
}

/// Result alias for this crate's operations.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Sql(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Sql(e) => classify(e),
            Error::Store(e) => e,
        }
    }
}

/// A file operation failed: the disk's fault, and a retry may succeed.
pub(crate) fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Store(StoreError::Unavailable(format!(
        "{what} {}: {e}",
        path.display()
    )))
}

/// Something changed under us (a file removed by a concurrent retention pass): a retry reads
/// the new state.
pub(crate) fn vanished(what: impl Display) -> Error {
    Error::Store(StoreError::Unavailable(format!("{what} vanished")))
}

/// A defect of ours.
pub(crate) fn internal(what: impl Display) -> Error {
    Error::Store(StoreError::Internal(what.to_string()))
}

/// SQLite's error by what the caller can do about it: retry (busy, locked, I/O, a full disk,
/// no memory), give up on the data (a corrupt file, a value this version cannot read), or stop
/// (everything else is a statement or an API used wrongly: ours).
pub(crate) fn classify(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    let text = e.to_string();
    match &e {
        E::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::OutOfMemory
            | ErrorCode::SchemaChanged
            | ErrorCode::OperationAborted
            | ErrorCode::OperationInterrupted => StoreError::Unavailable(text),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(text),
            _ => StoreError::Internal(text),
        },
        // A stored value of the wrong type, out of range, not UTF-8, or an unknown symbol.
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::InvalidColumnType(..) => StoreError::Corrupt(text),
        _ => StoreError::Internal(text),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rusqlite::{Connection, ffi};

    use super::*;

    fn code(code: std::ffi::c_int) -> StoreError {
        classify(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
    }

    #[test]
    fn sqlite_codes_by_meaning() {
        for c in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_PROTOCOL,
            ffi::SQLITE_PERM,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_SCHEMA,
            ffi::SQLITE_ABORT,
            ffi::SQLITE_INTERRUPT,
        ] {
            assert!(matches!(code(c), StoreError::Unavailable(_)), "{c}");
        }
        for c in [ffi::SQLITE_CORRUPT, ffi::SQLITE_NOTADB] {
            assert!(matches!(code(c), StoreError::Corrupt(_)), "{c}");
        }
        for c in [
            ffi::SQLITE_MISUSE,
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_MISMATCH,
            ffi::SQLITE_RANGE,
            ffi::SQLITE_TOOBIG,
            ffi::SQLITE_INTERNAL,
            ffi::SQLITE_AUTH,
        ] {
            assert!(matches!(code(c), StoreError::Internal(_)), "{c}");
        }
    }

    #[test]
    fn a_locked_database_is_worth_retrying() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other
            .busy_timeout(std::time::Duration::from_millis(1))
            .unwrap();
        let err = other.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        let err = classify(err);
        assert!(err.is_retriable(), "{err:?}");
    }

    #[test]
    fn unreadable_values_are_corrupt_and_bad_statements_ours() {
        let c = Connection::open_in_memory().unwrap();
        let text_as_number = c
            .query_row("SELECT 'x'", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(matches!(classify(text_as_number), StoreError::Corrupt(_)));
        let too_wide = c
            .query_row("SELECT 300", [], |r| r.get::<_, u8>(0))
            .unwrap_err();
        assert!(matches!(classify(too_wide), StoreError::Corrupt(_)));
        let syntax = c.execute("SELEC nonsense", []).unwrap_err();
        assert!(matches!(classify(syntax), StoreError::Internal(_)));
        let no_rows = c
            .query_row("SELECT 1 WHERE 0", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(matches!(classify(no_rows), StoreError::Internal(_)));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, vec![7_u8; 4_096]).unwrap();
        let c = Connection::open(&path).unwrap();
        let err = c
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_err();
        assert!(matches!(classify(err), StoreError::Corrupt(_)));
    }
}
