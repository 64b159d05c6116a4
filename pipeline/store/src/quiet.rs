//! Quiet hours: a daily window, in the recipient's own time zone, during which their
//! notifications are held and then released when it ends. Pure: the time is always given.
//!
//! The window is `[start, end)` in minutes of the local day; `start > end` spans midnight
//! (22:00–07:00). An end the clocks skip or repeat on a change day is read the way calendars
//! read it (RFC 5545, "compatible"): a skipped 02:30 becomes 03:30 after a one-hour spring
//! forward, a repeated time its first occurrence.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Minutes in a day; a window's bounds are below it.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// A recipient's quiet hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    /// First quiet minute of the local day (0..1440).
    pub start_minute: u16,
    /// First minute no longer quiet (0..1440, not `start_minute`).
    pub end_minute: u16,
    /// An IANA time zone name (`Asia/Seoul`).
    pub time_zone: String,
}

/// Why quiet hours cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuietHoursError {
    /// A time that is not `HH:MM` on a 24-hour clock.
    #[error("{0:?} is not a time of day as HH:MM (00:00 to 23:59)")]
    BadTime(String),
    /// Start and end are the same minute: the window would be empty or the whole day.
    #[error("quiet hours must start and end at different times")]
    Empty,
    /// Not a time zone of the IANA database.
    #[error("{0:?} is not an IANA time zone name (such as Europe/Berlin)")]
    UnknownZone(String),
    /// An instant outside what can be computed with.
    #[error("time {0} ms is out of range")]
    OutOfRange(i64),
}

/// Parses `HH:MM` into a minute of the day.
pub fn parse_minute(text: &str) -> Result<u16, QuietHoursError> {
    let bad = || QuietHoursError::BadTime(text.chars().take(16).collect());
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// A minute of the day as `HH:MM`.
pub fn format_minute(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

impl QuietHours {
    /// Quiet hours from `HH:MM` bounds and a zone name, checked.
    pub fn parse(start: &str, end: &str, time_zone: &str) -> Result<QuietHours, QuietHoursError> {
        let q = QuietHours {
            start_minute: parse_minute(start)?,
            end_minute: parse_minute(end)?,
            time_zone: time_zone.to_owned(),
        };
        q.zone()?;
        Ok(q)
    }

    fn zone(&self) -> Result<TimeZone, QuietHoursError> {
        if self.start_minute == self.end_minute {
            return Err(QuietHoursError::Empty);
        }
        if self.start_minute >= MINUTES_PER_DAY || self.end_minute >= MINUTES_PER_DAY {
            return Err(QuietHoursError::BadTime(format!(
                "{}-{}",
                self.start_minute, self.end_minute
            )));
        }
        // Bounded before the lookup: names in the database are short.
        if self.time_zone.len() > 64 {
            return Err(QuietHoursError::UnknownZone(
                self.time_zone.chars().take(64).collect(),
            ));
        }
        TimeZone::get(&self.time_zone)
            .map_err(|_| QuietHoursError::UnknownZone(self.time_zone.clone()))
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start_minute < self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }

    /// When the window holding `now_ms` ends, or `None` if `now_ms` is outside it.
    pub fn release_at(&self, now_ms: i64) -> Result<Option<i64>, QuietHoursError> {
        let zone = self.zone()?;
        let now = Timestamp::from_millisecond(now_ms)
            .map_err(|_| QuietHoursError::OutOfRange(now_ms))?
            .to_zoned(zone.clone());
        let minute =
            u16::try_from(now.hour()).unwrap_or(0) * 60 + u16::try_from(now.minute()).unwrap_or(0);
        if !self.contains(minute) {
            return Ok(None);
        }
        // The end is today's if it is still ahead, otherwise tomorrow's (past midnight).
        let today = now.date();
        let day = if minute < self.end_minute {
            today
        } else {
            today
                .tomorrow()
                .map_err(|_| QuietHoursError::OutOfRange(now_ms))?
        };
        let end = local(day, self.end_minute, &zone).ok_or(QuietHoursError::OutOfRange(now_ms))?;
        Ok(Some(end.timestamp().as_millisecond()))
    }

    /// `at_ms` as a local time in the window's zone (`2026-03-11T07:00:00+09:00`), for reasons
    /// and logs; the bare instant if it cannot be shown there.
    pub fn local_time(&self, at_ms: i64) -> String {
        match (self.zone(), Timestamp::from_millisecond(at_ms)) {
            (Ok(zone), Ok(at)) => at
                .to_zoned(zone)
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            _ => format!("{at_ms} ms since the epoch"),
        }
    }

    /// The window as `HH:MM–HH:MM zone`, for reasons and logs.
    pub fn describe(&self) -> String {
        format!(
            "{}–{} {}",
            format_minute(self.start_minute),
            format_minute(self.end_minute),
            self.time_zone
        )
    }
}

/// `minute` of `day` in `zone` (a skipped local time moves forward by the gap).
fn local(day: Date, minute: u16, zone: &TimeZone) -> Option<Zoned> {
    let hour = i8::try_from(minute / 60).ok()?;
    let min = i8::try_from(minute % 60).ok()?;
    let time = Time::new(hour, min, 0, 0).ok()?;
    zone.to_zoned(day.to_datetime(time)).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn night(zone: &str) -> QuietHours {
        QuietHours::parse("22:00", "07:00", zone).unwrap()
    }

    #[test]
    fn parses_times_of_day_and_refuses_anything_else() {
        assert_eq!(parse_minute("00:00"), Ok(0));
        assert_eq!(parse_minute("07:30"), Ok(450));
        assert_eq!(parse_minute("23:59"), Ok(1439));
        for bad in [
            "24:00", "7:30", "07:60", "0730", "07:3a", "", "-1:00", "07:30:00",
        ] {
            assert!(
                matches!(parse_minute(bad), Err(QuietHoursError::BadTime(_))),
                "{bad}"
            );
        }
        assert_eq!(format_minute(450), "07:30");
    }

    #[test]
    fn refuses_unknown_zones_and_empty_windows() {
        assert!(matches!(
            QuietHours::parse("22:00", "07:00", "Mars/Olympus"),
            Err(QuietHoursError::UnknownZone(_))
        ));
        assert!(matches!(
            QuietHours::parse("22:00", "07:00", &"x".repeat(10_000)),
            Err(QuietHoursError::UnknownZone(z)) if z.len() == 64
        ));
        assert_eq!(
            QuietHours::parse("07:00", "07:00", "UTC"),
            Err(QuietHoursError::Empty)
        );
    }

    #[test]
    fn shows_instants_in_the_windows_zone() {
        let q = night("Asia/Seoul");
        assert_eq!(
            q.local_time(ms("2026-03-10T22:00:00Z")),
            "2026-03-11T07:00:00+09:00"
        );
        assert_eq!(q.describe(), "22:00–07:00 Asia/Seoul");
    }

    #[test]
    fn outside_the_window_nothing_is_held() {
        let q = night("Asia/Seoul");
        // 12:00 in Seoul (03:00 UTC).
        assert_eq!(q.release_at(ms("2026-03-10T03:00:00Z")), Ok(None));
        // 07:00 sharp is the first minute no longer quiet.
        assert_eq!(q.release_at(ms("2026-03-09T22:00:00Z")), Ok(None));
        // 21:59:59 is not quiet yet.
        assert_eq!(q.release_at(ms("2026-03-10T12:59:59Z")), Ok(None));
    }

    #[test]
    fn before_midnight_the_window_ends_the_next_morning() {
        let q = night("Asia/Seoul");
        // 23:30 on the 10th in Seoul → 07:00 on the 11th (22:00Z on the 10th).
        assert_eq!(
            q.release_at(ms("2026-03-10T14:30:00Z")),
            Ok(Some(ms("2026-03-10T22:00:00Z")))
        );
        // 22:00 sharp is quiet.
        assert_eq!(
            q.release_at(ms("2026-03-10T13:00:00Z")),
            Ok(Some(ms("2026-03-10T22:00:00Z")))
        );
    }

    #[test]
    fn after_midnight_the_window_ends_the_same_morning() {
        let q = night("Asia/Seoul");
        // 06:59 on the 11th in Seoul.
        assert_eq!(
            q.release_at(ms("2026-03-10T21:59:00Z")),
            Ok(Some(ms("2026-03-10T22:00:00Z")))
        );
    }

    #[test]
    fn a_window_within_one_day_ends_that_day() {
        let q = QuietHours::parse("12:00", "13:30", "Europe/Berlin").unwrap();
        // 12:15 in Berlin (UTC+1 in March before the change).
        assert_eq!(
            q.release_at(ms("2026-03-10T11:15:00Z")),
            Ok(Some(ms("2026-03-10T12:30:00Z")))
        );
        assert_eq!(q.release_at(ms("2026-03-10T12:30:00Z")), Ok(None));
    }

    #[test]
    fn the_same_instant_is_quiet_in_one_zone_and_not_in_another() {
        let instant = ms("2026-03-10T23:00:00Z");
        // 08:00 in Seoul, 19:00 in New York, 00:00 in Berlin.
        assert_eq!(night("Asia/Seoul").release_at(instant), Ok(None));
        assert_eq!(night("America/New_York").release_at(instant), Ok(None));
        assert_eq!(
            night("Europe/Berlin").release_at(instant),
            Ok(Some(ms("2026-03-11T06:00:00Z")))
        );
    }

    #[test]
    fn an_end_skipped_by_the_clock_change_moves_forward_by_the_gap() {
        // Berlin springs forward on 2026-03-29: 02:00 → 03:00. A window ending at 02:30
        // ends at 03:30 local (01:30Z): the skipped time moved by the gap.
        let q = QuietHours::parse("22:00", "02:30", "Europe/Berlin").unwrap();
        assert_eq!(
            q.release_at(ms("2026-03-28T22:00:00Z")),
            Ok(Some(ms("2026-03-29T01:30:00Z")))
        );
    }

    #[test]
    fn the_window_follows_the_zone_across_a_clock_change() {
        // New York falls back on 2026-11-01: 07:00 that morning is 12:00Z (EST), while the
        // night before started at 22:00 EDT (02:00Z).
        let q = night("America/New_York");
        assert_eq!(
            q.release_at(ms("2026-11-01T03:00:00Z")),
            Ok(Some(ms("2026-11-01T12:00:00Z")))
        );
    }
}
