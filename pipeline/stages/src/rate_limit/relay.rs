//! The deferred relay: waits until a parked notification is due, then puts it back on
//! `enriched` for the rate-limit stage to decide again. Records on one partition are roughly in
//! due order (one recipient's deferrals are made in sequence), so waiting on the head is fair.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_runtime::runner::{Input, Output, ProcessError, Processor};
use herald_runtime::topics::Topics;
use herald_schemas::NotificationEnriched;
use herald_store::Clock;

use crate::wire::{decode, output};

/// How long to wait before `due_ms` when it is `now_ms`.
pub fn wait_for(due_ms: Option<i64>, now_ms: i64) -> Duration {
    let ms = due_ms.map_or(0, |due| due.saturating_sub(now_ms)).max(0);
    Duration::from_millis(ms as u64)
}

/// A deferral is never longer than this: the rate-limit stage defers by at most one window of
/// a quota. A record due later is corrupt (or from a wrong clock) and is dead-lettered rather
/// than holding its partition.
pub const MAX_DEFERRAL: Duration = Duration::from_secs(3_600);

/// Moves due notifications from `deferred` back to `enriched`.
pub struct DeferredRelay {
    topics: Topics,
    clock: Arc<dyn Clock>,
}

impl DeferredRelay {
    /// A relay writing to `topics`, waiting by `clock`.
    pub fn new(topics: Topics, clock: Arc<dyn Clock>) -> DeferredRelay {
        DeferredRelay { topics, clock }
    }
}

#[async_trait]
impl Processor for DeferredRelay {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let n: NotificationEnriched = decode(input.payload)?;
        let wait = wait_for(n.defer_until_ms, self.clock.now_ms());
        if wait > MAX_DEFERRAL {
            return Err(ProcessError::Poison(format!(
                "deferred until {:?} ms, {wait:?} from now: longer than any deferral ({MAX_DEFERRAL:?})",
                n.defer_until_ms
            )));
        }
        tokio::time::sleep(wait).await;
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
