//! What FCM's answer to one send means, pure.
//!
//! FCM answers 200 with `{"name":"projects/<p>/messages/<id>"}`, or an error status with
//! ```text
//! {"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",
//!   "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError",
//!               "errorCode":"UNREGISTERED"}]}}
//! ```

use serde::Deserialize;

use crate::Outcome;

/// The `@type` of the detail carrying FCM's own error code.
const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// The longest part of FCM's error message kept in a reason.
const MAX_MESSAGE_CHARS: usize = 300;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Answer {
    name: Option<String>,
    error: Option<Status>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    message: Option<String>,
    status: Option<String>,
    details: Vec<Detail>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Detail {
    #[serde(rename = "@type")]
    kind: Option<String>,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

impl Status {
    /// FCM's `errorCode` (UNREGISTERED, QUOTA_EXCEEDED, …), if a detail gives one.
    fn fcm_code(&self) -> Option<&str> {
        self.details
            .iter()
            .find(|d| d.kind.as_deref() == Some(FCM_ERROR))
            .and_then(|d| d.error_code.as_deref())
    }
}

/// The outcome of FCM's answer: its `status`, its `Retry-After` header's value, and its body
/// (read up to a cap; a cut or unreadable body only loses the details).
///
/// - 2xx: delivered, with the message's `name` as the provider's id.
/// - 404, or errorCode UNREGISTERED or SENDER_ID_MISMATCH: the device token is no longer valid
///   (the app was uninstalled, or the token belongs to another Firebase project).
/// - 401 and 403: retried, with a reason naming the credentials: the service-account key or
///   its permissions are wrong, which fixing the configuration mends, and deliveries retried
///   meanwhile then go through (the connector also drops its access token on a 401, so the
///   next send fetches a new one).
/// - 429, 5xx, or errorCode QUOTA_EXCEEDED, UNAVAILABLE or INTERNAL: retried, after FCM's
///   Retry-After (in seconds) if it gave one.
/// - Anything else (400 INVALID_ARGUMENT: a bad message): a permanent failure, with FCM's
///   message.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> crate::Outcome {
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    if (200..300).contains(&status) {
        return Outcome::Delivered {
            provider_message_id: answer.name,
        };
    }
    let error = answer.error.unwrap_or_default();
    let code = error.fcm_code();
    let what = describe(status, &error);
    match (status, code) {
        (_, Some("UNREGISTERED" | "SENDER_ID_MISMATCH")) | (404, _) => {
            Outcome::InvalidToken(format!("the FCM device token is not valid: {what}"))
        }
        (401, Some("THIRD_PARTY_AUTH_ERROR")) => Outcome::retry(format!(
            "FCM could not authenticate to APNs or web push: check the credentials in the \
             Firebase project ({what})"
        )),
        (401, _) => Outcome::retry(format!(
            "FCM refused the access token: check the service-account key ({what})"
        )),
        (403, _) => Outcome::retry(format!(
            "FCM refused the credentials: check that the service account may send for the \
             project ({what})"
        )),
        (429 | 500..=599, _) | (_, Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL")) => {
            Outcome::Retry {
                reason: what,
                after: crate::setup::retry_after(retry_after),
            }
        }
        _ => Outcome::Failed(what),
    }
}

/// Whether FCM's answer says the OAuth access token itself was refused (a 401 that is not
/// about FCM's own credentials for APNs or web push): the next send needs a new token.
pub fn access_token_refused(status: u16, body: &[u8]) -> bool {
    if status != 401 {
        return false;
    }
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    let error = answer.error.unwrap_or_default();
    error.fcm_code() != Some("THIRD_PARTY_AUTH_ERROR")
}

/// "FCM answered <status> <errorCode or status name>: <message>".
fn describe(status: u16, error: &Status) -> String {
    let mut what = format!("FCM answered {status}");
    if let Some(code) = error.fcm_code().or(error.status.as_deref()) {
        what.push(' ');
        what.push_str(code);
    }
    if let Some(message) = error.message.as_deref().filter(|m| !m.is_empty()) {
        what.push_str(": ");
        what.extend(message.chars().take(MAX_MESSAGE_CHARS));
    }
    what
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn error_body(code: u16, status: &str, message: &str, fcm_code: Option<&str>) -> Vec<u8> {
        let details = match fcm_code {
            Some(c) => format!(r#"[{{"@type":"{FCM_ERROR}","errorCode":"{c}"}}]"#),
            None => "[]".into(),
        };
        format!(
            r#"{{"error":{{"code":{code},"message":"{message}","status":"{status}","details":{details}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn success_is_delivered_with_the_message_name() {
        let body = br#"{"name":"projects/p/messages/0:1500415314455276%31bd1c9631bd1c96"}"#;
        assert_eq!(
            classify(200, None, body),
            Outcome::Delivered {
                provider_message_id: Some(
                    "projects/p/messages/0:1500415314455276%31bd1c9631bd1c96".into()
                )
            }
        );
        assert_eq!(
            classify(200, None, b"cut off {"),
            Outcome::Delivered {
                provider_message_id: None
            }
        );
    }

    #[test]
    fn unregistered_and_foreign_tokens_are_invalid() {
        let unregistered = error_body(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        );
        assert_eq!(
            classify(404, None, &unregistered),
            Outcome::InvalidToken(
                "the FCM device token is not valid: FCM answered 404 UNREGISTERED: Requested \
                 entity was not found."
                    .into()
            )
        );
        // UNREGISTERED under another status (FCM has used 400 for it), a bare 404, and a token
        // of another project.
        let also = error_body(400, "INVALID_ARGUMENT", "x", Some("UNREGISTERED"));
        assert!(matches!(
            classify(400, None, &also),
            Outcome::InvalidToken(_)
        ));
        assert!(matches!(classify(404, None, b""), Outcome::InvalidToken(_)));
        let foreign = error_body(403, "PERMISSION_DENIED", "x", Some("SENDER_ID_MISMATCH"));
        assert!(matches!(
            classify(403, None, &foreign),
            Outcome::InvalidToken(_)
        ));
    }

    #[test]
    fn a_bad_message_is_a_permanent_failure_with_fcms_words() {
        let body = error_body(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        );
        assert_eq!(
            classify(400, None, &body),
            Outcome::Failed(
                "FCM answered 400 INVALID_ARGUMENT: The registration token is not a valid FCM \
                 registration token"
                    .into()
            )
        );
        assert_eq!(
            classify(400, None, b"<html>"),
            Outcome::Failed("FCM answered 400".into())
        );
        let long = error_body(400, "INVALID_ARGUMENT", &"m".repeat(5_000), None);
        let Outcome::Failed(reason) = classify(400, None, &long) else {
            panic!("not a failure")
        };
        assert!(reason.len() < 400, "{}", reason.len());
    }

    #[test]
    fn throttling_and_server_errors_retry_after_what_fcm_asked() {
        let quota = error_body(429, "RESOURCE_EXHAUSTED", "q", Some("QUOTA_EXCEEDED"));
        assert_eq!(
            classify(429, Some("30"), &quota),
            Outcome::Retry {
                reason: "FCM answered 429 QUOTA_EXCEEDED: q".into(),
                after: Some(Duration::from_secs(30))
            }
        );
        let unavailable = error_body(503, "UNAVAILABLE", "down", Some("UNAVAILABLE"));
        assert!(matches!(
            classify(503, None, &unavailable),
            Outcome::Retry { after: None, .. }
        ));
        let internal = error_body(500, "INTERNAL", "oops", Some("INTERNAL"));
        assert!(matches!(
            classify(500, Some("999999"), &internal),
            Outcome::Retry { after: Some(d), .. } if d == crate::setup::MAX_RETRY_AFTER
        ));
        assert!(matches!(classify(502, None, b""), Outcome::Retry { .. }));
    }

    #[test]
    fn refused_credentials_retry_and_say_so() {
        let body = error_body(
            401,
            "UNAUTHENTICATED",
            "Request had invalid credentials.",
            None,
        );
        let Outcome::Retry { reason, after } = classify(401, Some("5"), &body) else {
            panic!("not a retry")
        };
        assert!(reason.contains("service-account key"), "{reason}");
        assert_eq!(after, None);
        let denied = error_body(403, "PERMISSION_DENIED", "no", None);
        let Outcome::Retry { reason, .. } = classify(403, None, &denied) else {
            panic!("not a retry")
        };
        assert!(reason.contains("service account"), "{reason}");
        assert!(access_token_refused(401, &body));
        assert!(!access_token_refused(403, &denied));
        let apns = error_body(401, "UNAUTHENTICATED", "a", Some("THIRD_PARTY_AUTH_ERROR"));
        assert!(!access_token_refused(401, &apns));
        assert!(matches!(classify(401, None, &apns), Outcome::Retry { .. }));
    }

    #[test]
    fn other_statuses_are_permanent() {
        for status in [300, 400, 405, 413] {
            assert!(
                matches!(classify(status, None, b"{}"), Outcome::Failed(_)),
                "{status}"
            );
        }
    }
}
