//! The statements of topic subscriptions (migration 0009).

use scylla::statement::prepared::PreparedStatement;

use super::Preparer;
use crate::Result;

/// Subscribers by topic and topics by subscriber, in the hot keyspace.
#[allow(missing_docs)]
pub(crate) struct AudienceStatements {
    pub insert_subscriber: PreparedStatement,
    pub delete_subscriber: PreparedStatement,
    pub insert_subscription: PreparedStatement,
    pub delete_subscription: PreparedStatement,
    pub select_subscriptions_of: PreparedStatement,
    pub delete_subscriptions_of: PreparedStatement,
    /// A topic's subscribers from the first, in user id order.
    pub select_subscribers: PreparedStatement,
    /// A topic's subscribers above a user id (a clustering range: beyond kassandra, so the
    /// broadcast scenario runs on ScyllaDB and SQLite only).
    pub select_subscribers_after: PreparedStatement,
}

impl Preparer<'_> {
    pub(super) async fn audience(&self) -> Result<AudienceStatements> {
        let hot = self.hot;
        let p = |text: &'static str| async move { self.prepare(text, hot).await };
        Ok(AudienceStatements {
            insert_subscriber: p(
                "INSERT INTO {hot}.subscribers (tenant, topic, user_id) VALUES (?, ?, ?)",
            )
            .await?,
            delete_subscriber: p(
                "DELETE FROM {hot}.subscribers WHERE tenant = ? AND topic = ? AND user_id = ?",
            )
            .await?,
            insert_subscription: p(
                "INSERT INTO {hot}.subscriptions_by_user (tenant, user_id, topic) VALUES (?, ?, ?)",
            )
            .await?,
            delete_subscription: p("DELETE FROM {hot}.subscriptions_by_user \
                 WHERE tenant = ? AND user_id = ? AND topic = ?")
            .await?,
            select_subscriptions_of: p(
                "SELECT topic FROM {hot}.subscriptions_by_user WHERE tenant = ? AND user_id = ?",
            )
            .await?,
            delete_subscriptions_of: p(
                "DELETE FROM {hot}.subscriptions_by_user WHERE tenant = ? AND user_id = ?",
            )
            .await?,
            select_subscribers: p(
                "SELECT user_id FROM {hot}.subscribers WHERE tenant = ? AND topic = ?",
            )
            .await?,
            select_subscribers_after: p("SELECT user_id FROM {hot}.subscribers \
                 WHERE tenant = ? AND topic = ? AND user_id > ?")
            .await?,
        })
    }
}
