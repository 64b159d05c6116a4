//! End to end on real infrastructure: a tansu broker started by `scripts/tansu.sh` and the real
//! `herald run` (every component as its own process), driven over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{
    Channel, DeliveryState, GetNotificationRequest, GetNotificationResponse, ListInboxRequest,
    SendNotificationRequest, TemplateRef,
};
use herald_store::{Contact, TemplateRecord};
use herald_tests::clients::{IngressClient as Ingress, QueryClient as Query, ingress_on};
use herald_tests::{Broker, Platform, eventually, inline_request, settled};
use tonic::Code;
use tonic::transport::Channel as GrpcChannel;

const TEST_LIMIT: Duration = Duration::from_secs(240);

/// Both services, as `tenant`'s backend.
async fn clients(p: &Platform, tenant: &str) -> anyhow::Result<(Ingress, Query)> {
    Ok((
        p.ingress_client(tenant).await?,
        p.query_client(tenant).await?,
    ))
}

fn inline(tenant: &str, user: &str, title: &str) -> SendNotificationRequest {
    inline_request(tenant, user, "general", title)
}

async fn send(ingress: &mut Ingress, req: SendNotificationRequest) -> anyhow::Result<String> {
    let r = ingress.send_notification(req).await?.into_inner();
    anyhow::ensure!(
        r.status == DeliveryState::Accepted as i32,
        "not accepted: {r:?}"
    );
    Ok(r.notification_id)
}

/// Every inbox entry of a user, following page tokens.
async fn whole_inbox(
    query: &mut Query,
    tenant: &str,
    user: &str,
) -> anyhow::Result<Vec<(String, String, i64)>> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_inbox(ListInboxRequest {
                tenant: tenant.into(),
                recipient_user_id: user.into(),
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(
            page.entries
                .into_iter()
                .map(|e| (e.notification_id, e.title, e.created_at_ms)),
        );
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

/// The notification once its overall state is final, or `None` while it is still moving.
async fn final_state(
    query: &mut Query,
    tenant: &str,
    id: &str,
) -> anyhow::Result<Option<GetNotificationResponse>> {
    match query
        .get_notification(GetNotificationRequest {
            tenant: tenant.into(),
            notification_id: id.into(),
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            let status = r
                .notification
                .as_ref()
                .map(|n| n.status)
                .unwrap_or_default();
            let moving = [
                DeliveryState::Accepted,
                DeliveryState::Dispatched,
                DeliveryState::Deferred,
            ];
            let done = !moving.iter().any(|s| *s as i32 == status);
            Ok(done.then_some(r))
        }
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s.into()),
    }
}

/// The services a server lists through gRPC reflection in one protocol version (`v1` or
/// `v1alpha`, whose generated types differ only by module), sorted.
macro_rules! reflected_services {
    ($version:ident, $addr:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;

        let channel = GrpcChannel::from_shared(Platform::url($addr))?
            .connect()
            .await?;
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await?
            .into_inner();
        let response = responses
            .message()
            .await?
            .context("no reflection response")?;
        let mut names: Vec<String> = match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => anyhow::bail!("unexpected reflection response {other:?}"),
        };
        names.sort();
        names
    }};
}

fn states(r: &GetNotificationResponse) -> Vec<(i32, i32)> {
    r.timeline.iter().map(|e| (e.channel, e.state)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_notifications_reach_the_inbox_and_the_provider_exactly_once() {
    tokio::time::timeout(TEST_LIMIT, hundred())
        .await
        .expect("test timed out")
        .unwrap();
}

/// The platform in exactly-once mode (the production path), on noida-db or, when
/// `HERALD_TEST_KAFKA` is set, on that cluster.
async fn hundred() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let platform = Platform::configure(&broker, "")?;
    anyhow::ensure!(
        broker.transactions(),
        "{} has no transactions",
        broker.name()
    );
    // Two users also have an e-mail address, so their notifications go to the recording provider.
    {
        let store = herald_stores::open(&platform.store_url).await?;
        for user in ["user-0", "user-1"] {
            let email = Contact {
                channel: herald_schemas::Channel::Email,
                address: format!("{user}@example.com"),
            };
            store.put_contact("acme", user, &email).await?;
        }
    }
    let platform = platform.start().await?;
    let (mut ingress, query) = clients(&platform, "acme").await?;

    let mut sent: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for i in 0..100 {
        let user = format!("user-{}", i % 10);
        let title = format!("notification {i}");
        let id = send(&mut ingress, inline("acme", &user, &title)).await?;
        sent.entry(user).or_default().push((id, title));
    }

    for (user, expected) in &sent {
        let inbox = settled(Duration::from_secs(120), &format!("{user}'s inbox"), || {
            let mut query = query.clone();
            let (user, n) = (user.clone(), expected.len());
            async move {
                let inbox = whole_inbox(&mut query, "acme", &user).await?;
                Ok((inbox.len() >= n).then_some(inbox))
            }
        })
        .await
        .with_context(|| platform.log_tail())?;
        let got: BTreeSet<(String, String)> = inbox
            .iter()
            .map(|(id, t, _)| (id.clone(), t.clone()))
            .collect();
        let want: BTreeSet<(String, String)> = expected.iter().cloned().collect();
        assert_eq!(got, want, "{user}'s inbox holds exactly what was sent");
        assert_eq!(
            inbox.len(),
            expected.len(),
            "no duplicates in {user}'s inbox"
        );
        assert!(
            inbox
                .windows(2)
                .all(|w| (w[0].2, &w[0].0) >= (w[1].2, &w[1].0)),
            "newest first"
        );
    }

    let (in_app, email) = (Channel::InApp as i32, Channel::Email as i32);
    let (dispatched, delivered) = (
        DeliveryState::Dispatched as i32,
        DeliveryState::Delivered as i32,
    );
    let mut emailed = BTreeSet::new();
    for (user, expected) in &sent {
        for (id, _) in expected {
            // The overall state is final once any channel is; wait for the in-app channel itself.
            let r = eventually(Duration::from_secs(60), "in-app delivered", || {
                let (mut query, id) = (query.clone(), id.clone());
                async move {
                    let r = final_state(&mut query, "acme", &id).await?;
                    Ok(r.filter(|r| states(r).contains(&(in_app, delivered))))
                }
            })
            .await?;
            let n = r.notification.as_ref().unwrap();
            assert_eq!(n.status, delivered, "{id}: {:?}", r.timeline);
            assert_eq!(n.recipient_user_id, *user);
            let timeline = states(&r);
            assert_eq!(timeline[0], (0, DeliveryState::Accepted as i32));
            assert!(
                timeline.contains(&(in_app, dispatched)) && timeline.contains(&(in_app, delivered))
            );
            if user == "user-0" || user == "user-1" {
                let r = eventually(Duration::from_secs(60), "e-mail delivered", || {
                    let (mut query, id) = (query.clone(), id.clone());
                    async move {
                        let r = final_state(&mut query, "acme", &id).await?;
                        Ok(r.filter(|r| states(r).contains(&(email, delivered))))
                    }
                })
                .await?;
                assert_eq!(
                    states(&r).len(),
                    5,
                    "accepted + 2 × (dispatched, delivered): {:?}",
                    r.timeline
                );
                emailed.insert(id.clone());
            }
        }
    }

    // The recording provider was called exactly once per e-mail, and for nothing else.
    let calls = herald_connectors::recording::read_calls(&platform.recording)?;
    let called: Vec<&str> = calls.iter().map(|c| c.notification_id.as_str()).collect();
    assert_eq!(
        called.len(),
        emailed.len(),
        "one provider call per e-mail: {called:?}"
    );
    assert_eq!(
        called
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        emailed
    );
    assert!(
        calls
            .iter()
            .all(|c| c.channel == "email" && c.address.ends_with("@example.com"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_idempotency_templates_and_isolation() {
    tokio::time::timeout(TEST_LIMIT, edge_cases())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn edge_cases() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?;
    {
        let store = herald_stores::open(&platform.store_url).await?;
        store
            .put_template(&TemplateRecord {
                tenant: "acme".into(),
                template_id: "welcome".into(),
                locale: "en".into(),
                title: "Welcome, {{name}}".into(),
                body: "Glad you are here, {{name}}.".into(),
                action_url: None,
                channel: None,
                version: 1,
            })
            .await?;
    }
    let platform = platform.start().await?;
    let (mut ingress, mut query) = clients(&platform, "acme").await?;

    // Health is served for both services (and reflection is registered beside it).
    for addr in [platform.ingress, platform.query] {
        let channel = GrpcChannel::from_shared(Platform::url(addr))?
            .connect()
            .await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        assert_eq!(
            r.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    // Reflection lists each server's service, as `grpcurl list` would.
    for (addr, services) in [
        (platform.ingress, &["herald.v1.NotificationService"][..]),
        (
            platform.query,
            &["herald.v1.QueryService", "herald.v1.ManagementService"][..],
        ),
    ] {
        // Both reflection versions, listing what this server serves and nothing else.
        let mut expected: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        expected.extend([
            "grpc.health.v1.Health".to_owned(),
            herald_proto::REFLECTION_V1.to_owned(),
            herald_proto::REFLECTION_V1ALPHA.to_owned(),
        ]);
        expected.sort();
        assert_eq!(reflected_services!(v1, addr), expected, "{addr}, v1");
        assert_eq!(
            reflected_services!(v1alpha, addr),
            expected,
            "{addr}, v1alpha"
        );
    }

    // Bad input: INVALID_ARGUMENT naming the field, and the ingress keeps serving.
    let bad = [
        (
            SendNotificationRequest {
                recipient_user_id: String::new(),
                ..inline("acme", "u", "t")
            },
            "recipient_user_id",
        ),
        (
            SendNotificationRequest {
                content: None,
                ..inline("acme", "u", "t")
            },
            "content",
        ),
        (
            SendNotificationRequest {
                channels: vec![42],
                ..inline("acme", "u", "t")
            },
            "channels[0]",
        ),
    ];
    for (req, field) in bad {
        let status = ingress
            .send_notification(req)
            .await
            .expect_err("must be rejected");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{}",
            status.message()
        );
    }
    // The tenant is the key's: a body naming another is refused, an empty one means the key's.
    let status = ingress
        .send_notification(inline("other", "u", "t"))
        .await
        .expect_err("another tenant than the key's");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    send(
        &mut ingress,
        SendNotificationRequest {
            tenant: String::new(),
            ..inline("acme", "u", "t")
        },
    )
    .await?;
    let status = query
        .list_inbox(ListInboxRequest {
            tenant: "acme".into(),
            recipient_user_id: "u".into(),
            page_size: 0,
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::InvalidArgument);

    // The same idempotency key twice: one id, one inbox entry.
    let keyed = || SendNotificationRequest {
        idempotency_key: "signup-7".into(),
        ..inline("acme", "ana", "once")
    };
    let first = send(&mut ingress, keyed()).await?;
    assert_eq!(send(&mut ingress, keyed()).await?, first);
    // The same key for a different request is refused, naming the first notification.
    let status = ingress
        .send_notification(SendNotificationRequest {
            idempotency_key: "signup-7".into(),
            ..inline("acme", "ana", "something else")
        })
        .await
        .expect_err("key reused for another request");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains(&first), "{}", status.message());

    // A template rendered with the request's variables; a missing one recorded as suppressed.
    let templated = |template_id: &str| SendNotificationRequest {
        content: Some(Content::Template(TemplateRef {
            template_id: template_id.into(),
            locale: "en-GB".into(),
            variables: [("name".to_string(), "Ana".to_string())].into(),
            version: 0,
        })),
        ..inline("acme", "ana", "")
    };
    let welcome = send(&mut ingress, templated("welcome")).await?;

    // The same templated request with several variables, retried with its key: every retry is
    // ACCEPTED with the first id (the digest does not depend on the order of a map).
    let retried = || SendNotificationRequest {
        idempotency_key: "dupkey-1".into(),
        content: Some(Content::Template(TemplateRef {
            template_id: "welcome".into(),
            locale: String::new(),
            variables: ["a", "b", "c", "d", "e", "name"]
                .iter()
                .map(|k| (k.to_string(), format!("value of {k}")))
                .collect(),
            version: 0,
        })),
        ..inline("acme", "ana", "")
    };
    let first_retry = send(&mut ingress, retried()).await?;
    for _ in 0..5 {
        assert_eq!(send(&mut ingress, retried()).await?, first_retry);
    }
    let missing = send(&mut ingress, templated("no-such-template")).await?;

    let r = eventually(
        Duration::from_secs(120),
        "the missing template's status",
        || {
            let mut query = query.clone();
            let id = missing.clone();
            async move { final_state(&mut query, "acme", &id).await }
        },
    )
    .await
    .with_context(|| platform.log_tail())?;
    assert_eq!(
        r.notification.unwrap().status,
        DeliveryState::Suppressed as i32
    );
    let suppressed = r
        .timeline
        .iter()
        .find(|e| e.state == DeliveryState::Suppressed as i32);
    let reason = &suppressed.expect("a SUPPRESSED event").reason;
    assert!(
        reason.contains("no-such-template") && reason.contains("not found"),
        "{reason}"
    );

    let inbox = settled(Duration::from_secs(120), "ana's inbox", || {
        let mut query = query.clone();
        async move {
            let inbox = whole_inbox(&mut query, "acme", "ana").await?;
            Ok((inbox.len() >= 3).then_some(inbox))
        }
    })
    .await?;
    let titles: BTreeMap<String, String> = inbox
        .iter()
        .map(|(id, t, _)| (id.clone(), t.clone()))
        .collect();
    // The keyed request, the templated one and the retried one, each once.
    assert_eq!(titles.len(), 3, "{inbox:?}");
    assert_eq!(titles[&first], "once");
    assert_eq!(titles[&welcome], "Welcome, Ana");
    assert_eq!(titles[&first_retry], "Welcome, value of name");

    // Another tenant, with its own key, sees nothing of acme's.
    let mut other = platform.query_client("other").await?;
    assert!(whole_inbox(&mut other, "other", "ana").await?.is_empty());
    let status = other
        .get_notification(GetNotificationRequest {
            tenant: "other".into(),
            notification_id: first.clone(),
        })
        .await
        .expect_err("other tenant");
    assert_eq!(status.code(), Code::NotFound);
    // And acme's key cannot ask as another tenant.
    let status = query
        .get_notification(GetNotificationRequest {
            tenant: "other".into(),
            notification_id: first.clone(),
        })
        .await
        .expect_err("acme's key naming another tenant");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_notifications_are_dropped_or_deferred_as_configured() {
    tokio::time::timeout(TEST_LIMIT, over_limit())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn over_limit() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    // Windows far longer than sending five requests takes, so the counts do not depend on the
    // machine's speed: an hour for drop (exactly two admitted), ten seconds for defer (the rest
    // wait, then go).
    let limits = |mode: &str| {
        let window = if mode == "drop" { 3600 } else { 10 };
        format!(
            "[rate_limit]\nper_recipient = {{ limit = 2, window_seconds = {window} }}\n\
             over_limit = \"{mode}\"\nmax_deferrals = 10\n"
        )
    };
    for mode in ["drop", "defer"] {
        let platform = Platform::configure(&broker, "")?
            .with_extra_config(&limits(mode))?
            .start()
            .await?;
        let (mut ingress, query) = clients(&platform, "acme").await?;
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(send(&mut ingress, inline("acme", "busy", &format!("n{i}"))).await?);
        }
        // Every notification reaches a final state: delivered, or (drop) rate-limited.
        let mut finals = Vec::new();
        for id in &ids {
            let r = eventually(
                Duration::from_secs(60),
                &format!("{mode}: final state of {id}"),
                || {
                    let (mut query, id) = (query.clone(), id.clone());
                    async move { final_state(&mut query, "acme", &id).await }
                },
            )
            .await
            .with_context(|| platform.log_tail())?;
            finals.push(r);
        }
        let status = |r: &GetNotificationResponse| {
            r.notification
                .as_ref()
                .map(|n| n.status)
                .unwrap_or_default()
        };
        let delivered = finals
            .iter()
            .filter(|r| status(r) == DeliveryState::Delivered as i32)
            .count();
        let limited = finals
            .iter()
            .filter(|r| status(r) == DeliveryState::RateLimited as i32)
            .count();
        let deferred = finals
            .iter()
            .filter(|r| {
                r.timeline
                    .iter()
                    .any(|e| e.state == DeliveryState::Deferred as i32)
            })
            .count();
        match mode {
            "drop" => {
                assert_eq!((delivered, limited, deferred), (2, 3, 0), "{finals:?}");
                let reason = &finals
                    .iter()
                    .find(|r| status(r) == DeliveryState::RateLimited as i32)
                    .unwrap()
                    .timeline;
                assert!(
                    reason
                        .iter()
                        .any(|e| e.reason.contains("per-recipient limit of 2")),
                    "{reason:?}"
                );
            }
            _ => {
                assert_eq!((delivered, limited), (5, 0), "{finals:?}");
                assert_eq!(deferred, 3, "three waited for the limit: {finals:?}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_ingress_sheds_with_resource_exhausted() {
    tokio::time::timeout(TEST_LIMIT, overload())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn overload() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?;
    // Only the ingress, allowed one request in flight.
    let config = std::fs::read_to_string(platform.config_path())?
        .replace("[ingress]\n", "[ingress]\nmax_in_flight = 1\n");
    std::fs::write(platform.config_path(), config)?;
    let mut topics = tokio::process::Command::new(herald_tests::herald_bin()?);
    topics
        .arg("--config")
        .arg(platform.config_path())
        .arg("topics");
    anyhow::ensure!(topics.status().await?.success(), "creating topics failed");
    let _ingress = platform
        .spawn_component(&["ingress"], Some(platform.ingress))
        .await?;
    let channel = GrpcChannel::from_shared(Platform::url(platform.ingress))?
        .connect()
        .await?;
    let acme = ingress_on(channel, &platform.api_key("acme").await?)?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let mut client = acme.clone();
        tasks.spawn(async move {
            client
                .send_notification(inline("acme", "u", &format!("n{i}")))
                .await
        });
    }
    let (mut ok, mut shed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("retry"), "{}", s.message());
                shed += 1;
            }
            Err(s) => anyhow::bail!("unexpected error {s}"),
        }
    }
    assert!(ok >= 1 && shed >= 1, "accepted {ok}, shed {shed}");
    // Once the burst is over, the ingress serves again.
    let mut client = acme;
    send(&mut client, inline("acme", "u", "after")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_quota_is_refused_and_others_are_served() {
    tokio::time::timeout(TEST_LIMIT, tenant_quota())
        .await
        .expect("test timed out")
        .unwrap();
}

/// A tenant allowed 2 requests a second sends 10 at once: some are refused with
/// RESOURCE_EXHAUSTED naming its quota; a tenant on the default quota is served meanwhile.
async fn tenant_quota() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let platform = Platform::configure(&broker, "")?.with_extra_config(
        "[ingress.tenant_quotas.tiny]\nrequests_per_second = 2\nin_flight = 100\n",
    )?;
    let _ingress = platform
        .spawn_component(&["ingress"], Some(platform.ingress))
        .await?;
    // Each tenant calls with its own key.
    let mut tiny = platform.ingress_client("tiny").await?;
    let mut acme = platform.ingress_client("acme").await?;
    let (mut accepted, mut refused) = (0, 0);
    let started = std::time::Instant::now();
    for i in 0..10 {
        let request = inline_request("tiny", "u", "news", &format!("t{i}"));
        match tiny.send_notification(request).await {
            Ok(_) => accepted += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(
                    s.message().contains("\"tiny\"")
                        && s.message().contains("2 requests per second"),
                    "{s:?}"
                );
                refused += 1;
            }
            Err(s) => return Err(s.into()),
        }
        let other = inline_request("acme", "u", "news", &format!("a{i}"));
        acme.send_notification(other).await?;
    }
    // A burst of 2, then 2 a second: however slow this machine, no more got through.
    let allowed = 2 + (2.0 * started.elapsed().as_secs_f64()).ceil() as u32;
    assert!(
        accepted >= 1 && accepted <= allowed && refused >= 1,
        "accepted {accepted} (at most {allowed}), refused {refused}"
    );
    Ok(())
}
