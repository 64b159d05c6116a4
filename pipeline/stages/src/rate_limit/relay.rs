//! The deferred relay: once a parked notification is due, puts it back on `enriched` for the
//! rate-limit stage to decide again. Until then it answers [`ProcessError::NotDue`] and the
//! runner sets the partition aside until the due time. Records on one partition are roughly in
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
        if !wait.is_zero() {
            return Err(ProcessError::NotDue(wait));
        }
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
    use herald_schemas::codec;
    use herald_store::ManualClock;

    use super::*;

    fn parked(defer_until_ms: i64) -> Vec<u8> {
        codec::encode(&super::super::test_enriched(1, Some(defer_until_ms))).expect("encodes")
    }

    fn input(payload: &[u8]) -> Input<'_> {
        Input {
            topic: "deferred",
            partition: 0,
            offset: 7,
            key: None,
            payload,
            timestamp_ms: 0,
            trace: None,
        }
    }

    #[tokio::test]
    async fn a_notification_not_yet_due_is_handed_back_with_its_wait_and_goes_on_once_due() {
        let clock = ManualClock::at(10_000);
        let mut relay = DeferredRelay::new(Topics::new("h"), Arc::new(clock.clone()));
        let payload = parked(12_500);
        match relay.process(&input(&payload)).await {
            Err(ProcessError::NotDue(wait)) => assert_eq!(wait, Duration::from_millis(2_500)),
            other => panic!("{other:?}"),
        }
        clock.set(12_500);
        let out = relay.process(&input(&payload)).await.expect("due");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, Topics::new("h").enriched());
        let back: NotificationEnriched = codec::decode(&out[0].payload).expect("decodes");
        assert_eq!(back.defer_until_ms, None);
    }

    #[tokio::test]
    async fn a_deferral_longer_than_any_is_poison() {
        let clock = ManualClock::at(0);
        let mut relay = DeferredRelay::new(Topics::new("h"), Arc::new(clock));
        let payload = parked(i64::MAX);
        assert!(matches!(
            relay.process(&input(&payload)).await,
            Err(ProcessError::Poison(_))
        ));
    }

    #[test]
    fn waits_only_for_future_due_times() {
        assert_eq!(wait_for(Some(1_500), 1_000), Duration::from_millis(500));
        assert_eq!(wait_for(Some(500), 1_000), Duration::ZERO);
        assert_eq!(wait_for(None, 1_000), Duration::ZERO);
        assert_eq!(wait_for(Some(i64::MIN), i64::MAX), Duration::ZERO);
    }
}
