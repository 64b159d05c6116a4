//! Topic subscriptions, in the main file: who receives a topic's broadcasts.

use rusqlite::params;

use crate::error::Result;
use crate::store::Inner;

impl Inner {
    pub(crate) fn subscribe(
        &self,
        tenant: &str,
        user: &str,
        topic: &str,
        subscribed: bool,
    ) -> Result<()> {
        let sql = if subscribed {
            "INSERT INTO subscriptions (tenant, topic, user_id) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM subscriptions WHERE tenant = ?1 AND topic = ?2 AND user_id = ?3"
        };
        self.main()?
            .prepare_cached(sql)?
            .execute(params![tenant, topic, user])?;
        Ok(())
    }

    pub(crate) fn subscriptions_of(&self, tenant: &str, user: &str) -> Result<Vec<String>> {
        Ok(self
            .main()?
            .prepare_cached(
                "SELECT topic FROM subscriptions WHERE tenant = ?1 AND user_id = ?2
                 ORDER BY topic",
            )?
            .query_map(params![tenant, user], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub(crate) fn subscribers(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        // '' sorts before every user id (ids are never empty).
        Ok(self
            .main()?
            .prepare_cached(
                "SELECT user_id FROM subscriptions
                 WHERE tenant = ?1 AND topic = ?2 AND user_id > ?3
                 ORDER BY user_id LIMIT ?4",
            )?
            .query_map(
                params![
                    tenant,
                    topic,
                    after.unwrap_or_default(),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
