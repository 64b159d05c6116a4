//! Notifications held for quiet hours: partitioned by the hour of their release, with the hours
//! that may hold any listed in one small partition. A released row is deleted by its full key.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use herald_store::HeldRecord;

use crate::Result;
use crate::cql::{all, exec, scan};
use crate::store::Inner;

const HOUR_MS: i64 = 3_600_000;

/// An hour found empty is forgotten only once it is this far behind the clock, so a hold
/// written late (an enrich catching up on a backlog) still finds its hour listed.
const FORGET_HOURS_AFTER: i64 = 24;

/// The one partition of `held_hours`.
const SHARD: i32 = 0;

fn hour(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS)
}

type HeldRow = (String, String, String, i64, Vec<u8>);

impl Inner {
    pub(crate) async fn hold(&self, h: &HeldRecord) -> Result<()> {
        let st = &self.st.quiet;
        let hour = hour(h.release_at_ms);
        // The hour first: a row is never in an hour the releaser does not read.
        exec(&self.session, &st.insert_held_hour, (SHARD, hour)).await?;
        let values = (
            hour,
            h.release_at_ms,
            h.tenant.as_str(),
            h.notification_id.as_str(),
            h.recipient_user_id.as_str(),
            h.payload.as_slice(),
        );
        exec(&self.session, &st.insert_held, values).await
    }

    pub(crate) async fn held_due(&self, now_ms: i64, limit: usize) -> Result<Vec<HeldRecord>> {
        let st = &self.st.quiet;
        let now_hour = hour(now_ms);
        let hours: BTreeSet<i64> = all::<(i64,)>(&self.session, &st.select_held_hours, (SHARD,))
            .await?
            .into_iter()
            .map(|(h,)| h)
            .filter(|h| *h <= now_hour)
            .collect();
        let mut due = Vec::new();
        for h in hours {
            let before = due.len();
            if before >= limit {
                break;
            }
            scan(
                &self.session,
                &st.select_held_due,
                (h,),
                limit - before,
                |row: HeldRow| {
                    let (tenant, notification_id, recipient_user_id, release_at_ms, payload) = row;
                    if release_at_ms > now_ms || due.len() >= limit {
                        return Ok(ControlFlow::Break(()));
                    }
                    due.push(HeldRecord {
                        tenant,
                        notification_id,
                        recipient_user_id,
                        release_at_ms,
                        payload,
                    });
                    Ok(ControlFlow::Continue(()))
                },
            )
            .await?;
            if due.len() == before && h < now_hour - FORGET_HOURS_AFTER {
                exec(&self.session, &st.delete_held_hour, (SHARD, h)).await?;
            }
        }
        Ok(due)
    }

    pub(crate) async fn forget_held(&self, released: &[HeldRecord]) -> Result<()> {
        let st = &self.st.quiet;
        for h in released {
            let key = (
                hour(h.release_at_ms),
                h.release_at_ms,
                h.tenant.as_str(),
                h.notification_id.as_str(),
            );
            exec(&self.session, &st.delete_held, key).await?;
        }
        Ok(())
    }
}
