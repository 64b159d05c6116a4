//! The e-mail, pure: what Herald sends for one dispatch.
//!
//! ```text
//! From: <the configured sender>
//! To: <dispatch.address>
//! Subject: <title>
//! Message-ID: <delivery_id@herald.<the sender's domain>>   (the same on every resend)
//! Herald-Delivery-Id: <delivery_id>
//! Auto-Submitted: auto-generated                          (RFC 3834: no auto-replies)
//! List-Unsubscribe: <https://…?tenant=…&user=…&category=…>  (not for critical notifications,
//! List-Unsubscribe-Post: List-Unsubscribe=One-Click            nor without unsubscribe_url)
//! Content-Type: multipart/alternative
//!   text/plain: title, body, the action URL, the unsubscribe URL
//!   text/html:  the same, every character from the dispatch escaped; the action URL a link
//! ```
//!
//! Only `http(s)://` action URLs are shown (a `javascript:` link stays out of the HTML).

use std::time::SystemTime;

use herald_schemas::{Dispatch, Priority};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

/// The header carrying the delivery id.
pub const DELIVERY_ID: HeaderName = HeaderName::new_from_ascii_str("Herald-Delivery-Id");
/// RFC 2369's unsubscribe link.
pub const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
/// RFC 8058's one-click marker.
pub const LIST_UNSUBSCRIBE_POST: HeaderName =
    HeaderName::new_from_ascii_str("List-Unsubscribe-Post");
const AUTO_SUBMITTED: HeaderName = HeaderName::new_from_ascii_str("Auto-Submitted");

/// What the configuration gives every message.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `From` mailbox (and the envelope sender).
    pub from: Mailbox,
    /// The unsubscribe URL with `{tenant}`, `{user}` and `{category}` placeholders, if any.
    pub unsubscribe_url: Option<String>,
}

/// Why a dispatch cannot become an e-mail: its address is no mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the e-mail address {address:?} is not a mailbox: {reason}")]
pub struct InvalidAddress {
    /// The address, cut to 100 characters.
    pub address: String,
    /// What the parser said.
    pub reason: String,
}

/// The e-mail delivering `d`, dated `date`; `boundary` fixes the MIME boundary (for golden
/// tests; `None`: a random one, which no content can contain by chance).
pub fn build(
    d: &Dispatch,
    settings: &Settings,
    date: SystemTime,
    boundary: Option<&str>,
) -> Result<Message, InvalidAddress> {
    let to = recipient(&d.address)?;
    let unsubscribe = unsubscribe_link(d, settings);
    let mut builder = Message::builder()
        .from(settings.from.clone())
        .to(to)
        .subject(one_line(&d.title))
        .date(date)
        .message_id(Some(message_id(
            &d.delivery_id,
            settings.from.email.domain(),
        )))
        .raw_header(HeaderValue::new(DELIVERY_ID, one_line(&d.delivery_id)))
        .raw_header(HeaderValue::new(AUTO_SUBMITTED, "auto-generated".into()));
    if let Some(url) = &unsubscribe {
        builder = builder
            .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE, format!("<{url}>")))
            .raw_header(HeaderValue::new(
                LIST_UNSUBSCRIBE_POST,
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    let mut parts = MultiPart::alternative();
    if let Some(boundary) = boundary {
        parts = parts.boundary(boundary);
    }
    let parts = parts
        .singlepart(SinglePart::plain(text(d, unsubscribe.as_deref())))
        .singlepart(SinglePart::html(html(d, unsubscribe.as_deref())));
    // From is set and To parsed: the only errors lettre has left are theirs to lack.
    builder.multipart(parts).map_err(|e| InvalidAddress {
        address: cut(&d.address),
        reason: e.to_string(),
    })
}

/// `address` as a mailbox (`ana@example.com` or `Ana <ana@example.com>`).
pub fn recipient(address: &str) -> Result<Mailbox, InvalidAddress> {
    address
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| InvalidAddress {
            address: cut(address),
            reason: e.to_string(),
        })
}

fn cut(s: &str) -> String {
    s.chars().take(100).collect()
}

/// `<local@herald.domain>`: the delivery id, with every character other than letters, digits,
/// `-` and `_` written `=XX` (hex of its UTF-8 bytes), so any id gives a valid, stable Message-ID.
pub fn message_id(delivery_id: &str, from_domain: &str) -> String {
    let mut local = String::with_capacity(delivery_id.len());
    for byte in delivery_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            local.push(char::from(byte));
        } else {
            local.push_str(&format!("={byte:02X}"));
        }
    }
    if local.is_empty() {
        local.push('-');
    }
    format!("<{local}@herald.{}>", from_domain.to_ascii_lowercase())
}

/// The unsubscribe URL for `d`, unless it is critical or none is configured.
pub fn unsubscribe_link(d: &Dispatch, settings: &Settings) -> Option<String> {
    if d.priority == Priority::Critical {
        return None;
    }
    let template = settings.unsubscribe_url.as_deref()?;
    Some(
        template
            .replace("{tenant}", &percent_encode(&d.tenant))
            .replace("{user}", &percent_encode(&d.recipient_user_id))
            .replace("{category}", &percent_encode(&d.category)),
    )
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A header value on one line: line breaks and other control characters become spaces.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The action URL, if it is one a reader can follow safely.
fn action_url(d: &Dispatch) -> Option<&str> {
    let url = d.action_url.as_deref()?.trim();
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(url)
}

/// The plain-text part.
pub fn text(d: &Dispatch, unsubscribe: Option<&str>) -> String {
    let mut out = format!(
        "{}\n\n{}\n",
        one_line(&d.title),
        d.body.replace("\r\n", "\n")
    );
    if let Some(url) = action_url(d) {
        out.push_str(&format!("\n{url}\n"));
    }
    if let Some(url) = unsubscribe {
        out.push_str(&format!("\n--\nUnsubscribe: {url}\n"));
    }
    out
}

/// The HTML part: everything from the dispatch escaped, line breaks kept.
pub fn html(d: &Dispatch, unsubscribe: Option<&str>) -> String {
    let title = escape(&one_line(&d.title));
    let body = escape(&d.body.replace("\r\n", "\n")).replace('\n', "<br>\n");
    let mut out = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body>\n<h1>{title}</h1>\n<p>{body}</p>\n"
    );
    if let Some(url) = action_url(d) {
        let url = escape(url);
        out.push_str(&format!("<p><a href=\"{url}\">{url}</a></p>\n"));
    }
    if let Some(url) = unsubscribe {
        out.push_str(&format!(
            "<p><small><a href=\"{}\">Unsubscribe</a></small></p>\n",
            escape(url)
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// `&`, `<`, `>`, `"` and `'` as character references.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
