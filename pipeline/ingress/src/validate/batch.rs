//! `SendBatch`, pure: a batch becomes one `NotificationRequested` per recipient, each checked as
//! a `SendNotification` would be, with an idempotency key derived from the batch key and the
//! recipient — so a retried batch gets the same ids and is delivered once.

use std::collections::HashSet;

use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{SendBatchRequest, SendNotificationRequest, send_batch_request};
use herald_schemas::{NotificationRequested, ids};

use super::{FieldViolation, Policy, limits, name, printable_ascii, to_event_with};

/// The most recipients one batch may name.
pub const MAX_RECIPIENTS: usize = 1_000;

/// Fields a recipient's own request fills in; a violation of one names the recipient.
const PER_RECIPIENT: &[&str] = &["recipient_user_id", "template.variables", "idempotency_key"];

/// The events of `batch`, one per recipient in order, or the first field refused.
pub fn to_events(
    batch: SendBatchRequest,
    now_ms: i64,
    policy: &Policy,
) -> Result<Vec<NotificationRequested>, FieldViolation> {
    name("batch_key", &batch.batch_key, printable_ascii, limits::ID)?;
    if batch.recipients.is_empty() || batch.recipients.len() > MAX_RECIPIENTS {
        return Err(FieldViolation::new(
            "recipients",
            format!("give 1 to {MAX_RECIPIENTS} recipients"),
        ));
    }
    let mut seen = HashSet::with_capacity(batch.recipients.len());
    let mut events = Vec::with_capacity(batch.recipients.len());
    for (i, recipient) in batch.recipients.into_iter().enumerate() {
        if !seen.insert(recipient.recipient_user_id.clone()) {
            return Err(FieldViolation::new(
                format!("recipients[{i}].recipient_user_id"),
                "is listed twice",
            ));
        }
        let content = match &batch.content {
            Some(send_batch_request::Content::Inline(inline)) => {
                if !recipient.variables.is_empty() {
                    return Err(FieldViolation::new(
                        format!("recipients[{i}].variables"),
                        "only a template takes variables",
                    ));
                }
                Some(Content::Inline(inline.clone()))
            }
            Some(send_batch_request::Content::Template(template)) => {
                let mut template = template.clone();
                template.variables.extend(recipient.variables);
                Some(Content::Template(template))
            }
            None => None,
        };
        // The key names the recipient by a digest: any user id fits the key's length.
        let key = format!(
            "batch/{}",
            ids::content_digest(
                format!("{}\n{}", batch.batch_key, recipient.recipient_user_id).as_bytes()
            )
        );
        let single = SendNotificationRequest {
            tenant: batch.tenant.clone(),
            idempotency_key: key,
            recipient_user_id: recipient.recipient_user_id,
            category: batch.category.clone(),
            priority: batch.priority,
            content,
            channels: batch.channels.clone(),
        };
        let event = to_event_with(single, now_ms, policy).map_err(|v| {
            if PER_RECIPIENT.iter().any(|f| v.field.starts_with(f)) {
                FieldViolation::new(format!("recipients[{i}].{}", v.field), v.description)
            } else {
                v
            }
        })?;
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use herald_proto::v1::{BatchRecipient, InlineContent, TemplateRef};

    use super::*;

    fn batch(users: &[&str]) -> SendBatchRequest {
        SendBatchRequest {
            tenant: "acme".into(),
            batch_key: "spring-sale".into(),
            category: "marketing".into(),
            content: Some(send_batch_request::Content::Template(TemplateRef {
                template_id: "sale".into(),
                locale: String::new(),
                variables: [("season".to_owned(), "spring".to_owned())].into(),
                version: 0,
            })),
            recipients: users
                .iter()
                .map(|u| BatchRecipient {
                    recipient_user_id: (*u).into(),
                    variables: [("name".to_owned(), u.to_uppercase())].into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn each_recipient_gets_an_event_with_an_id_stable_per_batch_key() {
        let policy = Policy::default();
        let events = to_events(batch(&["ana", "bo"]), 5, &policy).unwrap();
        assert_eq!(events.len(), 2);
        let vars = &events[1].template.as_ref().unwrap().variables;
        assert_eq!(vars.get("name").map(String::as_str), Some("BO"));
        assert_eq!(vars.get("season").map(String::as_str), Some("spring"));
        let again = to_events(batch(&["ana", "bo"]), 9, &policy).unwrap();
        assert_eq!(events[0].notification_id, again[0].notification_id);
        assert_ne!(events[0].notification_id, events[1].notification_id);
        let mut other = batch(&["ana"]);
        other.batch_key = "summer-sale".into();
        let other = to_events(other, 5, &policy).unwrap();
        assert_ne!(other[0].notification_id, events[0].notification_id);
    }

    #[test]
    fn a_bad_recipient_is_named_and_the_batch_refused() {
        let policy = Policy::default();
        let e = to_events(batch(&["ana", "ana"]), 0, &policy).unwrap_err();
        assert_eq!(e.field, "recipients[1].recipient_user_id");
        let e = to_events(batch(&["ana", ""]), 0, &policy).unwrap_err();
        assert_eq!(e.field, "recipients[1].recipient_user_id");
        let mut b = batch(&["ana"]);
        b.batch_key.clear();
        assert_eq!(to_events(b, 0, &policy).unwrap_err().field, "batch_key");
        assert_eq!(
            to_events(batch(&[]), 0, &policy).unwrap_err().field,
            "recipients"
        );
        let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            to_events(batch(&many), 0, &policy).unwrap_err().field,
            "recipients"
        );
        let mut inline = batch(&["ana"]);
        inline.content = Some(send_batch_request::Content::Inline(InlineContent {
            title: "t".into(),
            body: "b".into(),
            action_url: String::new(),
        }));
        assert_eq!(
            to_events(inline, 0, &policy).unwrap_err().field,
            "recipients[0].variables"
        );
        let mut nameless = batch(&["ana"]);
        nameless.category.clear();
        assert_eq!(
            to_events(nameless, 0, &policy).unwrap_err().field,
            "category"
        );
    }
}
