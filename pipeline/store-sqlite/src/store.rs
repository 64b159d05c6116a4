//! [`SqliteStore`]: the main file, the month files and the clock, and the [`Store`] trait
//! running the operations of `ops/` on the blocking pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use herald_schemas::Channel;
use herald_store::{
    ApiKeyRecord, Clock, Contact, DeliveryEventRecord, Erasure, FailurePage, FailureQuery,
    FeedCursor, FeedPage, HeldRecord, IdempotencyClaim, IdempotencyRecord, InboxEntryRecord,
    InboxPage, InboxQuery, LedgerBegin, LedgerEntry, Month, NotificationRecord, OutboxRecord,
    QuietHours, RecipientProfile, Retention, RetentionReport, Store, StoreError, SystemClock,
    TemplateRecord, Write,
};
use rusqlite::Connection;

use crate::error::{self, Result};
use crate::files::{MAIN_SCHEMA, Shared, Sync, lock, open_file};

type StoreResult<T> = herald_store::Result<T>;

/// SQLite files shared by every Herald process on the machine. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    main: Mutex<Connection>,
    pub months_dir: PathBuf,
    pub months: Mutex<HashMap<Month, Shared>>,
    pub retention: Retention,
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with the default retention and the wall
    /// clock.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(path, Retention::default(), Arc::new(SystemClock)).await
    }

    /// Opens the store at `path` with explicit retention and clock (tests move the clock).
    pub async fn open_with(
        path: &Path,
        retention: Retention,
        clock: Arc<dyn Clock>,
    ) -> StoreResult<SqliteStore> {
        let path = path.to_owned();
        let (main, months_dir) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut months_dir = path.clone().into_os_string();
            months_dir.push(".months");
            let months_dir = PathBuf::from(months_dir);
            std::fs::create_dir_all(&months_dir)
                .map_err(|e| error::io("create", &months_dir, e))?;
            // The outbox (accepted requests Kafka has not taken yet) lives here: every commit
            // is on disk before the ingress answers ACCEPTED.
            Ok((open_file(&path, MAIN_SCHEMA, Sync::Full)?, months_dir))
        })
        .await
        .map_err(worker_failed)??;
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
    async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Ok(tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(worker_failed)??)
    }
}

/// The blocking task running an operation panicked (or the runtime is shutting down).
fn worker_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Internal(format!("store worker failed: {e}"))
}

impl Inner {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn oldest_kept(&self) -> i64 {
        self.retention.oldest_kept_ms(self.now())
    }

    /// The main file's connection.
    pub fn main(&self) -> Result<MutexGuard<'_, Connection>> {
        lock(&self.main)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_notification(&self, n: &NotificationRecord) -> StoreResult<()> {
        let n = n.clone();
        self.with(move |inner| inner.upsert_notification(&n)).await
    }

    async fn record_delivery_event(&self, e: &DeliveryEventRecord) -> StoreResult<()> {
        let e = e.clone();
        self.with(move |inner| inner.record_delivery_event(&e))
            .await
    }

    async fn get_notification(
        &self,
        tenant: &str,
        notification_id: &str,
    ) -> StoreResult<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>> {
        let (tenant, id) = (tenant.to_owned(), notification_id.to_owned());
        self.with(move |inner| inner.get_notification(&tenant, &id))
            .await
    }

    async fn list_failures(&self, q: &FailureQuery) -> StoreResult<FailurePage> {
        let q = q.clone();
        self.with(move |inner| inner.list_failures(&q)).await
    }

    async fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> StoreResult<()> {
        let e = e.clone();
        self.with(move |inner| inner.upsert_inbox_entry(&e)).await
    }

    async fn write_many(&self, writes: &[Write]) -> StoreResult<()> {
        let writes = writes.to_vec();
        self.with(move |inner| inner.write_many(&writes)).await
    }

    async fn list_inbox(&self, q: &InboxQuery) -> StoreResult<InboxPage> {
        let q = q.clone();
        self.with(move |inner| inner.list_inbox(&q)).await
    }

    async fn feed_start(&self, _tenant: &str, _user_id: &str) -> StoreResult<FeedCursor> {
        self.with(move |inner| inner.feed_start()).await
    }

    async fn inbox_feed(
        &self,
        tenant: &str,
        user_id: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> StoreResult<FeedPage> {
        let (tenant, user, after) = (tenant.to_owned(), user_id.to_owned(), after.clone());
        self.with(move |inner| inner.inbox_feed(&tenant, &user, &after, limit))
            .await
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        notification_ids: &[String],
        at_ms: i64,
    ) -> StoreResult<Vec<InboxEntryRecord>> {
        let (tenant, user, ids) = (
            tenant.to_owned(),
            user_id.to_owned(),
            notification_ids.to_vec(),
        );
        self.with(move |inner| inner.mark_read(&tenant, &user, &ids, at_ms))
            .await
    }

    async fn mark_all_read(
        &self,
        tenant: &str,
        user_id: &str,
        up_to_ms: i64,
        at_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<InboxEntryRecord>> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| inner.mark_all_read(&tenant, &user, up_to_ms, at_ms, limit))
            .await
    }

    async fn unread_count(&self, tenant: &str, user_id: &str, cap: u32) -> StoreResult<u32> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| inner.unread_count(&tenant, &user, cap))
            .await
    }

    async fn recipient_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> StoreResult<RecipientProfile> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| inner.recipient_profile(&tenant, &user))
            .await
    }

    async fn put_contact(&self, tenant: &str, user_id: &str, contact: &Contact) -> StoreResult<()> {
        let (tenant, user, contact) = (tenant.to_owned(), user_id.to_owned(), contact.clone());
        self.with(move |inner| inner.put_contact(&tenant, &user, &contact))
            .await
    }

    async fn disable_contact(
        &self,
        tenant: &str,
        user_id: &str,
        contact: &Contact,
    ) -> StoreResult<bool> {
        let (tenant, user, contact) = (tenant.to_owned(), user_id.to_owned(), contact.clone());
        self.with(move |inner| inner.disable_contact(&tenant, &user, &contact))
            .await
    }

    async fn erase_recipient(&self, tenant: &str, user_id: &str) -> StoreResult<Erasure> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| inner.erase_recipient(&tenant, &user))
            .await
    }

    async fn set_opt_out(
        &self,
        tenant: &str,
        user_id: &str,
        channel: Channel,
        category: &str,
        opted_out: bool,
    ) -> StoreResult<()> {
        let (tenant, user, category) = (tenant.to_owned(), user_id.to_owned(), category.to_owned());
        self.with(move |inner| inner.set_opt_out(&tenant, &user, channel, &category, opted_out))
            .await
    }

    async fn set_quiet_hours(
        &self,
        tenant: &str,
        user_id: &str,
        quiet: Option<&QuietHours>,
    ) -> StoreResult<()> {
        let (tenant, user, quiet) = (tenant.to_owned(), user_id.to_owned(), quiet.cloned());
        self.with(move |inner| inner.set_quiet_hours(&tenant, &user, quiet.as_ref()))
            .await
    }

    async fn subscribe(
        &self,
        tenant: &str,
        user_id: &str,
        topic: &str,
        subscribed: bool,
    ) -> StoreResult<()> {
        let (tenant, user, topic) = (tenant.to_owned(), user_id.to_owned(), topic.to_owned());
        self.with(move |inner| inner.subscribe(&tenant, &user, &topic, subscribed))
            .await
    }

    async fn subscriptions_of(&self, tenant: &str, user_id: &str) -> StoreResult<Vec<String>> {
        let (tenant, user) = (tenant.to_owned(), user_id.to_owned());
        self.with(move |inner| inner.subscriptions_of(&tenant, &user))
            .await
    }

    async fn subscribers(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let (tenant, topic) = (tenant.to_owned(), topic.to_owned());
        let after = after.map(str::to_owned);
        self.with(move |inner| inner.subscribers(&tenant, &topic, after.as_deref(), limit))
            .await
    }

    async fn hold(&self, h: &HeldRecord) -> StoreResult<()> {
        let h = h.clone();
        self.with(move |inner| inner.hold(&h)).await
    }

    async fn held_due(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<HeldRecord>> {
        self.with(move |inner| inner.held_due(now_ms, limit)).await
    }

    async fn forget_held(&self, released: &[HeldRecord]) -> StoreResult<()> {
        let released = released.to_vec();
        self.with(move |inner| inner.forget_held(&released)).await
    }

    async fn template_variants(
        &self,
        tenant: &str,
        template_id: &str,
    ) -> StoreResult<Vec<TemplateRecord>> {
        let (tenant, id) = (tenant.to_owned(), template_id.to_owned());
        self.with(move |inner| inner.template_variants(&tenant, &id))
            .await
    }

    async fn put_template(&self, t: &TemplateRecord) -> StoreResult<()> {
        let t = t.clone();
        self.with(move |inner| inner.put_template(&t)).await
    }

    async fn put_templates(&self, templates: &[TemplateRecord]) -> StoreResult<()> {
        let templates = templates.to_vec();
        self.with(move |inner| inner.put_templates(&templates))
            .await
    }

    async fn templates_of(&self, tenant: &str) -> StoreResult<Vec<TemplateRecord>> {
        let tenant = tenant.to_owned();
        self.with(move |inner| inner.templates_of(&tenant)).await
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.with(move |inner| inner.put_api_key(&key)).await
    }

    async fn api_key(&self, key_id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let key_id = key_id.to_owned();
        self.with(move |inner| inner.api_key(&key_id)).await
    }

    async fn api_keys(&self, tenant: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        let tenant = tenant.to_owned();
        self.with(move |inner| inner.api_keys(&tenant)).await
    }

    async fn claim_idempotency_key(&self, r: &IdempotencyRecord) -> StoreResult<IdempotencyClaim> {
        let r = r.clone();
        self.with(move |inner| inner.claim_idempotency_key(&r))
            .await
    }

    async fn outbox_put(&self, r: &OutboxRecord) -> StoreResult<()> {
        let r = r.clone();
        self.with(move |inner| inner.outbox_put(&r)).await
    }

    async fn outbox_pending(&self, owner: &str, limit: usize) -> StoreResult<Vec<OutboxRecord>> {
        let owner = owner.to_owned();
        self.with(move |inner| inner.outbox_pending(&owner, limit))
            .await
    }

    async fn outbox_remove(&self, owner: &str, id: &str) -> StoreResult<()> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.with(move |inner| inner.outbox_remove(&owner, &id))
            .await
    }

    async fn outbox_remove_many(&self, owner: &str, ids: &[String]) -> StoreResult<()> {
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.with(move |inner| inner.outbox_remove_many(&owner, &ids))
            .await
    }

    async fn outbox_owners(&self) -> StoreResult<Vec<String>> {
        self.with(Inner::outbox_owners).await
    }

    async fn outbox_lease(
        &self,
        owner: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        let (owner, holder) = (owner.to_owned(), holder.to_owned());
        self.with(move |inner| inner.outbox_lease(&owner, &holder, now_ms, until_ms))
            .await
    }

    async fn outbox_count(&self, owner: &str, cap: usize) -> StoreResult<usize> {
        let owner = owner.to_owned();
        self.with(move |inner| inner.outbox_count(&owner, cap))
            .await
    }

    async fn ledger_begin(&self, delivery_id: &str, at_ms: i64) -> StoreResult<LedgerBegin> {
        let id = delivery_id.to_owned();
        self.with(move |inner| inner.ledger_begin(&id, at_ms)).await
    }

    async fn ledger_abandon(&self, delivery_id: &str) -> StoreResult<()> {
        let id = delivery_id.to_owned();
        self.with(move |inner| inner.ledger_abandon(&id)).await
    }

    async fn ledger_finish(&self, entry: &LedgerEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.with(move |inner| inner.ledger_finish(&entry)).await
    }

    async fn ledger_resends(&self) -> StoreResult<u64> {
        self.with(Inner::ledger_resends).await
    }

    async fn enforce_retention(&self) -> StoreResult<RetentionReport> {
        self.with(Inner::enforce_retention).await
    }
}
