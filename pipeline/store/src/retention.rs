//! Time in the store: the clock (injectable, so retention is testable), the two retention tiers,
//! and the calendar buckets that time-series rows are grouped by.
//!
//! Nothing is ever expired by a bulk `DELETE`. ScyllaDB expires rows by TTL and drops whole
//! SSTables through time-window compaction; the embedded store keeps one database file per month
//! and deletes a month's file once all of it is older than the archive tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Where "now" comes from. Production uses [`SystemClock`]; retention tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn at(now_ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }

    /// Moves the clock to `now_ms`.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `days`.
    pub fn advance_days(&self, days: i64) {
        self.0.fetch_add(days * DAY_MS, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long data stays, per tier. Both tiers are counted from a row's own time (a notification's
/// creation, an inbox entry's creation, a failure's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days in the hot tier (ScyllaDB: the `herald` keyspace, 90-day TTL).
    pub hot_days: i64,
    /// Days anything is kept at all (ScyllaDB: the `herald_archive` keyspace, 365-day TTL).
    pub archive_days: i64,
    /// Days a `WatchInbox` resume token stays usable.
    pub watch_resume_days: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            hot_days: 90,
            archive_days: 365,
            watch_resume_days: 7,
        }
    }
}

impl Retention {
    /// The oldest instant still kept at `now_ms`; anything older is gone.
    pub fn oldest_kept_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.archive_days * DAY_MS
    }

    /// The oldest instant still in the hot tier at `now_ms`.
    pub fn oldest_hot_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.hot_days * DAY_MS
    }

    /// Refuses a request reaching back beyond the archive tier with a clear error instead of
    /// an empty success.
    pub fn check_readable(&self, at_ms: i64, now_ms: i64) -> crate::Result<()> {
        let oldest_ms = self.oldest_kept_ms(now_ms);
        if at_ms < oldest_ms {
            return Err(crate::StoreError::BeyondRetention {
                oldest_ms,
                days: self.archive_days,
            });
        }
        Ok(())
    }

    /// Whether a row stamped `at_ms` is still kept at `now_ms` (older writes, e.g. a very late
    /// replay, are dropped instead of resurrecting an expired month).
    pub fn keeps(&self, at_ms: i64, now_ms: i64) -> bool {
        at_ms >= self.oldest_kept_ms(now_ms)
    }
}

/// A calendar month (UTC), the bucket time-series rows are grouped by: the inbox partition key
/// in ScyllaDB and the database file in the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// The year, e.g. 2026.
    pub year: i32,
    /// 1..=12.
    pub month: u32,
}

impl Month {
    /// The month containing `ms` (milliseconds since the epoch, UTC).
    pub fn of_ms(ms: i64) -> Month {
        let (year, month, _) = civil_from_days(ms.div_euclid(DAY_MS));
        Month { year, month }
    }

    /// `yyyymm`, e.g. 202611: the bucket as stored.
    pub fn bucket(self) -> i32 {
        self.year * 100 + self.month as i32
    }

    /// The inverse of [`Month::bucket`].
    pub fn from_bucket(bucket: i32) -> Option<Month> {
        let (year, month) = (bucket.div_euclid(100), bucket.rem_euclid(100) as u32);
        (1..=12).contains(&month).then_some(Month { year, month })
    }

    /// The month before.
    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The month after.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The first millisecond of the month.
    pub fn start_ms(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * DAY_MS
    }

    /// The first millisecond after the month.
    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }

    /// The months overlapping `[from_ms, to_ms]`, newest first.
    pub fn newest_first(from_ms: i64, to_ms: i64) -> impl Iterator<Item = Month> {
        let oldest = Month::of_ms(from_ms);
        std::iter::successors(Some(Month::of_ms(to_ms)), move |m| {
            (*m > oldest).then(|| m.prev())
        })
        .filter(move |_| from_ms <= to_ms)
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2026-11-22 is day 20_779 (`date -u -d 2026-11-22 +%s` / 86400).
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        // The last day of a 400-year cycle (`date -u -d 2000-02-29 +%s` / 86400 = 11_016).
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        let m = Month::of_ms(20_779 * DAY_MS + 5);
        assert_eq!((m.bucket(), m.to_string()), (202611, "2026-11".into()));
        assert_eq!(Month::from_bucket(202611), Some(m));
        assert_eq!(Month::from_bucket(202613), None);
        assert_eq!(m.next().next().bucket(), 202701);
        assert_eq!(Month::of_ms(m.end_ms()), m.next());
        assert_eq!(Month::of_ms(m.end_ms() - 1), m);
    }

    #[test]
    fn tiers_start_their_days_back() {
        let r = Retention::default();
        let now = days_from_civil(2026, 11, 22) * DAY_MS + 5;
        assert_eq!(r.oldest_hot_ms(now), now - 90 * DAY_MS);
        assert_eq!(r.oldest_kept_ms(now), now - 365 * DAY_MS);
    }

    #[test]
    fn clocks_tell_the_time_they_are_given() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        assert!((SystemClock.now_ms() - wall).abs() < 60_000);
        let c = ManualClock::at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance_days(2);
        assert_eq!(c.now_ms(), 1_000 + 2 * DAY_MS);
        c.set(7);
        assert_eq!(c.clone().now_ms(), 7, "clones share the time");
    }

    #[test]
    fn months_newest_first() {
        let from = days_from_civil(2025, 11, 30) * DAY_MS;
        let to = days_from_civil(2026, 2, 1) * DAY_MS;
        let got: Vec<i32> = Month::newest_first(from, to).map(Month::bucket).collect();
        assert_eq!(got, [202602, 202601, 202512, 202511]);
        assert_eq!(Month::newest_first(to, from).count(), 0);
    }

    #[test]
    fn retention_refuses_what_it_no_longer_keeps() {
        let r = Retention::default();
        let now = days_from_civil(2026, 11, 22) * DAY_MS;
        assert!(r.check_readable(now - 365 * DAY_MS, now).is_ok());
        assert!(matches!(
            r.check_readable(now - 365 * DAY_MS - 1, now),
            Err(crate::StoreError::BeyondRetention { days: 365, .. })
        ));
        assert!(r.keeps(now - 364 * DAY_MS, now));
        assert!(!r.keeps(now - 366 * DAY_MS, now));
    }

    proptest! {
        #[test]
        fn calendar_round_trips(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
            let month = Month::of_ms(days * DAY_MS);
            prop_assert!(month.start_ms() <= days * DAY_MS && days * DAY_MS < month.end_ms());
        }
    }
}
