//! A provider that records every call it receives, in a SQLite file, and behaves like a provider
//! that honours idempotency keys (webhook receivers with `Idempotency-Key`, most e-mail and SMS
//! APIs): every call is logged in `calls`, but a delivery id it has already delivered is not
//! delivered again (`deliveries` has one row per id) and the first message id is returned.
//! The crash tests count both: repeated calls measure the provider window, repeated deliveries
//! must never happen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_schemas::Dispatch;
use rusqlite::{Connection, params};

use crate::{Connector, Outcome};

/// Errors opening or reading the recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// SQLite failed.
    #[error("recording provider: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking worker failed.
    #[error("recording provider worker: {0}")]
    Worker(String),
}

/// One recorded provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RecordedCall {
    pub delivery_id: String,
    pub notification_id: String,
    pub channel: String,
    pub address: String,
    pub title: String,
    pub body: String,
    /// When the provider received the call (ms since the epoch).
    pub recorded_at_ms: i64,
}

/// Records calls in a SQLite file shared by every deliver process.
#[derive(Clone)]
pub struct RecordingProvider {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn connect(path: &Path) -> Result<Connection, RecordingError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| RecordingError::Worker(format!("create {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Survives a killed process (what the crash tests need) without an fsync per call; a
    // stand-in provider need not survive power loss.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS calls (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             delivery_id TEXT NOT NULL, notification_id TEXT NOT NULL, channel TEXT NOT NULL,
             address TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL,
             requested_at_ms INTEGER NOT NULL, recorded_at_ms INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS deliveries (
             delivery_id TEXT PRIMARY KEY, first_call INTEGER NOT NULL) WITHOUT ROWID;",
    )?;
    Ok(conn)
}

impl RecordingProvider {
    /// Opens (creating) the recording at `path`.
    pub fn open(path: &Path) -> Result<RecordingProvider, RecordingError> {
        Ok(RecordingProvider {
            conn: Arc::new(Mutex::new(connect(path)?)),
            path: path.to_owned(),
        })
    }

    /// Every call recorded so far, oldest first (read with a fresh connection, so it sees the
    /// writes of other processes).
    pub fn calls(&self) -> Result<Vec<RecordedCall>, RecordingError> {
        read_calls(&self.path)
    }
}

/// Reads every call recorded in the file at `path`, oldest first.
pub fn read_calls(path: &Path) -> Result<Vec<RecordedCall>, RecordingError> {
    let conn = connect(path)?;
    let mut stmt = conn.prepare(
        "SELECT delivery_id, notification_id, channel, address, title, body, recorded_at_ms
         FROM calls ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RecordedCall {
            delivery_id: r.get(0)?,
            notification_id: r.get(1)?,
            channel: r.get(2)?,
            address: r.get(3)?,
            title: r.get(4)?,
            body: r.get(5)?,
            recorded_at_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Logs one call and delivers its id once; returns the call that delivered it (its message id).
fn record_call(conn: &mut Connection, d: &Dispatch, now: i64) -> rusqlite::Result<i64> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO calls (delivery_id, notification_id, channel, address, title, body,
             requested_at_ms, recorded_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            d.delivery_id,
            d.notification_id,
            d.channel.as_str(),
            d.address,
            d.title,
            d.body,
            d.requested_at_ms,
            now
        ],
    )?;
    let seq = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO deliveries (delivery_id, first_call) VALUES (?1, ?2)
         ON CONFLICT (delivery_id) DO NOTHING",
        params![d.delivery_id, seq],
    )?;
    let first = tx.query_row(
        "SELECT first_call FROM deliveries WHERE delivery_id = ?1",
        params![d.delivery_id],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(first)
}

/// End-to-end latencies (provider call time − request time, ms) of calls after call `after_seq`,
/// and the highest call number seen.
pub fn latencies_since(path: &Path, after_seq: i64) -> Result<(Vec<i64>, i64), RecordingError> {
    let conn = connect(path)?;
    let mut stmt = conn.prepare(
        "SELECT seq, recorded_at_ms - requested_at_ms FROM calls WHERE seq > ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map(params![after_seq], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let last = rows.last().map_or(after_seq, |r| r.0);
    Ok((rows.into_iter().map(|r| r.1).collect(), last))
}

/// As [`latencies_since`], only of calls whose title is `title` (one kind of traffic among
/// others), with how many there were in all (since the start).
pub fn latencies_titled(
    path: &Path,
    title: &str,
    after_seq: i64,
) -> Result<(Vec<i64>, u64), RecordingError> {
    let conn = connect(path)?;
    let mut stmt = conn.prepare(
        "SELECT recorded_at_ms - requested_at_ms FROM calls
         WHERE seq > ?1 AND title = ?2 ORDER BY seq",
    )?;
    let ms = stmt
        .query_map(params![after_seq, title], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let all: i64 = conn.query_row(
        "SELECT COUNT(DISTINCT delivery_id) FROM calls WHERE title = ?1",
        params![title],
        |r| r.get(0),
    )?;
    Ok((ms, all.max(0) as u64))
}

/// How many calls the provider has received (repeats included).
pub fn call_count(path: &Path) -> Result<u64, RecordingError> {
    let conn = connect(path)?;
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// How many distinct deliveries the provider accepted (repeated idempotency keys count once).
pub fn delivered_ids(path: &Path) -> Result<u64, RecordingError> {
    let conn = connect(path)?;
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

#[async_trait]
impl Connector for RecordingProvider {
    async fn send(&self, d: &Dispatch) -> Outcome {
        let conn = Arc::clone(&self.conn);
        let d = d.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_millis() as i64)
            .unwrap_or_default();
        let written = tokio::task::spawn_blocking(move || -> Result<i64, String> {
            let mut conn = conn.lock().map_err(|_| "mutex poisoned".to_owned())?;
            record_call(&mut conn, &d, now).map_err(|e| e.to_string())
        })
        .await;
        match written {
            Ok(Ok(seq)) => Outcome::Delivered {
                provider_message_id: Some(format!("rec-{seq}")),
            },
            Ok(Err(e)) => Outcome::retry(format!("recording failed: {e}")),
            Err(e) => Outcome::retry(format!("recording worker failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use herald_schemas::{Channel, Priority};

    use super::*;

    #[tokio::test]
    async fn records_every_call_and_delivers_each_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.db");
        let provider = RecordingProvider::open(&path).unwrap();
        let d = Dispatch {
            delivery_id: "d1".into(),
            notification_id: "n1".into(),
            attempt: 1,
            tenant: "t".into(),
            recipient_user_id: "u".into(),
            category: "c".into(),
            priority: Priority::Normal,
            channel: Channel::Email,
            address: "a@example.com".into(),
            title: "hi".into(),
            body: "there".into(),
            action_url: None,
            requested_at_ms: 1,
            not_before_ms: None,
            last_error: None,
        };
        let first = provider.send(&d).await;
        let second = provider.send(&d).await;
        assert!(matches!(first, Outcome::Delivered { .. }));
        assert_eq!(
            first, second,
            "a repeated idempotency key gets the first message id"
        );
        let other = provider
            .send(&Dispatch {
                delivery_id: "d2".into(),
                ..d
            })
            .await;
        assert_ne!(first, other);
        let calls = read_calls(&path).unwrap();
        assert_eq!(calls.len(), 3, "every call is logged");
        assert_eq!(calls[0].address, "a@example.com");
        assert_eq!(delivered_ids(&path).unwrap(), 2);
    }
}
