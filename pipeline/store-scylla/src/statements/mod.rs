//! Every CQL statement the store runs, prepared once at connect ([`Statements::prepare`]).
//!
//! Time-series statements exist once per tier ([`TierStatements`], `{ks}` = the hot or the
//! archive keyspace); the rest only in the hot keyspace (`{hot}`). Statements whose text holds
//! `USING TTL ?` must come back from the server with a `[ttl]` bind marker (checked here), and
//! are bound through [`crate::tiers::WithTtl`].

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use crate::{CqlServer, Error, Result};

mod audience;
mod quiet;

pub(crate) use audience::AudienceStatements;
pub(crate) use quiet::QuietStatements;

const NOTIFICATION_COLUMNS: &str =
    "tenant, notification_id, recipient_user_id, category, priority, created_at_ms";
const EVENT_COLUMNS: &str = "tenant, notification_id, result_id, recipient_user_id, category, channel, state, reason, at_ms";
const FAILURE_COLUMNS: &str = "tenant, at_ms, result_id, notification_id, recipient_user_id, category, channel, state, reason";
/// The inbox row as read back (see `codec::InboxRow`).
pub(crate) const INBOX_COLUMNS: &str = "tenant, user_id, notification_id, category, title, body, \
     action_url, created_at_ms, delivered_at_ms, read_at_ms";
const INBOX_KEY: &str = "tenant = ? AND user_id = ? AND month = ?";
const LEDGER_COLUMNS: &str = "delivery_id, state, reason, provider_message_id, at_ms, abandoned";
const IDEMPOTENCY_COLUMNS: &str = "tenant, key, request_hash, notification_id, at_ms";

/// The time-series statements of one tier.
#[allow(missing_docs)]
pub(crate) struct TierStatements {
    pub insert_notification: PreparedStatement,
    pub select_notification: PreparedStatement,
    pub insert_event: PreparedStatement,
    pub select_events: PreparedStatement,
    pub insert_failure: PreparedStatement,
    /// One day's failures below an exclusive `(at_ms, result_id)` cursor, newest first.
    pub select_failures_below: PreparedStatement,
    pub insert_inbox: PreparedStatement,
    /// Sets `read_at_ms` on an existing entry (an INSERT of the key and that column only).
    pub set_inbox_read: PreparedStatement,
    pub select_inbox_month: PreparedStatement,
    /// One month below an exclusive `(created_at_ms, notification_id)` cursor.
    pub select_inbox_below: PreparedStatement,
    pub select_inbox_up_to: PreparedStatement,
    /// Only what `unread_count` needs.
    pub select_inbox_read_state: PreparedStatement,
    pub select_inbox_entry: PreparedStatement,
    pub insert_inbox_by_id: PreparedStatement,
    pub select_inbox_by_id: PreparedStatement,
    pub insert_feed: PreparedStatement,
    pub set_feed_read: PreparedStatement,
    pub select_feed_since: PreparedStatement,
    /// Erasure: a month's entry ids, then the month's entries, feed and id rows.
    pub select_inbox_ids: PreparedStatement,
    pub delete_inbox_month: PreparedStatement,
    pub delete_feed_month: PreparedStatement,
    pub delete_inbox_by_id: PreparedStatement,
}

/// The columns of `api_keys`, in the order [`crate::ops`] binds and reads them.
pub(crate) const API_KEY_COLUMNS: &str =
    "key_id, tenant, name, scopes, secret_hash, created_at_ms, expires_at_ms, revoked_at_ms";

/// What lives only in the hot keyspace.
#[allow(missing_docs)]
pub(crate) struct HotStatements {
    pub insert_contact: PreparedStatement,
    /// LWT: `DELETE … IF address = ?` (an address replaced since is kept).
    pub delete_contact: PreparedStatement,
    pub select_contacts: PreparedStatement,
    pub insert_opt_out: PreparedStatement,
    pub delete_opt_out: PreparedStatement,
    pub select_opt_outs: PreparedStatement,
    /// Erasure: a recipient's whole partition of each.
    pub delete_contacts_of: PreparedStatement,
    pub delete_opt_outs_of: PreparedStatement,
    /// A variant, into `template_versions`.
    pub insert_template: PreparedStatement,
    pub select_template_versions: PreparedStatement,
    /// Templates written before versions (migration 0010): read as version 1.
    pub select_templates: PreparedStatement,
    pub insert_template_id: PreparedStatement,
    pub select_template_ids: PreparedStatement,
    pub insert_outbox: PreparedStatement,
    pub delete_outbox: PreparedStatement,
    pub select_outbox: PreparedStatement,
    pub insert_outbox_by_id: PreparedStatement,
    pub delete_outbox_by_id: PreparedStatement,
    pub select_outbox_by_id: PreparedStatement,
    /// Every owner that ever kept a record.
    pub select_outbox_owners: PreparedStatement,
    pub insert_api_key: PreparedStatement,
    pub insert_api_key_by_tenant: PreparedStatement,
    pub select_api_key: PreparedStatement,
    pub select_api_keys_of_tenant: PreparedStatement,
    /// Notes an owner that keeps a record.
    pub insert_outbox_owner: PreparedStatement,
    /// LWT: a first lease on an outbox.
    pub take_fresh_lease: PreparedStatement,
    /// LWT: a lease taken over once it expired.
    pub take_expired_lease: PreparedStatement,
    /// LWT: a lease renewed by its holder.
    pub renew_lease: PreparedStatement,
    /// LWT: `INSERT ... IF NOT EXISTS`.
    pub claim_idempotency_key: PreparedStatement,
    /// A serial read, after losing a claim.
    pub select_idempotency_key: PreparedStatement,
    /// LWT: `INSERT ... IF NOT EXISTS` before the provider call.
    pub ledger_begin: PreparedStatement,
    /// LWT: an abandoned attempt starts afresh (`IF abandoned = true AND state = null`).
    pub ledger_restart: PreparedStatement,
    /// LWT: the outcome, unless one is recorded (`IF state = null`).
    pub ledger_finish: PreparedStatement,
    /// LWT: an outcome recorded without a begin (`IF NOT EXISTS`).
    pub ledger_insert_finished: PreparedStatement,
    /// LWT: `SET abandoned = true IF state = null`.
    pub ledger_abandon: PreparedStatement,
    /// A serial read of one ledger row.
    pub select_ledger: PreparedStatement,
    pub insert_resend: PreparedStatement,
    pub select_resends: PreparedStatement,
}

/// Everything, prepared.
pub(crate) struct Statements {
    pub hot: TierStatements,
    pub archive: TierStatements,
    pub shared: HotStatements,
    pub quiet: QuietStatements,
    pub audience: AudienceStatements,
}

struct Preparer<'a> {
    session: &'a Session,
    server: CqlServer,
    hot: &'a str,
}

impl Preparer<'_> {
    /// Prepares `text` with `{ks}` = `ks` and `{hot}` = the hot keyspace. Plain statements are
    /// marked idempotent (every write here is an upsert of a deterministic key), so the driver
    /// may retry them; conditional ones (`IF ...`) are not.
    async fn prepare(&self, text: &str, ks: &str) -> Result<PreparedStatement> {
        let text = text.replace("{ks}", ks).replace("{hot}", self.hot);
        let mut statement = self
            .session
            .prepare(text.as_str())
            .await
            .map_err(|source| Error::Prepare {
                statement: text.clone(),
                source: Box::new(source),
            })?;
        if text.contains("USING TTL ?") {
            let marked = statement
                .get_variable_col_specs()
                .iter()
                .last()
                .is_some_and(|c| c.name() == "[ttl]");
            // kassandra's parser stops before `USING TTL`, so it reports no marker (and keeps
            // rows forever): accepted only when the caller said it is kassandra.
            if !marked && self.server == CqlServer::Scylla {
                return Err(Error::MissingTtlMarker(text));
            }
        }
        let conditional = text.contains(" IF ");
        statement.set_is_idempotent(!conditional);
        if conditional {
            statement.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        }
        Ok(statement)
    }

    /// A read that must see every applied lightweight transaction.
    async fn prepare_serial_read(&self, text: &str) -> Result<PreparedStatement> {
        let mut statement = self.prepare(text, self.hot).await?;
        statement.set_consistency(Consistency::LocalSerial);
        Ok(statement)
    }

    async fn tier(&self, ks: &str) -> Result<TierStatements> {
        let p = |text: String| async move { self.prepare(&text, ks).await };
        Ok(TierStatements {
            insert_notification: p(format!(
                "INSERT INTO {{ks}}.notifications ({NOTIFICATION_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            select_notification: p(format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM {{ks}}.notifications \
                 WHERE tenant = ? AND notification_id = ?"
            ))
            .await?,
            insert_event: p(format!(
                "INSERT INTO {{ks}}.delivery_events ({EVENT_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            select_events: p(format!(
                "SELECT {EVENT_COLUMNS} FROM {{ks}}.delivery_events \
                 WHERE tenant = ? AND notification_id = ?"
            ))
            .await?,
            insert_failure: p(format!(
                "INSERT INTO {{ks}}.failures (day, {FAILURE_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            select_failures_below: p(format!(
                "SELECT {FAILURE_COLUMNS} FROM {{ks}}.failures \
                 WHERE tenant = ? AND day = ? AND (at_ms, result_id) < (?, ?)"
            ))
            .await?,
            insert_inbox: p(format!(
                "INSERT INTO {{ks}}.inbox (month, {INBOX_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            set_inbox_read: p(
                "INSERT INTO {ks}.inbox (tenant, user_id, month, created_at_ms, \
                 notification_id, read_at_ms) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"
                    .into(),
            )
            .await?,
            select_inbox_month: p(format!(
                "SELECT {INBOX_COLUMNS} FROM {{ks}}.inbox WHERE {INBOX_KEY}"
            ))
            .await?,
            select_inbox_below: p(format!(
                "SELECT {INBOX_COLUMNS} FROM {{ks}}.inbox WHERE {INBOX_KEY} \
                 AND (created_at_ms, notification_id) < (?, ?)"
            ))
            .await?,
            select_inbox_ids: p(format!(
                "SELECT notification_id FROM {{ks}}.inbox WHERE {INBOX_KEY}"
            ))
            .await?,
            delete_inbox_month: p(format!("DELETE FROM {{ks}}.inbox WHERE {INBOX_KEY}")).await?,
            delete_feed_month: p(format!("DELETE FROM {{ks}}.inbox_feed WHERE {INBOX_KEY}"))
                .await?,
            delete_inbox_by_id: p("DELETE FROM {ks}.inbox_by_id WHERE tenant = ? AND \
                 user_id = ? AND notification_id = ?"
                .into())
            .await?,
            select_inbox_up_to: p(format!(
                "SELECT {INBOX_COLUMNS} FROM {{ks}}.inbox WHERE {INBOX_KEY} \
                 AND created_at_ms <= ?"
            ))
            .await?,
            select_inbox_read_state: p(format!(
                "SELECT created_at_ms, read_at_ms FROM {{ks}}.inbox WHERE {INBOX_KEY}"
            ))
            .await?,
            select_inbox_entry: p(format!(
                "SELECT {INBOX_COLUMNS} FROM {{ks}}.inbox WHERE {INBOX_KEY} \
                 AND created_at_ms = ? AND notification_id = ?"
            ))
            .await?,
            insert_inbox_by_id: p("INSERT INTO {ks}.inbox_by_id (tenant, user_id, \
                 notification_id, created_at_ms) VALUES (?, ?, ?, ?) USING TTL ?"
                .into())
            .await?,
            select_inbox_by_id: p("SELECT created_at_ms FROM {ks}.inbox_by_id \
                 WHERE tenant = ? AND user_id = ? AND notification_id = ?"
                .into())
            .await?,
            insert_feed: p(format!(
                "INSERT INTO {{ks}}.inbox_feed (month, {INBOX_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            set_feed_read: p("INSERT INTO {ks}.inbox_feed (tenant, user_id, month, \
                 delivered_at_ms, notification_id, read_at_ms) VALUES (?, ?, ?, ?, ?, ?) \
                 USING TTL ?"
                .into())
            .await?,
            select_feed_since: p(format!(
                "SELECT {INBOX_COLUMNS} FROM {{ks}}.inbox_feed WHERE {INBOX_KEY} \
                 AND delivered_at_ms >= ?"
            ))
            .await?,
        })
    }

    async fn shared(&self) -> Result<HotStatements> {
        let hot = self.hot;
        let p = |text: String| async move { self.prepare(&text, hot).await };
        Ok(HotStatements {
            insert_contact: p(
                "INSERT INTO {hot}.contacts (tenant, user_id, channel, address) \
                 VALUES (?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            delete_contact: p(
                "DELETE FROM {hot}.contacts WHERE tenant = ? AND user_id = ? AND channel = ? \
                 IF address = ?"
                    .into(),
            )
            .await?,
            select_contacts: p(
                "SELECT channel, address FROM {hot}.contacts WHERE tenant = ? AND user_id = ?"
                    .into(),
            )
            .await?,
            delete_contacts_of: p(
                "DELETE FROM {hot}.contacts WHERE tenant = ? AND user_id = ?".into(),
            )
            .await?,
            delete_opt_outs_of: p(
                "DELETE FROM {hot}.opt_outs WHERE tenant = ? AND user_id = ?".into(),
            )
            .await?,
            insert_opt_out: p(
                "INSERT INTO {hot}.opt_outs (tenant, user_id, channel, category) \
                 VALUES (?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            delete_opt_out: p(
                "DELETE FROM {hot}.opt_outs WHERE tenant = ? AND user_id = ? \
                 AND channel = ? AND category = ?"
                    .into(),
            )
            .await?,
            select_opt_outs: p(
                "SELECT channel, category FROM {hot}.opt_outs WHERE tenant = ? AND user_id = ?"
                    .into(),
            )
            .await?,
            insert_template: p(
                "INSERT INTO {hot}.template_versions (tenant, template_id, locale, channel, \
                 version, title, body, action_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            select_template_versions: p(
                "SELECT tenant, template_id, locale, channel, version, title, body, action_url \
                 FROM {hot}.template_versions WHERE tenant = ? AND template_id = ?"
                    .into(),
            )
            .await?,
            insert_template_id: p(
                "INSERT INTO {hot}.template_ids_by_tenant (tenant, template_id) VALUES (?, ?)"
                    .into(),
            )
            .await?,
            select_template_ids: p(
                "SELECT template_id FROM {hot}.template_ids_by_tenant WHERE tenant = ?".into(),
            )
            .await?,
            select_templates: p(
                "SELECT tenant, template_id, locale, title, body, action_url \
                 FROM {hot}.templates WHERE tenant = ? AND template_id = ?"
                    .into(),
            )
            .await?,
            insert_outbox: p(
                "INSERT INTO {hot}.outbox (owner, created_at_ms, id, topic, key, \
                 payload, headers) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    .into(),
            )
            .await?,
            delete_outbox: p(
                "DELETE FROM {hot}.outbox WHERE owner = ? AND created_at_ms = ? \
                 AND id = ?"
                    .into(),
            )
            .await?,
            select_outbox: p(
                "SELECT owner, id, topic, key, payload, headers, created_at_ms \
                 FROM {hot}.outbox WHERE owner = ?"
                    .into(),
            )
            .await?,
            select_outbox_owners: p("SELECT owner FROM {hot}.outbox_owners".into()).await?,
            insert_api_key: p(format!(
                "INSERT INTO {{hot}}.api_keys ({API_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            insert_api_key_by_tenant: p(
                "INSERT INTO {hot}.api_keys_by_tenant (tenant, key_id) VALUES (?, ?)".into(),
            )
            .await?,
            select_api_key: p(format!(
                "SELECT {API_KEY_COLUMNS} FROM {{hot}}.api_keys WHERE key_id = ?"
            ))
            .await?,
            select_api_keys_of_tenant: p(
                "SELECT key_id FROM {hot}.api_keys_by_tenant WHERE tenant = ?".into(),
            )
            .await?,
            insert_outbox_owner: p("INSERT INTO {hot}.outbox_owners (owner) VALUES (?)".into())
                .await?,
            take_fresh_lease: p(
                "INSERT INTO {hot}.outbox_leases (owner, holder, until_ms) VALUES (?, ?, ?) \
                 IF NOT EXISTS"
                    .into(),
            )
            .await?,
            take_expired_lease: p(
                "UPDATE {hot}.outbox_leases SET holder = ?, until_ms = ? WHERE owner = ? \
                 IF until_ms < ?"
                    .into(),
            )
            .await?,
            renew_lease: p(
                "UPDATE {hot}.outbox_leases SET until_ms = ? WHERE owner = ? IF holder = ?".into(),
            )
            .await?,
            insert_outbox_by_id: p("INSERT INTO {hot}.outbox_by_id (owner, id, created_at_ms) \
                 VALUES (?, ?, ?)"
                .into())
            .await?,
            delete_outbox_by_id: p(
                "DELETE FROM {hot}.outbox_by_id WHERE owner = ? AND id = ?".into()
            )
            .await?,
            select_outbox_by_id: p(
                "SELECT created_at_ms FROM {hot}.outbox_by_id WHERE owner = ? AND id = ?".into(),
            )
            .await?,
            claim_idempotency_key: p(format!(
                "INSERT INTO {{hot}}.idempotency_keys ({IDEMPOTENCY_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
            ))
            .await?,
            select_idempotency_key: self
                .prepare_serial_read(&format!(
                    "SELECT {IDEMPOTENCY_COLUMNS} FROM {{hot}}.idempotency_keys \
                     WHERE tenant = ? AND key = ?"
                ))
                .await?,
            ledger_begin: p(
                "INSERT INTO {hot}.delivery_ledger (delivery_id, begun_at_ms, \
                 abandoned) VALUES (?, ?, ?) IF NOT EXISTS"
                    .into(),
            )
            .await?,
            ledger_restart: p(
                "UPDATE {hot}.delivery_ledger SET abandoned = ?, begun_at_ms = ? \
                 WHERE delivery_id = ? IF abandoned = true AND state = null"
                    .into(),
            )
            .await?,
            ledger_finish: p("UPDATE {hot}.delivery_ledger SET state = ?, reason = ?, \
                 provider_message_id = ?, at_ms = ? WHERE delivery_id = ? IF state = null"
                .into())
            .await?,
            ledger_insert_finished: p("INSERT INTO {hot}.delivery_ledger (delivery_id, state, \
                 reason, provider_message_id, begun_at_ms, at_ms, abandoned) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                .into())
            .await?,
            ledger_abandon: p("UPDATE {hot}.delivery_ledger SET abandoned = ? \
                 WHERE delivery_id = ? IF state = null"
                .into())
            .await?,
            select_ledger: self
                .prepare_serial_read(&format!(
                    "SELECT {LEDGER_COLUMNS} FROM {{hot}}.delivery_ledger WHERE delivery_id = ?"
                ))
                .await?,
            insert_resend: p(
                "INSERT INTO {hot}.ledger_resends (month, delivery_id, at_ms) \
                 VALUES (?, ?, ?) USING TTL ?"
                    .into(),
            )
            .await?,
            select_resends: p(
                "SELECT delivery_id FROM {hot}.ledger_resends WHERE month = ?".into(),
            )
            .await?,
        })
    }
}

impl Statements {
    /// Prepares everything; fails if a table is missing (`herald migrate` has not run).
    pub(crate) async fn prepare(
        session: &Session,
        server: CqlServer,
        hot: &str,
        archive: &str,
    ) -> Result<Statements> {
        let p = Preparer {
            session,
            server,
            hot,
        };
        Ok(Statements {
            hot: p.tier(hot).await?,
            archive: p.tier(archive).await?,
            shared: p.shared().await?,
            quiet: p.quiet().await?,
            audience: p.audience().await?,
        })
    }

    /// The time-series statements of `tier`.
    pub(crate) fn tier(&self, tier: crate::tiers::Tier) -> &TierStatements {
        match tier {
            crate::tiers::Tier::Hot => &self.hot,
            crate::tiers::Tier::Archive => &self.archive,
        }
    }
}
