//! Checking a recipient's address for its channel before it is stored, pure: a phone number in
//! E.164, an e-mail address by RFC 5322's `addr-spec` (dot-atom local part or a quoted string,
//! a domain of LDH labels or an IP literal), an APNs device token in hex, an FCM registration
//! token of its alphabet, an `https://` URL for webhooks. The address as stored comes back
//! (trimmed; an e-mail's domain lower-cased).

use herald_schemas::Channel;

/// Why an address was refused: a sentence naming what is wrong.
pub type Refusal = String;

/// Longest e-mail address (RFC 5321's path limit less the brackets).
const MAX_EMAIL: usize = 254;
/// Longest local part (RFC 5321).
const MAX_LOCAL: usize = 64;
/// Longest URL accepted for a webhook.
const MAX_URL: usize = 2_048;

/// `address` for `channel` as it will be stored, or why it cannot be.
pub fn normalize(channel: Channel, address: &str) -> Result<String, Refusal> {
    let address = address.trim();
    if address.is_empty() {
        return Err("is required".into());
    }
    match channel {
        Channel::Sms => e164(address).map(str::to_owned),
        Channel::Email => email(address),
        Channel::PushApns => apns_token(address),
        Channel::PushFcm => fcm_token(address).map(str::to_owned),
        Channel::Webhook => webhook_url(address).map(str::to_owned),
        Channel::InApp => Err("in-app needs no address: the inbox is the recipient's".into()),
    }
}

/// `+` then 2 to 15 digits, the first not 0.
fn e164(number: &str) -> Result<&str, Refusal> {
    let digits = number
        .strip_prefix('+')
        .ok_or("must be in E.164 form, starting with + and the country code (e.g. +14155550100)")?;
    let ok = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(number)
    } else {
        Err("must be in E.164 form: + and 2 to 15 digits, the first not 0".into())
    }
}

/// RFC 5322 `atext`.
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn email(address: &str) -> Result<String, Refusal> {
    if address.len() > MAX_EMAIL {
        return Err(format!("is longer than {MAX_EMAIL} characters"));
    }
    let at = address
        .rfind('@')
        .ok_or("must be an e-mail address (local@domain)")?;
    let (local, domain) = (&address[..at], &address[at + 1..]);
    if local.is_empty() || local.len() > MAX_LOCAL {
        return Err(format!(
            "the part before @ must have 1 to {MAX_LOCAL} characters"
        ));
    }
    let local_ok = if let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        quoted_string(quoted)
    } else {
        local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
    };
    if !local_ok {
        return Err(format!("{local:?} is not a valid local part (RFC 5322)"));
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return match literal.parse::<std::net::Ipv4Addr>() {
            Ok(_) => Ok(format!("{local}@[{literal}]")),
            Err(_) => Err(format!("[{literal}] is not an IPv4 address literal")),
        };
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(format!(
            "{domain:?} is not a domain name (labels of letters, digits and -)"
        ));
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// The inside of a quoted local part: printable ASCII, `\` escaping any printable character.
fn quoted_string(inside: &str) -> bool {
    let mut chars = inside.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if (' '..='~').contains(&e) => {}
                _ => return false,
            },
            '"' => return false,
            c if (' '..='~').contains(&c) => {}
            _ => return false,
        }
    }
    true
}

/// 32 to 100 bytes in hex (APNs tokens are 32 bytes today; Apple allows for longer).
fn apns_token(token: &str) -> Result<String, Refusal> {
    let ok = token.len().is_multiple_of(2)
        && (64..=200).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(token.to_ascii_lowercase())
    } else {
        Err("must be an APNs device token: 64 to 200 hexadecimal digits".into())
    }
}

/// FCM registration tokens: letters, digits, `-`, `_` and `:`, 32 to 4,096 long.
fn fcm_token(token: &str) -> Result<&str, Refusal> {
    let ok = (32..=4_096).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'));
    if ok {
        Ok(token)
    } else {
        Err("must be an FCM registration token: 32 to 4096 of A-Z a-z 0-9 - _ :".into())
    }
}

fn webhook_url(url: &str) -> Result<&str, Refusal> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("must be an https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let ok = url.len() <= MAX_URL
        && !host.is_empty()
        && !host.contains('@')
        && url.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(url)
    } else {
        Err(format!(
            "must be an https:// URL with a host, at most {MAX_URL} characters, no spaces or credentials"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_e164() {
        assert_eq!(
            normalize(Channel::Sms, " +14155550100 "),
            Ok("+14155550100".into())
        );
        for bad in [
            "14155550100",
            "+0123456",
            "+1",
            "+1415555010012345",
            "+1 415 555",
            "+1415x",
        ] {
            assert!(normalize(Channel::Sms, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_addresses_follow_rfc_5322_addr_spec() {
        for (given, stored) in [
            ("ana@Example.COM", "ana@example.com"),
            (
                "first.last+tag@mail.example.org",
                "first.last+tag@mail.example.org",
            ),
            (
                "o'brien!#$%&*=?^_`{|}~@ex-ample.io",
                "o'brien!#$%&*=?^_`{|}~@ex-ample.io",
            ),
            ("\"john doe\"@example.com", "\"john doe\"@example.com"),
            ("\"a\\\"b\"@example.com", "\"a\\\"b\"@example.com"),
            ("ops@[192.0.2.1]", "ops@[192.0.2.1]"),
        ] {
            assert_eq!(
                normalize(Channel::Email, given),
                Ok(stored.to_owned()),
                "{given}"
            );
        }
        for bad in [
            "plain",
            "@example.com",
            "ana@",
            "ana@localhost",
            "a..b@example.com",
            ".ab@example.com",
            "ab.@example.com",
            "a b@example.com",
            "ana@-example.com",
            "ana@exa_mple.com",
            "ana@[999.1.1.1]",
            "\"unterminated@example.com",
            "\"bad\"quote\"@example.com",
        ] {
            assert!(normalize(Channel::Email, bad).is_err(), "{bad}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(normalize(Channel::Email, &long_local).is_err());
        let long = format!("a@{}.com", "b".repeat(250));
        assert!(normalize(Channel::Email, &long).is_err());
    }

    #[test]
    fn device_tokens_and_webhooks_have_their_formats() {
        let apns = "AB".repeat(32);
        assert_eq!(normalize(Channel::PushApns, &apns), Ok("ab".repeat(32)));
        assert!(normalize(Channel::PushApns, &"ab".repeat(31)).is_err());
        assert!(normalize(Channel::PushApns, &format!("{}g", "a".repeat(63))).is_err());
        let fcm = format!("dXf3:APA91b{}", "x_-".repeat(40));
        assert_eq!(normalize(Channel::PushFcm, &fcm), Ok(fcm.clone()));
        assert!(normalize(Channel::PushFcm, "short").is_err());
        assert!(
            normalize(Channel::PushFcm, &format!("{fcm} ")).is_ok(),
            "trimmed"
        );
        assert!(normalize(Channel::PushFcm, &format!("{fcm}/")).is_err());
        assert!(normalize(Channel::Webhook, "https://hooks.example.com/h?x=1").is_ok());
        for bad in [
            "http://hooks.example.com",
            "https://",
            "https://u:p@h.example",
            "https://h/a b",
        ] {
            assert!(normalize(Channel::Webhook, bad).is_err(), "{bad}");
        }
        assert!(normalize(Channel::InApp, "anything").is_err());
        assert_eq!(normalize(Channel::Sms, "  "), Err("is required".into()));
    }
}
