//! [`ScyllaStore`]: the session, the prepared statements and the clock, and the [`Store`]
//! trait delegating to the files in `ops/`.

use std::sync::Arc;

use async_trait::async_trait;
use herald_schemas::Channel;
use herald_store::{
    ApiKeyRecord, Clock, Contact, DeliveryEventRecord, Erasure, FailurePage, FailureQuery,
    FeedCursor, FeedPage, HeldRecord, IdempotencyClaim, IdempotencyRecord, InboxEntryRecord,
    InboxPage, InboxQuery, LedgerBegin, LedgerEntry, NotificationRecord, OutboxRecord, QuietHours,
    RecipientProfile, Retention, RetentionReport, Store, SystemClock, TemplateRecord,
};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;

use crate::Result;
use crate::config::ScyllaConfig;
use crate::statements::Statements;
use crate::tiers::Timekeeper;

type StoreResult<T> = herald_store::Result<T>;

/// Which server is on the other end of the session. Production is always
/// [`CqlServer::Scylla`]; the other value exists for this crate's protocol tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CqlServer {
    /// ScyllaDB (or Cassandra): every statement must prepare exactly as written.
    #[default]
    Scylla,
    /// kassandra, the in-process CQL server the tests run against. Its parser stops before
    /// `USING TTL ?`, so it reports no `[ttl]` bind marker; with this value the store accepts
    /// that and binds no TTL (kassandra would ignore one anyway). Nothing else changes: what
    /// kassandra cannot do (ordering, ranges, LWT) fails loudly rather than being emulated.
    KassandraForTests,
}

/// How a [`ScyllaStore`] runs, beyond where the cluster is.
#[derive(Clone)]
pub struct StoreOptions {
    /// The tiers' lengths. The migrations size TTL defaults and compaction windows for the
    /// default (90/365 days); other values work but deserve their own migration.
    pub retention: Retention,
    /// Where "now" comes from (tests use a `ManualClock`).
    pub clock: Arc<dyn Clock>,
    /// The server on the other end.
    pub server: CqlServer,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: Retention::default(),
            clock: Arc::new(SystemClock),
            server: CqlServer::Scylla,
        }
    }
}

/// Herald's store on ScyllaDB. Cheap to clone.
#[derive(Clone)]
pub struct ScyllaStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub session: Arc<Session>,
    pub st: Statements,
    pub time: Timekeeper,
}

/// A session builder for `config`: contact points, request timeout, and the driver's default
/// load balancing, which is token-aware (each request goes straight to a replica of its
/// partition, and with ScyllaDB to the owning shard) and, given `local_datacenter`, prefers
/// that datacenter's replicas.
pub fn session_builder(config: &ScyllaConfig) -> SessionBuilder {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_datacenter {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(true);
    }
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy.build())
        .request_timeout(Some(config.request_timeout()))
        .build();
    SessionBuilder::new()
        .known_nodes(&config.nodes)
        .default_execution_profile_handle(profile.into_handle())
}

/// Connects to the cluster named by `config`.
pub async fn connect_session(config: &ScyllaConfig) -> Result<Session> {
    config.validate()?;
    Ok(session_builder(config).build().await?)
}

impl ScyllaStore {
    /// Connects with the wall clock and the default retention. The schema must exist
    /// (`herald migrate`); every statement is prepared here, so a missing table fails now.
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaStore> {
        let session = Arc::new(connect_session(config).await?);
        ScyllaStore::with_session(session, config, StoreOptions::default()).await
    }

    /// Opens the store named by a `scylla://` URL (see [`ScyllaConfig::from_url`]).
    pub async fn open_url(url: &str) -> StoreResult<ScyllaStore> {
        let config = ScyllaConfig::from_url(url)?;
        Ok(ScyllaStore::connect(&config).await?)
    }

    /// Uses an existing session (tests build theirs; several stores may share one).
    pub async fn with_session(
        session: Arc<Session>,
        config: &ScyllaConfig,
        options: StoreOptions,
    ) -> Result<ScyllaStore> {
        config.validate()?;
        let st = Statements::prepare(
            &session,
            options.server,
            &config.hot_keyspace,
            &config.archive_keyspace,
        )
        .await?;
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                st,
                time: Timekeeper {
                    retention: options.retention,
                    clock: options.clock,
                },
            }),
        })
    }

    /// The session, e.g. to run [`crate::migrate()`] with it.
    pub fn session(&self) -> &Arc<Session> {
        &self.inner.session
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn upsert_notification(&self, n: &NotificationRecord) -> StoreResult<()> {
        Ok(self.inner.upsert_notification(n).await?)
    }

    async fn record_delivery_event(&self, e: &DeliveryEventRecord) -> StoreResult<()> {
        Ok(self.inner.record_delivery_event(e).await?)
    }

    async fn get_notification(
        &self,
        tenant: &str,
        notification_id: &str,
    ) -> StoreResult<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>> {
        Ok(self.inner.get_notification(tenant, notification_id).await?)
    }

    async fn list_failures(&self, q: &FailureQuery) -> StoreResult<FailurePage> {
        self.inner.list_failures(q).await
    }

    async fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> StoreResult<()> {
        Ok(self.inner.upsert_inbox_entry(e).await?)
    }

    async fn list_inbox(&self, q: &InboxQuery) -> StoreResult<InboxPage> {
        self.inner.list_inbox(q).await
    }

    async fn feed_start(&self, _tenant: &str, _user_id: &str) -> StoreResult<FeedCursor> {
        Ok(self.inner.feed_start())
    }

    async fn inbox_feed(
        &self,
        tenant: &str,
        user_id: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> StoreResult<FeedPage> {
        self.inner.feed_after(tenant, user_id, after, limit).await
    }

    async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        notification_ids: &[String],
        at_ms: i64,
    ) -> StoreResult<Vec<InboxEntryRecord>> {
        Ok(self
            .inner
            .mark_read(tenant, user_id, notification_ids, at_ms)
            .await?)
    }

    async fn mark_all_read(
        &self,
        tenant: &str,
        user_id: &str,
        up_to_ms: i64,
        at_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<InboxEntryRecord>> {
        Ok(self
            .inner
            .mark_all_read(tenant, user_id, up_to_ms, at_ms, limit)
            .await?)
    }

    async fn unread_count(&self, tenant: &str, user_id: &str, cap: u32) -> StoreResult<u32> {
        Ok(self.inner.unread_count(tenant, user_id, cap).await?)
    }

    async fn recipient_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> StoreResult<RecipientProfile> {
        Ok(self.inner.recipient_profile(tenant, user_id).await?)
    }

    async fn put_contact(&self, tenant: &str, user_id: &str, contact: &Contact) -> StoreResult<()> {
        Ok(self.inner.put_contact(tenant, user_id, contact).await?)
    }

    async fn disable_contact(
        &self,
        tenant: &str,
        user_id: &str,
        contact: &Contact,
    ) -> StoreResult<bool> {
        Ok(self.inner.disable_contact(tenant, user_id, contact).await?)
    }

    async fn erase_recipient(&self, tenant: &str, user_id: &str) -> StoreResult<Erasure> {
        Ok(self.inner.erase_recipient(tenant, user_id).await?)
    }

    async fn set_opt_out(
        &self,
        tenant: &str,
        user_id: &str,
        channel: Channel,
        category: &str,
        opted_out: bool,
    ) -> StoreResult<()> {
        Ok(self
            .inner
            .set_opt_out(tenant, user_id, channel, category, opted_out)
            .await?)
    }

    async fn set_quiet_hours(
        &self,
        tenant: &str,
        user_id: &str,
        quiet: Option<&QuietHours>,
    ) -> StoreResult<()> {
        Ok(self.inner.set_quiet_hours(tenant, user_id, quiet).await?)
    }

    async fn subscribe(
        &self,
        tenant: &str,
        user_id: &str,
        topic: &str,
        subscribed: bool,
    ) -> StoreResult<()> {
        Ok(self
            .inner
            .subscribe(tenant, user_id, topic, subscribed)
            .await?)
    }

    async fn subscriptions_of(&self, tenant: &str, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(self.inner.subscriptions_of(tenant, user_id).await?)
    }

    async fn subscribers(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        Ok(self.inner.subscribers(tenant, topic, after, limit).await?)
    }

    async fn hold(&self, h: &HeldRecord) -> StoreResult<()> {
        Ok(self.inner.hold(h).await?)
    }

    async fn held_due(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<HeldRecord>> {
        Ok(self.inner.held_due(now_ms, limit).await?)
    }

    async fn forget_held(&self, released: &[HeldRecord]) -> StoreResult<()> {
        Ok(self.inner.forget_held(released).await?)
    }

    async fn template_variants(
        &self,
        tenant: &str,
        template_id: &str,
    ) -> StoreResult<Vec<TemplateRecord>> {
        Ok(self.inner.template_variants(tenant, template_id).await?)
    }

    async fn templates_of(&self, tenant: &str) -> StoreResult<Vec<TemplateRecord>> {
        Ok(self.inner.templates_of(tenant).await?)
    }

    async fn put_template(&self, t: &TemplateRecord) -> StoreResult<()> {
        Ok(self.inner.put_template(t).await?)
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        Ok(self.inner.put_api_key(key).await?)
    }

    async fn api_key(&self, key_id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self.inner.api_key(key_id).await?)
    }

    async fn api_keys(&self, tenant: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        Ok(self.inner.api_keys(tenant).await?)
    }

    async fn claim_idempotency_key(&self, r: &IdempotencyRecord) -> StoreResult<IdempotencyClaim> {
        Ok(self.inner.claim_idempotency_key(r).await?)
    }

    async fn outbox_put(&self, r: &OutboxRecord) -> StoreResult<()> {
        Ok(self.inner.outbox_put(r).await?)
    }

    async fn outbox_pending(&self, owner: &str, limit: usize) -> StoreResult<Vec<OutboxRecord>> {
        Ok(self.inner.outbox_pending(owner, limit).await?)
    }

    async fn outbox_remove(&self, owner: &str, id: &str) -> StoreResult<()> {
        Ok(self.inner.outbox_remove(owner, id).await?)
    }

    async fn outbox_owners(&self) -> StoreResult<Vec<String>> {
        Ok(self.inner.outbox_owners().await?)
    }

    async fn outbox_lease(
        &self,
        owner: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        Ok(self
            .inner
            .outbox_lease(owner, holder, now_ms, until_ms)
            .await?)
    }

    async fn ledger_begin(&self, delivery_id: &str, at_ms: i64) -> StoreResult<LedgerBegin> {
        Ok(self.inner.ledger_begin(delivery_id, at_ms).await?)
    }

    async fn ledger_abandon(&self, delivery_id: &str) -> StoreResult<()> {
        Ok(self.inner.ledger_abandon(delivery_id).await?)
    }

    async fn ledger_finish(&self, entry: &LedgerEntry) -> StoreResult<()> {
        Ok(self.inner.ledger_finish(entry).await?)
    }

    async fn ledger_resends(&self) -> StoreResult<u64> {
        Ok(self.inner.ledger_resends().await?)
    }

    /// Nothing to do: every time-series row carries a TTL that ends when the row is as old as
    /// its tier, and time-window compaction drops SSTables whose rows have all expired, whole.
    /// A bulk `DELETE` would only add tombstones. Reads already hide rows past the archive tier.
    async fn enforce_retention(&self) -> StoreResult<RetentionReport> {
        Ok(RetentionReport::default())
    }
}
