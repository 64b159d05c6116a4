//! Enrich, the pure part: hold for quiet hours, pick the channels, resolve addresses, apply
//! opt-outs, render content.
//! Every channel that cannot be served gets a recorded `SUPPRESSED` (or `FAILED`) result with a
//! reason; nothing is dropped silently.

use herald_schemas::{
    Channel, ChannelContent, DeliveryResult, DeliveryState, NotificationEnriched,
    NotificationRequested,
};
use herald_store::{QuietHours, QuietHoursError, RecipientProfile, TemplateRecord};

use herald_templates::{RenderError, render};

/// The most one notification's rendered content (title, body and link together) may weigh:
/// it is copied once per channel into the `enriched` record, which must stay well below a Kafka
/// record's 1 MiB.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
use crate::{Subject, result_for};

/// The template a request names, as found (or not) in the store.
#[derive(Debug, Clone, Copy)]
pub enum TemplateLookup<'a> {
    /// The request carries inline content.
    NotNeeded,
    /// Found, in the requested locale or a fallback.
    Found(&'a TemplateRecord),
    /// No such template for this tenant.
    Missing,
}

/// What enrich emits for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enrichment {
    /// The notification with content per deliverable channel; `None` if no channel is left.
    pub enriched: Option<NotificationEnriched>,
    /// A result for every channel that will not be delivered, and why.
    pub results: Vec<DeliveryResult>,
}

/// Channels considered when the request names none: in-app always, others when a contact exists.
fn wanted_channels(request: &NotificationRequested, profile: &RecipientProfile) -> Vec<Channel> {
    if request.channels.is_empty() {
        Channel::ALL
            .into_iter()
            .filter(|c| *c == Channel::InApp || profile.contacts.iter().any(|k| k.channel == *c))
            .collect()
    } else {
        let mut channels = request.channels.clone();
        channels.sort();
        channels.dedup();
        channels
    }
}

/// The profile as it applies to a notification of `category`: neither opt-outs nor quiet hours
/// apply to a critical category (one no recipient may mute, such as security alerts).
pub fn applicable(
    mut profile: RecipientProfile,
    category: &str,
    critical: &[String],
) -> RecipientProfile {
    if critical.iter().any(|c| c == category) {
        profile.opt_outs.clear();
        profile.quiet_hours = None;
    }
    profile
}

/// Whether a notification waits for its recipient's quiet hours ([`quiet_hold`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuietHold {
    /// Go on now.
    Deliver,
    /// Held until this instant (ms since the epoch).
    Until(i64),
    /// The stored quiet hours cannot be used (say, a zone this build does not know): the
    /// notification goes on now rather than waiting for ever, and the caller logs why.
    Unusable(QuietHoursError),
}

/// Decides whether a request read at `now_ms` (its record's time, so a replay decides the same)
/// waits. A request `released` from a hold is never held again.
pub fn quiet_hold(profile: &RecipientProfile, released: bool, now_ms: i64) -> QuietHold {
    let Some(quiet) = profile.quiet_hours.as_ref().filter(|_| !released) else {
        return QuietHold::Deliver;
    };
    match quiet.release_at(now_ms) {
        Ok(None) => QuietHold::Deliver,
        Ok(Some(until)) => QuietHold::Until(until),
        Err(e) => QuietHold::Unusable(e),
    }
}

/// The `DEFERRED` result of a notification held until `until_ms` by `quiet`: one per
/// notification (attempt 0; the rate limiter's deferrals count from 1).
pub fn held_result(
    request: &NotificationRequested,
    quiet: &QuietHours,
    until_ms: i64,
    now_ms: i64,
) -> DeliveryResult {
    let subject = Subject {
        notification_id: &request.notification_id,
        tenant: &request.tenant,
        recipient_user_id: &request.recipient_user_id,
        category: &request.category,
    };
    let reason = format!(
        "held for the recipient's quiet hours ({}) until {}",
        quiet.describe(),
        quiet.local_time(until_ms)
    );
    let mut result = result_for(subject, None, DeliveryState::Deferred, Some(reason), now_ms);
    result.result_id =
        herald_schemas::ids::result_id(&request.notification_id, None, 0, DeliveryState::Deferred);
    result
}

fn opted_out(profile: &RecipientProfile, channel: Channel, category: &str) -> bool {
    profile
        .opt_outs
        .iter()
        .any(|(c, cat)| *c == channel && (cat == category || cat == "*"))
}

/// Enriches one request. `now_ms` stamps the results (the input record's timestamp, so a replay
/// yields identical records).
pub fn enrich(
    request: &NotificationRequested,
    profile: &RecipientProfile,
    template: TemplateLookup<'_>,
    now_ms: i64,
) -> Enrichment {
    let subject = Subject {
        notification_id: &request.notification_id,
        tenant: &request.tenant,
        recipient_user_id: &request.recipient_user_id,
        category: &request.category,
    };
    let channels = wanted_channels(request, profile);
    let suppress = |channels: &[Channel], state, reason: String| Enrichment {
        enriched: None,
        results: channels
            .iter()
            .map(|c| result_for(subject, Some(*c), state, Some(reason.clone()), now_ms))
            .collect(),
    };

    let content = match (template, &request.inline, &request.template) {
        (TemplateLookup::Found(t), _, Some(r)) => {
            match (
                render(&t.title, &r.variables, MAX_CONTENT_BYTES),
                render(&t.body, &r.variables, MAX_CONTENT_BYTES),
            ) {
                (Ok(title), Ok(body)) => (title, body, t.action_url.clone()),
                (Err(RenderError::Missing(missing)), _)
                | (_, Err(RenderError::Missing(missing))) => {
                    let reason = format!(
                        "template {:?} needs variable {missing:?}, which the request does not give",
                        t.template_id
                    );
                    return suppress(&channels, DeliveryState::Failed, reason);
                }
                (Err(RenderError::TooLong(max)), _) | (_, Err(RenderError::TooLong(max))) => {
                    let reason = format!(
                        "template {:?} rendered with the request's variables is longer than \
                         {max} bytes",
                        t.template_id
                    );
                    return suppress(&channels, DeliveryState::Failed, reason);
                }
                (Err(RenderError::Invalid(why)), _) | (_, Err(RenderError::Invalid(why))) => {
                    let reason = format!("template {:?} cannot be rendered: {why}", t.template_id);
                    return suppress(&channels, DeliveryState::Failed, reason);
                }
            }
        }
        (TemplateLookup::Missing, _, r) => {
            let id = r.as_ref().map_or("", |r| r.template_id.as_str());
            let reason = format!("template {id:?} not found for tenant {:?}", request.tenant);
            return suppress(&channels, DeliveryState::Suppressed, reason);
        }
        (_, Some(inline), _) => (
            inline.title.clone(),
            inline.body.clone(),
            inline.action_url.clone(),
        ),
        _ => {
            let reason = "request has neither a template nor inline content".to_owned();
            return suppress(&channels, DeliveryState::Failed, reason);
        }
    };

    let size = content.0.len() + content.1.len() + content.2.as_ref().map_or(0, String::len);
    if size > MAX_CONTENT_BYTES {
        let reason = format!(
            "the content is {size} bytes, more than the {MAX_CONTENT_BYTES} a notification may carry"
        );
        return suppress(&channels, DeliveryState::Failed, reason);
    }
    let mut out = Enrichment::default();
    if channels.is_empty() {
        out.results.push(result_for(
            subject,
            None,
            DeliveryState::Suppressed,
            Some("no channel to deliver on".into()),
            now_ms,
        ));
        return out;
    }
    let mut deliveries = Vec::new();
    for channel in channels {
        let address = if channel == Channel::InApp {
            Some(request.recipient_user_id.clone())
        } else {
            profile
                .contacts
                .iter()
                .find(|k| k.channel == channel)
                .map(|k| k.address.clone())
        };
        let reason = match address {
            _ if opted_out(profile, channel, &request.category) => {
                format!(
                    "recipient opted out of {:?} on {}",
                    request.category,
                    channel.as_str()
                )
            }
            None => format!("recipient has no {} contact", channel.as_str()),
            Some(address) => {
                deliveries.push(ChannelContent {
                    channel,
                    address,
                    title: content.0.clone(),
                    body: content.1.clone(),
                    action_url: content.2.clone(),
                });
                continue;
            }
        };
        out.results.push(result_for(
            subject,
            Some(channel),
            DeliveryState::Suppressed,
            Some(reason),
            now_ms,
        ));
    }
    if !deliveries.is_empty() {
        out.enriched = Some(NotificationEnriched {
            notification_id: request.notification_id.clone(),
            tenant: request.tenant.clone(),
            recipient_user_id: request.recipient_user_id.clone(),
            category: request.category.clone(),
            priority: request.priority,
            requested_at_ms: request.requested_at_ms,
            deliveries,
            deferrals: 0,
            defer_until_ms: None,
        });
    }
    out
}

#[cfg(test)]
mod tests;
