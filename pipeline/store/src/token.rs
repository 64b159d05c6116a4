//! Opaque cursor tokens (page tokens, resume tokens): hex of `<tag>|<ms>|<id>`, carrying the
//! last item's sort key. The tag names what the token is for and its version, so a token from
//! one listing is refused by another instead of silently starting somewhere odd.

use crate::StoreError;

/// Inbox pages (`list_inbox`).
pub const INBOX: &str = "i1";
/// Failure pages (`list_failures`).
pub const FAILURES: &str = "f1";

/// The token for position (`ms`, `id`) of the listing `tag`.
pub fn encode(tag: &str, ms: i64, id: &str) -> String {
    format!("{tag}|{ms}|{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The position in a token of the listing `tag`; anything else is [`StoreError::BadPageToken`].
pub fn decode(tag: &str, token: &str) -> Result<(i64, String), StoreError> {
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(StoreError::BadPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadPageToken)?;
    let mut parts = text.splitn(3, '|');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(ms), Some(id)) if t == tag => Ok((
            ms.parse().map_err(|_| StoreError::BadPageToken)?,
            id.to_owned(),
        )),
        _ => Err(StoreError::BadPageToken),
    }
}

/// Ends a listing read with one row more than `page_size`: cuts it to the page and returns the
/// next page's token (the last kept row's key), or `None` when that extra row did not exist.
pub fn finish_page<T>(
    tag: &str,
    rows: &mut Vec<T>,
    page_size: usize,
    key: impl Fn(&T) -> (i64, &str),
) -> Option<String> {
    if rows.len() <= page_size {
        return None;
    }
    rows.truncate(page_size);
    rows.last().map(|row| {
        let (ms, id) = key(row);
        encode(tag, ms, id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage_and_other_listings() {
        let t = encode(INBOX, 1_700_000_000_123, "0192-abc");
        assert_eq!(
            decode(INBOX, &t).ok(),
            Some((1_700_000_000_123, "0192-abc".into()))
        );
        assert!(
            decode(FAILURES, &t).is_err(),
            "an inbox token is not a failures token"
        );
        for bad in ["", "zz", "abc", "7631", &encode(INBOX, 1, "x")[..5]] {
            assert!(decode(INBOX, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pages_end_where_the_extra_row_is_missing() {
        fn key(r: &(i64, String)) -> (i64, &str) {
            (r.0, &r.1)
        }
        let mut rows: Vec<(i64, String)> = (0..3).map(|i| (i, format!("n{i}"))).collect();
        assert_eq!(finish_page(INBOX, &mut rows.clone(), 3, key), None);
        let token = finish_page(INBOX, &mut rows, 2, key);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            token.map(|t| decode(INBOX, &t).ok()),
            Some(Some((1, "n1".into())))
        );
    }
}
