//! Rate limiting, the pure part: `governor` keyed limiters on an event-time clock.
//!
//! The clock advances with the timestamps of the records the stage reads (never backwards), so a
//! decision depends only on the sequence of records in the partition, not on how fast the stage
//! happens to run; tests drive it with plain numbers. Records are keyed by tenant/recipient, so
//! all of one recipient's notifications reach the same limiter. Limiter state is in memory: after
//! a restart or a rebalance the new owner starts with full buckets (at most one extra window's
//! quota gets through), which is the documented trade-off for keeping the stage stateless.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use herald_schemas::Priority;
use serde::Deserialize;

/// A quota: `limit` notifications per `window_seconds` on average. A quiet recipient may get a
/// burst of `limit` at once; after that one more is admitted every `window_seconds / limit`
/// (GCRA, as implemented by `governor`). So in any interval D at most `limit + D·limit/window`
/// get through: never more than twice the quota in one window, and exactly the quota over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// How many per window (at least 1).
    pub limit: u32,
    /// The window length in seconds (at least 1).
    pub window_seconds: u64,
}

impl QuotaConfig {
    fn quota(self) -> Quota {
        let limit = NonZeroU32::new(self.limit).unwrap_or(NonZeroU32::MIN);
        let window = Duration::from_secs(self.window_seconds.max(1));
        Quota::with_period(window / limit.get())
            .unwrap_or_else(|| Quota::per_second(limit))
            .allow_burst(limit)
    }
}

/// The `[rate_limit]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per (tenant, recipient, category).
    pub per_recipient: QuotaConfig,
    /// Per tenant, over all its recipients.
    pub per_tenant: QuotaConfig,
    /// Categories that are never limited (as are CRITICAL-priority notifications).
    pub bypass_categories: Vec<String>,
    /// What happens to a notification over its limit: `drop` (recorded as RATE_LIMITED) or
    /// `defer` (recorded as DEFERRED and tried again when the limit allows, at most
    /// `max_deferrals` times, then RATE_LIMITED).
    pub over_limit: OverLimit,
    /// How often one notification may be deferred.
    pub max_deferrals: i32,
    /// How far a record's timestamp may lie ahead of the stage's clock before it is taken as
    /// "now" instead (milliseconds): one record stamped in the far future must neither freeze
    /// the limiters' event clock nor overflow it.
    pub max_clock_skew_ms: i64,
}

/// What to do with a notification over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverLimit {
    /// Record it as RATE_LIMITED and deliver nothing.
    Drop,
    /// Try again when the limit allows.
    Defer,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_recipient: QuotaConfig {
                limit: 20,
                window_seconds: 60,
            },
            per_tenant: QuotaConfig {
                limit: 5_000,
                window_seconds: 1,
            },
            bypass_categories: vec!["security".into(), "otp".into()],
            over_limit: OverLimit::Drop,
            max_deferrals: 3,
            max_clock_skew_ms: 300_000,
        }
    }
}

/// What the limiter decided for one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Within its limits.
    Admit,
    /// Not limited at all (critical priority or a bypass category).
    Bypass,
    /// Over a limit; the reason names which, `retry_after_ms` says when the limit allows one more.
    Limited {
        /// Which limit, in words.
        reason: String,
        /// Milliseconds (event time) until the limit admits one more.
        retry_after_ms: i64,
    },
}

/// The time a record counts at: its timestamp, but never more than `max_skew_ms` ahead of
/// `now_ms` nor before the epoch (a producer's clock can be wrong; the limiters must go on).
pub fn event_time(record_ms: i64, now_ms: i64, max_skew_ms: i64) -> i64 {
    record_ms
        .min(now_ms.saturating_add(max_skew_ms.max(0)))
        .max(0)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// The limiters of one stage instance.
pub struct Limiter {
    config: LimitsConfig,
    clock: FakeRelativeClock,
    last_ms: Option<i64>,
    recipients: Keyed<(String, String, String)>,
    tenants: Keyed<String>,
    decisions: u64,
}

impl Limiter {
    /// Empty limiters for `config`.
    pub fn new(config: LimitsConfig) -> Limiter {
        let clock = FakeRelativeClock::default();
        Limiter {
            recipients: RateLimiter::hashmap_with_clock(
                config.per_recipient.quota(),
                clock.clone(),
            ),
            tenants: RateLimiter::hashmap_with_clock(config.per_tenant.quota(), clock.clone()),
            config,
            clock,
            last_ms: None,
            decisions: 0,
        }
    }

    fn observe(&mut self, at_ms: i64) {
        match self.last_ms {
            Some(last) if at_ms > last => {
                let step = u64::try_from(at_ms.saturating_sub(last)).unwrap_or(0);
                self.clock.advance(Duration::from_millis(step));
                self.last_ms = Some(at_ms);
            }
            Some(_) => {}
            None => self.last_ms = Some(at_ms),
        }
    }

    /// Decides for one notification stamped `at_ms` (the record's timestamp).
    pub fn decide(
        &mut self,
        tenant: &str,
        recipient: &str,
        category: &str,
        priority: Priority,
        at_ms: i64,
    ) -> Decision {
        self.observe(at_ms);
        self.decisions += 1;
        if self.decisions.is_multiple_of(10_000) {
            // Forget keys whose buckets are full again, so memory follows active recipients.
            self.recipients.retain_recent();
            self.tenants.retain_recent();
        }
        if priority == Priority::Critical
            || self.config.bypass_categories.iter().any(|c| c == category)
        {
            return Decision::Bypass;
        }
        let key = (tenant.to_owned(), recipient.to_owned(), category.to_owned());
        if let Err(not_until) = self.recipients.check_key(&key) {
            let q = self.config.per_recipient;
            return Decision::Limited {
                reason: format!(
                    "over the per-recipient limit of {} {category:?} notifications per {} s",
                    q.limit, q.window_seconds
                ),
                retry_after_ms: millis(not_until.wait_time_from(self.clock.now())),
            };
        }
        if let Err(not_until) = self.tenants.check_key(&tenant.to_owned()) {
            let q = self.config.per_tenant;
            return Decision::Limited {
                reason: format!(
                    "over the tenant limit of {} notifications per {} s",
                    q.limit, q.window_seconds
                ),
                retry_after_ms: millis(not_until.wait_time_from(self.clock.now())),
            };
        }
        Decision::Admit
    }
}

#[cfg(test)]
mod tests;
