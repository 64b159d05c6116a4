//! Topic subscriptions: `subscribers` ((tenant, topic), user_id) is what a broadcast pages
//! through; `subscriptions_by_user` ((tenant, user_id), topic) answers export and erasure.

use std::ops::ControlFlow;

use crate::Result;
use crate::cql::{all, exec, scan};
use crate::store::Inner;

impl Inner {
    pub(crate) async fn subscribe(
        &self,
        tenant: &str,
        user_id: &str,
        topic: &str,
        subscribed: bool,
    ) -> Result<()> {
        let st = &self.st.audience;
        let (by_topic, by_user) = if subscribed {
            (&st.insert_subscriber, &st.insert_subscription)
        } else {
            (&st.delete_subscriber, &st.delete_subscription)
        };
        exec(&self.session, by_topic, (tenant, topic, user_id)).await?;
        exec(&self.session, by_user, (tenant, user_id, topic)).await
    }

    pub(crate) async fn subscriptions_of(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<String>> {
        let st = &self.st.audience;
        let rows: Vec<(String,)> = all(
            &self.session,
            &st.select_subscriptions_of,
            (tenant, user_id),
        )
        .await?;
        let mut topics: Vec<String> = rows.into_iter().map(|(t,)| t).collect();
        topics.sort();
        Ok(topics)
    }

    /// Removes every subscription of a recipient; how many there were.
    pub(crate) async fn unsubscribe_all(&self, tenant: &str, user_id: &str) -> Result<usize> {
        let topics = self.subscriptions_of(tenant, user_id).await?;
        let st = &self.st.audience;
        for topic in &topics {
            exec(
                &self.session,
                &st.delete_subscriber,
                (tenant, topic, user_id),
            )
            .await?;
        }
        exec(
            &self.session,
            &st.delete_subscriptions_of,
            (tenant, user_id),
        )
        .await?;
        Ok(topics.len())
    }

    pub(crate) async fn subscribers(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let st = &self.st.audience;
        let mut found = Vec::new();
        let mut visit = |(user,): (String,)| {
            found.push(user);
            Ok(if found.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        };
        match after {
            Some(after) => {
                let values = (tenant, topic, after);
                scan(
                    &self.session,
                    &st.select_subscribers_after,
                    values,
                    limit,
                    &mut visit,
                )
                .await?;
            }
            None => {
                let values = (tenant, topic);
                scan(
                    &self.session,
                    &st.select_subscribers,
                    values,
                    limit,
                    &mut visit,
                )
                .await?;
            }
        }
        Ok(found)
    }
}
