//! The webhook request, pure: the JSON body Herald posts, its headers, and the signature a
//! receiver checks.
//!
//! ```text
//! POST <the recipient's webhook URL>
//! Content-Type: application/json
//! Idempotency-Key: <delivery_id>          (the same on every resend of one attempt)
//! Herald-Timestamp: <unix seconds>
//! Herald-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//!
//! {"delivery_id":"…","notification_id":"…","attempt":1,"tenant":"…","recipient_user_id":"…",
//!  "category":"…","priority":"NORMAL","title":"…","body":"…","action_url":null,
//!  "requested_at_ms":1700000000000}
//! ```
//!
//! A receiver recomputes the HMAC over the timestamp header, a dot and the raw body, compares
//! it in constant time, and refuses timestamps more than a few minutes old (README shows how).

use herald_schemas::Dispatch;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE: &str = "Herald-Signature";
/// The header carrying the signing time.
pub const TIMESTAMP: &str = "Herald-Timestamp";
/// The header carrying the delivery id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The JSON body: what a receiver gets.
#[derive(Debug, Serialize)]
struct Body<'a> {
    delivery_id: &'a str,
    notification_id: &'a str,
    attempt: i32,
    tenant: &'a str,
    recipient_user_id: &'a str,
    category: &'a str,
    priority: &'a str,
    title: &'a str,
    body: &'a str,
    action_url: Option<&'a str>,
    requested_at_ms: i64,
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Where to post.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(&'static str, String)>,
    /// The exact bytes signed and sent.
    pub body: Vec<u8>,
}

/// The body for `d`.
pub fn body(d: &Dispatch) -> Vec<u8> {
    let body = Body {
        delivery_id: &d.delivery_id,
        notification_id: &d.notification_id,
        attempt: d.attempt,
        tenant: &d.tenant,
        recipient_user_id: &d.recipient_user_id,
        category: &d.category,
        priority: d.priority.as_str(),
        title: &d.title,
        body: &d.body,
        action_url: d.action_url.as_deref(),
        requested_at_ms: d.requested_at_ms,
    };
    // A struct of strings and integers always serialises.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `v1=` and the hex HMAC-SHA256 under `secret` of `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        <Hmac<Sha256> as Mac>::new_from_slice(&[]).unwrap_or_else(|_| unreachable!())
    });
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// The signed request delivering `d` to its address, signed at `timestamp` (unix seconds).
pub fn build(d: &Dispatch, secret: &[u8], timestamp: i64) -> SignedRequest {
    let body = body(d);
    SignedRequest {
        url: d.address.clone(),
        headers: vec![
            ("Content-Type", "application/json".to_owned()),
            (IDEMPOTENCY_KEY, d.delivery_id.clone()),
            (TIMESTAMP, timestamp.to_string()),
            (SIGNATURE, signature(secret, timestamp, &body)),
        ],
        body,
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::{Channel, Priority};

    use super::*;

    fn dispatch() -> Dispatch {
        Dispatch {
            delivery_id: "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".into(),
            notification_id: "n-1".into(),
            attempt: 2,
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            category: "billing".into(),
            priority: Priority::High,
            channel: Channel::Webhook,
            address: "https://hooks.example.com/herald".into(),
            title: "Invoice ready".into(),
            body: "Your \"March\" invoice is ready".into(),
            action_url: Some("https://example.com/i/3".into()),
            requested_at_ms: 1_767_225_600_000,
            not_before_ms: Some(1),
            last_error: Some("503".into()),
        }
    }

    /// The exact bytes: a change here changes what every receiver parses.
    #[test]
    fn the_body_is_this_json() {
        assert_eq!(
            String::from_utf8(body(&dispatch())).expect("utf-8"),
            r#"{"delivery_id":"0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11","notification_id":"n-1","attempt":2,"tenant":"acme","recipient_user_id":"ana","category":"billing","priority":"HIGH","title":"Invoice ready","body":"Your \"March\" invoice is ready","action_url":"https://example.com/i/3","requested_at_ms":1767225600000}"#
        );
    }

    /// The signature of that body, computed apart from this code:
    /// `python3 -c 'import hmac,hashlib,sys; print(hmac.new(b"s3cret", b"1767225660." + body, hashlib.sha256).hexdigest())'`.
    #[test]
    fn the_request_carries_these_headers_and_signature() {
        let request = build(&dispatch(), b"s3cret", 1_767_225_660);
        assert_eq!(request.url, "https://hooks.example.com/herald");
        assert_eq!(request.body, body(&dispatch()));
        let expected_signature = GOLDEN_SIGNATURE;
        assert_eq!(
            request.headers,
            vec![
                ("Content-Type", "application/json".to_owned()),
                (
                    "Idempotency-Key",
                    "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".to_owned()
                ),
                ("Herald-Timestamp", "1767225660".to_owned()),
                ("Herald-Signature", expected_signature.to_owned()),
            ]
        );
    }

    #[test]
    fn the_signature_depends_on_secret_time_and_every_byte() {
        let body = body(&dispatch());
        let base = signature(b"s3cret", 1, &body);
        assert_ne!(base, signature(b"other", 1, &body));
        assert_ne!(base, signature(b"s3cret", 2, &body));
        let mut changed = body.clone();
        changed[10] ^= 1;
        assert_ne!(base, signature(b"s3cret", 1, &changed));
        assert!(base.starts_with("v1=") && base.len() == 3 + 64);
    }

    const GOLDEN_SIGNATURE: &str =
        "v1=0d374337ad270bda5948832ea050c5782d56dabb3b0a462a13a22fa60b654364";
}
