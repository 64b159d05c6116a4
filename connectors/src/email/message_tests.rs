use std::time::{Duration, UNIX_EPOCH};

use herald_schemas::{Channel, Priority};

use super::*;

/// A dispatch with something to escape, encode or refuse in every field.
fn dispatch() -> Dispatch {
    Dispatch {
        delivery_id: "0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11".into(),
        notification_id: "n-1".into(),
        attempt: 2,
        tenant: "acme & co".into(),
        recipient_user_id: "ana/1".into(),
        category: "billing".into(),
        priority: Priority::High,
        channel: Channel::Email,
        address: "Ana <ana@example.com>".into(),
        title: "Invoice <ready>\r\nBcc: evil@example.net".into(),
        body: "Your \"March\" invoice & café\nis ready <script>".into(),
        action_url: Some("https://example.com/i/3?a=1&b=2".into()),
        requested_at_ms: 1,
        not_before_ms: None,
        last_error: None,
    }
}

fn settings(unsubscribe_url: Option<&str>) -> Settings {
    Settings {
        from: "Herald <noreply@Example.com>".parse().expect("a mailbox"),
        unsubscribe_url: unsubscribe_url.map(str::to_owned),
    }
}

const UNSUBSCRIBE: &str = "https://example.com/u?tenant={tenant}&user={user}&category={category}";

fn formatted(d: &Dispatch, settings: &Settings) -> String {
    let date = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let email = build(d, settings, date, Some("BOUNDARY")).expect("builds");
    String::from_utf8(email.formatted()).expect("utf-8")
}

/// The head of `email`: its header lines, unfolded.
fn headers(email: &str) -> Vec<String> {
    let head = email.split("\r\n\r\n").next().unwrap_or_default();
    head.replace("\r\n ", " ")
        .split("\r\n")
        .map(str::to_owned)
        .collect()
}

/// The exact bytes: a change here changes what every inbox shows. The title's line break does
/// not start a header; HTML, quotes and the ampersand are escaped in the HTML part; the
/// unsubscribe URL carries the tenant and user percent-encoded.
#[test]
fn the_email_is_these_bytes() {
    let expected = GOLDEN.replace('\n', "\r\n");
    assert_eq!(
        formatted(&dispatch(), &settings(Some(UNSUBSCRIBE))),
        expected
    );
}

const GOLDEN: &str = r#"From: Herald <noreply@Example.com>
To: Ana <ana@example.com>
Subject: Invoice <ready>  Bcc: evil@example.net
Date: Thu, 01 Jan 2026 00:00:00 +0000
Message-ID: <0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11@herald.example.com>
Herald-Delivery-Id: 0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11
Auto-Submitted: auto-generated
List-Unsubscribe: <https://example.com/u?tenant=acme%20%26%20co&user=ana%2F1&category=billing>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Invoice <ready>  Bcc: evil@example.net

Your "March" invoice & caf=C3=A9
is ready <script>

https://example.com/i/3?a=3D1&b=3D2

--
Unsubscribe: https://example.com/u?tenant=3Dacme%20%26%20co&user=3Dana%2F1&=
category=3Dbilling

--BOUNDARY
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<!DOCTYPE html>
<html>
<head><meta charset=3D"utf-8"><title>Invoice &lt;ready&gt;  Bcc: evil@examp=
le.net</title></head>
<body>
<h1>Invoice &lt;ready&gt;  Bcc: evil@example.net</h1>
<p>Your &quot;March&quot; invoice &amp; caf=C3=A9<br>
is ready &lt;script&gt;</p>
<p><a href=3D"https://example.com/i/3?a=3D1&amp;b=3D2">https://example.com/=
i/3?a=3D1&amp;b=3D2</a></p>
<p><small><a href=3D"https://example.com/u?tenant=3Dacme%20%26%20co&amp;use=
r=3Dana%2F1&amp;category=3Dbilling">Unsubscribe</a></small></p>
</body>
</html>

--BOUNDARY--
"#;

#[test]
fn a_critical_notification_has_no_unsubscribe_headers_nor_link() {
    let critical = Dispatch {
        priority: Priority::Critical,
        ..dispatch()
    };
    let email = formatted(&critical, &settings(Some(UNSUBSCRIBE)));
    let head = headers(&email);
    assert!(
        !head.iter().any(|h| h.starts_with("List-Unsubscribe")),
        "{head:?}"
    );
    assert!(!email.contains("Unsubscribe"), "{email}");
    // Everything else is still there.
    for name in [
        "From:",
        "To:",
        "Subject:",
        "Message-ID:",
        "Herald-Delivery-Id:",
    ] {
        assert!(head.iter().any(|h| h.starts_with(name)), "{name}");
    }
    for priority in [Priority::Low, Priority::Normal, Priority::High] {
        let other = Dispatch {
            priority,
            ..dispatch()
        };
        let head = headers(&formatted(&other, &settings(Some(UNSUBSCRIBE))));
        assert!(head.contains(&"List-Unsubscribe-Post: List-Unsubscribe=One-Click".into()));
    }
}

#[test]
fn without_an_unsubscribe_url_there_are_no_unsubscribe_headers() {
    let email = formatted(&dispatch(), &settings(None));
    assert!(!email.contains("List-Unsubscribe"), "{email}");
    assert!(!email.contains("Unsubscribe"), "{email}");
}

#[test]
fn the_message_id_is_the_delivery_id_whatever_the_time() {
    let settings = settings(None);
    let at = |secs| {
        let email = build(
            &dispatch(),
            &settings,
            UNIX_EPOCH + Duration::from_secs(secs),
            None,
        )
        .expect("builds");
        headers(&String::from_utf8(email.formatted()).expect("utf-8"))
            .into_iter()
            .find(|h| h.starts_with("Message-ID: "))
            .expect("a Message-ID")
    };
    assert_eq!(at(1), at(2_000_000_000));
    assert_eq!(
        at(1),
        "Message-ID: <0b6e3f5e-4d4a-5a52-9c39-2f0d5d6b8a11@herald.example.com>"
    );
    // Any id makes a valid one; different ids, different Message-IDs.
    assert_eq!(
        message_id("a b/ç", "Example.COM"),
        "<a=20b=2F=C3=A7@herald.example.com>"
    );
    assert_eq!(message_id("", "x.org"), "<-@herald.x.org>");
    assert_ne!(message_id("a.b", "x.org"), message_id("a_b", "x.org"));
}

#[test]
fn only_web_links_are_linked() {
    for url in ["javascript:alert(1)", "data:text/html,<b>", "  ", "ftp://x"] {
        let d = Dispatch {
            action_url: Some(url.into()),
            ..dispatch()
        };
        let (text, html) = (text(&d, None), html(&d, None));
        assert!(!html.contains("<a "), "{url}: {html}");
        assert!(
            !text.contains(url.trim()) || url.trim().is_empty(),
            "{url}: {text}"
        );
    }
    let upper = Dispatch {
        action_url: Some("HTTPS://example.com/x".into()),
        ..dispatch()
    };
    assert!(html(&upper, None).contains("<a href=\"HTTPS://example.com/x\">"));
}

#[test]
fn everything_from_the_dispatch_is_escaped_in_the_html() {
    let d = Dispatch {
        title: "<img src=x onerror=alert(1)>".into(),
        body: "\"'&<>".into(),
        action_url: Some("https://example.com/\"><script>".into()),
        ..dispatch()
    };
    let html = html(&d, None);
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("<p>&quot;&#39;&amp;&lt;&gt;</p>"), "{html}");
    assert!(html.contains("href=\"https://example.com/&quot;&gt;&lt;script&gt;\""));
}

#[test]
fn a_non_ascii_notification_is_sent_as_ascii() {
    let d = Dispatch {
        title: "Reçu prêt ✓".into(),
        body: "Grüße — 你好".into(),
        tenant: "ünï".into(),
        ..dispatch()
    };
    let email = formatted(&d, &settings(Some(UNSUBSCRIBE)));
    assert!(email.is_ascii(), "{email}");
    let subject = headers(&email)
        .into_iter()
        .find(|h| h.starts_with("Subject: "))
        .expect("a subject");
    assert!(subject.starts_with("Subject: =?utf-8?"), "{subject}");
    assert!(email.contains("tenant=%C3%BCn%C3%AF"), "{email}");
}

#[test]
fn an_address_must_be_one_mailbox() {
    for good in [
        "ana@example.com",
        " ana@example.com ",
        "Ana <ana@example.com>",
    ] {
        assert!(recipient(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "ana",
        "ana@",
        "@example.com",
        "a@b@c",
        "ana@example.com, bob@example.com",
    ] {
        let error = recipient(bad).expect_err(bad);
        assert_eq!(error.address, bad);
    }
    let long = "a".repeat(1_000);
    assert_eq!(recipient(&long).expect_err("no @").address.len(), 100);
}

#[test]
fn values_are_percent_encoded_but_unreserved_characters() {
    assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
    assert_eq!(
        percent_encode("a b&c=d/é?#"),
        "a%20b%26c%3Dd%2F%C3%A9%3F%23"
    );
}
