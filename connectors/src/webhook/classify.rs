//! What a webhook receiver's answer means, pure.

use crate::Outcome;

/// The outcome of an HTTP answer with `status` and the `Retry-After` header's value, if any.
///
/// 2xx: delivered. 410 Gone: the endpoint is no more (invalid address). 408, 425, 429 and 5xx:
/// try again later, after the receiver's Retry-After (in seconds) if it gave one. Any other
/// status: a permanent failure, naming the status.
pub fn classify(status: u16, retry_after: Option<&str>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered {
            provider_message_id: None,
        },
        410 => Outcome::InvalidToken("the webhook endpoint answered 410 Gone".into()),
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("the webhook endpoint answered {status}"),
            after: crate::setup::retry_after(retry_after),
        },
        _ => Outcome::Failed(format!("the webhook endpoint answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn retry(after: Option<u64>, status: u16) -> Outcome {
        Outcome::Retry {
            reason: format!("the webhook endpoint answered {status}"),
            after: after.map(Duration::from_secs),
        }
    }

    #[test]
    fn success_is_delivered() {
        for status in [200, 201, 202, 204] {
            assert!(matches!(classify(status, None), Outcome::Delivered { .. }));
        }
    }

    #[test]
    fn gone_is_an_invalid_address() {
        assert!(matches!(classify(410, None), Outcome::InvalidToken(_)));
    }

    #[test]
    fn throttling_and_server_errors_retry_after_what_the_receiver_asked() {
        assert_eq!(classify(429, Some("30")), retry(Some(30), 429));
        assert_eq!(classify(503, Some(" 5 ")), retry(Some(5), 503));
        assert_eq!(classify(500, None), retry(None, 500));
        assert_eq!(classify(408, None), retry(None, 408));
        assert_eq!(
            classify(503, Some("Wed, 21 Oct 2026 07:28:00 GMT")),
            retry(None, 503)
        );
        assert_eq!(classify(429, Some("999999")), retry(Some(3_600), 429));
    }

    #[test]
    fn other_client_errors_are_permanent() {
        for status in [400, 401, 403, 404, 413] {
            assert_eq!(
                classify(status, None),
                Outcome::Failed(format!("the webhook endpoint answered {status}"))
            );
        }
    }
}
