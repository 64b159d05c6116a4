//! The two tiers in time: which tier a write goes to and with what TTL, and which tier a read
//! asks. All of it is computed from the injected [`Clock`], so tests can move time.
//!
//! A time-series row is written to every tier it still belongs to, with TTL = the row's own
//! time + the tier's days - now (so it expires when the row, not the write, is that old); a
//! tier whose TTL would be zero or less is skipped. Reads ask the hot tier for buckets that lie
//! wholly inside it and the archive for older ones; the archive holds everything the hot tier
//! holds, so the routing is invisible to callers. Reads also hide rows older than the archive
//! tier by the clock, so a test clock moved past a row's end sees it gone even though the
//! server's TTL (counted in real time) has not fired yet.

use herald_store::retention::DAY_MS;
use herald_store::{Clock, Retention};
use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::value::SerializeValue;
use scylla::serialize::writers::RowWriter;
use std::sync::Arc;

/// A keyspace of time-series rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// Recent rows (`hot_days`).
    Hot,
    /// Every row still kept (`archive_days`).
    Archive,
}

/// Retention read through the clock.
#[derive(Clone)]
pub(crate) struct Timekeeper {
    pub retention: Retention,
    pub clock: Arc<dyn Clock>,
}

impl Timekeeper {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The oldest instant still kept; older rows are invisible.
    pub fn oldest_kept(&self) -> i64 {
        self.retention.oldest_kept_ms(self.now())
    }

    /// The tiers a row stamped `row_ms` is written to, each with its TTL in seconds; empty for
    /// a row older than the archive tier (a very late replay: dropped, not resurrected).
    pub fn writes(&self, row_ms: i64) -> Vec<(Tier, i32)> {
        let now = self.now();
        [
            (Tier::Hot, self.retention.hot_days),
            (Tier::Archive, self.retention.archive_days),
        ]
        .into_iter()
        .filter_map(|(tier, days)| ttl_secs(row_ms, days, now).map(|ttl| (tier, ttl)))
        .collect()
    }

    /// The TTL for a hot-only row stamped `row_ms` (`None`: already past the hot tier).
    pub fn hot_ttl(&self, row_ms: i64) -> Option<i32> {
        ttl_secs(row_ms, self.retention.hot_days, self.now())
    }

    /// Where to read a bucket (day or month) starting at `bucket_start_ms`: the hot tier if
    /// the whole bucket is inside it, else the archive.
    pub fn read_tier(&self, bucket_start_ms: i64) -> Tier {
        if bucket_start_ms >= self.retention.oldest_hot_ms(self.now()) {
            Tier::Hot
        } else {
            Tier::Archive
        }
    }
}

/// Seconds from `now_ms` until `row_ms + days` (rounded up, at most `i32::MAX`), or `None` if
/// that is not in the future. Never `Some(0)`: CQL reads TTL 0 as "keep forever".
pub(crate) fn ttl_secs(row_ms: i64, days: i64, now_ms: i64) -> Option<i32> {
    let remaining_ms = row_ms
        .saturating_add(days.saturating_mul(DAY_MS))
        .saturating_sub(now_ms);
    (remaining_ms > 0).then(|| {
        let secs = remaining_ms.div_euclid(1000) + i64::from(remaining_ms.rem_euclid(1000) != 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    })
}

/// The UTC day number (days since the epoch) of `ms`: the failures partition.
pub(crate) fn day_of(ms: i64) -> i32 {
    i32::try_from(ms.div_euclid(DAY_MS)).unwrap_or(if ms < 0 { i32::MIN } else { i32::MAX })
}

/// A row of values followed by the `USING TTL ?` marker's value.
///
/// The TTL is bound when the prepared statement lists a trailing `[ttl]` marker, which
/// ScyllaDB always does for these statements (checked at prepare time). kassandra, the
/// in-process test server, drops `USING TTL` while parsing and lists no marker; only there
/// (accepted only with [`crate::CqlServer::KassandraForTests`]) the TTL is left out.
pub(crate) struct WithTtl<R> {
    pub row: R,
    pub ttl: i32,
}

impl<R: SerializeRow> SerializeRow for WithTtl<R> {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        match ctx.columns().split_last() {
            Some((last, columns)) if last.name() == "[ttl]" => {
                self.row
                    .serialize(&RowSerializationContext::from_specs(columns), writer)?;
                self.ttl.serialize(last.typ(), writer.make_cell_writer())?;
                Ok(())
            }
            _ => self.row.serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::ManualClock;

    const NOW: i64 = 1_773_144_000_000;

    fn keeper() -> Timekeeper {
        Timekeeper {
            retention: Retention::default(),
            clock: Arc::new(ManualClock::at(NOW)),
        }
    }

    #[test]
    fn ttl_is_the_rows_remaining_life() {
        assert_eq!(ttl_secs(NOW, 90, NOW), Some(90 * 86_400));
        assert_eq!(
            ttl_secs(NOW - 90 * DAY_MS + 1, 90, NOW),
            Some(1),
            "rounded up, never 0"
        );
        assert_eq!(ttl_secs(NOW - 90 * DAY_MS, 90, NOW), None);
        assert_eq!(ttl_secs(NOW - 91 * DAY_MS, 90, NOW), None);
        assert_eq!(ttl_secs(NOW, 100_000, NOW), Some(i32::MAX));
    }

    #[test]
    fn writes_go_to_the_tiers_a_row_still_belongs_to() {
        let k = keeper();
        assert_eq!(
            k.writes(NOW - 10 * DAY_MS),
            [(Tier::Hot, 80 * 86_400), (Tier::Archive, 355 * 86_400)]
        );
        assert_eq!(
            k.writes(NOW - 100 * DAY_MS),
            [(Tier::Archive, 265 * 86_400)]
        );
        assert!(k.writes(NOW - 400 * DAY_MS).is_empty());
    }

    #[test]
    fn reads_go_to_the_hot_tier_only_for_wholly_hot_buckets() {
        let k = keeper();
        let cutoff = NOW - 90 * DAY_MS;
        assert_eq!(k.read_tier(cutoff), Tier::Hot);
        assert_eq!(k.read_tier(cutoff - 1), Tier::Archive);
        assert_eq!(day_of(DAY_MS * 3 + 5), 3);
        assert_eq!(day_of(-1), -1);
    }
}
