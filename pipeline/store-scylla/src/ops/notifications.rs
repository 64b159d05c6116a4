//! Notifications, their timelines, and the per-tenant failure list.

use std::ops::ControlFlow;

use futures::FutureExt;
use futures::future::try_join_all;
use herald_schemas::Channel;
use herald_store::retention::DAY_MS;
use herald_store::{
    DeliveryEventRecord, FailurePage, FailureQuery, NotificationRecord, is_failure, token,
};

use crate::Result;
use crate::codec::{self, EventRow, FailureRow, NotificationRow};
use crate::cql::{all, exec, first, scan};
use crate::store::Inner;
use crate::tiers::{Tier, WithTtl, day_of};

impl Inner {
    pub(crate) async fn upsert_notification(&self, n: &NotificationRecord) -> Result<()> {
        let writes = self
            .time
            .writes(n.created_at_ms)
            .into_iter()
            .map(|(tier, ttl)| {
                let row = (
                    n.tenant.as_str(),
                    n.notification_id.as_str(),
                    n.recipient_user_id.as_str(),
                    n.category.as_str(),
                    n.priority.as_str(),
                    n.created_at_ms,
                );
                exec(
                    &self.session,
                    &self.st.tier(tier).insert_notification,
                    WithTtl { row, ttl },
                )
            });
        try_join_all(writes).await?;
        Ok(())
    }

    pub(crate) async fn record_delivery_event(&self, e: &DeliveryEventRecord) -> Result<()> {
        let channel = e.channel.map(Channel::as_str);
        let mut writes = Vec::new();
        for (tier, ttl) in self.time.writes(e.at_ms) {
            let st = self.st.tier(tier);
            let row = (
                e.tenant.as_str(),
                e.notification_id.as_str(),
                e.result_id.as_str(),
                e.recipient_user_id.as_str(),
                e.category.as_str(),
                channel,
                e.state.as_str(),
                e.reason.as_deref(),
                e.at_ms,
            );
            writes.push(exec(&self.session, &st.insert_event, WithTtl { row, ttl }).boxed());
            if is_failure(e.state) {
                let row = (
                    day_of(e.at_ms),
                    e.tenant.as_str(),
                    e.at_ms,
                    e.result_id.as_str(),
                    e.notification_id.as_str(),
                    e.recipient_user_id.as_str(),
                    e.category.as_str(),
                    channel,
                    e.state.as_str(),
                    e.reason.as_deref(),
                );
                writes.push(exec(&self.session, &st.insert_failure, WithTtl { row, ttl }).boxed());
            }
        }
        try_join_all(writes).await?;
        Ok(())
    }

    /// The hot tier first, then the archive; the timeline from the tier the notification was
    /// found in (events happen at or after the creation, so they outlive it in either tier).
    pub(crate) async fn get_notification(
        &self,
        tenant: &str,
        notification_id: &str,
    ) -> Result<Option<(NotificationRecord, Vec<DeliveryEventRecord>)>> {
        let oldest = self.time.oldest_kept();
        let mut found = None;
        for tier in [Tier::Hot, Tier::Archive] {
            let row: Option<NotificationRow> = first(
                &self.session,
                &self.st.tier(tier).select_notification,
                (tenant, notification_id),
            )
            .await?;
            if let Some(row) = row {
                found = Some((tier, codec::notification(row)?));
                break;
            }
        }
        let Some((tier, n)) = found.filter(|(_, n)| n.created_at_ms >= oldest) else {
            return Ok(None);
        };
        let rows: Vec<EventRow> = all(
            &self.session,
            &self.st.tier(tier).select_events,
            (tenant, notification_id),
        )
        .await?;
        let mut timeline = rows
            .into_iter()
            .map(codec::event)
            .filter(|e| e.as_ref().map_or(true, |e| e.at_ms >= oldest))
            .collect::<Result<Vec<_>>>()?;
        timeline.sort_by(|a, b| (a.at_ms, &a.result_id).cmp(&(b.at_ms, &b.result_id)));
        Ok(Some((n, timeline)))
    }

    /// Walks the tenant's day partitions from the cursor's day down to `from_ms`'s, each from
    /// the tier the whole day lies in, until a page and one more row are found: one request
    /// per day in the range (at most 366), fewer when failures are dense.
    pub(crate) async fn list_failures(
        &self,
        q: &FailureQuery,
    ) -> herald_store::Result<FailurePage> {
        let now = self.time.now();
        self.time.retention.check_readable(q.from_ms, now)?;
        let scope = token::failures_scope(q);
        let mut cursor = match q.page_token.as_deref() {
            Some(t) => token::decode(token::FAILURES, &scope, t, now)?,
            None => (q.to_ms, String::new()),
        };
        let want = q.page_size.saturating_add(1);
        let mut failures = Vec::new();
        // Rows stamped more than a day ahead of the clock are not looked for.
        let mut day = day_of(cursor.0.min(now.saturating_add(DAY_MS)));
        let last_day = day_of(q.from_ms);
        while day >= last_day && failures.len() < want {
            let tier = self.time.read_tier(i64::from(day) * DAY_MS);
            let mut done = false;
            scan(
                &self.session,
                &self.st.tier(tier).select_failures_below,
                (q.tenant.as_str(), day, cursor.0, cursor.1.as_str()),
                want - failures.len(),
                |row: FailureRow| {
                    if row.1 < q.from_ms {
                        done = true;
                        return Ok(ControlFlow::Break(()));
                    }
                    failures.push(codec::failure(row)?);
                    Ok(if failures.len() >= want {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )
            .await?;
            if done {
                break;
            }
            if let Some(last) = failures.last() {
                cursor = (last.at_ms, last.result_id.clone());
            }
            day -= 1;
        }
        let next_page_token =
            token::finish_page(token::FAILURES, &scope, &mut failures, q.page_size, |f| {
                (f.at_ms, &f.result_id)
            });
        Ok(FailurePage {
            failures,
            next_page_token,
        })
    }
}
