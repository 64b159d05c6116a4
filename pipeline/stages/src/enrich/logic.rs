//! Enrich, the pure part: hold for quiet hours, pick the channels, resolve addresses, apply
//! opt-outs, render content.
//! Every channel that cannot be served gets a recorded `SUPPRESSED` (or `FAILED`) result with a
//! reason; nothing is dropped silently.

use herald_schemas::{
    Channel, ChannelContent, DeliveryResult, DeliveryState, NotificationEnriched,
    NotificationRequested,
};
use herald_store::{QuietHours, QuietHoursError, RecipientProfile, TemplateRecord, variants};

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
    /// Found: every variant of it (locale × channel × version), from which the request's locale,
    /// pinned version and each channel pick ([`herald_store::variants::choose`]).
    Found(&'a [TemplateRecord]),
    /// No such template for this tenant.
    Missing,
}

/// Title, body and action URL of one channel's message.
type Content = (String, String, Option<String>);

/// Why a channel gets no content: the state to record and the reason.
type NoContent = (DeliveryState, String);

/// Renders `t` with `variables`, bounded.
fn rendered(
    t: &TemplateRecord,
    variables: &std::collections::HashMap<String, String>,
) -> Result<Content, NoContent> {
    let failed = |reason: String| (DeliveryState::Failed, reason);
    let part = |text: &str| render(text, variables, MAX_CONTENT_BYTES);
    match (part(&t.title), part(&t.body)) {
        (Ok(title), Ok(body)) => Ok((title, body, t.action_url.clone())),
        (Err(RenderError::Missing(missing)), _) | (_, Err(RenderError::Missing(missing))) => {
            Err(failed(format!(
                "template {:?} needs variable {missing:?}, which the request does not give",
                t.template_id
            )))
        }
        (Err(RenderError::TooLong(max)), _) | (_, Err(RenderError::TooLong(max))) => {
            Err(failed(format!(
                "template {:?} rendered with the request's variables is longer than {max} bytes",
                t.template_id
            )))
        }
        (Err(RenderError::Invalid(why)), _) | (_, Err(RenderError::Invalid(why))) => Err(failed(
            format!("template {:?} cannot be rendered: {why}", t.template_id),
        )),
    }
}

/// Where each channel's content comes from.
enum Source<'a> {
    Inline(Content),
    Template(
        variants::Chosen<'a>,
        &'a std::collections::HashMap<String, String>,
    ),
    /// Every channel gets this state and reason.
    None(NoContent),
}

impl Source<'_> {
    fn content_for(&self, channel: Channel) -> Result<Content, NoContent> {
        let content = match self {
            Source::Inline(content) => content.clone(),
            Source::None(why) => return Err(why.clone()),
            Source::Template(chosen, variables) => {
                let Some(t) = chosen.for_channel(channel) else {
                    return Err((
                        DeliveryState::Failed,
                        format!(
                            "the template has no variant for {} in locale {:?}",
                            channel.as_str(),
                            chosen.locale
                        ),
                    ));
                };
                rendered(t, variables)?
            }
        };
        let size = content.0.len() + content.1.len() + content.2.as_ref().map_or(0, String::len);
        if size > MAX_CONTENT_BYTES {
            return Err((
                DeliveryState::Failed,
                format!(
                    "the content is {size} bytes, more than the {MAX_CONTENT_BYTES} a \
                     notification may carry"
                ),
            ));
        }
        Ok(content)
    }
}

fn source<'a>(request: &'a NotificationRequested, template: TemplateLookup<'a>) -> Source<'a> {
    match (template, &request.inline, &request.template) {
        (TemplateLookup::Found(variants), _, Some(r)) => {
            let version = r.version.and_then(|v| u32::try_from(v).ok());
            match variants::choose(variants, r.locale.as_deref(), version) {
                Some(chosen) => Source::Template(chosen, &r.variables),
                None => Source::None((
                    DeliveryState::Failed,
                    format!(
                        "template {:?} has no version {} or earlier",
                        r.template_id,
                        version.unwrap_or_default()
                    ),
                )),
            }
        }
        (TemplateLookup::Missing, _, r) | (TemplateLookup::Found(_), _, r @ None) => {
            let id = r.as_ref().map_or("", |r| r.template_id.as_str());
            Source::None((
                DeliveryState::Suppressed,
                format!("template {id:?} not found for tenant {:?}", request.tenant),
            ))
        }
        (TemplateLookup::NotNeeded, Some(inline), _) => Source::Inline((
            inline.title.clone(),
            inline.body.clone(),
            inline.action_url.clone(),
        )),
        (TemplateLookup::NotNeeded, None, _) => Source::None((
            DeliveryState::Failed,
            "request has neither a template nor inline content".to_owned(),
        )),
    }
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
    let source = source(request, template);
    let mut deliveries = Vec::new();
    for channel in channels {
        let content = match source.content_for(channel) {
            Ok(content) => content,
            Err((state, reason)) => {
                out.results.push(result_for(
                    subject,
                    Some(channel),
                    state,
                    Some(reason),
                    now_ms,
                ));
                continue;
            }
        };
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
                let (title, body, action_url) = content;
                deliveries.push(ChannelContent {
                    channel,
                    address,
                    title,
                    body,
                    action_url,
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
