//! The SMS channel: two providers with different API shapes, so that failover between them is
//! real — [`twilio`] (a Twilio-compatible REST API: form-encoded, basic auth, `201` with the
//! message's sid) and [`vonage`] (Vonage's SMS API: JSON with the credentials in the body,
//! `200` with a status per message part). What both share is here: the E.164 check of the
//! recipient's number and the text of a notification as one SMS.

pub mod twilio;
pub mod vonage;

use herald_schemas::Dispatch;

/// The longest text sent, in characters (Twilio's limit for one message of several parts);
/// a longer one is cut and ends with `…`.
pub const MAX_TEXT_CHARS: usize = 1_600;

/// Whether `number` is an E.164 phone number: `+`, then 8 to 15 digits, the first not 0.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The SMS text of `d`: its title and body on two lines (the title alone when the body is
/// empty), then its action URL, cut to [`MAX_TEXT_CHARS`].
pub fn text(d: &Dispatch) -> String {
    let mut text = d.title.trim().to_owned();
    for part in [Some(d.body.trim()), d.action_url.as_deref()]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
    {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(part);
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        text = text.chars().take(MAX_TEXT_CHARS - 1).collect();
        text.push('…');
    }
    text
}

/// The reason an address is refused without a call, or `None` if it is an E.164 number.
pub(crate) fn refuse_number(number: &str) -> Option<String> {
    (!is_e164(number)).then(|| {
        format!(
            "{:?} is not an E.164 phone number (+ and 8 to 15 digits)",
            number.chars().take(40).collect::<String>()
        )
    })
}

#[cfg(test)]
pub(crate) fn test_dispatch(address: &str) -> Dispatch {
    Dispatch {
        delivery_id: "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".into(),
        notification_id: "n-1".into(),
        attempt: 1,
        tenant: "acme".into(),
        recipient_user_id: "ana".into(),
        category: "security".into(),
        priority: herald_schemas::Priority::Critical,
        channel: herald_schemas::Channel::Sms,
        address: address.into(),
        title: "Your code".into(),
        body: "123 456 & <ok>".into(),
        action_url: None,
        requested_at_ms: 1_767_225_600_000,
        not_before_ms: None,
        last_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers_and_the_rest() {
        for good in [
            "+15550100000",
            "+447700900123",
            "+12345678",
            "+123456789012345",
        ] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "15550100000",
            "+1555",
            "+1234567890123456",
            "+05550100000",
            "+1 555 0100",
            "+1555010000a",
            "",
            "+",
            "++15550100000",
        ] {
            assert!(!is_e164(bad), "{bad}");
            assert!(refuse_number(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn the_text_has_title_body_and_link_on_lines() {
        let mut d = test_dispatch("+15550100000");
        assert_eq!(text(&d), "Your code\n123 456 & <ok>");
        d.action_url = Some("https://x.example/a".into());
        assert_eq!(text(&d), "Your code\n123 456 & <ok>\nhttps://x.example/a");
        d.title = " ".into();
        d.body = String::new();
        assert_eq!(text(&d), "https://x.example/a");
    }

    #[test]
    fn a_long_text_is_cut_to_the_limit_on_a_character() {
        let mut d = test_dispatch("+15550100000");
        d.body = "é".repeat(5_000);
        let t = text(&d);
        assert_eq!(t.chars().count(), MAX_TEXT_CHARS);
        assert!(t.ends_with('…'));
    }
}
