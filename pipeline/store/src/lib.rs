//! Everything Herald persists, behind one trait, [`Store`], chosen by URL ([`open`]).
//!
//! - [`model`]: the rows (notifications, delivery timeline, inbox, contacts, templates, ledger).
//! - [`sqlite`]: the embedded backend, the single-machine default (`sqlite://path`).
//!
//! Every write is an upsert keyed by a deterministic id, so replaying an event after a crash
//! leaves the store as it was: that, not the broker, is what makes reprocessing harmless.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod model;
pub mod sqlite;

use async_trait::async_trait;

pub use model::*;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is malformed or names an unknown backend.
    #[error("invalid store url {url:?}: {reason}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A page token that this store did not issue.
    #[error("invalid page token")]
    BadPageToken,
    /// The backend failed; worth retrying with backoff.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The blocking worker running a query died.
    #[error("store worker failed: {0}")]
    Worker(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything Herald persists. Implementations must make every write idempotent.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a notification (from the `requested` topic). Upsert by (tenant, id).
    async fn upsert_notification(&self, n: &NotificationRecord) -> Result<()>;
    /// Appends a state change to a notification's timeline. Upsert by result id.
    async fn record_delivery_event(&self, e: &DeliveryEventRecord) -> Result<()>;
    /// A notification and its timeline (oldest first), if it exists and belongs to `tenant`.
    async fn get_notification(
        &self,
        tenant: &str,
        notification_id: &str,
    ) -> Result<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>>;

    /// Puts an entry in a user's inbox. Upsert by (tenant, user, notification id).
    async fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> Result<()>;
    /// A page of a user's inbox, newest first.
    async fn list_inbox(&self, q: &InboxQuery) -> Result<InboxPage>;

    /// A recipient's contacts and opt-outs (empty if the recipient is unknown).
    async fn recipient_profile(&self, tenant: &str, user_id: &str) -> Result<RecipientProfile>;
    /// Sets one contact address of a recipient.
    async fn put_contact(&self, tenant: &str, user_id: &str, contact: &Contact) -> Result<()>;
    /// Finds a template in `locale`, falling back to the template's other locales
    /// (language without region, then any).
    async fn template(
        &self,
        tenant: &str,
        template_id: &str,
        locale: Option<&str>,
    ) -> Result<Option<TemplateRecord>>;
    /// Creates or replaces a template for one locale.
    async fn put_template(&self, t: &TemplateRecord) -> Result<()>;

    /// Marks a delivery as about to be handed to its provider, before the call. Returns what the
    /// ledger already knew: nothing (first attempt), an unfinished attempt (a crash between the
    /// provider call and [`Store::ledger_finish`]: the one window where a provider may see a
    /// delivery twice; counted in `resends`), or the recorded outcome (do not call again).
    async fn ledger_begin(&self, delivery_id: &str, at_ms: i64) -> Result<LedgerBegin>;
    /// Withdraws an unfinished attempt whose provider answered "try again later": the next
    /// attempt then begins as fresh instead of counting as a crash inside the provider window.
    async fn ledger_abandon(&self, delivery_id: &str) -> Result<()>;
    /// Records a delivery's outcome; the first recorded outcome wins.
    async fn ledger_finish(&self, entry: &LedgerEntry) -> Result<()>;
    /// How many deliveries were resent after a crash inside the provider window, in total.
    async fn ledger_resends(&self) -> Result<u64>;
}

/// Opens the store named by `url`. Today: `sqlite://<path>` (created if missing).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path)).await?,
        )),
        Some(_) => Err(StoreError::BadUrl {
            url: url.into(),
            reason: "sqlite:// needs a file path",
        }),
        None => Err(StoreError::BadUrl {
            url: url.into(),
            reason: "unknown scheme; expected sqlite://<path>",
        }),
    }
}
