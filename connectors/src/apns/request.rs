//! The APNs request, pure: where it goes, its headers and its JSON payload.
//!
//! ```text
//! POST {base_url}/3/device/{device token}                  (HTTP/2)
//! authorization: bearer <provider token>
//! apns-topic: <[provider.apns] topic: the app's bundle id>
//! apns-push-type: alert
//! apns-priority: 10 (HIGH, CRITICAL) | 5 (LOW, NORMAL)
//! apns-expiration: <requested_at + ttl_s, unix seconds>   (0 when ttl_s is 0: never stored)
//! apns-collapse-id: <notification_id>                     (left out over 64 bytes or not ASCII)
//! apns-id: <delivery_id>                                  (left out when not a UUID)
//!
//! {"aps":{"alert":{"title":"…","body":"…"},"sound":"default"},
//!  "herald":{"notification_id":"…","delivery_id":"…","action_url":"…"}}
//! ```
//!
//! `action_url` is left out when the notification has none. The collapse id makes every
//! attempt of one notification replace the last on the device; the `apns-id` is how Apple's
//! delivery logs name the attempt. A device token is 64 to 200 hex digits; anything else, and a
//! payload over APNs's 4,096 bytes, is refused here, without a call.

use herald_schemas::{Dispatch, Priority};
use serde::Serialize;

use crate::Outcome;

/// The largest payload APNs takes (bytes).
pub const MAX_PAYLOAD: usize = 4096;
/// The longest `apns-collapse-id` APNs takes (bytes).
pub const MAX_COLLAPSE_ID: usize = 64;

/// What the request depends on besides the dispatch.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `https://api.push.apple.com` or the sandbox, without a trailing slash.
    pub base_url: &'a str,
    /// The app's bundle id.
    pub topic: &'a str,
    /// How long APNs keeps trying an offline device, from the request time (seconds).
    pub ttl_s: u64,
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsRequest {
    /// Where to post.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON payload.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    herald: Herald<'a>,
}

#[derive(Serialize)]
struct Aps<'a> {
    alert: Alert<'a>,
    sound: &'static str,
}

#[derive(Serialize)]
struct Alert<'a> {
    title: &'a str,
    body: &'a str,
}

#[derive(Serialize)]
struct Herald<'a> {
    notification_id: &'a str,
    delivery_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_url: Option<&'a str>,
}

/// The JSON payload for `d`.
pub fn payload(d: &Dispatch) -> Vec<u8> {
    let payload = Payload {
        aps: Aps {
            alert: Alert {
                title: &d.title,
                body: &d.body,
            },
            sound: "default",
        },
        herald: Herald {
            notification_id: &d.notification_id,
            delivery_id: &d.delivery_id,
            action_url: d.action_url.as_deref(),
        },
    };
    // A struct of strings always serialises.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Whether `token` looks like an APNs device token: 64 to 200 hex digits.
pub fn valid_device_token(token: &str) -> bool {
    (64..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `id` can be the `apns-collapse-id`: 1 to 64 bytes of printable ASCII (Herald's
/// notification ids are UUIDs).
fn collapse_id_fits(id: &str) -> bool {
    (1..=MAX_COLLAPSE_ID).contains(&id.len()) && id.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The `apns-priority` for `priority`: 10 sends at once, 5 lets the device save power.
pub fn apns_priority(priority: Priority) -> &'static str {
    match priority {
        Priority::High | Priority::Critical => "10",
        Priority::Low | Priority::Normal => "5",
    }
}

/// The `apns-expiration`: `ttl_s` after the request time, in unix seconds; 0 (deliver now or
/// never) when `ttl_s` is 0.
pub fn expiration(requested_at_ms: i64, ttl_s: u64) -> i64 {
    if ttl_s == 0 {
        return 0;
    }
    let ttl = i64::try_from(ttl_s).unwrap_or(i64::MAX);
    requested_at_ms.div_euclid(1000).max(0).saturating_add(ttl)
}

/// The request delivering `d` through `target`, authorised by the provider token `jwt`; or,
/// when it cannot be sent, the outcome: an invalid device token, or a payload too large.
pub fn build(d: &Dispatch, target: Target<'_>, jwt: &str) -> Result<ApnsRequest, Outcome> {
    if !valid_device_token(&d.address) {
        let shown: String = d.address.chars().take(80).collect();
        return Err(Outcome::InvalidToken(format!(
            "{shown:?} is not an APNs device token (64 to 200 hex digits)"
        )));
    }
    let body = payload(d);
    if body.len() > MAX_PAYLOAD {
        return Err(Outcome::Failed(format!(
            "the APNs payload is {} bytes, over APNs's limit of {MAX_PAYLOAD}: shorten the \
             title or the body",
            body.len()
        )));
    }
    let mut headers = vec![
        ("authorization", format!("bearer {jwt}")),
        ("apns-topic", target.topic.to_owned()),
        ("apns-push-type", "alert".to_owned()),
        ("apns-priority", apns_priority(d.priority).to_owned()),
        (
            "apns-expiration",
            expiration(d.requested_at_ms, target.ttl_s).to_string(),
        ),
    ];
    if collapse_id_fits(&d.notification_id) {
        headers.push(("apns-collapse-id", d.notification_id.clone()));
    }
    if let Ok(id) = uuid::Uuid::try_parse(&d.delivery_id) {
        headers.push(("apns-id", id.hyphenated().to_string()));
    }
    Ok(ApnsRequest {
        url: format!("{}/3/device/{}", target.base_url, d.address),
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    const TOKEN: &str = "8f0c2d6e4b1a3c5d7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";

    fn dispatch() -> Dispatch {
        Dispatch {
            delivery_id: "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".into(),
            notification_id: "n-1".into(),
            attempt: 2,
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            category: "billing".into(),
            priority: Priority::High,
            channel: Channel::PushApns,
            address: TOKEN.into(),
            title: "Invoice ready".into(),
            body: "Your \"March\" invoice is ready".into(),
            action_url: Some("https://example.com/i/3".into()),
            requested_at_ms: 1_767_225_600_999,
            not_before_ms: Some(1),
            last_error: Some("503".into()),
        }
    }

    fn target() -> Target<'static> {
        Target {
            base_url: "https://api.push.apple.com",
            topic: "com.example.app",
            ttl_s: 86_400,
        }
    }

    /// The exact request: a change here changes what every device receives.
    #[test]
    fn the_request_is_this() {
        let request = build(&dispatch(), target(), "h.c.s").expect("sendable");
        assert_eq!(
            request.url,
            format!("https://api.push.apple.com/3/device/{TOKEN}")
        );
        assert_eq!(
            request.headers,
            vec![
                ("authorization", "bearer h.c.s".to_owned()),
                ("apns-topic", "com.example.app".to_owned()),
                ("apns-push-type", "alert".to_owned()),
                ("apns-priority", "10".to_owned()),
                ("apns-expiration", "1767312000".to_owned()),
                ("apns-collapse-id", "n-1".to_owned()),
                ("apns-id", "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".to_owned()),
            ]
        );
        assert_eq!(
            String::from_utf8(request.body).expect("utf-8"),
            r#"{"aps":{"alert":{"title":"Invoice ready","body":"Your \"March\" invoice is ready"},"sound":"default"},"herald":{"notification_id":"n-1","delivery_id":"0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11","action_url":"https://example.com/i/3"}}"#
        );
    }

    #[test]
    fn no_action_url_no_uuid_and_a_long_notification_id_leave_their_parts_out() {
        let d = Dispatch {
            delivery_id: "d-1".into(),
            notification_id: "n".repeat(MAX_COLLAPSE_ID + 1),
            action_url: None,
            priority: Priority::Normal,
            ..dispatch()
        };
        let request = build(&d, target(), "jwt").expect("sendable");
        let names: Vec<_> = request.headers.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "authorization",
                "apns-topic",
                "apns-push-type",
                "apns-priority",
                "apns-expiration"
            ]
        );
        assert_eq!(request.headers[3].1, "5");
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
        assert_eq!(
            body["herald"],
            serde_json::json!({"notification_id": d.notification_id, "delivery_id": "d-1"})
        );
        let at_limit = Dispatch {
            notification_id: "n".repeat(MAX_COLLAPSE_ID),
            ..dispatch()
        };
        let request = build(&at_limit, target(), "jwt").expect("sendable");
        assert!(
            request
                .headers
                .contains(&("apns-collapse-id", at_limit.notification_id))
        );
        for id in ["", "a\nb", "é"] {
            let d = Dispatch {
                notification_id: id.into(),
                ..dispatch()
            };
            let request = build(&d, target(), "jwt").expect("sendable");
            assert!(
                request
                    .headers
                    .iter()
                    .all(|(name, _)| *name != "apns-collapse-id")
            );
        }
    }

    #[test]
    fn the_apns_id_is_the_canonical_form_of_the_delivery_uuid() {
        let d = Dispatch {
            delivery_id: "0B6E3F5E4D4A5A529C392F0D5D6B8A11".into(),
            ..dispatch()
        };
        let request = build(&d, target(), "jwt").expect("sendable");
        assert!(
            request
                .headers
                .contains(&("apns-id", "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".to_owned()))
        );
    }

    #[test]
    fn priorities_map_to_ten_or_five() {
        assert_eq!(apns_priority(Priority::Critical), "10");
        assert_eq!(apns_priority(Priority::High), "10");
        assert_eq!(apns_priority(Priority::Normal), "5");
        assert_eq!(apns_priority(Priority::Low), "5");
    }

    #[test]
    fn the_expiration_counts_from_the_request_time() {
        assert_eq!(expiration(1_767_225_600_999, 60), 1_767_225_660);
        assert_eq!(expiration(1_767_225_600_000, 0), 0);
        assert_eq!(expiration(-5_000, 60), 60);
        assert_eq!(expiration(i64::MAX, u64::MAX), i64::MAX);
    }

    #[test]
    fn only_64_to_200_hex_digits_are_a_device_token() {
        assert!(valid_device_token(TOKEN));
        assert!(valid_device_token(&"A".repeat(64)));
        assert!(valid_device_token(&"0".repeat(200)));
        for bad in [
            String::new(),
            "0".repeat(63),
            "0".repeat(201),
            format!("{}g", "0".repeat(63)),
            format!("{}/..", "0".repeat(64)),
            format!("{} ", "0".repeat(64)),
            "é".repeat(32),
        ] {
            assert!(!valid_device_token(&bad), "{bad:?}");
            let d = Dispatch {
                address: bad.clone(),
                ..dispatch()
            };
            assert!(matches!(
                build(&d, target(), "jwt"),
                Err(Outcome::InvalidToken(_))
            ));
        }
    }

    #[test]
    fn a_payload_over_4096_bytes_is_refused_and_one_at_the_limit_is_not() {
        let empty_body = payload(&Dispatch {
            body: String::new(),
            ..dispatch()
        })
        .len();
        let fits = Dispatch {
            body: "x".repeat(MAX_PAYLOAD - empty_body),
            ..dispatch()
        };
        assert_eq!(payload(&fits).len(), MAX_PAYLOAD);
        assert!(build(&fits, target(), "jwt").is_ok());
        let over = Dispatch {
            body: "x".repeat(MAX_PAYLOAD - empty_body + 1),
            ..dispatch()
        };
        match build(&over, target(), "jwt") {
            Err(Outcome::Failed(reason)) => assert!(reason.contains("4097 bytes"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
