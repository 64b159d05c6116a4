//! Request validation, pure: a `SendNotificationRequest` becomes a `NotificationRequested` event
//! or a [`FieldViolation`] naming the offending field. Nothing here panics on any input.

use herald_proto::convert::{channel_from_proto, priority_from_proto};
use herald_proto::v1::{SendNotificationRequest, send_notification_request::Content};
use herald_schemas::{InlineContent, NotificationRequested, TemplateRef, ids};

/// Limits on request fields (bytes of UTF-8).
pub mod limits {
    /// Tenant, category and template id.
    pub const NAME: usize = 64;
    /// Recipient user id and idempotency key.
    pub const ID: usize = 128;
    /// Title.
    pub const TITLE: usize = 256;
    /// Body and each template variable's value.
    pub const BODY: usize = 4096;
    /// Action URL.
    pub const URL: usize = 2048;
    /// Number of template variables.
    pub const VARIABLES: usize = 64;
}

pub use herald_proto::FieldViolation;

type Result<T> = std::result::Result<T, FieldViolation>;

fn name(field: &str, value: &str, allowed: fn(char) -> bool, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    if value.len() > max {
        return Err(FieldViolation::new(
            field,
            format!("is longer than {max} bytes"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(FieldViolation::new(
            field,
            format!("contains {bad:?}, which is not allowed"),
        ));
    }
    Ok(())
}

fn text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(FieldViolation::new(
            field,
            format!("is longer than {max} bytes"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldViolation::new(field, "contains control characters"));
    }
    Ok(())
}

fn tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn category_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

fn printable_ascii(c: char) -> bool {
    c.is_ascii_graphic()
}

fn user_char(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

fn locale_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
}

/// What the ingress accepts beyond the fixed limits, from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// URL schemes an action link may use: `https`, and the app schemes a tenant's apps
    /// register (e.g. `acme` for `acme://orders/1`). Never `javascript`, `data` or `file`.
    pub link_schemes: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            link_schemes: vec!["https".into()],
        }
    }
}

/// Schemes that run code or read local data wherever a link is opened: refused even if
/// configured.
const NEVER_LINK: &[&str] = &["javascript", "data", "file", "vbscript", "blob"];

fn url(field: &str, value: &str, policy: &Policy) -> Result<Option<String>> {
    if value.is_empty() {
        return Ok(None);
    }
    text(field, value, limits::URL)?;
    let allowed = || {
        policy
            .link_schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((scheme, rest)) = value.split_once(':') else {
        return Err(FieldViolation::new(
            field,
            format!("must be an absolute URL starting with {}", allowed()),
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    let known = !NEVER_LINK.contains(&scheme.as_str())
        && policy
            .link_schemes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&scheme));
    let shaped = rest.strip_prefix("//").is_some_and(|r| !r.is_empty())
        && !value.chars().any(char::is_whitespace);
    if !known || !shaped {
        return Err(FieldViolation::new(
            field,
            format!("must be an absolute URL starting with {}", allowed()),
        ));
    }
    Ok(Some(value.to_owned()))
}

/// Validates `req` under the default [`Policy`] and builds its event, stamped `now_ms`.
pub fn to_event(req: SendNotificationRequest, now_ms: i64) -> Result<NotificationRequested> {
    to_event_with(req, now_ms, &Policy::default())
}

/// Validates `req` under `policy` and builds its event, stamped `now_ms`.
pub fn to_event_with(
    req: SendNotificationRequest,
    now_ms: i64,
    policy: &Policy,
) -> Result<NotificationRequested> {
    name("tenant", &req.tenant, tenant_char, limits::NAME)?;
    let idempotency_key = if req.idempotency_key.is_empty() {
        None
    } else {
        name(
            "idempotency_key",
            &req.idempotency_key,
            printable_ascii,
            limits::ID,
        )?;
        Some(req.idempotency_key)
    };
    name(
        "recipient_user_id",
        &req.recipient_user_id,
        user_char,
        limits::ID,
    )?;
    name("category", &req.category, category_char, limits::NAME)?;
    let priority = priority_from_proto(req.priority).ok_or_else(|| {
        FieldViolation::new(
            "priority",
            format!("{} is not a known priority", req.priority),
        )
    })?;
    let (template, inline) = match req.content {
        None => {
            return Err(FieldViolation::new(
                "content",
                "give either template or inline content",
            ));
        }
        Some(Content::Template(t)) => {
            name(
                "template.template_id",
                &t.template_id,
                tenant_char,
                limits::NAME,
            )?;
            let locale = if t.locale.is_empty() {
                None
            } else {
                name("template.locale", &t.locale, locale_char, 35)?;
                Some(t.locale)
            };
            if t.variables.len() > limits::VARIABLES {
                return Err(FieldViolation::new(
                    "template.variables",
                    format!("has more than {} entries", limits::VARIABLES),
                ));
            }
            for (k, v) in &t.variables {
                name("template.variables", k, tenant_char, limits::NAME)?;
                text(&format!("template.variables[{k}]"), v, limits::BODY)?;
            }
            let variables = t.variables.into_iter().collect();
            let version = match t.version {
                0 => None,
                v => Some(i32::try_from(v).map_err(|_| {
                    FieldViolation::new("template.version", "is larger than any version")
                })?),
            };
            let template = TemplateRef {
                template_id: t.template_id,
                locale,
                variables,
                version,
            };
            (Some(template), None)
        }
        Some(Content::Inline(i)) => {
            text("inline.title", &i.title, limits::TITLE)?;
            text("inline.body", &i.body, limits::BODY)?;
            if i.title.trim().is_empty() && i.body.trim().is_empty() {
                return Err(FieldViolation::new(
                    "inline",
                    "title and body are both empty",
                ));
            }
            let action_url = url("inline.action_url", &i.action_url, policy)?;
            (
                None,
                Some(InlineContent {
                    title: i.title,
                    body: i.body,
                    action_url,
                }),
            )
        }
    };
    let mut channels = Vec::with_capacity(req.channels.len());
    for (i, value) in req.channels.iter().enumerate() {
        let channel = channel_from_proto(*value).ok_or_else(|| {
            FieldViolation::new(
                format!("channels[{i}]"),
                format!("{value} is not a deliverable channel"),
            )
        })?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    let notification_id = match &idempotency_key {
        Some(key) => ids::notification_id_for_key(&req.tenant, key),
        None => ids::new_notification_id(),
    }
    .to_string();
    Ok(NotificationRequested {
        notification_id,
        tenant: req.tenant,
        idempotency_key,
        recipient_user_id: req.recipient_user_id,
        category: req.category,
        priority,
        template,
        inline,
        channels,
        requested_at_ms: now_ms,
    })
}

pub mod batch;
pub mod broadcast;
#[cfg(test)]
mod tests;
