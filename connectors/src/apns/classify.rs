//! What APNs's answer means, pure: the status, the `reason` of its JSON body, and the
//! `apns-id` and `Retry-After` headers.
//!
//! | answer | outcome |
//! |---|---|
//! | 200 | delivered; the provider id is the answer's `apns-id` |
//! | 410 (`Unregistered`, `ExpiredToken`), 400 `BadDeviceToken` / `DeviceTokenNotForTopic` | invalid token |
//! | 429 (`TooManyRequests`), 408, 5xx, 400 `IdleTimeout` | retry, after the `Retry-After` if given |
//! | 403 `ExpiredProviderToken` | retry; the connector signs a new token ([`token_expired`]) |
//! | any other 403 (`InvalidProviderToken`, `MissingProviderToken`, …) | retry, naming the settings to check |
//! | any other status | failed, naming the status and reason |
//!
//! Any other 403 means APNs does not accept the provider token: a setting of ours is wrong
//! (the key, its id, the team), not the notification. Those deliveries are retried, so once the
//! settings are fixed and Herald restarted they are delivered — within the retry policy's
//! attempts; past them they are dead-lettered like any other retry.

use crate::Outcome;

/// The longest reason kept from an answer (characters): APNs's are short, a stranger's body
/// is not trusted.
const MAX_REASON: usize = 100;

/// The `reason` of an APNs error body `{"reason":"…","timestamp":…}`, if it has one.
pub fn reason(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Error {
        reason: String,
    }
    let error: Error = serde_json::from_slice(body).ok()?;
    let reason: String = error
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    (!reason.is_empty()).then_some(reason)
}

/// Whether APNs refused the provider token as expired: the connector then signs a new one.
pub fn token_expired(status: u16, reason: Option<&str>) -> bool {
    status == 403 && reason == Some("ExpiredProviderToken")
}

/// The outcome of APNs's answer with `status`, the body's `reason`, and the `apns-id` and
/// `Retry-After` headers.
pub fn classify(
    status: u16,
    reason: Option<&str>,
    apns_id: Option<&str>,
    retry_after: Option<&str>,
) -> Outcome {
    let answered = match reason {
        Some(reason) => format!("APNs answered {status} {reason}"),
        None => format!("APNs answered {status}"),
    };
    let retry = |reason: String| Outcome::Retry {
        reason,
        after: crate::setup::retry_after(retry_after),
    };
    match (status, reason) {
        (200, _) => Outcome::Delivered {
            provider_message_id: apns_id.map(str::to_owned),
        },
        (410, _) | (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => {
            Outcome::InvalidToken(invalid_token(answered, reason))
        }
        (403, Some("ExpiredProviderToken")) => {
            retry(format!("{answered}: a new provider token is signed"))
        }
        (403, _) => retry(format!(
            "{answered}: APNs does not accept the provider token; check [provider.apns] \
             key_file, key_id and team_id (one key of the team that owns the topic) — \
             deliveries are retried until they are fixed"
        )),
        (408 | 429, _) | (400, Some("IdleTimeout")) | (500..=599, _) => retry(answered),
        (400, Some("BadTopic" | "MissingTopic" | "TopicDisallowed")) => {
            Outcome::Failed(format!("{answered}: check [provider.apns] topic"))
        }
        _ => Outcome::Failed(answered),
    }
}

/// The reason of an invalid token, with what else can cause it.
fn invalid_token(answered: String, reason: Option<&str>) -> String {
    match reason {
        Some("BadDeviceToken") => format!(
            "{answered} (a sandbox token sent to production, or the reverse, answers this \
             too: check [provider.apns] base_url)"
        ),
        Some("DeviceTokenNotForTopic") => {
            format!("{answered} (the token is another app's than [provider.apns] topic)")
        }
        _ => answered,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ok_is_delivered_with_apples_id() {
        assert_eq!(
            classify(
                200,
                None,
                Some("0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11"),
                None
            ),
            Outcome::Delivered {
                provider_message_id: Some("0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".into())
            }
        );
        assert_eq!(
            classify(200, None, None, None),
            Outcome::Delivered {
                provider_message_id: None
            }
        );
    }

    #[test]
    fn unregistered_and_bad_tokens_are_invalid_tokens() {
        assert_eq!(
            classify(410, Some("Unregistered"), None, None),
            Outcome::InvalidToken("APNs answered 410 Unregistered".into())
        );
        assert_eq!(
            classify(410, Some("ExpiredToken"), None, None),
            Outcome::InvalidToken("APNs answered 410 ExpiredToken".into())
        );
        assert_eq!(
            classify(410, None, None, None),
            Outcome::InvalidToken("APNs answered 410".into())
        );
        for reason in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
            match classify(400, Some(reason), None, None) {
                Outcome::InvalidToken(why) => {
                    assert!(
                        why.starts_with(&format!("APNs answered 400 {reason} (")),
                        "{why}"
                    );
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
    }

    #[test]
    fn throttling_and_server_errors_retry_after_what_apns_asked() {
        let retry = |reason: &str, after: Option<u64>| Outcome::Retry {
            reason: reason.into(),
            after: after.map(Duration::from_secs),
        };
        assert_eq!(
            classify(429, Some("TooManyRequests"), None, Some("7")),
            retry("APNs answered 429 TooManyRequests", Some(7))
        );
        assert_eq!(
            classify(503, Some("ServiceUnavailable"), None, None),
            retry("APNs answered 503 ServiceUnavailable", None)
        );
        assert_eq!(
            classify(500, None, None, Some("999999")),
            retry("APNs answered 500", Some(3_600))
        );
        assert_eq!(
            classify(400, Some("IdleTimeout"), None, None),
            retry("APNs answered 400 IdleTimeout", None)
        );
        assert_eq!(
            classify(502, None, None, None),
            retry("APNs answered 502", None)
        );
    }

    #[test]
    fn an_expired_provider_token_is_retried_with_a_new_one() {
        assert!(token_expired(403, Some("ExpiredProviderToken")));
        assert!(!token_expired(403, Some("InvalidProviderToken")));
        assert!(!token_expired(400, Some("ExpiredProviderToken")));
        assert!(!token_expired(403, None));
        match classify(403, Some("ExpiredProviderToken"), None, None) {
            Outcome::Retry { reason, after } => {
                assert!(reason.contains("new provider token"), "{reason}");
                assert_eq!(after, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_refused_provider_tokens_are_retried_naming_the_settings() {
        for reason in [
            Some("InvalidProviderToken"),
            Some("MissingProviderToken"),
            Some("Forbidden"),
            None,
        ] {
            match classify(403, reason, None, None) {
                Outcome::Retry { reason: why, .. } => {
                    assert!(why.contains("key_file, key_id and team_id"), "{why}");
                }
                other => panic!("{reason:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_answers_fail_naming_status_and_reason() {
        assert_eq!(
            classify(413, Some("PayloadTooLarge"), None, None),
            Outcome::Failed("APNs answered 413 PayloadTooLarge".into())
        );
        assert_eq!(
            classify(400, Some("BadCollapseId"), None, None),
            Outcome::Failed("APNs answered 400 BadCollapseId".into())
        );
        assert_eq!(
            classify(404, Some("BadPath"), None, None),
            Outcome::Failed("APNs answered 404 BadPath".into())
        );
        assert_eq!(
            classify(400, Some("TopicDisallowed"), None, None),
            Outcome::Failed(
                "APNs answered 400 TopicDisallowed: check [provider.apns] topic".into()
            )
        );
        assert_eq!(
            classify(301, None, None, None),
            Outcome::Failed("APNs answered 301".into())
        );
    }

    #[test]
    fn the_reason_is_read_from_json_bounded_and_printable() {
        assert_eq!(
            reason(br#"{"reason":"Unregistered","timestamp":1767225600000}"#).as_deref(),
            Some("Unregistered")
        );
        assert_eq!(reason(b"").as_deref(), None);
        assert_eq!(reason(b"<html>bad gateway</html>").as_deref(), None);
        assert_eq!(reason(br#"{"reason":""}"#).as_deref(), None);
        assert_eq!(reason(br#"{"reason":42}"#).as_deref(), None);
        assert_eq!(reason(br#"{"reason":"a\nb"}"#).as_deref(), Some("ab"));
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(10_000));
        assert_eq!(reason(long.as_bytes()).map(|r| r.len()), Some(MAX_REASON));
    }
}
