//! Deliveries to try again later, pure: a delivery that failed for a reason that may pass goes
//! to the channel's retry topic as the next attempt, not before an exponential backoff (with a
//! jitter derived from the delivery id, so a replay plans the same, and at least the provider's
//! Retry-After); once the channel's budget of attempts is spent it is given up.

use std::time::Duration;

use herald_schemas::{Dispatch, ids};
use serde::Deserialize;

use super::attempt::Later;

/// A channel's retry budget.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the delivery fails.
    pub max_attempts: i32,
    /// The wait before the second attempt (milliseconds); each later wait doubles it.
    pub first_backoff_ms: u64,
    /// The longest wait between two attempts (milliseconds).
    pub max_backoff_ms: u64,
}

/// About 8 attempts over about 30 minutes: 15 s, 30 s, 1 min, … 8 min, then 15 min between them.
impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            first_backoff_ms: 15_000,
            max_backoff_ms: 900_000,
        }
    }
}

/// What to do with a delivery that failed for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Try again: this dispatch (the next attempt) goes to the retry topic.
    Again(Box<Dispatch>),
    /// The budget is spent: the delivery fails, for this reason.
    GiveUp(String),
}

/// The longest Retry-After honoured: a provider asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

impl RetryPolicy {
    /// The longest a planned attempt waits: the capped backoff with its jitter, or the longest
    /// Retry-After honoured. A retry due later than this was not planned here (a corrupt record,
    /// a wrong clock) and is dead-lettered rather than holding its partition.
    pub fn longest_wait(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms.saturating_mul(6) / 5).max(MAX_RETRY_AFTER)
    }

    /// The wait before attempt `next` (2 for the first retry): doubling from the first backoff,
    /// capped, scaled by a jitter of ±20 % derived from `delivery_id`, and at least `after`
    /// (itself at most [`MAX_RETRY_AFTER`]).
    pub fn backoff(&self, next: i32, delivery_id: &str, after: Option<Duration>) -> Duration {
        let doublings = u32::try_from(next.saturating_sub(2)).unwrap_or(0).min(30);
        let base = self
            .first_backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms);
        // FNV-1a of the id, as a fraction in [0.8, 1.2).
        let hash = delivery_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let per_mille = 800 + hash % 400;
        let jittered = Duration::from_millis(base.saturating_mul(per_mille) / 1_000);
        after.map_or(jittered, |after| jittered.max(after.min(MAX_RETRY_AFTER)))
    }

    /// The plan for `d`, which failed as `later` says, at `now_ms`.
    pub fn plan(&self, d: &Dispatch, later: &Later, now_ms: i64) -> Plan {
        if d.attempt >= self.max_attempts {
            return Plan::GiveUp(format!(
                "gave up after {} attempts; the last failed: {}",
                d.attempt, later.reason
            ));
        }
        let next = d.attempt + 1;
        let wait = self.backoff(next, &d.delivery_id, later.after);
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        Plan::Again(Box::new(Dispatch {
            delivery_id: ids::delivery_id(&d.notification_id, d.channel, next),
            attempt: next,
            not_before_ms: Some(now_ms.saturating_add(wait_ms)),
            last_error: Some(later.reason.clone()),
            ..d.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    fn dispatch(attempt: i32) -> Dispatch {
        crate::deliver::test_dispatch(Channel::Sms, attempt)
    }

    fn later(after: Option<Duration>) -> Later {
        Later {
            reason: "503 Service Unavailable".into(),
            after,
        }
    }

    #[test]
    fn the_next_attempt_waits_its_backoff_with_a_new_delivery_id() {
        let policy = RetryPolicy::default();
        let Plan::Again(next) = policy.plan(&dispatch(1), &later(None), 1_000_000) else {
            panic!("a first failure is retried");
        };
        assert_eq!(next.attempt, 2);
        assert_eq!(next.delivery_id, ids::delivery_id("n1", Channel::Sms, 2));
        assert_eq!(next.last_error.as_deref(), Some("503 Service Unavailable"));
        let wait = next.not_before_ms.expect("not before") - 1_000_000;
        assert!((12_000..18_000).contains(&wait), "15 s ± 20 %: {wait} ms");
        assert_eq!(
            (next.address, next.title),
            ("+15550100".into(), "Hi".into())
        );
    }

    #[test]
    fn backoffs_double_up_to_the_cap_and_the_jitter_is_stable() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (2..=12)
            .map(|n| policy.backoff(n, "d", None).as_millis() as u64)
            .collect();
        let jitter = waits[0] as f64 / 15_000.0;
        assert!((0.8..1.2).contains(&jitter), "{jitter}");
        for (n, wait) in waits.iter().enumerate() {
            let base = (15_000u64 << n).min(900_000);
            assert_eq!(
                *wait,
                (base as f64 * jitter).round() as u64,
                "attempt {}",
                n + 2
            );
        }
        assert_eq!(policy.backoff(5, "d", None), policy.backoff(5, "d", None));
        assert_ne!(policy.backoff(5, "d", None), policy.backoff(5, "e", None));
    }

    #[test]
    fn the_jitter_spreads_deliveries_over_the_whole_range() {
        let policy = RetryPolicy::default();
        let waits: std::collections::BTreeSet<u128> = (0..200)
            .map(|i| {
                policy
                    .backoff(
                        2,
                        &ids::delivery_id(&format!("n{i}"), Channel::Sms, 1),
                        None,
                    )
                    .as_millis()
            })
            .collect();
        assert!(waits.len() > 100, "{} distinct waits of 200", waits.len());
        let (low, high) = (*waits.first().unwrap_or(&0), *waits.last().unwrap_or(&0));
        assert!(low < 12_600 && high > 17_400, "spread {low}..{high} ms");
    }

    #[test]
    fn a_retry_after_longer_than_the_backoff_wins() {
        let policy = RetryPolicy::default();
        let long = Duration::from_secs(120);
        assert_eq!(policy.backoff(2, "d", Some(long)), long);
        let short = Duration::from_millis(1);
        assert!(policy.backoff(2, "d", Some(short)) >= Duration::from_secs(12));
        let huge = Duration::from_secs(30 * 24 * 3_600);
        assert_eq!(policy.backoff(2, "d", Some(huge)), MAX_RETRY_AFTER);
        for n in 2..=40 {
            assert!(policy.backoff(n, "d", Some(huge)) <= policy.longest_wait());
            assert!(policy.backoff(n, "d", None) <= policy.longest_wait());
        }
    }

    #[test]
    fn the_last_attempt_gives_up_with_the_reason() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            policy.plan(&dispatch(2), &later(None), 0),
            Plan::Again(_)
        ));
        let Plan::GiveUp(reason) = policy.plan(&dispatch(3), &later(None), 0) else {
            panic!("the budget is spent");
        };
        assert!(
            reason.contains("3 attempts") && reason.contains("503"),
            "{reason}"
        );
    }

    #[test]
    fn the_default_budget_is_about_eight_attempts_over_half_an_hour() {
        let policy = RetryPolicy::default();
        let total: Duration = (2..=policy.max_attempts)
            .map(|n| policy.backoff(n, "d", None))
            .sum();
        assert_eq!(policy.max_attempts, 8);
        assert!(
            (Duration::from_secs(20 * 60)..Duration::from_secs(45 * 60)).contains(&total),
            "{total:?}"
        );
    }
}
