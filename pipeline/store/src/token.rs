//! Opaque cursor tokens (page tokens, resume tokens): hex of `<tag>|<ms>|<id>|<binding>`, carrying
//! the last item's sort key. The tag names what the token is for and its version, and the
//! binding (a digest of the tag, the *scope* — tenant, user and filters of the listing that
//! issued it — and the position) ties it to that listing: a token from another tenant, user or
//! listing, or one edited by hand, is refused instead of silently starting somewhere odd. A
//! token's time is bounded too ([`MAX_AHEAD_MS`]), so no token can make a listing walk toward
//! the far future.

use crate::StoreError;

/// Inbox pages (`list_inbox`).
pub const INBOX: &str = "i2";
/// Failure pages (`list_failures`).
pub const FAILURES: &str = "f2";
/// The longest token a listing accepts (bytes of hex).
pub const MAX_TOKEN_LEN: usize = 1_024;
/// How far past the moment it is read a token's time may lie (a day, for clock skew).
pub const MAX_AHEAD_MS: i64 = crate::retention::DAY_MS;

/// The scope of a listing: the values that must match for one of its tokens to be accepted
/// (tenant, user, filters).
pub fn scope(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

/// The scope of an inbox listing: tenant, user and filters.
pub fn inbox_scope(q: &crate::InboxQuery) -> String {
    scope(&[
        &q.tenant,
        &q.recipient_user_id,
        if q.unread_only { "unread" } else { "all" },
        q.category.as_deref().unwrap_or(""),
    ])
}

/// The scope of a failure listing: the tenant (the time range may be "the last 24 hours",
/// which moves between pages).
pub fn failures_scope(q: &crate::FailureQuery) -> String {
    scope(&[&q.tenant])
}

fn binding(tag: &str, scope: &str, ms: i64, id: &str) -> String {
    let digest = herald_schemas::ids::content_digest(
        format!("token\u{1f}{tag}\u{1f}{scope}\u{1f}{ms}\u{1f}{id}").as_bytes(),
    );
    digest.replace('-', "")[..16].to_owned()
}

/// The token for position (`ms`, `id`) of the listing `tag` in `scope`.
pub fn encode(tag: &str, scope: &str, ms: i64, id: &str) -> String {
    format!("{tag}|{ms}|{id}|{}", binding(tag, scope, ms, id))
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The position in a token of the listing `tag` in `scope`, whose time is at most
/// [`MAX_AHEAD_MS`] past `now_ms`; anything else is [`StoreError::BadPageToken`].
pub fn decode(
    tag: &str,
    scope: &str,
    token: &str,
    now_ms: i64,
) -> Result<(i64, String), StoreError> {
    if token.len() > MAX_TOKEN_LEN || !token.len().is_multiple_of(2) {
        return Err(StoreError::BadPageToken);
    }
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
    let (Some(t), Some(ms), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(StoreError::BadPageToken);
    };
    let (id, bound) = rest.rsplit_once('|').ok_or(StoreError::BadPageToken)?;
    let ms: i64 = ms.parse().map_err(|_| StoreError::BadPageToken)?;
    if t != tag
        || bound != binding(tag, scope, ms, id)
        || ms < 0
        || ms > now_ms.saturating_add(MAX_AHEAD_MS)
    {
        return Err(StoreError::BadPageToken);
    }
    Ok((ms, id.to_owned()))
}

/// Ends a listing read with one row more than `page_size`: cuts it to the page and returns the
/// next page's token (the last kept row's key), or `None` when that extra row did not exist.
pub fn finish_page<T>(
    tag: &str,
    scope: &str,
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
        encode(tag, scope, ms, id)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn round_trips_and_rejects_garbage_other_listings_and_other_scopes() {
        let ana = scope(&["acme", "ana"]);
        let t = encode(INBOX, &ana, NOW - 5, "0192-abc");
        assert_eq!(
            decode(INBOX, &ana, &t, NOW).ok(),
            Some((NOW - 5, "0192-abc".into()))
        );
        assert!(
            decode(FAILURES, &ana, &t, NOW).is_err(),
            "an inbox token is not a failures token"
        );
        assert!(
            decode(INBOX, &scope(&["acme", "bob"]), &t, NOW).is_err(),
            "another user's token"
        );
        assert!(
            decode(INBOX, &scope(&["other", "ana"]), &t, NOW).is_err(),
            "another tenant's token"
        );
        for bad in ["", "zz", "abc", "7631", &t[..5], &"00".repeat(600)] {
            assert!(decode(INBOX, &ana, bad, NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        let ana = scope(&["acme", "ana"]);
        for ms in [0, NOW + MAX_AHEAD_MS] {
            let t = encode(INBOX, &ana, ms, "n1");
            assert_eq!(decode(INBOX, &ana, &t, NOW).ok(), Some((ms, "n1".into())));
        }
        // A token exactly as long as allowed is read; one byte pair more is not.
        let base = encode(INBOX, &ana, NOW, "").len();
        let fits = "x".repeat((MAX_TOKEN_LEN - base) / 2);
        let t = encode(INBOX, &ana, NOW, &fits);
        assert_eq!(t.len(), MAX_TOKEN_LEN);
        assert!(decode(INBOX, &ana, &t, NOW).is_ok());
        let long = encode(INBOX, &ana, NOW, &format!("{fits}x"));
        assert!(decode(INBOX, &ana, &long, NOW).is_err());
    }

    #[test]
    fn listing_scopes_name_their_tenant_user_and_filters() {
        let q = |tenant: &str, user: &str, unread: bool, category: Option<&str>| {
            let mut q = crate::InboxQuery::first_page(tenant, user, 10);
            q.unread_only = unread;
            q.category = category.map(str::to_owned);
            inbox_scope(&q)
        };
        let ana = q("acme", "ana", false, None);
        let t = encode(INBOX, &ana, NOW, "n1");
        for other in [
            q("acme", "bob", false, None),
            q("beta", "ana", false, None),
            q("acme", "ana", true, None),
            q("acme", "ana", false, Some("news")),
        ] {
            assert_ne!(other, ana);
            assert!(decode(INBOX, &other, &t, NOW).is_err(), "{other:?}");
        }
        let failures = |tenant: &str| {
            failures_scope(&crate::FailureQuery {
                tenant: tenant.into(),
                from_ms: 0,
                to_ms: NOW,
                page_size: 10,
                page_token: None,
            })
        };
        let acme = failures("acme");
        assert_eq!(acme, scope(&["acme"]));
        let t = encode(FAILURES, &acme, NOW, "n1");
        assert!(decode(FAILURES, &failures("beta"), &t, NOW).is_err());
    }

    #[test]
    fn an_edited_position_or_a_far_time_is_refused() {
        let ana = scope(&["acme", "ana"]);
        let t = encode(INBOX, &ana, NOW, "n1");
        // The same text with another time: its binding no longer matches.
        let text = String::from_utf8(
            (0..t.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap_or(0))
                .collect(),
        )
        .unwrap_or_default();
        let edited: String = text
            .replace(&NOW.to_string(), &i64::MAX.to_string())
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(decode(INBOX, &ana, &edited, NOW).is_err());
        // A well-bound token for the far future (or before the epoch) is refused too.
        for ms in [i64::MAX, NOW + 2 * MAX_AHEAD_MS, -1, i64::MIN] {
            let far = encode(INBOX, &ana, ms, "n1");
            assert!(decode(INBOX, &ana, &far, NOW).is_err(), "{ms}");
        }
    }

    #[test]
    fn pages_end_where_the_extra_row_is_missing() {
        fn key(r: &(i64, String)) -> (i64, &str) {
            (r.0, &r.1)
        }
        let s = scope(&["t"]);
        let mut rows: Vec<(i64, String)> = (0..3).map(|i| (i, format!("n{i}"))).collect();
        assert_eq!(finish_page(INBOX, &s, &mut rows.clone(), 3, key), None);
        let token = finish_page(INBOX, &s, &mut rows, 2, key);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            token.map(|t| decode(INBOX, &s, &t, NOW).ok()),
            Some(Some((1, "n1".into())))
        );
    }

    proptest! {
        #[test]
        fn decoding_any_text_never_panics(token in "\\PC{0,300}", hex in "[0-9a-f]{0,200}") {
            let s = scope(&["acme", "ana"]);
            let _ = decode(INBOX, &s, &token, NOW);
            let _ = decode(INBOX, &s, &hex, NOW);
        }

        #[test]
        fn every_issued_token_reads_back(ms in 0..NOW, id in "[a-z0-9|-]{0,40}") {
            let s = scope(&["acme", "ana", "unread"]);
            let t = encode(INBOX, &s, ms, &id);
            prop_assert_eq!(decode(INBOX, &s, &t, NOW).ok(), Some((ms, id)));
        }
    }
}
