//! One SQLite file: how it is opened (WAL, busy timeout, how its commits reach the disk), its
//! schema (`schema/*.sql`) and layout version, and the lock around its connection.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use herald_store::StoreError;
use rusqlite::Connection;

use crate::error::{Result, internal};

/// The main file: what does not age, and the outbox.
pub(crate) const MAIN_SCHEMA: &str = include_str!("../schema/main.sql");
/// A month file: every row that ages, filed by its own time.
pub(crate) const MONTH_SCHEMA: &str = include_str!("../schema/month.sql");
/// `PRAGMA user_version` of files in this layout.
const LAYOUT_VERSION: i64 = 3;

/// A connection shared by the operations (one per file).
pub(crate) type Shared = Arc<Mutex<Connection>>;

/// How a file's commits reach the disk. `Full`: every commit is on disk before it returns
/// (survives power loss; ~4,200 single-row commits/s measured here, against ~38,700 for
/// `Normal`, which survives a killed process but may lose the last commits to a power loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    Normal,
    Full,
}

/// How long opening a file waits for other processes opening it at the same moment.
const OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens (creating if needed) the file at `path` and applies `schema`; refuses a file in
/// another layout. While another process is creating the same file, SQLite can answer "busy"
/// without waiting (switching a new file to WAL, the first WAL recovery): the whole open is
/// tried again for up to [`OPEN_PATIENCE`].
pub(crate) fn open_file(path: &Path, schema: &str, sync: Sync) -> Result<Connection> {
    let deadline = std::time::Instant::now() + OPEN_PATIENCE;
    loop {
        match try_open(path, schema, sync) {
            Err(crate::error::Error::Sql(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn try_open(path: &Path, schema: &str, sync: Sync) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match sync {
        Sync::Normal => "NORMAL",
        Sync::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // A file in this layout: the schema's statements only create what is missing.
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == LAYOUT_VERSION {
        conn.execute_batch(schema)?;
        return Ok(conn);
    }
    // Checking the layout and applying the schema is one write transaction: several processes
    // opening a new file at once (the stages of `herald run` on a fresh store) take turns,
    // and none sees another's half-made schema.
    let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        let tables: i64 = tx.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(StoreError::Corrupt(format!(
                "{} was written by an older Herald (one-file layout); move it away or run \
                 `make clean`",
                path.display()
            ))
            .into());
        }
    } else if version == 2 {
        upgrade_from_2(&tx)?;
    } else if version != LAYOUT_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} has layout version {version}; this Herald reads version {LAYOUT_VERSION} (move \
                 the data directory away, or `make clean` for local data)",
            path.display()
        ))
        .into());
    }
    tx.execute_batch(schema)?;
    tx.pragma_update(None, "user_version", LAYOUT_VERSION)?;
    tx.commit()?;
    Ok(conn)
}

/// Layout 2 → 3: month files' inbox rows get their write-order number (`feed_seq`, numbered
/// in delivery order for the rows already there), and the delivery-order index goes.
fn upgrade_from_2(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let has_inbox: i64 = tx.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'inbox'",
        [],
        |r| r.get(0),
    )?;
    if has_inbox > 0 {
        tx.execute_batch(
            "ALTER TABLE inbox ADD COLUMN feed_seq INTEGER NOT NULL DEFAULT 0;
             UPDATE inbox SET feed_seq = numbered.n
               FROM (SELECT tenant, recipient_user_id, notification_id,
                            ROW_NUMBER() OVER (ORDER BY delivered_at_ms, notification_id) AS n
                       FROM inbox) AS numbered
              WHERE inbox.tenant = numbered.tenant
                AND inbox.recipient_user_id = numbered.recipient_user_id
                AND inbox.notification_id = numbered.notification_id;
             DROP INDEX IF EXISTS inbox_by_delivery;",
        )?;
    }
    Ok(())
}

/// The connection, for one operation.
pub(crate) fn lock(conn: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>> {
    conn.lock()
        .map_err(|_| internal("connection mutex poisoned"))
}
