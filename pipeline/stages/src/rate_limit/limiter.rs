//! Rate limiting, the pure part: `governor` keyed limiters on an event-time clock, one
//! [`Limiter`] per input partition.
//!
//! The clock advances with the timestamps of the records the stage reads (never backwards), so a
//! decision depends only on the sequence of records in the partition, not on how fast the stage
//! happens to run; tests drive it with plain numbers. Records are keyed by tenant/recipient, so
//! all of one recipient's notifications reach the same partition's limiter; a tenant's limit is
//! shared out evenly between the partitions ([`LimitsConfig::per_partition`]).
//!
//! After every decision the limiter states what it now holds for that notification's keys
//! ([`LimiterState`]: the clock and the two buckets' theoretical arrival times). The stage writes
//! that to a changelog in the same transaction as the decision, and a new owner of the partition
//! folds the changelog back in ([`Limiter::restore`]) before deciding: every value only grows, so
//! the fold is a maximum and neither order nor compaction matters, and a replay after a crash
//! or an abort decides exactly as the first attempt did.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::Clock;
use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use herald_schemas::Priority;
use serde::{Deserialize, Serialize};

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
    /// Per tenant, over all its recipients; each partition's limiter applies its even share
    /// ([`LimitsConfig::per_partition`]).
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

impl LimitsConfig {
    /// The limits one partition's limiter applies when the stage reads `partitions` partitions:
    /// the tenant quota shared out evenly (rounded up, at least 1), the rest as configured.
    pub fn per_partition(&self, partitions: u32) -> LimitsConfig {
        let mut share = self.clone();
        share.per_tenant.limit = self.per_tenant.limit.div_ceil(partitions.max(1)).max(1);
        share
    }
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

/// Each key's theoretical arrival time (GCRA, nanoseconds since the epoch): `governor`'s state,
/// kept where the limiter can read and restore it.
struct Tats<K>(Arc<Mutex<HashMap<K, u64>>>);

impl<K: Hash + Eq + Clone> StateStore for Tats<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (value, tat) = f(map.get(key).copied().map(Nanos::from))?;
        map.insert(key.clone(), tat.into());
        Ok(value)
    }
}

/// One keyed limiter and its readable state.
struct Keyed<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, Tats<K>, FakeRelativeClock, NoOpMiddleware<Nanos>>,
    tats: Arc<Mutex<HashMap<K, u64>>>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(quota: QuotaConfig, clock: &FakeRelativeClock) -> Keyed<K> {
        let tats = Arc::new(Mutex::new(HashMap::new()));
        Keyed {
            limiter: RateLimiter::new(quota.quota(), Tats(Arc::clone(&tats)), clock.clone()),
            tats,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, u64>> {
        self.tats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &K) -> Option<u64> {
        self.map().get(key).copied()
    }

    /// Raises `key`'s arrival time to `tat` (restoring: values only grow).
    fn raise(&self, key: K, tat: u64) {
        let mut map = self.map();
        let slot = map.entry(key).or_insert(tat);
        *slot = (*slot).max(tat);
    }

    /// Forgets keys whose bucket is full again at `now_ns` (the same as never seen).
    fn forget_full(&self, now_ns: u64) {
        self.map().retain(|_, tat| *tat > now_ns);
    }

    fn len(&self) -> usize {
        self.map().len()
    }
}

/// What a limiter holds for one notification's keys after deciding it: written to the stage's
/// changelog, folded back in by [`Limiter::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterState {
    /// The event clock (ms since the epoch).
    pub clock_ms: i64,
    /// Tenant, recipient, category and that bucket's arrival time (ns), if it has one.
    pub recipient: Option<(String, String, String, u64)>,
    /// Tenant and that bucket's arrival time (ns), if it has one.
    pub tenant: Option<(String, u64)>,
}

/// The limiters of one input partition.
pub struct Limiter {
    config: LimitsConfig,
    clock: FakeRelativeClock,
    last_ms: i64,
    recipients: Keyed<(String, String, String)>,
    tenants: Keyed<String>,
    decisions: u64,
}

impl Limiter {
    /// Empty limiters for `config`, their clock at the epoch.
    pub fn new(config: LimitsConfig) -> Limiter {
        let clock = FakeRelativeClock::default();
        Limiter {
            recipients: Keyed::new(config.per_recipient, &clock),
            tenants: Keyed::new(config.per_tenant, &clock),
            config,
            clock,
            last_ms: 0,
            decisions: 0,
        }
    }

    fn observe(&mut self, at_ms: i64) {
        if at_ms > self.last_ms {
            let step = u64::try_from(at_ms.saturating_sub(self.last_ms)).unwrap_or(0);
            self.clock.advance(Duration::from_millis(step));
            self.last_ms = at_ms;
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.last_ms)
            .unwrap_or(0)
            .saturating_mul(1_000_000)
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
            self.forget_full();
        }
        if priority == Priority::Critical
            || self.config.bypass_categories.iter().any(|c| c == category)
        {
            return Decision::Bypass;
        }
        let key = (tenant.to_owned(), recipient.to_owned(), category.to_owned());
        if let Err(not_until) = self.recipients.limiter.check_key(&key) {
            let q = self.config.per_recipient;
            return Decision::Limited {
                reason: format!(
                    "over the per-recipient limit of {} {category:?} notifications per {} s",
                    q.limit, q.window_seconds
                ),
                retry_after_ms: millis(not_until.wait_time_from(self.clock.now())),
            };
        }
        if let Err(not_until) = self.tenants.limiter.check_key(&tenant.to_owned()) {
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

    /// What the limiter holds for these keys now (after [`Limiter::decide`]).
    pub fn state(&self, tenant: &str, recipient: &str, category: &str) -> LimiterState {
        let key = (tenant.to_owned(), recipient.to_owned(), category.to_owned());
        LimiterState {
            clock_ms: self.last_ms,
            recipient: self
                .recipients
                .get(&key)
                .map(|tat| (key.0, key.1, key.2, tat)),
            tenant: self
                .tenants
                .get(&tenant.to_owned())
                .map(|tat| (tenant.to_owned(), tat)),
        }
    }

    /// Folds one state record back in (a restore reads a partition's whole changelog), if it
    /// is within bounds: its clock between the epoch and `latest_ms`, each arrival time no
    /// further ahead of that clock than its quota's window (GCRA never sets one further).
    /// Returns whether it was folded in.
    pub fn restore(&mut self, state: LimiterState, latest_ms: i64) -> bool {
        let horizon = |window_seconds: u64| {
            let window_ms = i64::try_from(window_seconds.saturating_mul(1_000)).unwrap_or(i64::MAX);
            u64::try_from(state.clock_ms.saturating_add(window_ms))
                .unwrap_or(u64::MAX)
                .saturating_mul(1_000_000)
        };
        let recipient_ok = state
            .recipient
            .as_ref()
            .is_none_or(|r| r.3 <= horizon(self.config.per_recipient.window_seconds.max(1)));
        let tenant_ok = state
            .tenant
            .as_ref()
            .is_none_or(|t| t.1 <= horizon(self.config.per_tenant.window_seconds.max(1)));
        if state.clock_ms < 0 || state.clock_ms > latest_ms || !recipient_ok || !tenant_ok {
            return false;
        }
        self.observe(state.clock_ms);
        if let Some((tenant, recipient, category, tat)) = state.recipient {
            self.recipients.raise((tenant, recipient, category), tat);
        }
        if let Some((tenant, tat)) = state.tenant {
            self.tenants.raise(tenant, tat);
        }
        true
    }

    /// Forgets the buckets that are full again at the limiter's clock (after a restore: the
    /// changelog holds every key ever seen).
    pub fn forget_full(&self) {
        let now = self.now_ns();
        self.recipients.forget_full(now);
        self.tenants.forget_full(now);
    }

    /// Keys held (recipient buckets, tenant buckets).
    pub fn keys(&self) -> (usize, usize) {
        (self.recipients.len(), self.tenants.len())
    }
}

#[cfg(test)]
mod tests;
