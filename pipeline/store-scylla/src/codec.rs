//! Rows as stored ↔ the trait's records, outbox headers as a blob, and opaque page tokens.

use herald_schemas::{Channel, DeliveryState, Priority};
use herald_store::{
    DeliveryEventRecord, FailureRecord, InboxEntryRecord, NotificationRecord, StoreError,
};

use crate::Result;
use crate::error::corrupt;

/// `notifications`: tenant, notification_id, recipient_user_id, category, priority, created_at_ms.
pub(crate) type NotificationRow = (String, String, String, String, String, i64);
/// `delivery_events`: tenant, notification_id, result_id, recipient_user_id, category,
/// channel, state, reason, at_ms.
pub(crate) type EventRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
);
/// `failures`: tenant, at_ms, result_id, notification_id, recipient_user_id, category,
/// channel, state, reason.
pub(crate) type FailureRow = (
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);
/// `inbox` and `inbox_feed` ([`crate::statements::INBOX_COLUMNS`]).
pub(crate) type InboxRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

pub(crate) fn channel(value: &str) -> Result<Channel> {
    Channel::parse(value).ok_or_else(|| corrupt(format!("unknown channel {value:?}")))
}

fn opt_channel(value: Option<String>) -> Result<Option<Channel>> {
    value.as_deref().map(channel).transpose()
}

fn state(value: &str) -> Result<DeliveryState> {
    DeliveryState::parse(value).ok_or_else(|| corrupt(format!("unknown delivery state {value:?}")))
}

pub(crate) fn ledger_state(value: &str) -> Result<DeliveryState> {
    state(value)
}

pub(crate) fn notification(r: NotificationRow) -> Result<NotificationRecord> {
    let (tenant, notification_id, recipient_user_id, category, priority, created_at_ms) = r;
    Ok(NotificationRecord {
        tenant,
        notification_id,
        recipient_user_id,
        category,
        priority: Priority::parse(&priority)
            .ok_or_else(|| corrupt(format!("unknown priority {priority:?}")))?,
        created_at_ms,
    })
}

pub(crate) fn event(r: EventRow) -> Result<DeliveryEventRecord> {
    let (tenant, notification_id, result_id, recipient_user_id, category, ch, st, reason, at_ms) =
        r;
    Ok(DeliveryEventRecord {
        tenant,
        notification_id,
        result_id,
        recipient_user_id,
        category,
        channel: opt_channel(ch)?,
        state: state(&st)?,
        reason,
        at_ms,
    })
}

pub(crate) fn failure(r: FailureRow) -> Result<FailureRecord> {
    let (tenant, at_ms, result_id, notification_id, recipient_user_id, category, ch, st, reason) =
        r;
    Ok(FailureRecord {
        tenant,
        notification_id,
        result_id,
        recipient_user_id,
        category,
        channel: opt_channel(ch)?,
        state: state(&st)?,
        reason,
        at_ms,
    })
}

pub(crate) fn inbox(r: InboxRow) -> InboxEntryRecord {
    let (tenant, user, id, category, title, body, action_url, created, delivered, read) = r;
    InboxEntryRecord {
        tenant,
        recipient_user_id: user,
        notification_id: id,
        category,
        title,
        body,
        action_url,
        created_at_ms: created,
        delivered_at_ms: delivered,
        read_at_ms: read,
    }
}

/// Headers as `(u32 name length, name, u32 value length, value)*`, big-endian lengths: order
/// and repeated names survive, as Kafka allows both.
pub(crate) fn encode_headers(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        for part in [name.as_bytes(), value.as_slice()] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The inverse of [`encode_headers`].
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (value, rest) = (rest.get(..len)?, rest.get(len..)?);
        *bytes = rest;
        Some(value)
    }
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name = part(&mut bytes)
            .and_then(|n| String::from_utf8(n.to_vec()).ok())
            .ok_or_else(|| corrupt("malformed outbox headers"))?;
        let value = part(&mut bytes).ok_or_else(|| corrupt("malformed outbox headers"))?;
        headers.push((name, value.to_vec()));
    }
    Ok(headers)
}

/// Which listing a page token belongs to: a token from one is refused by the other.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TokenKind {
    Inbox,
    Failures,
}

impl TokenKind {
    fn tag(self) -> &'static str {
        match self {
            TokenKind::Inbox => "i1",
            TokenKind::Failures => "f1",
        }
    }
}

/// An opaque (hex) token carrying the exclusive cursor `(ms, id)` of the next page.
pub(crate) fn encode_token(kind: TokenKind, ms: i64, id: &str) -> String {
    format!("{}|{ms}|{id}", kind.tag())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The inverse of [`encode_token`]; anything else is [`StoreError::BadPageToken`].
pub(crate) fn decode_token(kind: TokenKind, token: &str) -> Result<(i64, String), StoreError> {
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
        (Some(tag), Some(ms), Some(id)) if tag == kind.tag() => Ok((
            ms.parse().map_err(|_| StoreError::BadPageToken)?,
            id.to_owned(),
        )),
        _ => Err(StoreError::BadPageToken),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token(TokenKind::Inbox, 1_700_000_000_123, "a|b");
        assert_eq!(
            decode_token(TokenKind::Inbox, &t).ok(),
            Some((1_700_000_000_123, "a|b".into()))
        );
        assert!(
            decode_token(TokenKind::Failures, &t).is_err(),
            "kinds do not mix"
        );
        for bad in ["", "zz", "abc", "not-a-token", "nope", &t[..5]] {
            assert!(decode_token(TokenKind::Inbox, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_round_trip() {
        let h = vec![
            ("a".to_owned(), vec![1, 2]),
            ("a".to_owned(), vec![]),
            ("".to_owned(), vec![0]),
        ];
        assert_eq!(decode_headers(&encode_headers(&h)).unwrap(), h);
        assert!(decode_headers(&[0, 0, 0, 9, 1]).is_err());
    }
}
