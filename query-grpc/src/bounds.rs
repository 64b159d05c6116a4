//! The time bounds of query requests, validated and clamped before they reach the store: a
//! negative time is refused, and one further ahead than a day past now counts as that (nothing
//! is filed later), so neither `i64::MAX` nor `i64::MIN` can make a listing walk toward the far
//! future or overflow an arithmetic step.

use herald_store::retention::DAY_MS;
use tonic::Status;

/// How far past now a request's time may reach before it is clamped.
pub const MAX_AHEAD_MS: i64 = DAY_MS;

/// The time `field` asks for: `default` when it is 0, refused when negative, and at most a day
/// past `now_ms`.
pub fn time(field: &str, ms: i64, default: i64, now_ms: i64) -> Result<i64, Status> {
    if ms < 0 {
        return Err(Status::invalid_argument(format!(
            "{field}: must not be negative (ms since the epoch; 0 for the default)"
        )));
    }
    let ms = if ms == 0 { default } else { ms };
    Ok(ms.min(now_ms.saturating_add(MAX_AHEAD_MS)))
}

/// The failure range `[from, to)`: `to` defaults to now, `from` to a day before `to`.
pub fn failure_range(from_ms: i64, to_ms: i64, now_ms: i64) -> Result<(i64, i64), Status> {
    let to = time("to_ms", to_ms, now_ms, now_ms)?;
    let from = time("from_ms", from_ms, to.saturating_sub(DAY_MS).max(0), now_ms)?;
    if from > to {
        return Err(Status::invalid_argument(
            "from_ms, to_ms: need from_ms <= to_ms",
        ));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn defaults_clamps_and_refusals() {
        assert_eq!(time("t", 0, NOW, NOW).ok(), Some(NOW));
        assert_eq!(time("t", 5, NOW, NOW).ok(), Some(5));
        assert_eq!(time("t", i64::MAX, NOW, NOW).ok(), Some(NOW + DAY_MS));
        assert_eq!(
            time("t", -1, NOW, NOW).err().map(|s| s.code()),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            failure_range(0, 0, NOW).ok(),
            Some((NOW - DAY_MS, NOW)),
            "the last day"
        );
        assert_eq!(
            failure_range(0, i64::MAX, NOW).ok(),
            Some((NOW, NOW + DAY_MS)),
            "a far end: the day before it, clamped"
        );
        assert!(failure_range(i64::MIN, 0, NOW).is_err());
        assert!(failure_range(NOW, NOW - 1, NOW).is_err());
    }

    proptest! {
        #[test]
        fn any_bounds_give_an_answer_inside_a_day_past_now(from in any::<i64>(), to in any::<i64>()) {
            if let Ok((f, t)) = failure_range(from, to, NOW) {
                prop_assert!(0 <= f && f <= t && t <= NOW + DAY_MS);
            }
        }
    }
}
