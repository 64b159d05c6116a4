//! Everything Herald persists, behind one trait, [`Store`]. This crate names no backend: they
//! live in their own crates (`herald-store-sqlite`, `herald-store-scylla`), and `herald-stores`
//! opens the one a URL names.
//!
//! - [`model`]: the rows (notifications, delivery timeline, inbox, contacts, templates, ledger).
//! - [`StoreError`] (`error.rs`): failures classified by what the caller should do.
//! - [`quiet`]: quiet hours, the window in a recipient's time zone and when it ends.
//! - [`retention`]: the two tiers, months, and the injectable [`Clock`].
//! - [`variants`]: which variant of a template (locale, channel, version) a request gets.
//! - [`token`]: opaque page and resume tokens bound to their listing.
//! - `conformance` (feature `conformance`): one test body for every backend, and
//!   `conformance_tests!` to run it as one test per scenario, each on a fresh store.
//!
//! Every write is an upsert keyed by a deterministic id, so replaying an event after a crash
//! leaves the store as it was: that, not the broker, is what makes reprocessing harmless.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
pub mod model;
pub mod quiet;
pub mod retention;
pub mod token;
pub mod variants;

use async_trait::async_trait;
use herald_schemas::Channel;

pub use error::{Result, StoreError};
pub use model::*;
pub use quiet::{QuietHours, QuietHoursError};
pub use retention::{Clock, ManualClock, Month, Retention, SystemClock};

/// Everything Herald persists. Implementations make every write idempotent, keep time-series
/// rows for [`Retention::archive_days`] without bulk deletes, and refuse reads reaching further
/// back with [`StoreError::BeyondRetention`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Notifications and their timelines.

    /// Records a notification (from the `requested` topic). Upsert by (tenant, id).
    async fn upsert_notification(&self, n: &NotificationRecord) -> Result<()>;
    /// Appends a state change to a notification's timeline, and lists it as a failure when
    /// [`is_failure`]. Upsert by result id.
    async fn record_delivery_event(&self, e: &DeliveryEventRecord) -> Result<()>;
    /// A notification and its timeline (oldest first), if it exists and belongs to `tenant`.
    async fn get_notification(
        &self,
        tenant: &str,
        notification_id: &str,
    ) -> Result<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>>;
    /// A page of a tenant's failures in a time range, newest first.
    async fn list_failures(&self, q: &FailureQuery) -> Result<FailurePage>;

    // The in-app inbox and its read state.

    /// Puts an entry in a user's inbox. Upsert by (tenant, user, notification id); a repeat
    /// keeps the first entry (and its read state).
    async fn upsert_inbox_entry(&self, e: &InboxEntryRecord) -> Result<()>;
    /// Several of the writes above, each with the effect it has alone, in order. A store that
    /// can commits them together (the embedded store: one transaction per month file), so a
    /// stage writes a batch of records in one round trip rather than one per record. On an
    /// error any of them may have been applied; each is idempotent, so the caller writes them
    /// all again.
    async fn write_many(&self, writes: &[Write]) -> Result<()> {
        for write in writes {
            match write {
                Write::Notification(n) => self.upsert_notification(n).await?,
                Write::DeliveryEvent(e) => self.record_delivery_event(e).await?,
                Write::InboxEntry(e) => self.upsert_inbox_entry(e).await?,
            }
        }
        Ok(())
    }
    /// A page of a user's inbox, newest first, optionally filtered.
    async fn list_inbox(&self, q: &InboxQuery) -> Result<InboxPage>;
    /// The feed cursor of a reader starting now: what is written from here on is read, what
    /// was written before is not.
    async fn feed_start(&self, tenant: &str, user_id: &str) -> Result<FeedCursor>;
    /// Up to `limit` of a user's inbox entries past `after`, in the order they became readable
    /// (what `WatchInbox` pushes). An entry written late — delivered long before the newest
    /// one, a stalled write — is still after a cursor taken before its write: exactly so in a
    /// backend keeping write order (the embedded store), within an overlap window in one
    /// ordered by delivery time (ScyllaDB; see its crate docs).
    async fn inbox_feed(
        &self,
        tenant: &str,
        user_id: &str,
        after: &FeedCursor,
        limit: usize,
    ) -> Result<FeedPage>;
    /// Marks entries read at `at_ms`; returns the ones that were unread (unknown ids and
    /// already-read entries are skipped).
    async fn mark_read(
        &self,
        tenant: &str,
        user_id: &str,
        notification_ids: &[String],
        at_ms: i64,
    ) -> Result<Vec<InboxEntryRecord>>;
    /// Marks up to `limit` unread entries created at or before `up_to_ms` read; returns them.
    /// Callers repeat until fewer than `limit` come back, so a huge inbox is marked in bounded
    /// batches.
    async fn mark_all_read(
        &self,
        tenant: &str,
        user_id: &str,
        up_to_ms: i64,
        at_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxEntryRecord>>;
    /// How many entries are unread, counting at most `cap` (a badge shows "cap+").
    async fn unread_count(&self, tenant: &str, user_id: &str, cap: u32) -> Result<u32>;

    // Recipients, preferences and templates.

    /// A recipient's contacts and opt-outs (empty if the recipient is unknown).
    async fn recipient_profile(&self, tenant: &str, user_id: &str) -> Result<RecipientProfile>;
    /// Sets one contact address of a recipient.
    async fn put_contact(&self, tenant: &str, user_id: &str, contact: &Contact) -> Result<()>;
    /// Removes `contact` from the recipient's addresses if it is still their address for its
    /// channel (a provider said it is invalid: it is not tried again). An address registered
    /// since is kept. Idempotent; `true` if this call removed it.
    async fn disable_contact(&self, tenant: &str, user_id: &str, contact: &Contact)
    -> Result<bool>;
    /// Opts a recipient out of (or back into) a category on a channel; category `*` means all.
    async fn set_opt_out(
        &self,
        tenant: &str,
        user_id: &str,
        channel: Channel,
        category: &str,
        opted_out: bool,
    ) -> Result<()>;
    /// Sets (or, with `None`, clears) a recipient's quiet hours.
    async fn set_quiet_hours(
        &self,
        tenant: &str,
        user_id: &str,
        quiet: Option<&QuietHours>,
    ) -> Result<()>;
    /// Erases what is kept of a recipient, on their request: contacts, opt-outs, quiet hours,
    /// subscriptions and every inbox entry (both tiers, the feed included). Idempotent; returns what this
    /// call removed. Notifications on their way (held ones included) are not recalled.
    async fn erase_recipient(&self, tenant: &str, user_id: &str) -> Result<Erasure>;
    /// Every variant of a template (every locale, channel and version); empty if there is no
    /// such template. [`variants::choose`] picks from them.
    async fn template_variants(
        &self,
        tenant: &str,
        template_id: &str,
    ) -> Result<Vec<TemplateRecord>>;
    /// The latest version of a template's variant for every channel, in `locale` or its
    /// fallback (language without region, then the first locale).
    async fn template(
        &self,
        tenant: &str,
        template_id: &str,
        locale: Option<&str>,
    ) -> Result<Option<TemplateRecord>> {
        let variants = self.template_variants(tenant, template_id).await?;
        Ok(variants::choose(&variants, locale, None)
            .and_then(|c| c.generic())
            .cloned())
    }
    /// Creates or replaces one variant (tenant, id, locale, channel, version).
    async fn put_template(&self, t: &TemplateRecord) -> Result<()>;
    /// Creates or replaces many templates (an import): one transaction where the backend has
    /// them.
    async fn put_templates(&self, templates: &[TemplateRecord]) -> Result<()> {
        for t in templates {
            self.put_template(t).await?;
        }
        Ok(())
    }
    /// Every template of `tenant`, every variant, sorted by id, locale, channel (every channel
    /// first) and version (what an export writes).
    async fn templates_of(&self, tenant: &str) -> Result<Vec<TemplateRecord>>;

    // Topic subscriptions: who receives a topic's broadcasts.

    /// Subscribes a recipient to a topic, or (`subscribed` false) unsubscribes them.
    /// Idempotent.
    async fn subscribe(
        &self,
        tenant: &str,
        user_id: &str,
        topic: &str,
        subscribed: bool,
    ) -> Result<()>;
    /// The topics a recipient is subscribed to, sorted.
    async fn subscriptions_of(&self, tenant: &str, user_id: &str) -> Result<Vec<String>>;
    /// Up to `limit` subscribers of a topic with user ids above `after`, ascending: a broadcast
    /// is expanded page by page from where the last page ended.
    async fn subscribers(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>>;

    // Notifications held for quiet hours.

    /// Keeps a notification until its release. Upsert by (tenant, notification id, release
    /// time): a replayed hold is the same row.
    async fn hold(&self, h: &HeldRecord) -> Result<()>;
    /// Up to `limit` held notifications due at `now_ms`, earliest release first.
    async fn held_due(&self, now_ms: i64, limit: usize) -> Result<Vec<HeldRecord>>;
    /// Forgets held notifications once released (idempotent).
    async fn forget_held(&self, released: &[HeldRecord]) -> Result<()>;

    // Callers: API keys.

    /// Creates or replaces an API key (replacing one records its expiry or revocation).
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// The API key with this id, if there is one.
    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>>;
    /// Every API key of `tenant`, revoked and expired ones included, oldest first.
    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKeyRecord>>;

    // The ingress: idempotency keys and the outbox.

    /// Claims an idempotency key for a request, or returns its first use. Atomic: of two
    /// concurrent claims exactly one gets [`IdempotencyClaim::Claimed`].
    async fn claim_idempotency_key(&self, r: &IdempotencyRecord) -> Result<IdempotencyClaim>;
    /// Keeps a request the broker could not take yet. Upsert by (owner, id).
    async fn outbox_put(&self, r: &OutboxRecord) -> Result<()>;
    /// Up to `limit` of `owner`'s kept requests, oldest first.
    async fn outbox_pending(&self, owner: &str, limit: usize) -> Result<Vec<OutboxRecord>>;
    /// Forgets a kept request once the broker acknowledged it.
    async fn outbox_remove(&self, owner: &str, id: &str) -> Result<()>;
    /// Forgets several kept requests at once (one transaction where the backend has them).
    async fn outbox_remove_many(&self, owner: &str, ids: &[String]) -> Result<()> {
        for id in ids {
            self.outbox_remove(owner, id).await?;
        }
        Ok(())
    }
    /// Every owner that may keep requests in the outbox (at least every owner that kept one
    /// and has not been emptied since); look with [`Store::outbox_pending`].
    async fn outbox_owners(&self) -> Result<Vec<String>>;
    /// Takes or renews the lease on `owner`'s outbox for `holder` until `until_ms`, unless
    /// another holder's lease is still valid at `now_ms`. Atomic: of two concurrent takers one
    /// wins. A live instance renews the lease on its own outbox; an instance replaced under
    /// another name stops renewing, and a live one takes its outbox over and replays it.
    async fn outbox_lease(
        &self,
        owner: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool>;
    /// How many requests `owner` keeps, counting at most `cap`.
    async fn outbox_count(&self, owner: &str, cap: usize) -> Result<usize> {
        Ok(self.outbox_pending(owner, cap).await?.len())
    }

    // The delivery ledger.

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

    // Retention.

    /// Drops whatever has aged out as a whole (a no-op where the database expires rows itself).
    async fn enforce_retention(&self) -> Result<RetentionReport>;
}
