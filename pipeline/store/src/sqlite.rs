//! The embedded backend: one SQLite file (WAL mode, so the query service reads while the stages
//! write, from other processes). SQLite is bundled into the binary, needs no server, survives
//! restarts, and gives the upserts and ordered range scans the trait needs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use herald_schemas::{Channel, DeliveryState, Priority};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{
    Contact, DeliveryEventRecord, InboxEntryRecord, InboxPage, InboxQuery, LedgerBegin,
    LedgerEntry, NotificationRecord, RecipientProfile, Result, Store, StoreError, TemplateRecord,
};

mod page_token;

const SCHEMA: &str = include_str!("sqlite/schema.sql");

/// A SQLite file shared by every Herald process on the machine.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the schema.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Worker(format!("create {}: {e}", dir.display())))?;
            }
            let conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| StoreError::Worker("connection mutex poisoned".into()))?;
            f(&conn).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
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

fn event_row(r: &Row<'_>) -> rusqlite::Result<DeliveryEventRecord> {
    let channel: Option<String> = r.get(3)?;
    Ok(DeliveryEventRecord {
        tenant: r.get(0)?,
        notification_id: r.get(1)?,
        result_id: r.get(2)?,
        channel: channel
            .map(|c| text_enum(3, c, Channel::parse))
            .transpose()?,
        state: text_enum(4, r.get(4)?, DeliveryState::parse)?,
        reason: r.get(5)?,
        at_ms: r.get(6)?,
    })
}

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
        read_at_ms: r.get(8)?,
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

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_notification(&self, n: &NotificationRecord) -> Result<()> {
        let n = n.clone();
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO notifications (tenant, notification_id, recipient_user_id, category,
                     priority, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, notification_id) DO NOTHING",
            )?
            .execute(params![
                n.tenant,
                n.notification_id,
                n.recipient_user_id,
                n.category,
                n.priority.as_str(),
                n.created_at_ms
            ])
            .map(drop)
        })
        .await
    }

    async fn record_delivery_event(&self, e: &DeliveryEventRecord) -> Result<()> {
        let e = e.clone();
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO delivery_events (tenant, notification_id, result_id, channel, state,
                     reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (tenant, notification_id, result_id) DO NOTHING",
            )?
            .execute(params![
                e.tenant,
                e.notification_id,
                e.result_id,
                e.channel.map(Channel::as_str),
                e.state.as_str(),
                e.reason,
                e.at_ms
            ])
            .map(drop)
        })
        .await
    }

    async fn get_notification(
        &self,
        tenant: &str,
        notification_id: &str,
    ) -> Result<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>> {
        let (tenant, id) = (tenant.to_owned(), notification_id.to_owned());
        self.with(move |c| {
            let Some(n) = c
                .prepare_cached(
                    "SELECT tenant, notification_id, recipient_user_id, category, priority,
                         created_at_ms FROM notifications WHERE tenant = ?1 AND notification_id = ?2",
                )?
                .query_row(params![tenant, id], notification_row)
                .optional()?
            else {
                return Ok(None);
            };
            let timeline = c
                .prepare_cached(
                    "SELECT tenant, notification_id, result_id, channel, state, reason, at_ms
                     FROM delivery_events WHERE tenant = ?1 AND notification_id = ?2
                     ORDER BY at_ms, result_id",
                )?
                .query_map(params![tenant, id], event_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((n, timeline)))
        })
        .await
    }

    async fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> Result<()> {
        let e = e.clone();
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO inbox (tenant, recipient_user_id, notification_id, category, title,
                     body, action_url, created_at_ms, read_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (tenant, recipient_user_id, notification_id) DO NOTHING",
            )?
            .execute(params![
                e.tenant,
                e.recipient_user_id,
                e.notification_id,
                e.category,
                e.title,
                e.body,
                e.action_url,
                e.created_at_ms,
                e.read_at_ms
            ])
            .map(drop)
        })
        .await
    }

    async fn list_inbox(&self, q: &InboxQuery) -> Result<InboxPage> {
        let after = q
            .page_token
            .as_deref()
            .map(page_token::decode)
            .transpose()?;
        let q = q.clone();
        self.with(move |c| {
            // Fetch one extra row to learn whether another page exists.
            let limit = i64::try_from(q.page_size)
                .unwrap_or(i64::MAX)
                .saturating_add(1);
            let (before_ms, before_id) = after.unwrap_or((i64::MAX, String::new()));
            let mut entries = c
                .prepare_cached(
                    "SELECT tenant, recipient_user_id, notification_id, category, title, body,
                         action_url, created_at_ms, read_at_ms FROM inbox
                     WHERE tenant = ?1 AND recipient_user_id = ?2
                       AND (created_at_ms < ?3 OR (created_at_ms = ?3 AND notification_id < ?4))
                     ORDER BY created_at_ms DESC, notification_id DESC LIMIT ?5",
                )?
                .query_map(
                    params![q.tenant, q.recipient_user_id, before_ms, before_id, limit],
                    inbox_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next_page_token = if entries.len() > q.page_size {
                entries.truncate(q.page_size);
                entries
                    .last()
                    .map(|e| page_token::encode(e.created_at_ms, &e.notification_id))
            } else {
                None
            };
            Ok(InboxPage {
                entries,
                next_page_token,
            })
        })
        .await
    }

    async fn recipient_profile(&self, tenant: &str, user_id: &str) -> Result<RecipientProfile> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |c| {
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
                    "SELECT channel, category FROM opt_outs WHERE tenant = ?1 AND user_id = ?2",
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
        self.with(move |c| {
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
        self.with(move |c| {
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
        self.with(move |c| {
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

    async fn ledger_begin(&self, delivery_id: &str, at_ms: i64) -> Result<LedgerBegin> {
        let id = delivery_id.to_owned();
        self.with(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO delivery_ledger (delivery_id, begun_at_ms) VALUES (?1, ?2)
                     ON CONFLICT (delivery_id) DO NOTHING",
                )?
                .execute(params![id, at_ms])?;
            if inserted == 1 {
                return Ok(LedgerBegin::Fresh);
            }
            let row = c
                .prepare_cached(
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
                })?;
            match row {
                Some(entry) => Ok(LedgerBegin::Done(entry)),
                None => {
                    // An abandoned attempt (provider said "retry later") starts afresh; any other
                    // unfinished one crashed inside the provider window.
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
                }
            }
        })
        .await
    }

    async fn ledger_abandon(&self, delivery_id: &str) -> Result<()> {
        let id = delivery_id.to_owned();
        self.with(move |c| {
            c.prepare_cached(
                "UPDATE delivery_ledger SET abandoned = 1 WHERE delivery_id = ?1 AND state IS NULL",
            )?
            .execute(params![id])
            .map(drop)
        })
        .await
    }

    async fn ledger_finish(&self, e: &LedgerEntry) -> Result<()> {
        let e = e.clone();
        self.with(move |c| {
            c.prepare_cached(
                "INSERT INTO delivery_ledger (delivery_id, state, reason, provider_message_id,
                     begun_at_ms, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (delivery_id) DO UPDATE SET state = excluded.state,
                     reason = excluded.reason, provider_message_id = excluded.provider_message_id,
                     at_ms = excluded.at_ms
                 WHERE delivery_ledger.state IS NULL",
            )?
            .execute(params![
                e.delivery_id,
                e.state.as_str(),
                e.reason,
                e.provider_message_id,
                e.at_ms
            ])
            .map(drop)
        })
        .await
    }

    async fn ledger_resends(&self) -> Result<u64> {
        self.with(|c| {
            c.prepare_cached("SELECT COALESCE(SUM(resends), 0) FROM delivery_ledger")?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
