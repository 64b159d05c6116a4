use std::collections::HashMap;

use herald_schemas::{
    Channel, DeliveryState, InlineContent, NotificationRequested, Priority, TemplateRef,
};
use herald_store::{Contact, QuietHours, RecipientProfile, TemplateRecord};

use super::*;
use crate::enrich::TemplateLookup;

fn request() -> NotificationRequested {
    NotificationRequested {
        notification_id: "n1".into(),
        tenant: "acme".into(),
        idempotency_key: None,
        recipient_user_id: "ana".into(),
        category: "orders".into(),
        priority: Priority::Normal,
        template: None,
        inline: Some(InlineContent {
            title: "T".into(),
            body: "B".into(),
            action_url: None,
        }),
        channels: vec![],
        requested_at_ms: 1,
    }
}

fn profile() -> RecipientProfile {
    RecipientProfile {
        contacts: vec![
            Contact {
                channel: Channel::Email,
                address: "ana@example.com".into(),
            },
            Contact {
                channel: Channel::Sms,
                address: "+15550100".into(),
            },
        ],
        opt_outs: vec![(Channel::Sms, "orders".into())],
        quiet_hours: None,
    }
}

fn channels(e: &Enrichment) -> Vec<Channel> {
    e.enriched
        .as_ref()
        .map(|n| n.deliveries.iter().map(|d| d.channel).collect())
        .unwrap_or_default()
}

fn suppressed(e: &Enrichment) -> Vec<(Option<Channel>, DeliveryState)> {
    e.results.iter().map(|r| (r.channel, r.state)).collect()
}

#[test]
fn no_channels_means_in_app_plus_every_contact_minus_opt_outs() {
    let e = enrich(&request(), &profile(), TemplateLookup::NotNeeded, 7);
    assert_eq!(channels(&e), vec![Channel::InApp, Channel::Email]);
    assert_eq!(
        suppressed(&e),
        vec![(Some(Channel::Sms), DeliveryState::Suppressed)]
    );
    let reason = e.results[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("opted out"), "{reason}");
    assert_eq!(e.results[0].at_ms, 7);
    let enriched = e.enriched.expect("enriched");
    assert_eq!(enriched.deliveries[0].address, "ana");
    assert_eq!(enriched.deliveries[1].address, "ana@example.com");
}

#[test]
fn requested_channel_without_contact_is_recorded() {
    let req = NotificationRequested {
        channels: vec![Channel::PushApns, Channel::InApp, Channel::InApp],
        ..request()
    };
    let e = enrich(&req, &profile(), TemplateLookup::NotNeeded, 1);
    assert_eq!(channels(&e), vec![Channel::InApp]);
    assert_eq!(
        suppressed(&e),
        vec![(Some(Channel::PushApns), DeliveryState::Suppressed)]
    );
    assert!(
        e.results[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("no push_apns contact")
    );
}

#[test]
fn opt_out_of_everything_leaves_only_results() {
    let p = RecipientProfile {
        contacts: vec![],
        opt_outs: vec![(Channel::InApp, "*".into())],
        quiet_hours: None,
    };
    let e = enrich(&request(), &p, TemplateLookup::NotNeeded, 1);
    assert!(e.enriched.is_none());
    assert_eq!(
        suppressed(&e),
        vec![(Some(Channel::InApp), DeliveryState::Suppressed)]
    );
}

fn templated(vars: &[(&str, &str)]) -> NotificationRequested {
    NotificationRequested {
        inline: None,
        template: Some(TemplateRef {
            template_id: "shipped".into(),
            locale: Some("en".into()),
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            version: None,
        }),
        ..request()
    }
}

fn template() -> TemplateRecord {
    TemplateRecord {
        tenant: "acme".into(),
        template_id: "shipped".into(),
        locale: "en".into(),
        title: "Order {{order}}".into(),
        body: "Hi {{name}}, order {{order}} shipped".into(),
        action_url: Some("https://acme.example/o".into()),
        channel: None,
        version: 1,
    }
}

#[test]
fn templates_render_per_channel() {
    let t = template();
    let e = enrich(
        &templated(&[("order", "42"), ("name", "Ana")]),
        &profile(),
        TemplateLookup::Found(std::slice::from_ref(&t)),
        1,
    );
    let enriched = e.enriched.expect("enriched");
    for d in &enriched.deliveries {
        assert_eq!(d.title, "Order 42");
        assert_eq!(d.body, "Hi Ana, order 42 shipped");
        assert_eq!(d.action_url.as_deref(), Some("https://acme.example/o"));
    }
}

#[test]
fn each_channel_renders_its_own_variant_else_the_every_channel_one() {
    let email_v1 = template();
    let sms_v2 = TemplateRecord {
        channel: Some(Channel::Sms),
        version: 2,
        title: String::new(),
        body: "{{order}} shipped".into(),
        ..template()
    };
    let variants = [email_v1, sms_v2];
    let mut request = templated(&[("order", "42"), ("name", "Ana")]);
    request.channels = vec![Channel::Email, Channel::Sms];
    let unmuted = RecipientProfile {
        opt_outs: vec![],
        ..profile()
    };
    let e = enrich(&request, &unmuted, TemplateLookup::Found(&variants), 1);
    let bodies: Vec<(Channel, String)> = e
        .enriched
        .expect("enriched")
        .deliveries
        .into_iter()
        .map(|d| (d.channel, d.body))
        .collect();
    assert_eq!(
        bodies,
        [
            (Channel::Sms, "42 shipped".to_owned()),
            (Channel::Email, "Hi Ana, order 42 shipped".to_owned()),
        ]
    );
    // Pinned to version 1, before the SMS variant: SMS renders the every-channel one.
    if let Some(t) = request.template.as_mut() {
        t.version = Some(1);
    }
    let e = enrich(&request, &unmuted, TemplateLookup::Found(&variants), 1);
    let sms = e.enriched.expect("enriched").deliveries;
    assert!(sms.iter().all(|d| d.body == "Hi Ana, order 42 shipped"));
}

#[test]
fn a_channel_without_a_variant_or_a_version_not_yet_made_fails_with_its_reason() {
    let sms_only = TemplateRecord {
        channel: Some(Channel::Sms),
        version: 3,
        ..template()
    };
    let mut request = templated(&[("order", "42"), ("name", "Ana")]);
    request.channels = vec![Channel::Email, Channel::Sms];
    let unmuted = RecipientProfile {
        opt_outs: vec![],
        ..profile()
    };
    let variants = [sms_only];
    let e = enrich(&request, &unmuted, TemplateLookup::Found(&variants), 1);
    assert_eq!(channels(&e), vec![Channel::Sms]);
    assert_eq!(
        suppressed(&e),
        vec![(Some(Channel::Email), DeliveryState::Failed)]
    );
    let reason = e.results[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("no variant for email"), "{reason}");
    if let Some(t) = request.template.as_mut() {
        t.version = Some(2);
    }
    let e = enrich(&request, &unmuted, TemplateLookup::Found(&variants), 1);
    assert!(e.enriched.is_none());
    let reason = e.results[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("no version 2 or earlier"), "{reason}");
}

#[test]
fn missing_template_or_variable_is_a_recorded_status() {
    let e = enrich(&templated(&[]), &profile(), TemplateLookup::Missing, 1);
    assert!(e.enriched.is_none());
    assert_eq!(
        e.results.len(),
        3,
        "every wanted channel (in-app, e-mail, sms) gets a result"
    );
    assert!(
        e.results
            .iter()
            .all(|r| r.state == DeliveryState::Suppressed)
    );
    assert!(
        e.results[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("not found")
    );

    let t = template();
    let e = enrich(
        &templated(&[("order", "42")]),
        &profile(),
        TemplateLookup::Found(std::slice::from_ref(&t)),
        1,
    );
    assert!(e.enriched.is_none());
    assert!(e.results.iter().all(|r| r.state == DeliveryState::Failed));
    assert!(
        e.results[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("\"name\"")
    );
}

#[test]
fn content_over_the_limit_is_a_recorded_failure_on_every_channel() {
    // A template that repeats a 4 KiB variable 20 times renders to 80 KiB.
    let t = TemplateRecord {
        body: "{{v}}".repeat(20),
        ..template()
    };
    let big = "x".repeat(4 * 1024);
    let e = enrich(
        &templated(&[("order", "1"), ("name", "n"), ("v", &big)]),
        &profile(),
        TemplateLookup::Found(std::slice::from_ref(&t)),
        1,
    );
    assert!(e.enriched.is_none());
    assert_eq!(e.results.len(), 3);
    for r in &e.results {
        assert_eq!(r.state, DeliveryState::Failed);
        assert!(
            r.reason
                .as_deref()
                .unwrap_or_default()
                .contains("longer than"),
            "{r:?}"
        );
    }
    // Just under the limit passes.
    let fits = TemplateRecord {
        body: "{{v}}".repeat(15),
        ..template()
    };
    let e = enrich(
        &templated(&[("order", "1"), ("name", "n"), ("v", &big)]),
        &profile(),
        TemplateLookup::Found(std::slice::from_ref(&fits)),
        1,
    );
    assert!(e.enriched.is_some());
}

#[test]
fn enrich_is_deterministic() {
    let a = enrich(&request(), &profile(), TemplateLookup::NotNeeded, 5);
    let b = enrich(&request(), &profile(), TemplateLookup::NotNeeded, 5);
    assert_eq!(a, b);
}

#[test]
fn no_opt_out_applies_to_a_critical_category() {
    let muted = RecipientProfile {
        opt_outs: vec![
            (Channel::Email, "*".into()),
            (Channel::Sms, "security".into()),
        ],
        ..profile()
    };
    let critical = vec!["security".to_owned()];
    assert!(
        applicable(muted.clone(), "security", &critical)
            .opt_outs
            .is_empty()
    );
    assert_eq!(applicable(muted.clone(), "news", &critical), muted);
    assert_eq!(applicable(muted.clone(), "security", &[]), muted);
}

/// 2026-03-10T23:30:00Z: 08:30 in Seoul, 00:30 in Berlin.
const LATE: i64 = 1_773_185_400_000;

fn quiet_in(zone: &str) -> RecipientProfile {
    RecipientProfile {
        quiet_hours: Some(QuietHours::parse("22:00", "07:00", zone).expect("valid hours")),
        ..profile()
    }
}

#[test]
fn without_quiet_hours_nothing_waits() {
    assert_eq!(quiet_hold(&profile(), false, LATE), QuietHold::Deliver);
}

#[test]
fn outside_the_recipients_quiet_hours_nothing_waits() {
    assert_eq!(
        quiet_hold(&quiet_in("Asia/Seoul"), false, LATE),
        QuietHold::Deliver
    );
}

#[test]
fn inside_them_the_notification_waits_until_they_end() {
    // 07:00 in Berlin on the 11th (UTC+1).
    assert_eq!(
        quiet_hold(&quiet_in("Europe/Berlin"), false, LATE),
        QuietHold::Until(1_773_208_800_000)
    );
}

#[test]
fn a_released_notification_is_not_held_again() {
    assert_eq!(
        quiet_hold(&quiet_in("Europe/Berlin"), true, LATE),
        QuietHold::Deliver
    );
}

#[test]
fn a_critical_category_is_not_held() {
    let critical = vec!["security".to_owned()];
    let profile = applicable(quiet_in("Europe/Berlin"), "security", &critical);
    assert_eq!(quiet_hold(&profile, false, LATE), QuietHold::Deliver);
}

#[test]
fn unusable_stored_hours_deliver_now_and_say_why() {
    let mut profile = quiet_in("Europe/Berlin");
    if let Some(q) = profile.quiet_hours.as_mut() {
        q.time_zone = "Gone/Zone".into();
    }
    assert!(matches!(
        quiet_hold(&profile, false, LATE),
        QuietHold::Unusable(herald_store::QuietHoursError::UnknownZone(_))
    ));
}

#[test]
fn a_held_notification_has_one_deferred_result_saying_until_when() {
    let quiet = QuietHours::parse("22:00", "07:00", "Europe/Berlin").expect("valid hours");
    let r = held_result(&request(), &quiet, 1_773_208_800_000, LATE);
    assert_eq!((r.channel, r.state), (None, DeliveryState::Deferred));
    assert_eq!(r.at_ms, LATE);
    let reason = r.reason.unwrap_or_default();
    assert!(reason.contains("22:00–07:00 Europe/Berlin"), "{reason}");
    assert!(reason.contains("2026-03-11T07:00:00+01:00"), "{reason}");
    // Not the id of the rate limiter's first deferral.
    assert_ne!(
        r.result_id,
        herald_schemas::ids::result_id("n1", None, 1, DeliveryState::Deferred)
    );
    assert_eq!(
        held_result(&request(), &quiet, 1, LATE).result_id,
        r.result_id
    );
}
