//! The embedded backend, the single-machine default (`sqlite://path`): SQLite files in WAL mode,
//! so the query service reads while the stages write, from other processes. SQLite is bundled
//! into the binary, needs no server, survives restarts, and gives the upserts and ordered range
//! scans the trait needs.
//!
//! Layout: `path` holds what does not age (contacts, opt-outs, templates, the outbox);
//! `path.months/YYYY-MM.db` holds everything that does, one file per calendar month by the row's
//! own time (see `sqlite/month.sql`). Retention deletes whole month files once the entire month
//! is older than the archive tier, the embedded form of ScyllaDB's TTL + time-window compaction;
//! reads also hide rows older than the tier, so what callers see does not depend on when a pass
//! last ran.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_schemas::{Channel, DeliveryState, Priority};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tracing::info;

use crate::retention::{Clock, Month, Retention, SystemClock};
use crate::{
    Contact, DeliveryEventRecord, FailurePage, FailureQuery, FailureRecord, IdempotencyClaim,
    IdempotencyRecord, InboxEntryRecord, InboxPage, InboxQuery, LedgerBegin, LedgerEntry,
    NotificationRecord, OutboxRecord, RecipientProfile, Result, RetentionReport, Store, StoreError,
    TemplateRecord, is_failure, token,
};

const MAIN_SCHEMA: &str = include_str!("sqlite/main.sql");
const MONTH_SCHEMA: &str = include_str!("sqlite/month.sql");
/// `PRAGMA user_version` of files in this layout.
const LAYOUT_VERSION: i64 = 2;

type Shared = Arc<Mutex<Connection>>;

/// SQLite files shared by every Herald process on the machine.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    main: Mutex<Connection>,
    months_dir: PathBuf,
    months: Mutex<HashMap<Month, Shared>>,
    retention: Retention,
    clock: Arc<dyn Clock>,
}

/// How a file's commits reach the disk. `Full`: every commit is on disk before it returns
/// (survives power loss; ~4,200 single-row commits/s measured here, against ~38,700 for
/// `Normal`, which survives a killed process but may lose the last commits to a power loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Normal,
    Full,
}

fn open_file(path: &Path, schema: &str, sync: Sync) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match sync {
        Sync::Normal => "NORMAL",
        Sync::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(StoreError::Corrupt(format!(
                "{} was written by an older Herald (one-file layout); move it away or run \
                 `make clean`",
                path.display()
            )));
        }
    } else if version != LAYOUT_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} has layout version {version}; this Herald reads version {LAYOUT_VERSION}",
            path.display()
        )));
    }
    conn.execute_batch(schema)?;
    conn.pragma_update(None, "user_version", LAYOUT_VERSION)?;
    Ok(conn)
}

fn lock(conn: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>> {
    conn.lock()
        .map_err(|_| StoreError::Worker("connection mutex poisoned".into()))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with the default retention and the wall
    /// clock.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, Retention::default(), Arc::new(SystemClock)).await
    }

    /// Opens the store at `path` with explicit retention and clock (tests move the clock).
    pub async fn open_with(
        path: &Path,
        retention: Retention,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteStore> {
        let path = path.to_owned();
        let (main, months_dir) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut months_dir = path.clone().into_os_string();
            months_dir.push(".months");
            let months_dir = PathBuf::from(months_dir);
            std::fs::create_dir_all(&months_dir)
                .map_err(|e| StoreError::Worker(format!("create {}: {e}", months_dir.display())))?;
            // The outbox (accepted requests Kafka has not taken yet) lives here: every commit
            // is on disk before the ingress answers ACCEPTED.
            Ok((open_file(&path, MAIN_SCHEMA, Sync::Full)?, months_dir))
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))??;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                main: Mutex::new(main),
                months_dir,
                months: Mutex::new(HashMap::new()),
                retention,
                clock,
            }),
        })
    }

    /// Runs `f` on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// Runs `f` with the main file's connection on the blocking pool.
    async fn with_main<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.with(move |inner| Ok(f(&*lock(&inner.main)?)?)).await
    }
}

impl Inner {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn oldest_kept(&self) -> i64 {
        self.retention.oldest_kept_ms(self.now())
    }

    fn month_path(&self, m: Month) -> PathBuf {
        self.months_dir.join(format!("{m}.db"))
    }

    /// The month's connection, opening the file if it exists (or `create`).
    fn month(&self, m: Month, create: bool) -> Result<Option<Shared>> {
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

    /// Runs `f` on the month holding time `at_ms`, creating its file.
    fn in_month<T>(&self, at_ms: i64, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .month(Month::of_ms(at_ms), true)?
            .ok_or_else(|| StoreError::Worker("month file vanished".into()))?;
        f(&*lock(&conn)?)
    }

    /// The existing month files overlapping `[from_ms, to_ms]` and still kept, newest first,
    /// opened as the iteration reaches them (a page that fills up in the newest month never
    /// looks at the others).
    fn months_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = Result<(Month, Shared)>> + '_ {
        // Nothing is filed more than a day ahead of now: a far-future bound walks no further.
        let to_ms = to_ms.min(self.now().saturating_add(crate::retention::DAY_MS));
        Month::newest_first(from_ms.max(self.oldest_kept()), to_ms)
            .filter_map(|m| self.month(m, false).transpose().map(|c| c.map(|c| (m, c))))
    }

    /// Up to `want` rows of a listing ordered newest first by (ms, id), strictly below `cursor`,
    /// from the month files overlapping `[from_ms, to_ms]`: `slice` reads one month file below a
    /// cursor; months are read newest first until enough rows are found.
    fn newest_first_across_months<T>(
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
    fn kept_months(&self) -> Result<Vec<(Month, Shared)>> {
        // A day of slack past now: rows stamped slightly ahead (clock skew) stay visible.
        self.months_between(self.oldest_kept(), self.now() + crate::retention::DAY_MS)
            .collect()
    }

    /// What `f` finds in the month of `at_ms` or the month before, and where: attempts and
    /// keys are remembered for at least a month.
    fn recent_two<T>(
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

fn lock_map(
    m: &Mutex<HashMap<Month, Shared>>,
) -> Result<std::sync::MutexGuard<'_, HashMap<Month, Shared>>> {
    m.lock()
        .map_err(|_| StoreError::Worker("month map mutex poisoned".into()))
}

fn text_enum<T>(idx: usize, value: String, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    parse(&value).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown symbol {value:?}").into(),
        )
    })
}

fn opt_channel(idx: usize, value: Option<String>) -> rusqlite::Result<Option<Channel>> {
    value.map(|c| text_enum(idx, c, Channel::parse)).transpose()
}

fn notification_row(r: &Row<'_>) -> rusqlite::Result<NotificationRecord> {
    Ok(NotificationRecord {
        tenant: r.get(0)?,
        notification_id: r.get(1)?,
        recipient_user_id: r.get(2)?,
        category: r.get(3)?,
        priority: text_enum(4, r.get(4)?, Priority::parse)?,
        created_at_ms: r.get(5)?,
    })
}

const EVENT_COLUMNS: &str = "tenant, notification_id, result_id, recipient_user_id, category, channel, state, reason, at_ms";

fn event_row(r: &Row<'_>) -> rusqlite::Result<DeliveryEventRecord> {
    Ok(DeliveryEventRecord {
        tenant: r.get(0)?,
        notification_id: r.get(1)?,
        result_id: r.get(2)?,
        recipient_user_id: r.get(3)?,
        category: r.get(4)?,
        channel: opt_channel(5, r.get(5)?)?,
        state: text_enum(6, r.get(6)?, DeliveryState::parse)?,
        reason: r.get(7)?,
        at_ms: r.get(8)?,
    })
}

fn failure_row(r: &Row<'_>) -> rusqlite::Result<FailureRecord> {
    let e = event_row(r)?;
    Ok(FailureRecord {
        tenant: e.tenant,
        notification_id: e.notification_id,
        result_id: e.result_id,
        recipient_user_id: e.recipient_user_id,
        category: e.category,
        channel: e.channel,
        state: e.state,
        reason: e.reason,
        at_ms: e.at_ms,
    })
}

const INBOX_COLUMNS: &str = "tenant, recipient_user_id, notification_id, category, title, body, \
     action_url, created_at_ms, delivered_at_ms, read_at_ms";

fn inbox_row(r: &Row<'_>) -> rusqlite::Result<InboxEntryRecord> {
    Ok(InboxEntryRecord {
        tenant: r.get(0)?,
        recipient_user_id: r.get(1)?,
        notification_id: r.get(2)?,
        category: r.get(3)?,
        title: r.get(4)?,
        body: r.get(5)?,
        action_url: r.get(6)?,
        created_at_ms: r.get(7)?,
        delivered_at_ms: r.get(8)?,
        read_at_ms: r.get(9)?,
    })
}

fn template_row(r: &Row<'_>) -> rusqlite::Result<TemplateRecord> {
    Ok(TemplateRecord {
        tenant: r.get(0)?,
        template_id: r.get(1)?,
        locale: r.get(2)?,
        title: r.get(3)?,
        body: r.get(4)?,
        action_url: r.get(5)?,
    })
}

fn ledger_lookup(c: &Connection, id: &str) -> rusqlite::Result<Option<Option<LedgerEntry>>> {
    c.prepare_cached(
        "SELECT delivery_id, state, reason, provider_message_id, at_ms
         FROM delivery_ledger WHERE delivery_id = ?1",
    )?
    .query_row(params![id], |r| {
        let state: Option<String> = r.get(1)?;
        let Some(state) = state else { return Ok(None) };
        Ok(Some(LedgerEntry {
            delivery_id: r.get(0)?,
            state: text_enum(1, state, DeliveryState::parse)?,
            reason: r.get(2)?,
            provider_message_id: r.get(3)?,
            at_ms: r.get::<_, Option<i64>>(4)?.unwrap_or_default(),
        }))
    })
    .optional()
}

/// Reads up to `limit` inbox rows from one month, below the cursor, newest first.
fn inbox_slice(
    c: &Connection,
    q: &InboxQuery,
    cursor: &(i64, String),
    oldest_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<InboxEntryRecord>> {
    c.prepare_cached(&format!(
        "SELECT {INBOX_COLUMNS} FROM inbox
         WHERE tenant = ?1 AND recipient_user_id = ?2
           AND (created_at_ms < ?3 OR (created_at_ms = ?3 AND notification_id < ?4))
           AND created_at_ms >= ?5
           AND (?6 = 0 OR read_at_ms IS NULL) AND (?7 IS NULL OR category = ?7)
         ORDER BY created_at_ms DESC, notification_id DESC LIMIT ?8"
    ))?
    .query_map(
        params![
            q.tenant,
            q.recipient_user_id,
            cursor.0,
            cursor.1,
            oldest_ms,
            q.unread_only,
            q.category,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        inbox_row,
    )?
    .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_notification(&self, n: &NotificationRecord) -> Result<()> {
        let n = n.clone();
        self.with(move |inner| {
            if !inner.retention.keeps(n.created_at_ms, inner.now()) {
                return Ok(());
            }
            inner.in_month(n.created_at_ms, |c| {
                c.prepare_cached(
                    "INSERT INTO notifications (tenant, notification_id, recipient_user_id,
                         category, priority, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (tenant, notification_id) DO NOTHING",
                )?
                .execute(params![
                    n.tenant,
                    n.notification_id,
                    n.recipient_user_id,
                    n.category,
                    n.priority.as_str(),
                    n.created_at_ms
                ])?;
                Ok(())
            })
        })
        .await
    }

    async fn record_delivery_event(&self, e: &DeliveryEventRecord) -> Result<()> {
        let e = e.clone();
        self.with(move |inner| {
            if !inner.retention.keeps(e.at_ms, inner.now()) {
                return Ok(());
            }
            inner.in_month(e.at_ms, |c| {
                let row = params![
                    e.tenant,
                    e.notification_id,
                    e.result_id,
                    e.recipient_user_id,
                    e.category,
                    e.channel.map(Channel::as_str),
                    e.state.as_str(),
                    e.reason,
                    e.at_ms
                ];
                c.prepare_cached(&format!(
                    "INSERT INTO delivery_events ({EVENT_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (tenant, notification_id, result_id) DO NOTHING"
                ))?
                .execute(row)?;
                if is_failure(e.state) {
                    c.prepare_cached(&format!(
                        "INSERT INTO failures ({EVENT_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (tenant, at_ms, result_id) DO NOTHING"
                    ))?
                    .execute(row)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn get_notification(
        &self,
        tenant: &str,
        notification_id: &str,
    ) -> Result<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>> {
        let (tenant, id) = (tenant.to_owned(), notification_id.to_owned());
        self.with(move |inner| {
            let months = inner.kept_months()?;
            let mut found = None;
            for (_, conn) in &months {
                found = lock(conn)?
                    .prepare_cached(
                        "SELECT tenant, notification_id, recipient_user_id, category, priority,
                             created_at_ms FROM notifications
                         WHERE tenant = ?1 AND notification_id = ?2",
                    )?
                    .query_row(params![tenant, id], notification_row)
                    .optional()?;
                if found.is_some() {
                    break;
                }
            }
            let Some(n) = found.filter(|n| n.created_at_ms >= inner.oldest_kept()) else {
                return Ok(None);
            };
            // Events happen at or after creation: only the months since can hold them.
            let mut timeline = Vec::new();
            for (m, conn) in &months {
                if *m < Month::of_ms(n.created_at_ms) {
                    break;
                }
                let rows = lock(conn)?
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM delivery_events
                         WHERE tenant = ?1 AND notification_id = ?2"
                    ))?
                    .query_map(params![tenant, id], event_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                timeline.extend(rows);
            }
            timeline.sort_by(|a, b| (a.at_ms, &a.result_id).cmp(&(b.at_ms, &b.result_id)));
            Ok(Some((n, timeline)))
        })
        .await
    }

    async fn list_failures(&self, q: &FailureQuery) -> Result<FailurePage> {
        let q = q.clone();
        self.with(move |inner| {
            let now = inner.now();
            inner.retention.check_readable(q.from_ms, now)?;
            let scope = token::failures_scope(&q);
            // The cursor is exclusive: (at, result id) strictly below it; never further ahead
            // than a day past now, however far `to_ms` reaches.
            let cursor = match q.page_token.as_deref() {
                Some(t) => token::decode(token::FAILURES, &scope, t, now)?,
                None => (q.to_ms.min(now + crate::retention::DAY_MS), String::new()),
            };
            let want = q.page_size.saturating_add(1);
            let mut failures = inner.newest_first_across_months(
                (q.from_ms, cursor.0),
                cursor,
                want,
                |f: &FailureRecord| (f.at_ms, f.result_id.clone()),
                |c, cursor, limit| {
                    Ok(c.prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS} FROM failures
                         WHERE tenant = ?1 AND at_ms >= ?2
                           AND (at_ms < ?3 OR (at_ms = ?3 AND result_id < ?4))
                         ORDER BY at_ms DESC, result_id DESC LIMIT ?5"
                    ))?
                    .query_map(
                        params![
                            q.tenant,
                            q.from_ms,
                            cursor.0,
                            cursor.1,
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        failure_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
                },
            )?;
            let next_page_token =
                token::finish_page(token::FAILURES, &scope, &mut failures, q.page_size, |f| {
                    (f.at_ms, &f.result_id)
                });
            Ok(FailurePage {
                failures,
                next_page_token,
            })
        })
        .await
    }

    async fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> Result<()> {
        let e = e.clone();
        self.with(move |inner| {
            if !inner.retention.keeps(e.created_at_ms, inner.now()) {
                return Ok(());
            }
            inner.in_month(e.created_at_ms, |c| {
                c.prepare_cached(&format!(
                    "INSERT INTO inbox ({INBOX_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (tenant, recipient_user_id, notification_id) DO NOTHING"
                ))?
                .execute(params![
                    e.tenant,
                    e.recipient_user_id,
                    e.notification_id,
                    e.category,
                    e.title,
                    e.body,
                    e.action_url,
                    e.created_at_ms,
                    e.delivered_at_ms,
                    e.read_at_ms
                ])?;
                Ok(())
            })
        })
        .await
    }

    async fn list_inbox(&self, q: &InboxQuery) -> Result<InboxPage> {
        let q = q.clone();
        self.with(move |inner| {
            let now = inner.now();
            let scope = token::inbox_scope(&q);
            let cursor = match (q.page_token.as_deref(), q.before_ms) {
                (Some(t), _) => token::decode(token::INBOX, &scope, t, now)?,
                (None, Some(before)) => (before, String::new()),
                (None, None) => (i64::MAX, String::new()),
            };
            if cursor.0 != i64::MAX {
                inner.retention.check_readable(cursor.0, now)?;
            }
            let oldest = inner.oldest_kept();
            let want = q.page_size.saturating_add(1);
            // A day of slack past now: entries stamped slightly ahead (clock skew) are listed.
            let top = cursor.0.min(now + crate::retention::DAY_MS);
            let mut entries = inner.newest_first_across_months(
                (oldest, top),
                cursor,
                want,
                |e: &InboxEntryRecord| (e.created_at_ms, e.notification_id.clone()),
                |c, cursor, limit| Ok(inbox_slice(c, &q, cursor, oldest, limit)?),
            )?;
            let next_page_token =
                token::finish_page(token::INBOX, &scope, &mut entries, q.page_size, |e| {
                    (e.created_at_ms, &e.notification_id)
                });
            Ok(InboxPage {
                entries,
                next_page_token,
            })
        })
        .await
    }

    async fn inbox_feed(
        &self,
        tenant: &str,
        user_id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntryRecord>> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| {
            // An entry is filed by creation and delivered at or after it; entries created in
            // the month before `since_ms` can still be delivered after it.
            let from = Month::of_ms(since_ms).prev().start_ms();
            let mut entries = Vec::new();
            for found in inner.months_between(from, inner.now() + crate::retention::DAY_MS) {
                let (_, conn) = found?;
                let rows = lock(&conn)?
                    .prepare_cached(&format!(
                        "SELECT {INBOX_COLUMNS} FROM inbox
                         WHERE tenant = ?1 AND recipient_user_id = ?2 AND delivered_at_ms >= ?3
                           AND created_at_ms >= ?4
                         ORDER BY delivered_at_ms, notification_id LIMIT ?5"
                    ))?
                    .query_map(
                        params![
                            tenant,
                            user,
                            since_ms,
                            inner.oldest_kept(),
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        inbox_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                entries.extend(rows);
            }
            entries.sort_by(|a, b| {
                (a.delivered_at_ms, &a.notification_id)
                    .cmp(&(b.delivered_at_ms, &b.notification_id))
            });
            entries.truncate(limit);
            Ok(entries)
        })
        .await
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        notification_ids: &[String],
        at_ms: i64,
    ) -> Result<Vec<InboxEntryRecord>> {
        let (tenant, user, ids) = (
            tenant.to_owned(),
            user_id.to_owned(),
            notification_ids.to_vec(),
        );
        self.with(move |inner| {
            let months = inner.kept_months()?;
            let mut newly = Vec::new();
            for id in ids {
                for (_, conn) in &months {
                    let c = lock(conn)?;
                    let exists = c
                        .prepare_cached(
                            "SELECT 1 FROM inbox
                             WHERE tenant = ?1 AND recipient_user_id = ?2 AND notification_id = ?3",
                        )?
                        .exists(params![tenant, user, id])?;
                    if !exists {
                        continue;
                    }
                    let row = c
                        .prepare_cached(&format!(
                            "UPDATE inbox SET read_at_ms = ?4
                             WHERE tenant = ?1 AND recipient_user_id = ?2 AND notification_id = ?3
                               AND read_at_ms IS NULL AND created_at_ms >= ?5
                             RETURNING {INBOX_COLUMNS}"
                        ))?
                        .query_row(
                            params![tenant, user, id, at_ms, inner.oldest_kept()],
                            inbox_row,
                        )
                        .optional()?;
                    newly.extend(row);
                    break;
                }
            }
            Ok(newly)
        })
        .await
    }

    async fn mark_all_read(
        &self,
        tenant: &str,
        user_id: &str,
        up_to_ms: i64,
        at_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntryRecord>> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| {
            let oldest = inner.oldest_kept();
            let mut newly = Vec::new();
            for found in inner.months_between(oldest, up_to_ms) {
                if newly.len() >= limit {
                    break;
                }
                let (_, conn) = found?;
                let left = i64::try_from(limit - newly.len()).unwrap_or(i64::MAX);
                let rows = lock(&conn)?
                    .prepare_cached(&format!(
                        "UPDATE inbox SET read_at_ms = ?4
                         WHERE tenant = ?1 AND recipient_user_id = ?2 AND notification_id IN (
                             SELECT notification_id FROM inbox
                             WHERE tenant = ?1 AND recipient_user_id = ?2 AND read_at_ms IS NULL
                               AND created_at_ms <= ?3 AND created_at_ms >= ?5
                             LIMIT ?6)
                         RETURNING {INBOX_COLUMNS}"
                    ))?
                    .query_map(
                        params![tenant, user, up_to_ms, at_ms, oldest, left],
                        inbox_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                newly.extend(rows);
            }
            Ok(newly)
        })
        .await
    }

    async fn unread_count(&self, tenant: &str, user_id: &str, cap: u32) -> Result<u32> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| {
            let mut count = 0_u32;
            for (_, conn) in inner.kept_months()? {
                if count >= cap {
                    break;
                }
                let n: i64 = lock(&conn)?
                    .prepare_cached(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM inbox
                             WHERE tenant = ?1 AND recipient_user_id = ?2 AND read_at_ms IS NULL
                               AND created_at_ms >= ?3 LIMIT ?4)",
                    )?
                    .query_row(
                        params![tenant, user, inner.oldest_kept(), cap - count],
                        |r| r.get(0),
                    )?;
                count = count.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            }
            Ok(count.min(cap))
        })
        .await
    }

    async fn recipient_profile(&self, tenant: &str, user_id: &str) -> Result<RecipientProfile> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with_main(move |c| {
            let contacts = c
                .prepare_cached(
                    "SELECT channel, address FROM contacts WHERE tenant = ?1 AND user_id = ?2
                     ORDER BY channel",
                )?
                .query_map(params![tenant, user], |r| {
                    Ok(Contact {
                        channel: text_enum(0, r.get(0)?, Channel::parse)?,
                        address: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let opt_outs = c
                .prepare_cached(
                    "SELECT channel, category FROM opt_outs WHERE tenant = ?1 AND user_id = ?2
                     ORDER BY channel, category",
                )?
                .query_map(params![tenant, user], |r| {
                    Ok((text_enum(0, r.get(0)?, Channel::parse)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(RecipientProfile { contacts, opt_outs })
        })
        .await
    }

    async fn put_contact(&self, tenant: &str, user_id: &str, contact: &Contact) -> Result<()> {
        let (tenant, user, contact) = (tenant.to_owned(), user_id.to_owned(), contact.clone());
        self.with_main(move |c| {
            c.prepare_cached(
                "INSERT INTO contacts (tenant, user_id, channel, address) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, user_id, channel) DO UPDATE SET address = excluded.address",
            )?
            .execute(params![
                tenant,
                user,
                contact.channel.as_str(),
                contact.address
            ])
            .map(drop)
        })
        .await
    }

    async fn set_opt_out(
        &self,
        tenant: &str,
        user_id: &str,
        channel: Channel,
        category: &str,
        opted_out: bool,
    ) -> Result<()> {
        let (tenant, user, category) = (tenant.to_owned(), user_id.to_owned(), category.to_owned());
        self.with_main(move |c| {
            let sql = if opted_out {
                "INSERT INTO opt_outs (tenant, user_id, channel, category) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM opt_outs
                 WHERE tenant = ?1 AND user_id = ?2 AND channel = ?3 AND category = ?4"
            };
            c.prepare_cached(sql)?
                .execute(params![tenant, user, channel.as_str(), category])
                .map(drop)
        })
        .await
    }

    async fn template(
        &self,
        tenant: &str,
        template_id: &str,
        locale: Option<&str>,
    ) -> Result<Option<TemplateRecord>> {
        let (tenant, id) = (tenant.to_owned(), template_id.to_owned());
        let locale = locale.unwrap_or_default().to_owned();
        let language = locale
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_owned();
        self.with_main(move |c| {
            // Exact locale first, then the bare language, then the template's first locale.
            c.prepare_cached(
                "SELECT tenant, template_id, locale, title, body, action_url FROM templates
                 WHERE tenant = ?1 AND template_id = ?2
                 ORDER BY CASE WHEN locale = ?3 THEN 0 WHEN locale = ?4 THEN 1 ELSE 2 END, locale
                 LIMIT 1",
            )?
            .query_row(params![tenant, id, locale, language], template_row)
            .optional()
        })
        .await
    }

    async fn put_template(&self, t: &TemplateRecord) -> Result<()> {
        let t = t.clone();
        self.with_main(move |c| {
            c.prepare_cached(
                "INSERT INTO templates (tenant, template_id, locale, title, body, action_url)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, template_id, locale) DO UPDATE SET title = excluded.title,
                     body = excluded.body, action_url = excluded.action_url",
            )?
            .execute(params![
                t.tenant,
                t.template_id,
                t.locale,
                t.title,
                t.body,
                t.action_url
            ])
            .map(drop)
        })
        .await
    }

    async fn claim_idempotency_key(&self, r: &IdempotencyRecord) -> Result<IdempotencyClaim> {
        let r = r.clone();
        self.with(move |inner| {
            let lookup = |c: &Connection| -> Result<Option<IdempotencyRecord>> {
                Ok(c.prepare_cached(
                    "SELECT tenant, key, request_hash, notification_id, at_ms
                     FROM idempotency_keys WHERE tenant = ?1 AND key = ?2",
                )?
                .query_row(params![r.tenant, r.key], |row| {
                    Ok(IdempotencyRecord {
                        tenant: row.get(0)?,
                        key: row.get(1)?,
                        request_hash: row.get(2)?,
                        notification_id: row.get(3)?,
                        at_ms: row.get(4)?,
                    })
                })
                .optional()?)
            };
            if let Some((_, first)) = inner.recent_two(r.at_ms, lookup)? {
                return Ok(IdempotencyClaim::Existing(first));
            }
            inner.in_month(r.at_ms, |c| {
                let inserted = c
                    .prepare_cached(
                        "INSERT INTO idempotency_keys (tenant, key, request_hash, notification_id,
                             at_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        r.tenant,
                        r.key,
                        r.request_hash,
                        r.notification_id,
                        r.at_ms
                    ])?;
                if inserted == 1 {
                    return Ok(IdempotencyClaim::Claimed);
                }
                // Lost a race to a concurrent claim in this month.
                lookup(c)?
                    .map(IdempotencyClaim::Existing)
                    .ok_or_else(|| StoreError::Worker("idempotency key vanished".into()))
            })
        })
        .await
    }

    async fn outbox_put(&self, r: &OutboxRecord) -> Result<()> {
        let r = r.clone();
        self.with_main(move |c| {
            c.prepare_cached(
                "INSERT INTO outbox (owner, id, topic, key, payload, headers, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (owner, id) DO NOTHING",
            )?
            .execute(params![
                r.owner,
                r.id,
                r.topic,
                r.key,
                r.payload,
                r.headers_blob(),
                r.created_at_ms
            ])
            .map(drop)
        })
        .await
    }

    async fn outbox_pending(&self, owner: &str, limit: usize) -> Result<Vec<OutboxRecord>> {
        let owner = owner.to_owned();
        self.with_main(move |c| {
            c.prepare_cached(
                "SELECT owner, id, topic, key, payload, headers, created_at_ms FROM outbox
                 WHERE owner = ?1 ORDER BY created_at_ms, id LIMIT ?2",
            )?
            .query_map(
                params![owner, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    let headers: Vec<u8> = r.get(5)?;
                    Ok(OutboxRecord {
                        owner: r.get(0)?,
                        id: r.get(1)?,
                        topic: r.get(2)?,
                        key: r.get(3)?,
                        payload: r.get(4)?,
                        headers: OutboxRecord::parse_headers_blob(&headers).ok_or_else(|| {
                            rusqlite::Error::FromSqlConversionFailure(
                                5,
                                rusqlite::types::Type::Blob,
                                "malformed outbox headers".into(),
                            )
                        })?,
                        created_at_ms: r.get(6)?,
                    })
                },
            )?
            .collect()
        })
        .await
    }

    async fn outbox_remove_many(&self, owner: &str, ids: &[String]) -> Result<()> {
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.with_main(move |c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut delete =
                    tx.prepare_cached("DELETE FROM outbox WHERE owner = ?1 AND id = ?2")?;
                for id in &ids {
                    delete.execute(params![owner, id])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn outbox_owners(&self) -> Result<Vec<String>> {
        self.with_main(|c| {
            c.prepare_cached("SELECT DISTINCT owner FROM outbox ORDER BY owner")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
    }

    async fn outbox_lease(
        &self,
        owner: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let (owner, holder) = (owner.to_owned(), holder.to_owned());
        self.with_main(move |c| {
            // One statement: SQLite runs it atomically, also across processes.
            let changed = c
                .prepare_cached(
                    "INSERT INTO outbox_leases (owner, holder, until_ms) VALUES (?1, ?2, ?4)
                     ON CONFLICT (owner) DO UPDATE
                       SET holder = excluded.holder, until_ms = excluded.until_ms
                       WHERE outbox_leases.holder = excluded.holder
                          OR outbox_leases.until_ms < ?3",
                )?
                .execute(params![owner, holder, now_ms, until_ms])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn outbox_count(&self, owner: &str, cap: usize) -> Result<usize> {
        let owner = owner.to_owned();
        self.with_main(move |c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE owner = ?1 LIMIT ?2)",
                )?
                .query_row(
                    params![owner, i64::try_from(cap).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn outbox_remove(&self, owner: &str, id: &str) -> Result<()> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.with_main(move |c| {
            c.prepare_cached("DELETE FROM outbox WHERE owner = ?1 AND id = ?2")?
                .execute(params![owner, id])
                .map(drop)
        })
        .await
    }

    async fn ledger_begin(&self, delivery_id: &str, at_ms: i64) -> Result<LedgerBegin> {
        let id = delivery_id.to_owned();
        self.with(move |inner| {
            // Where an earlier attempt was recorded, if anywhere.
            let earlier = inner.recent_two(at_ms, |c| Ok(ledger_lookup(c, &id)?))?;
            let Some((month, state)) = earlier else {
                return inner.in_month(at_ms, |c| {
                    c.prepare_cached(
                        "INSERT INTO delivery_ledger (delivery_id, begun_at_ms) VALUES (?1, ?2)
                         ON CONFLICT (delivery_id) DO NOTHING",
                    )?
                    .execute(params![id, at_ms])?;
                    Ok(LedgerBegin::Fresh)
                });
            };
            if let Some(entry) = state {
                return Ok(LedgerBegin::Done(entry));
            }
            let conn = inner
                .month(month, false)?
                .ok_or_else(|| StoreError::Worker("month file vanished".into()))?;
            let c = lock(&conn)?;
            // Unfinished. An abandoned attempt (provider said "retry later") starts afresh; any
            // other crashed inside the provider window.
            let fresh = c
                .prepare_cached(
                    "UPDATE delivery_ledger SET abandoned = 0
                     WHERE delivery_id = ?1 AND abandoned = 1",
                )?
                .execute(params![id])?;
            if fresh == 1 {
                return Ok(LedgerBegin::Fresh);
            }
            c.prepare_cached(
                "UPDATE delivery_ledger SET resends = resends + 1 WHERE delivery_id = ?1",
            )?
            .execute(params![id])?;
            Ok(LedgerBegin::Unfinished)
        })
        .await
    }

    async fn ledger_abandon(&self, delivery_id: &str) -> Result<()> {
        let id = delivery_id.to_owned();
        self.with(move |inner| {
            let m = Month::of_ms(inner.now());
            for m in [m.next(), m, m.prev()] {
                if let Some(conn) = inner.month(m, false)? {
                    lock(&conn)?
                        .prepare_cached(
                            "UPDATE delivery_ledger SET abandoned = 1
                             WHERE delivery_id = ?1 AND state IS NULL",
                        )?
                        .execute(params![id])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn ledger_finish(&self, e: &LedgerEntry) -> Result<()> {
        let e = e.clone();
        self.with(move |inner| {
            let finish = |c: &Connection| -> rusqlite::Result<usize> {
                c.prepare_cached(
                    "UPDATE delivery_ledger SET state = ?2, reason = ?3, provider_message_id = ?4,
                         at_ms = ?5 WHERE delivery_id = ?1 AND state IS NULL",
                )?
                .execute(params![
                    e.delivery_id,
                    e.state.as_str(),
                    e.reason,
                    e.provider_message_id,
                    e.at_ms
                ])
            };
            let known = inner.recent_two(e.at_ms, |c| {
                Ok(ledger_lookup(c, &e.delivery_id)?
                    .map(|_| finish(c))
                    .transpose()?)
            })?;
            if known.is_some() {
                return Ok(());
            }
            // Finishing without beginning (a connector that records directly).
            inner.in_month(e.at_ms, |c| {
                c.prepare_cached(
                    "INSERT INTO delivery_ledger (delivery_id, state, reason, provider_message_id,
                         begun_at_ms, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                     ON CONFLICT (delivery_id) DO NOTHING",
                )?
                .execute(params![
                    e.delivery_id,
                    e.state.as_str(),
                    e.reason,
                    e.provider_message_id,
                    e.at_ms
                ])?;
                Ok(())
            })
        })
        .await
    }

    async fn ledger_resends(&self) -> Result<u64> {
        self.with(|inner| {
            let mut total = 0_u64;
            for (_, conn) in inner.kept_months()? {
                let n: i64 = lock(&conn)?
                    .prepare_cached("SELECT COALESCE(SUM(resends), 0) FROM delivery_ledger")?
                    .query_row([], |r| r.get(0))?;
                total += n.max(0) as u64;
            }
            Ok(total)
        })
        .await
    }

    async fn enforce_retention(&self) -> Result<RetentionReport> {
        self.with(|inner| {
            let oldest = inner.oldest_kept();
            let mut expired = Vec::new();
            let listing = std::fs::read_dir(&inner.months_dir).map_err(|e| {
                StoreError::Worker(format!("list {}: {e}", inner.months_dir.display()))
            })?;
            for entry in listing.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(month) = name
                    .strip_suffix(".db")
                    .and_then(|stem| stem.split_once('-'))
                    .and_then(|(y, m)| Some(y.parse::<i32>().ok()? * 100 + m.parse::<i32>().ok()?))
                    .and_then(Month::from_bucket)
                else {
                    continue;
                };
                if month.end_ms() <= oldest {
                    expired.push(month);
                }
            }
            expired.sort();
            let mut report = RetentionReport::default();
            for month in expired {
                lock_map(&inner.months)?.remove(&month);
                let db = inner.month_path(month);
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = db.clone().into_os_string();
                    path.push(suffix);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(StoreError::Worker(format!(
                                "remove {}: {e}",
                                PathBuf::from(path).display()
                            )));
                        }
                    }
                }
                info!(%month, file = %db.display(), "retention: dropped an expired month");
                report.dropped.push(month.to_string());
            }
            Ok(report)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
