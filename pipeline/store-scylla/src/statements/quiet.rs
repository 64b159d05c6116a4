//! The statements of quiet hours and held notifications (migration 0008).

use scylla::statement::prepared::PreparedStatement;

use super::Preparer;
use crate::Result;

/// Quiet hours and the held notifications' tables, in the hot keyspace.
#[allow(missing_docs)]
pub(crate) struct QuietStatements {
    pub insert_quiet_hours: PreparedStatement,
    pub select_quiet_hours: PreparedStatement,
    pub delete_quiet_hours: PreparedStatement,
    pub insert_held: PreparedStatement,
    /// One hour's held notifications, earliest release first, read page by page until the
    /// first not yet due (restricting the clustering key is beyond kassandra).
    pub select_held_due: PreparedStatement,
    pub delete_held: PreparedStatement,
    pub insert_held_hour: PreparedStatement,
    /// Every listed hour, earliest first. `shard` is always [`crate::ops`]'s 0: bound, not
    /// written in the text, since kassandra reads a literal there as a marker.
    pub select_held_hours: PreparedStatement,
    pub delete_held_hour: PreparedStatement,
}

impl Preparer<'_> {
    pub(super) async fn quiet(&self) -> Result<QuietStatements> {
        let hot = self.hot;
        let p = |text: &'static str| async move { self.prepare(text, hot).await };
        Ok(QuietStatements {
            insert_quiet_hours: p("INSERT INTO {hot}.quiet_hours \
                 (tenant, user_id, start_minute, end_minute, time_zone) VALUES (?, ?, ?, ?, ?)")
            .await?,
            select_quiet_hours: p("SELECT start_minute, end_minute, time_zone \
                 FROM {hot}.quiet_hours WHERE tenant = ? AND user_id = ?")
            .await?,
            delete_quiet_hours: p("DELETE FROM {hot}.quiet_hours WHERE tenant = ? AND user_id = ?")
                .await?,
            insert_held: p("INSERT INTO {hot}.held_by_hour \
                 (hour, release_at_ms, tenant, notification_id, recipient_user_id, payload) \
                 VALUES (?, ?, ?, ?, ?, ?)")
            .await?,
            select_held_due: p(
                "SELECT tenant, notification_id, recipient_user_id, release_at_ms, payload \
                 FROM {hot}.held_by_hour WHERE hour = ?",
            )
            .await?,
            delete_held: p("DELETE FROM {hot}.held_by_hour \
                 WHERE hour = ? AND release_at_ms = ? AND tenant = ? AND notification_id = ?")
            .await?,
            insert_held_hour: p("INSERT INTO {hot}.held_hours (shard, hour) VALUES (?, ?)").await?,
            select_held_hours: p("SELECT hour FROM {hot}.held_hours WHERE shard = ?").await?,
            delete_held_hour: p("DELETE FROM {hot}.held_hours WHERE shard = ? AND hour = ?")
                .await?,
        })
    }
}
