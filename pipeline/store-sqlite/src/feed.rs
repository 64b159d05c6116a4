//! The inbox feed's cursor: for each month file a watch follows, the last write-order number
//! (`inbox.feed_seq`) it has read. Its text is `YYYYMM:seq` pairs, months ascending, joined by
//! commas (`202611:42,202612:7`); a month it does not name counts as nothing read yet.

use std::collections::BTreeMap;

use herald_store::{Month, StoreError};

/// More months than a feed ever follows (the month before now's through the one a day ahead).
const MAX_MONTHS: usize = 4;

/// A parsed feed cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cursor(BTreeMap<Month, i64>);

impl Cursor {
    /// Reads a cursor's text; anything this module did not write is a bad token.
    pub(crate) fn parse(text: &str) -> Result<Cursor, StoreError> {
        let mut months = BTreeMap::new();
        if text.is_empty() {
            return Ok(Cursor(months));
        }
        for part in text.split(',') {
            let (month, seq) = part.split_once(':').ok_or(StoreError::BadPageToken)?;
            let month = month
                .parse()
                .ok()
                .and_then(Month::from_bucket)
                .ok_or(StoreError::BadPageToken)?;
            let seq: i64 = seq.parse().map_err(|_| StoreError::BadPageToken)?;
            if seq < 0 || months.insert(month, seq).is_some() {
                return Err(StoreError::BadPageToken);
            }
        }
        if months.len() > MAX_MONTHS {
            return Err(StoreError::BadPageToken);
        }
        Ok(Cursor(months))
    }

    /// The cursor's text.
    pub(crate) fn text(&self) -> String {
        self.0
            .iter()
            .map(|(m, seq)| format!("{}:{seq}", m.bucket()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The last write-order number read in `month` (0: none).
    pub(crate) fn seq(&self, month: Month) -> i64 {
        self.0.get(&month).copied().unwrap_or(0)
    }

    /// Records that `month` has been read up to `seq`.
    pub(crate) fn set(&mut self, month: Month, seq: i64) {
        self.0.insert(month, seq);
    }

    /// Forgets the months before `first` (no longer followed).
    pub(crate) fn keep_from(&mut self, first: Month) {
        self.0.retain(|m, _| *m >= first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn month(bucket: i32) -> Month {
        Month::from_bucket(bucket).expect("a month")
    }

    #[test]
    fn a_cursor_round_trips_and_defaults_to_nothing_read() {
        let mut c = Cursor::parse("").expect("empty");
        assert_eq!(c.seq(month(202611)), 0);
        c.set(month(202612), 7);
        c.set(month(202611), 42);
        assert_eq!(c.text(), "202611:42,202612:7");
        assert_eq!(Cursor::parse(&c.text()).expect("own text"), c);
        c.keep_from(month(202612));
        assert_eq!(c.text(), "202612:7");
        // Nothing read yet in a month, and as many months as a feed follows, are fine.
        for good in ["202611:0", "202611:1,202612:2,202701:3,202702:4"] {
            assert_eq!(Cursor::parse(good).expect(good).text(), good);
        }
    }

    #[test]
    fn foreign_text_is_a_bad_token() {
        for bad in [
            "x",
            "202611",
            "202611:",
            "202613:1",
            "202611:-1",
            "202611:1,202611:2",
            "202611:1;202612:2",
            "202601:1,202602:1,202603:1,202604:1,202605:1",
            "202611:99999999999999999999",
        ] {
            assert!(
                matches!(Cursor::parse(bad), Err(StoreError::BadPageToken)),
                "{bad:?} was accepted"
            );
        }
    }
}
