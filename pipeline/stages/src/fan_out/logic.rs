//! Fan-out, the pure part: one dispatch per channel, with ids derived from (notification,
//! channel, attempt) so a replay emits identical dispatches. With click links on, a channel's
//! action URL becomes a signed link to the redirect endpoint (its expiry follows from the
//! notification's time, so a replay makes the same link); webhooks get the target itself.

use herald_auth::links::{Click, Links};
use herald_schemas::{Channel, DeliveryResult, DeliveryState, Dispatch, NotificationAdmitted, ids};

use crate::{Subject, result_for};

/// What fan-out emits for one admitted notification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FanOut {
    /// One per channel, in the order the channels first appear.
    pub dispatches: Vec<Dispatch>,
    /// A `DISPATCHED` result per dispatch, for the timeline.
    pub results: Vec<DeliveryResult>,
}

/// Splits a notification into one dispatch per channel. A channel listed twice is dispatched once.
pub fn fan_out(n: &NotificationAdmitted, now_ms: i64, links: Option<&Links>) -> FanOut {
    let subject = Subject {
        notification_id: &n.notification_id,
        tenant: &n.tenant,
        recipient_user_id: &n.recipient_user_id,
        category: &n.category,
    };
    let attempt = 1;
    let mut seen: Vec<Channel> = Vec::new();
    let mut out = FanOut::default();
    for d in &n.deliveries {
        if seen.contains(&d.channel) {
            continue;
        }
        seen.push(d.channel);
        out.dispatches.push(Dispatch {
            delivery_id: ids::delivery_id(&n.notification_id, d.channel, attempt),
            notification_id: n.notification_id.clone(),
            attempt,
            tenant: n.tenant.clone(),
            recipient_user_id: n.recipient_user_id.clone(),
            category: n.category.clone(),
            priority: n.priority,
            channel: d.channel,
            address: d.address.clone(),
            title: d.title.clone(),
            body: d.body.clone(),
            action_url: d
                .action_url
                .as_ref()
                .map(|target| tracked(n, d.channel, target, links)),
            requested_at_ms: n.requested_at_ms,
            not_before_ms: None,
            last_error: None,
        });
        out.results.push(result_for(
            subject,
            Some(d.channel),
            DeliveryState::Dispatched,
            None,
            now_ms,
        ));
    }
    out
}

/// The link sent on `channel` for `target`: signed for click tracking when links are on.
fn tracked(
    n: &NotificationAdmitted,
    channel: Channel,
    target: &str,
    links: Option<&Links>,
) -> String {
    match links {
        Some(links) if channel != Channel::Webhook => links.link(&Click {
            notification_id: n.notification_id.clone(),
            tenant: n.tenant.clone(),
            recipient_user_id: n.recipient_user_id.clone(),
            channel: channel.as_str().to_owned(),
            target: target.to_owned(),
            expires_at_ms: links.expiry(n.requested_at_ms),
        }),
        _ => target.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use herald_schemas::{ChannelContent, Priority};
    use proptest::prelude::*;

    use super::*;

    fn admitted(channels: &[Channel]) -> NotificationAdmitted {
        NotificationAdmitted {
            notification_id: "n1".into(),
            tenant: "t".into(),
            recipient_user_id: "u".into(),
            category: "c".into(),
            priority: Priority::Normal,
            requested_at_ms: 1,
            deliveries: channels
                .iter()
                .map(|c| ChannelContent {
                    channel: *c,
                    address: format!("addr-{}", c.as_str()),
                    title: "t".into(),
                    body: "b".into(),
                    action_url: None,
                })
                .collect(),
        }
    }

    #[test]
    fn dispatch_carries_content_and_stable_ids() {
        let out = fan_out(&admitted(&[Channel::Email, Channel::InApp]), 9, None);
        assert_eq!(out.dispatches.len(), 2);
        assert_eq!(out.dispatches[0].address, "addr-email");
        assert_eq!(
            out.dispatches[0].delivery_id,
            ids::delivery_id("n1", Channel::Email, 1)
        );
        assert_eq!(
            out.results[1].delivery_id.as_deref(),
            Some(out.dispatches[1].delivery_id.as_str())
        );
        assert_eq!(
            out,
            fan_out(&admitted(&[Channel::Email, Channel::InApp]), 9, None)
        );
    }

    #[test]
    fn action_urls_become_signed_links_per_channel_except_for_webhooks() {
        let links = Links::new(b"0123456789abcdef", "https://l.example", 1_000).unwrap();
        let mut n = admitted(&[Channel::Sms, Channel::Email, Channel::Webhook]);
        for d in &mut n.deliveries {
            d.action_url = Some("https://acme.example/o/1".into());
        }
        let out = fan_out(&n, 9, Some(&links));
        let urls: Vec<&str> = out
            .dispatches
            .iter()
            .map(|d| d.action_url.as_deref().unwrap())
            .collect();
        assert_eq!(
            urls[2], "https://acme.example/o/1",
            "webhooks get the target"
        );
        for (url, channel) in urls[..2].iter().zip(["sms", "email"]) {
            let token = url.strip_prefix("https://l.example/c/").unwrap();
            let click = links.verify(token, 1_001).unwrap();
            assert_eq!(click.channel, channel);
            assert_eq!(click.target, "https://acme.example/o/1");
            assert_eq!(
                (
                    click.notification_id.as_str(),
                    click.recipient_user_id.as_str()
                ),
                ("n1", "u")
            );
            assert_eq!(
                links.verify(token, 1_002),
                Err(herald_auth::links::LinkError::Expired)
            );
        }
        assert_ne!(urls[0], urls[1], "each channel's link is its own");
        assert_eq!(
            out,
            fan_out(&n, 9, Some(&links)),
            "a replay makes the same links"
        );
        // Without an action URL there is nothing to track.
        let plain = fan_out(&admitted(&[Channel::Sms]), 9, Some(&links));
        assert_eq!(plain.dispatches[0].action_url, None);
    }

    fn channel() -> impl Strategy<Value = Channel> {
        proptest::sample::select(Channel::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn exactly_one_dispatch_per_allowed_channel(channels in proptest::collection::vec(channel(), 0..12)) {
            let out = fan_out(&admitted(&channels), 1, None);
            let mut expected = channels.clone();
            expected.sort();
            expected.dedup();
            let mut got: Vec<Channel> = out.dispatches.iter().map(|d| d.channel).collect();
            got.sort();
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(out.results.len(), out.dispatches.len());
            let mut ids: Vec<&str> = out.dispatches.iter().map(|d| d.delivery_id.as_str()).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), expected.len());
        }
    }
}
