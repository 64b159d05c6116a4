use herald_proto::v1::{Channel, InlineContent as PInline, Priority, TemplateRef as PTemplate};
use herald_schemas::Channel as EvChannel;
use proptest::prelude::*;
use tonic::Code;
use tonic_types::StatusExt;

use super::*;

fn valid() -> SendNotificationRequest {
    SendNotificationRequest {
        tenant: "acme".into(),
        idempotency_key: String::new(),
        recipient_user_id: "user-1".into(),
        category: "order_update".into(),
        priority: Priority::High as i32,
        channels: vec![
            Channel::InApp as i32,
            Channel::Email as i32,
            Channel::InApp as i32,
        ],
        content: Some(Content::Inline(PInline {
            title: "Shipped".into(),
            body: "Your order is on its way".into(),
            action_url: "https://acme.example/orders/1".into(),
        })),
    }
}

fn field(req: SendNotificationRequest) -> String {
    match to_event(req, 1) {
        Ok(e) => panic!("expected a violation, got {e:?}"),
        Err(v) => v.field,
    }
}

#[test]
fn a_valid_request_becomes_an_event() {
    let e = to_event(valid(), 42).expect("valid");
    assert_eq!(e.tenant, "acme");
    assert_eq!(
        e.channels,
        vec![EvChannel::InApp, EvChannel::Email],
        "duplicates dropped"
    );
    assert_eq!(e.requested_at_ms, 42);
    assert_eq!(e.priority, herald_schemas::Priority::High);
    assert!(uuid_like(&e.notification_id));
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[test]
fn idempotency_key_gives_a_stable_id() {
    let keyed = || SendNotificationRequest {
        idempotency_key: "order-1".into(),
        ..valid()
    };
    let a = to_event(keyed(), 1).expect("valid");
    let b = to_event(keyed(), 2).expect("valid");
    assert_eq!(a.notification_id, b.notification_id);
    assert_ne!(
        to_event(valid(), 1).expect("valid").notification_id,
        to_event(valid(), 1).expect("valid").notification_id
    );
}

#[test]
fn each_bad_field_is_named() {
    assert_eq!(
        field(SendNotificationRequest {
            tenant: String::new(),
            ..valid()
        }),
        "tenant"
    );
    assert_eq!(
        field(SendNotificationRequest {
            tenant: "a b".into(),
            ..valid()
        }),
        "tenant"
    );
    assert_eq!(
        field(SendNotificationRequest {
            recipient_user_id: String::new(),
            ..valid()
        }),
        "recipient_user_id"
    );
    assert_eq!(
        field(SendNotificationRequest {
            recipient_user_id: "x".repeat(129),
            ..valid()
        }),
        "recipient_user_id"
    );
    assert_eq!(
        field(SendNotificationRequest {
            category: "Caps".into(),
            ..valid()
        }),
        "category"
    );
    assert_eq!(
        field(SendNotificationRequest {
            idempotency_key: "has space".into(),
            ..valid()
        }),
        "idempotency_key"
    );
    assert_eq!(
        field(SendNotificationRequest {
            priority: 17,
            ..valid()
        }),
        "priority"
    );
    assert_eq!(
        field(SendNotificationRequest {
            channels: vec![0],
            ..valid()
        }),
        "channels[0]"
    );
    assert_eq!(
        field(SendNotificationRequest {
            channels: vec![1, 99],
            ..valid()
        }),
        "channels[1]"
    );
    assert_eq!(
        field(SendNotificationRequest {
            content: None,
            ..valid()
        }),
        "content"
    );
    let inline = |title: &str, body: &str, url: &str| {
        Some(Content::Inline(PInline {
            title: title.into(),
            body: body.into(),
            action_url: url.into(),
        }))
    };
    assert_eq!(
        field(SendNotificationRequest {
            content: inline("", " ", ""),
            ..valid()
        }),
        "inline"
    );
    assert_eq!(
        field(SendNotificationRequest {
            content: inline(&"t".repeat(300), "b", ""),
            ..valid()
        }),
        "inline.title"
    );
    assert_eq!(
        field(SendNotificationRequest {
            content: inline("t", "b", "not a url"),
            ..valid()
        }),
        "inline.action_url"
    );
    for link in [
        "javascript://alert(1)",
        "javascript:alert(1)",
        "JavaScript://x",
        "data://text/html,x",
        "data:text/html;base64,PHNjcmlwdD4=",
        "http://acme.example/plain",
        "ftp://acme.example/f",
        "acme://orders/1",
        "https://",
        "https://acme.example/a b",
    ] {
        assert_eq!(
            field(SendNotificationRequest {
                content: inline("t", "b", link),
                ..valid()
            }),
            "inline.action_url",
            "{link}"
        );
    }
    // An app scheme is accepted once configured; javascript never is.
    let policy = Policy {
        link_schemes: vec!["https".into(), "acme".into(), "javascript".into()],
    };
    let with = |link: &str| {
        to_event_with(
            SendNotificationRequest {
                content: inline("t", "b", link),
                ..valid()
            },
            1,
            &policy,
        )
    };
    assert!(with("acme://orders/1").is_ok());
    assert!(with("HTTPS://acme.example/x").is_ok());
    assert!(with("javascript://alert(1)").is_err());
    assert_eq!(
        field(SendNotificationRequest {
            content: inline("t\u{7}", "b", ""),
            ..valid()
        }),
        "inline.title"
    );
    let template = |id: &str, locale: &str| {
        Some(Content::Template(PTemplate {
            template_id: id.into(),
            locale: locale.into(),
            variables: Default::default(),
            version: 0,
        }))
    };
    assert_eq!(
        field(SendNotificationRequest {
            content: template("", ""),
            ..valid()
        }),
        "template.template_id"
    );
    assert_eq!(
        field(SendNotificationRequest {
            content: template("welcome", "en US"),
            ..valid()
        }),
        "template.locale"
    );
    assert!(
        to_event(
            SendNotificationRequest {
                content: template("welcome", "pt-BR"),
                ..valid()
            },
            1
        )
        .is_ok()
    );
}

#[test]
fn violations_become_invalid_argument_with_details() {
    let v = to_event(
        SendNotificationRequest {
            tenant: String::new(),
            ..valid()
        },
        1,
    )
    .expect_err("invalid");
    let status = v.into_status();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("tenant:"),
        "{}",
        status.message()
    );
    let details = status.get_error_details();
    let bad = details.bad_request().expect("BadRequest detail");
    assert_eq!(bad.field_violations[0].field, "tenant");
}

proptest! {
    #[test]
    fn never_panics_on_any_strings(
        tenant in "\\PC{0,80}", user in "\\PC{0,140}", category in "\\PC{0,70}",
        title in "\\PC{0,300}", url in "\\PC{0,30}", key in "\\PC{0,10}",
        priority in any::<i32>(), channels in proptest::collection::vec(any::<i32>(), 0..4),
    ) {
        let req = SendNotificationRequest {
            tenant, recipient_user_id: user, category, idempotency_key: key, priority, channels,
            content: Some(Content::Inline(PInline { title, body: "b".into(), action_url: url })),
        };
        let _ = to_event(req, 0);
    }
}

#[test]
fn limits_are_inclusive() {
    let inline = |title: String| SendNotificationRequest {
        content: Some(Content::Inline(PInline {
            title,
            body: "b".into(),
            action_url: String::new(),
        })),
        ..valid()
    };
    assert!(to_event(inline("t".repeat(limits::TITLE)), 1).is_ok());
    assert_eq!(field(inline("t".repeat(limits::TITLE + 1))), "inline.title");
    let templated = |n: usize| SendNotificationRequest {
        content: Some(Content::Template(PTemplate {
            template_id: "welcome".into(),
            locale: String::new(),
            variables: (0..n).map(|i| (format!("v{i}"), "x".into())).collect(),
            version: 0,
        })),
        ..valid()
    };
    assert!(to_event(templated(limits::VARIABLES), 1).is_ok());
    assert_eq!(
        field(templated(limits::VARIABLES + 1)),
        "template.variables"
    );
}

#[test]
fn user_ids_have_no_spaces_or_control_characters() {
    for bad in ["ana smith", "ana\tx", "ana\u{7}", "ana\u{a0}x"] {
        let req = SendNotificationRequest {
            recipient_user_id: bad.into(),
            ..valid()
        };
        assert_eq!(field(req), "recipient_user_id", "{bad:?}");
    }
    let ok = SendNotificationRequest {
        recipient_user_id: "ana@example.com|ünï".into(),
        ..valid()
    };
    assert!(to_event(ok, 1).is_ok());
}

/// Any request within the documented rules.
fn valid_request() -> impl Strategy<Value = SendNotificationRequest> {
    let priority = prop::sample::select(vec![
        Priority::Unspecified,
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ]);
    let channel = prop::sample::select(vec![
        Channel::InApp,
        Channel::PushApns,
        Channel::PushFcm,
        Channel::Sms,
        Channel::Email,
        Channel::Webhook,
    ]);
    let inline = (
        "[^\\p{Cc}]{0,60}[a-z]",
        "([^\\p{Cc}]|\n|\t){0,300}",
        prop_oneof![
            Just(String::new()),
            "https://[a-z]{1,20}\\.example/[a-z0-9/]{0,30}"
        ],
    )
        .prop_map(|(title, body, action_url)| {
            Content::Inline(PInline {
                title,
                body,
                action_url,
            })
        });
    let template = (
        "[A-Za-z0-9._-]{1,64}",
        prop_oneof![Just(String::new()), "[a-z]{2}(-[A-Z]{2})?"],
        proptest::collection::hash_map("[A-Za-z0-9._-]{1,20}", "[^\\p{Cc}]{0,40}", 0..8),
    )
        .prop_map(|(template_id, locale, variables)| {
            Content::Template(PTemplate {
                template_id,
                locale,
                variables,
                version: 0,
            })
        });
    (
        "[A-Za-z0-9._-]{1,64}",
        prop_oneof![Just(String::new()), "[!-~]{1,128}"],
        "[A-Za-z0-9@.+_éü한-]{1,40}",
        "[a-z0-9._-]{1,64}",
        priority,
        proptest::collection::vec(channel, 0..8),
        prop_oneof![inline, template],
    )
        .prop_map(
            |(
                tenant,
                idempotency_key,
                recipient_user_id,
                category,
                priority,
                channels,
                content,
            )| {
                SendNotificationRequest {
                    tenant,
                    idempotency_key,
                    recipient_user_id,
                    category,
                    priority: priority as i32,
                    channels: channels.into_iter().map(|c| c as i32).collect(),
                    content: Some(content),
                }
            },
        )
}

proptest! {
    /// Every request within the rules is accepted, and its event carries each field as given:
    /// names unchanged, the key's stable id, priorities by name (unspecified is NORMAL),
    /// channels deduplicated in their first order, content as sent (empty link and locale as
    /// absent), the acceptance time.
    #[test]
    fn valid_requests_are_accepted_and_map_field_by_field(req in valid_request(), now in 0i64..i64::MAX) {
        let e = to_event(req.clone(), now).map_err(|v| TestCaseError::fail(format!("{v:?}")))?;
        prop_assert_eq!(&e.tenant, &req.tenant);
        prop_assert_eq!(&e.recipient_user_id, &req.recipient_user_id);
        prop_assert_eq!(&e.category, &req.category);
        prop_assert_eq!(e.requested_at_ms, now);
        if req.idempotency_key.is_empty() {
            prop_assert_eq!(e.idempotency_key, None);
            prop_assert!(uuid_like(&e.notification_id));
        } else {
            prop_assert_eq!(e.idempotency_key.as_deref(), Some(req.idempotency_key.as_str()));
            prop_assert_eq!(
                &e.notification_id,
                &ids::notification_id_for_key(&req.tenant, &req.idempotency_key).to_string()
            );
        }
        let priority = match Priority::try_from(req.priority) {
            Ok(Priority::Low) => herald_schemas::Priority::Low,
            Ok(Priority::High) => herald_schemas::Priority::High,
            Ok(Priority::Critical) => herald_schemas::Priority::Critical,
            _ => herald_schemas::Priority::Normal,
        };
        prop_assert_eq!(e.priority, priority);
        let mut channels: Vec<EvChannel> = Vec::new();
        for c in &req.channels {
            let c = channel_from_proto(*c).expect("deliverable");
            if !channels.contains(&c) {
                channels.push(c);
            }
        }
        prop_assert_eq!(&e.channels, &channels);
        match req.content {
            Some(Content::Inline(i)) => {
                let got = e.inline.expect("inline content");
                prop_assert!(e.template.is_none());
                prop_assert_eq!(got.title, i.title);
                prop_assert_eq!(got.body, i.body);
                prop_assert_eq!(got.action_url, (!i.action_url.is_empty()).then_some(i.action_url));
            }
            Some(Content::Template(t)) => {
                let got = e.template.expect("a template reference");
                prop_assert!(e.inline.is_none());
                prop_assert_eq!(got.template_id, t.template_id);
                prop_assert_eq!(got.locale, (!t.locale.is_empty()).then_some(t.locale));
                prop_assert_eq!(got.variables, t.variables.into_iter().collect());
            }
            None => unreachable!("the strategy always sets content"),
        }
    }
}
