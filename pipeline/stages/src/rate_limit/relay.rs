//! The deferred relay: waits until a parked notification is due, then puts it back on
//! `enriched` for the rate-limit stage to decide again. Records on one partition are roughly in
//! due order (one recipient's deferrals are made in sequence), so waiting on the head is fair.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::NotificationEnriched;

use crate::wire::{decode, output};

/// How long to wait before `due_ms` when it is `now_ms`.
pub fn wait_for(due_ms: Option<i64>, now_ms: i64) -> Duration {
    let ms = due_ms.map_or(0, |due| due.saturating_sub(now_ms)).max(0);
    Duration::from_millis(ms as u64)
}

/// Moves due notifications from `deferred` back to `enriched`.
pub struct DeferredRelay {
    topics: Topics,
}

impl DeferredRelay {
    /// A relay writing to `topics`.
    pub fn new(topics: Topics) -> DeferredRelay {
        DeferredRelay { topics }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[async_trait]
impl Processor for DeferredRelay {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let n: NotificationEnriched = decode(input.payload)?;
        tokio::time::sleep(wait_for(n.defer_until_ms, now_ms())).await;
        let due = NotificationEnriched {
            defer_until_ms: None,
            ..n
        };
        Ok(vec![output(
            self.topics.enriched(),
            &due.tenant,
            &due.recipient_user_id,
            &due,
        )?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_for_future_due_times() {
        assert_eq!(wait_for(Some(1_500), 1_000), Duration::from_millis(500));
        assert_eq!(wait_for(Some(500), 1_000), Duration::ZERO);
        assert_eq!(wait_for(None, 1_000), Duration::ZERO);
        assert_eq!(wait_for(Some(i64::MIN), i64::MAX), Duration::ZERO);
    }
}
