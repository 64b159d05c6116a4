//! Signed click links: the action URL of a dispatch is replaced by
//! `<base_url>/c/<token>`, where the token carries the notification, tenant, user, channel,
//! target and expiry, signed with HMAC-SHA256 under the links secret. The redirect endpoint
//! ([`Links::verify`]) accepts only an untampered, unexpired token, records the click and
//! redirects to the target. Pure: time is passed in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The longest token accepted (a target URL is at most 2 KiB after the ingress's checks).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The format version inside the token.
const VERSION: u32 = 1;

/// Why a link is refused (all answered 400 Bad Request, without an event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token of this format (or too long).
    #[error("the link is malformed")]
    Malformed,
    /// The signature does not match: the link was altered or signed with another secret.
    #[error("the link's signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("the link has expired")]
    Expired,
}

/// What a click on a link means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// The notification.
    pub notification_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its recipient.
    pub recipient_user_id: String,
    /// The channel the link was sent on (`sms`, `email`, …).
    pub channel: String,
    /// Where the link leads.
    pub target: String,
    /// Until when it may be followed (ms since the epoch).
    pub expires_at_ms: i64,
}

/// Signs and checks links with one secret.
#[derive(Clone)]
pub struct Links {
    secret: Vec<u8>,
    base_url: String,
    ttl_ms: i64,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("base_url", &self.base_url)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// Links under `base_url` (e.g. `https://l.example.com`), valid for `ttl_ms` after the
    /// notification was sent, signed with `secret` (at least 16 bytes).
    pub fn new(secret: &[u8], base_url: &str, ttl_ms: i64) -> Option<Links> {
        (secret.len() >= 16).then(|| Links {
            secret: secret.to_vec(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            ttl_ms,
        })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!())
    }

    /// The tracked link for `click` (its expiry: `sent_at_ms` + the links' lifetime).
    pub fn link(&self, click: &Click) -> String {
        format!("{}/c/{}", self.base_url, self.token(click))
    }

    /// The expiry of a link made for a notification sent at `sent_at_ms`.
    pub fn expiry(&self, sent_at_ms: i64) -> i64 {
        sent_at_ms.saturating_add(self.ttl_ms)
    }

    fn token(&self, click: &Click) -> String {
        let fields = serde_json::json!([
            VERSION,
            click.notification_id,
            click.tenant,
            click.recipient_user_id,
            click.channel,
            click.target,
            click.expires_at_ms,
        ]);
        let payload = B64.encode(fields.to_string());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!("{payload}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// The click a token stands for, if it is signed with this secret and not expired at
    /// `now_ms`.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Click, LinkError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(LinkError::Malformed);
        }
        let (payload, signature) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let signature = B64.decode(signature).map_err(|_| LinkError::Malformed)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| LinkError::BadSignature)?;
        let json = B64.decode(payload).map_err(|_| LinkError::Malformed)?;
        let fields: (u32, String, String, String, String, String, i64) =
            serde_json::from_slice(&json).map_err(|_| LinkError::Malformed)?;
        let (version, notification_id, tenant, recipient_user_id, channel, target, expires) =
            fields;
        if version != VERSION {
            return Err(LinkError::Malformed);
        }
        if now_ms > expires {
            return Err(LinkError::Expired);
        }
        Ok(Click {
            notification_id,
            tenant,
            recipient_user_id,
            channel,
            target,
            expires_at_ms: expires,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn click() -> Click {
        Click {
            notification_id: "n-1".into(),
            tenant: "acme".into(),
            recipient_user_id: "ana".into(),
            channel: "sms".into(),
            target: "https://acme.example/orders/1?x=\"y\"".into(),
            expires_at_ms: 2_000,
        }
    }

    fn links() -> Links {
        Links::new(SECRET, "https://l.example/", 1_000).unwrap()
    }

    fn token_of(link: &str) -> &str {
        link.strip_prefix("https://l.example/c/").unwrap()
    }

    #[test]
    fn a_link_verifies_to_its_click_until_it_expires() {
        let link = links().link(&click());
        assert!(link.starts_with("https://l.example/c/"), "{link}");
        assert_eq!(links().verify(token_of(&link), 1_999), Ok(click()));
        assert_eq!(links().verify(token_of(&link), 2_000), Ok(click()));
        assert_eq!(
            links().verify(token_of(&link), 2_001),
            Err(LinkError::Expired)
        );
        assert_eq!(links().expiry(500), 1_500);
    }

    #[test]
    fn any_change_to_any_field_breaks_the_signature() {
        let links = links();
        let token = links.token(&click());
        let (payload, sig) = token.split_once('.').unwrap();
        let json = String::from_utf8(B64.decode(payload).unwrap()).unwrap();
        for (from, to) in [
            ("n-1", "n-2"),
            ("ana", "bob"),
            ("sms", "email"),
            ("orders/1", "orders/2"),
            ("acme\"", "evil\""),
        ] {
            let forged = B64.encode(json.replacen(from, to, 1));
            assert_ne!(forged, payload, "{from}");
            assert_eq!(
                links.verify(&format!("{forged}.{sig}"), 0),
                Err(LinkError::BadSignature),
                "{from} → {to}"
            );
        }
        // A later expiry is a change too.
        let later = B64.encode(json.replace("2000", "9999"));
        assert_eq!(
            links.verify(&format!("{later}.{sig}"), 0),
            Err(LinkError::BadSignature)
        );
        // Another secret's link.
        let other = Links::new(b"another secret, long enough", "https://l.example", 1_000).unwrap();
        assert_eq!(other.verify(&token, 0), Err(LinkError::BadSignature));
    }

    #[test]
    fn garbage_and_huge_tokens_are_malformed_and_short_secrets_are_refused() {
        let links = links();
        for bad in ["", "abc", "a.b.c", "!!!.???", "e30.AAAA"] {
            assert!(
                matches!(
                    links.verify(bad, 0),
                    Err(LinkError::Malformed | LinkError::BadSignature)
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            links.verify(&"a".repeat(MAX_TOKEN_LEN + 1), 0),
            Err(LinkError::Malformed)
        );
        // A well-signed payload that is not the format.
        let payload = B64.encode("{\"x\":1}");
        let mut mac = links.mac();
        mac.update(payload.as_bytes());
        let token = format!("{payload}.{}", B64.encode(mac.finalize().into_bytes()));
        assert_eq!(links.verify(&token, 0), Err(LinkError::Malformed));
        assert!(Links::new(b"short", "https://l.example", 1).is_none());
    }
}
