//! The month files: `path.months/YYYY-MM.db`, one per calendar month (UTC) by each row's own
//! time, opened on first use and kept open; which of them a read walks, and in what order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use herald_store::Month;
use herald_store::retention::DAY_MS;
use rusqlite::Connection;

use crate::error::{Result, internal, vanished};
use crate::files::{MONTH_SCHEMA, Shared, Sync, lock, open_file};
use crate::store::Inner;

impl Inner {
    pub fn month_path(&self, m: Month) -> PathBuf {
        self.months_dir.join(format!("{m}.db"))
    }

    /// The month's connection, opening the file if it exists (or `create`).
    pub fn month(&self, m: Month, create: bool) -> Result<Option<Shared>> {
        let mut months = lock_map(&self.months)?;
        if let Some(conn) = months.get(&m) {
            return Ok(Some(Arc::clone(conn)));
        }
        let path = self.month_path(m);
        if !create && !path.exists() {
            return Ok(None);
        }
        // Month files take every pipeline write (timelines, inbox, ledger, idempotency keys):
        // NORMAL, see `Sync` and ARCHITECTURE.md for the trade-off.
        let conn = Arc::new(Mutex::new(open_file(&path, MONTH_SCHEMA, Sync::Normal)?));
        months.insert(m, Arc::clone(&conn));
        Ok(Some(conn))
    }

    /// The month's connection, if its file exists; a file found a moment ago that is gone now
    /// (a concurrent retention pass) is worth a retry.
    pub fn existing_month(&self, m: Month) -> Result<Shared> {
        self.month(m, false)?
            .ok_or_else(|| vanished(format!("month file {m}")))
    }

    /// Runs `f` on the month holding time `at_ms`, creating its file.
    pub fn in_month<T>(&self, at_ms: i64, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .month(Month::of_ms(at_ms), true)?
            .ok_or_else(|| internal("a month file opened for writing is missing"))?;
        f(&*lock(&conn)?)
    }

    /// The existing month files overlapping `[from_ms, to_ms]` and still kept, newest first,
    /// opened as the iteration reaches them (a page that fills up in the newest month never
    /// looks at the others).
    pub fn months_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = Result<(Month, Shared)>> + '_ {
        // Nothing is filed more than a day ahead of now: a far-future bound walks no further.
        let to_ms = to_ms.min(self.now().saturating_add(DAY_MS));
        Month::newest_first(from_ms.max(self.oldest_kept()), to_ms)
            .filter_map(|m| self.month(m, false).transpose().map(|c| c.map(|c| (m, c))))
    }

    /// Up to `want` rows of a listing ordered newest first by (ms, id), strictly below `cursor`,
    /// from the month files overlapping `[from_ms, to_ms]`: `slice` reads one month file below a
    /// cursor; months are read newest first until enough rows are found.
    pub fn newest_first_across_months<T>(
        &self,
        (from_ms, to_ms): (i64, i64),
        mut cursor: (i64, String),
        want: usize,
        key: impl Fn(&T) -> (i64, String),
        mut slice: impl FnMut(&Connection, &(i64, String), usize) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        for found in self.months_between(from_ms, to_ms) {
            let (_, conn) = found?;
            rows.extend(slice(&*lock(&conn)?, &cursor, want - rows.len())?);
            if rows.len() >= want {
                break;
            }
            if let Some(last) = rows.last() {
                cursor = key(last);
            }
        }
        Ok(rows)
    }

    /// Every existing month file still kept, newest first.
    pub fn kept_months(&self) -> Result<Vec<(Month, Shared)>> {
        // A day of slack past now: rows stamped slightly ahead (clock skew) stay visible.
        self.months_between(self.oldest_kept(), self.now() + DAY_MS)
            .collect()
    }

    /// What `f` finds in the month of `at_ms` or the month before, and where: attempts and
    /// keys are remembered for at least a month.
    pub fn recent_two<T>(
        &self,
        at_ms: i64,
        mut f: impl FnMut(&Connection) -> Result<Option<T>>,
    ) -> Result<Option<(Month, T)>> {
        let m = Month::of_ms(at_ms);
        for m in [m, m.prev()] {
            if let Some(conn) = self.month(m, false)?
                && let Some(found) = f(&*lock(&conn)?)?
            {
                return Ok(Some((m, found)));
            }
        }
        Ok(None)
    }
}

/// The open month files.
pub(crate) fn lock_map(
    m: &Mutex<HashMap<Month, Shared>>,
) -> Result<MutexGuard<'_, HashMap<Month, Shared>>> {
    m.lock().map_err(|_| internal("month map mutex poisoned"))
}
