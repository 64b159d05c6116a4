//! Inbox page tokens: opaque to clients (hex), carrying the last entry's sort key.

use crate::StoreError;

pub(super) fn encode(created_at_ms: i64, notification_id: &str) -> String {
    format!("v1|{created_at_ms}|{notification_id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) fn decode(token: &str) -> Result<(i64, String), StoreError> {
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
        (Some("v1"), Some(ms), Some(id)) => Ok((
            ms.parse().map_err(|_| StoreError::BadPageToken)?,
            id.to_owned(),
        )),
        _ => Err(StoreError::BadPageToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let t = encode(1_700_000_000_123, "0192-abc");
        assert_eq!(
            decode(&t).ok(),
            Some((1_700_000_000_123, "0192-abc".into()))
        );
        for bad in ["", "zz", "abc", "7631", &encode(1, "x")[..5]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
