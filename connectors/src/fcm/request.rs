//! The FCM send request, pure: the URL, the JSON body of one message to one device, and the
//! check a device token must pass before Herald calls FCM with it.
//!
//! ```text
//! POST {base_url}/v1/projects/{project_id}/messages:send
//! Authorization: Bearer <OAuth access token>           (added by the connector)
//! Content-Type: application/json
//!
//! {"message":{"token":"<device token>",
//!   "notification":{"title":"…","body":"…"},
//!   "data":{"notification_id":"…","delivery_id":"…","action_url":"…"},   (action_url if set)
//!   "android":{"priority":"HIGH","collapse_key":"<notification_id>","ttl":"86400s"}}}
//! ```
//!
//! FCM has no idempotency key; the notification id as `collapse_key` makes a device that gets
//! a resend show it once.

use herald_schemas::{Dispatch, Priority};
use serde::Serialize;

/// The longest device token sent to FCM (real ones are a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A request ready to send (without its `Authorization` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmRequest {
    /// Where to post.
    pub url: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    notification: Notification<'a>,
    data: Data<'a>,
    android: Android<'a>,
}

#[derive(Serialize)]
struct Notification<'a> {
    title: &'a str,
    body: &'a str,
}

#[derive(Serialize)]
struct Data<'a> {
    notification_id: &'a str,
    delivery_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_url: Option<&'a str>,
}

#[derive(Serialize)]
struct Android<'a> {
    priority: &'static str,
    collapse_key: &'a str,
    ttl: String,
}

/// Why `token` cannot be an FCM registration token, if it cannot: empty, longer than
/// [`MAX_TOKEN_BYTES`], or holding whitespace or control characters.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the FCM device token is empty".into());
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "the FCM device token is {} bytes long (at most {MAX_TOKEN_BYTES})",
            token.len()
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the FCM device token holds whitespace or control characters".into());
    }
    Ok(())
}

/// The send URL of `project_id` under `base_url` (a trailing `/` on it is ignored).
pub fn messages_url(base_url: &str, project_id: &str) -> String {
    format!(
        "{}/v1/projects/{project_id}/messages:send",
        base_url.trim_end_matches('/')
    )
}

/// FCM's Android priority for Herald's: high and critical wake the device.
pub fn android_priority(priority: Priority) -> &'static str {
    match priority {
        Priority::High | Priority::Critical => "HIGH",
        Priority::Low | Priority::Normal => "NORMAL",
    }
}

/// The body delivering `d` to the device token in its address, kept by FCM for `ttl_s`
/// seconds while the device is offline.
pub fn body(d: &Dispatch, ttl_s: u64) -> Vec<u8> {
    let envelope = Envelope {
        message: Message {
            token: &d.address,
            notification: Notification {
                title: &d.title,
                body: &d.body,
            },
            data: Data {
                notification_id: &d.notification_id,
                delivery_id: &d.delivery_id,
                action_url: d.action_url.as_deref(),
            },
            android: Android {
                priority: android_priority(d.priority),
                collapse_key: &d.notification_id,
                ttl: format!("{ttl_s}s"),
            },
        },
    };
    // Structs of strings always serialise.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The request delivering `d`, posted to `messages_url` (see [`messages_url`]).
pub fn build(d: &Dispatch, messages_url: &str, ttl_s: u64) -> FcmRequest {
    FcmRequest {
        url: messages_url.to_owned(),
        body: body(d, ttl_s),
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    fn dispatch(priority: Priority, action_url: Option<&str>) -> Dispatch {
        Dispatch {
            delivery_id: "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".into(),
            notification_id: "n-1".into(),
            attempt: 2,
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            category: "billing".into(),
            priority,
            channel: Channel::PushFcm,
            address: "fcm-token:APA91b".into(),
            title: "Invoice ready".into(),
            body: "Your \"March\" invoice is ready".into(),
            action_url: action_url.map(Into::into),
            requested_at_ms: 1_767_225_600_000,
            not_before_ms: None,
            last_error: None,
        }
    }

    /// The exact bytes: a change here changes what FCM gets.
    #[test]
    fn the_body_is_this_json() {
        let d = dispatch(Priority::High, Some("https://example.com/i/3"));
        assert_eq!(
            String::from_utf8(body(&d, 3_600)).expect("utf-8"),
            r#"{"message":{"token":"fcm-token:APA91b","notification":{"title":"Invoice ready","body":"Your \"March\" invoice is ready"},"data":{"notification_id":"n-1","delivery_id":"0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11","action_url":"https://example.com/i/3"},"android":{"priority":"HIGH","collapse_key":"n-1","ttl":"3600s"}}}"#
        );
    }

    #[test]
    fn without_an_action_url_the_data_has_none() {
        let d = dispatch(Priority::Low, None);
        assert_eq!(
            String::from_utf8(body(&d, 60)).expect("utf-8"),
            r#"{"message":{"token":"fcm-token:APA91b","notification":{"title":"Invoice ready","body":"Your \"March\" invoice is ready"},"data":{"notification_id":"n-1","delivery_id":"0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11"},"android":{"priority":"NORMAL","collapse_key":"n-1","ttl":"60s"}}}"#
        );
    }

    #[test]
    fn high_and_critical_are_high_the_rest_normal() {
        assert_eq!(android_priority(Priority::Critical), "HIGH");
        assert_eq!(android_priority(Priority::High), "HIGH");
        assert_eq!(android_priority(Priority::Normal), "NORMAL");
        assert_eq!(android_priority(Priority::Low), "NORMAL");
    }

    #[test]
    fn the_url_names_the_project_under_the_base() {
        let url = messages_url("https://fcm.googleapis.com/", "my-project");
        assert_eq!(
            url,
            "https://fcm.googleapis.com/v1/projects/my-project/messages:send"
        );
        let request = build(&dispatch(Priority::Normal, None), &url, 10);
        assert_eq!(request.url, url);
        assert_eq!(request.body, body(&dispatch(Priority::Normal, None), 10));
    }

    #[test]
    fn only_plausible_tokens_pass() {
        assert!(check_token("fcm-token:APA91b_x-y").is_ok());
        assert!(check_token(&"a".repeat(MAX_TOKEN_BYTES)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(MAX_TOKEN_BYTES + 1),
            "has space".into(),
            "tab\there".into(),
            "new\nline".into(),
            "nul\0".into(),
            "nbsp\u{a0}".into(),
            "bell\u{7}".into(),
        ] {
            assert!(check_token(&bad).is_err(), "{bad:.40?}");
        }
    }
}
