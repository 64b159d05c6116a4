//! Section 5: the providers. Each connector's overhead: 10,000 messages through
//! `TwilioConnector::send` (and `WebhookConnector::send`), 32 at a time as the
//! deliver stage calls them, against a bare `reqwest` client posting the same bytes with the
//! same credentials (basic auth; an HMAC computed here) to the same local stand-in, with no
//! Herald code on its path. And one channel's isolation from another's provider: on one
//! platform, the SMS channel's delivery rate (counted at the Twilio stand-in) for a burst to
//! recipients whose webhooks answer 200, then for a burst to fresh recipients whose webhooks
//! answer 503 (the webhook channel retrying on a small budget meanwhile).

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_connectors::Connector;
use herald_connectors::sms::twilio::{TwilioConfig, TwilioConnector};
use herald_connectors::webhook::{WebhookConfig, WebhookConnector};
use herald_schemas::{Channel, Dispatch, Priority};
use herald_store::Contact;
use serde_json::{Value, json};

use super::stats::{self, Run};
use super::{WORKERS, pipeline, produce};
use crate::receiver::Receiver;
use crate::sms::{Api, Provider};
use crate::{Broker, Platform};

/// Messages per timed round of a connector or its baseline: a local stand-in answers some
/// 20,000 a second, so a round lasts about half a second.
const MESSAGES: u64 = 10_000;
/// Calls in flight: as many as the deliver stage makes at once.
const IN_FLIGHT: usize = herald_stages::deliver::CONCURRENT_RECIPIENTS;
/// Sender number and account of the Twilio stand-in.
const FROM: &str = "+15550199000";
const ACCOUNT: &str = "ACtest";
/// The webhook signing secret.
const WEBHOOK_SECRET: &str = "bench-webhook-signing-secret";
/// The message: `produce::request`'s.
const BODY: &str = "Your order is on its way and should arrive within two working days.";
const LINK: &str = "https://shop.example/orders/123";
/// Notifications per burst of the isolation scenario (as the pipeline's burst), and the
/// recipients they go to.
const BURST: u64 = 5_000;
const USERS: u64 = 1_000;
const TENANT: &str = "bench";

/// A connector against its bare baseline, each pooled over two rounds.
#[derive(Debug)]
pub struct Overhead {
    /// Through the connector.
    pub connector: Run,
    /// Through the bare client.
    pub bare: Run,
}

/// The SMS channel's rate (deliveries per second at the stand-in, first to last), the mean of
/// two bursts each.
#[derive(Debug)]
pub struct Isolation {
    /// With every webhook answering 200.
    pub healthy: f64,
    /// With every webhook answering 503.
    pub webhooks_down: f64,
    /// Webhook calls answered 503 while the SMS of those bursts went out (first tries and
    /// retries).
    pub webhook_503s: usize,
}

/// The section's results.
#[derive(Debug)]
pub struct Results {
    /// TwilioConnector vs bare reqwest.
    pub twilio: Overhead,
    /// WebhookConnector vs bare reqwest with the bench's own HMAC.
    pub webhook: Overhead,
    /// SMS with the webhook provider down vs healthy.
    pub isolation: Isolation,
}

impl Results {
    /// Rows of the ratio table: (name, herald, baseline, unit, goal).
    pub fn rows(&self) -> Vec<(String, f64, f64, &'static str, &'static str)> {
        let mut rows = Vec::new();
        for (name, o) in [("twilio", &self.twilio), ("webhook", &self.webhook)] {
            rows.push((
                format!("{name} connector rate vs bare reqwest"),
                o.connector.achieved,
                o.bare.achieved,
                "/s",
                ">= 0.9",
            ));
            rows.push((
                format!("{name} connector p99 vs bare reqwest p99"),
                o.connector.quantile_ms(0.99),
                o.bare.quantile_ms(0.99),
                "ms",
                "-",
            ));
        }
        rows.push((
            "SMS rate, webhooks 503 vs webhooks 200".to_owned(),
            self.isolation.webhooks_down,
            self.isolation.healthy,
            "/s",
            ">= 0.9",
        ));
        rows
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        let overhead =
            |o: &Overhead| json!({ "connector": o.connector.json(), "bare": o.bare.json() });
        json!({
            "messages_per_round": MESSAGES, "in_flight": IN_FLIGHT,
            "twilio": overhead(&self.twilio), "webhook": overhead(&self.webhook),
            "isolation": {
                "burst": BURST, "sms_per_s_webhooks_ok": self.isolation.healthy,
                "sms_per_s_webhooks_503": self.isolation.webhooks_down,
                "webhook_503s": self.isolation.webhook_503s,
            },
        })
    }
}

/// Runs the section on `broker`.
pub async fn run(broker: &Broker) -> anyhow::Result<Results> {
    eprintln!("bench: twilio connector vs bare reqwest, {MESSAGES} messages x2 each…");
    let twilio = twilio_overhead().await?;
    eprintln!("bench: webhook connector vs bare reqwest…");
    let webhook = webhook_overhead().await?;
    eprintln!("bench: SMS delivery with the webhook receivers healthy, then answering 503…");
    let isolation = isolation(broker).await?;
    Ok(Results {
        twilio,
        webhook,
        isolation,
    })
}

/// `n` calls of `request`, [`IN_FLIGHT`] at a time, each call timed.
async fn timed<F, Fut>(n: u64, request: F) -> Run
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let sink = Arc::clone(&latencies);
    let started = Instant::now();
    let ok = stats::closed_loop_count(IN_FLIGHT, n, move |i| {
        let (call, sink) = (request(i), Arc::clone(&sink));
        async move {
            let sent = Instant::now();
            let ok = call.await;
            if ok && let Ok(mut l) = sink.lock() {
                l.push(sent.elapsed());
            }
            ok
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    latencies.sort();
    Run {
        offered: 0.0,
        achieved: ok as f64 / elapsed,
        errors: n - ok,
        latencies,
    }
}

/// The connector and the baseline, warmed up, then in the order bare, connector, connector,
/// bare (a drift of the machine weighs on both alike); every call must succeed.
async fn compare<C, CF, B, BF>(connector: C, bare: B) -> anyhow::Result<Overhead>
where
    C: Fn(u64) -> CF + Clone + Send + 'static,
    CF: Future<Output = bool> + Send + 'static,
    B: Fn(u64) -> BF + Clone + Send + 'static,
    BF: Future<Output = bool> + Send + 'static,
{
    const WARM: u64 = 200;
    let mut runs = Vec::new();
    for (round, by_connector) in [false, true, true, false].into_iter().enumerate() {
        // Each round its own messages (the receivers count per notification).
        let offset = (round as u64 + 1) * 10 * MESSAGES;
        let run = if by_connector {
            let c = connector.clone();
            timed(WARM, c.clone()).await;
            timed(MESSAGES, move |i| c(offset + i)).await
        } else {
            let b = bare.clone();
            timed(WARM, b.clone()).await;
            timed(MESSAGES, move |i| b(offset + i)).await
        };
        anyhow::ensure!(run.errors == 0, "{} calls failed", run.errors);
        runs.push((by_connector, run));
    }
    let pool = |which: bool| {
        runs.iter()
            .filter(|(c, _)| *c == which)
            .map(|(_, r)| r.clone())
            .reduce(Run::pooled)
            .unwrap_or_default()
    };
    Ok(Overhead {
        connector: pool(true),
        bare: pool(false),
    })
}

/// Message `i` as the deliver stage hands it to a connector.
fn dispatch(channel: Channel, address: String, i: u64) -> Dispatch {
    Dispatch {
        delivery_id: format!("bench-{i}"),
        notification_id: format!("n-{i}"),
        attempt: 1,
        tenant: TENANT.into(),
        recipient_user_id: format!("user-{}", i % 1_000),
        category: "orders".into(),
        priority: Priority::Normal,
        channel,
        address,
        title: format!("Order {i} shipped"),
        body: BODY.into(),
        action_url: Some(LINK.into()),
        requested_at_ms: 1_767_225_600_000,
        not_before_ms: None,
        last_error: None,
    }
}

fn phone(i: u64) -> String {
    format!("+1555010{:04}", i % 10_000)
}

/// A bare reqwest client trusting only the stand-in's CA: no Herald code.
fn bare_client(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// The form Twilio's API takes for message `i`, built here.
fn twilio_form(i: u64) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("To", &phone(i))
        .append_pair("From", FROM)
        .append_pair("Body", &format!("Order {i} shipped\n{BODY}\n{LINK}"))
        .finish()
}

/// Writes `content` to `name` in `dir`; returns its path.
fn write(dir: &Path, name: &str, content: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, content)?;
    Ok(path)
}

async fn twilio_overhead() -> anyhow::Result<Overhead> {
    let provider = Provider::start(Api::Twilio).await?;
    let dir = crate::test_dir()?;
    let config = TwilioConfig {
        base_url: provider.server.url(""),
        account_sid: ACCOUNT.into(),
        auth_token_file: Some(write(dir.path(), "secret", Provider::SECRET)?),
        from: Some(FROM.into()),
        timeout_ms: 5_000,
        ca_file: Some(write(dir.path(), "ca.pem", &provider.server.ca_pem)?),
        ..TwilioConfig::default()
    };
    // The baseline sends the very bytes the connector does.
    let herald = herald_connectors::sms::twilio::request(
        "",
        ACCOUNT,
        Provider::SECRET.as_bytes(),
        &herald_connectors::sms::twilio::Sender::Number(FROM.into()),
        &dispatch(Channel::Sms, phone(7), 7),
    );
    anyhow::ensure!(herald.body == twilio_form(7), "the baseline's form differs");
    let connector = Arc::new(TwilioConnector::new(&config)?);
    let via_connector = move |i: u64| {
        let connector = Arc::clone(&connector);
        async move {
            let d = dispatch(Channel::Sms, phone(i), i);
            matches!(
                connector.send(&d).await,
                herald_connectors::Outcome::Delivered { .. }
            )
        }
    };
    let (client, url) = (
        bare_client(&provider.server.ca_pem)?,
        provider
            .server
            .url(&format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")),
    );
    let bare = move |i: u64| {
        let call = client
            .post(&url)
            .basic_auth(ACCOUNT, Some(Provider::SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(twilio_form(i))
            .send();
        async move {
            match call.await {
                Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    };
    compare(via_connector, bare).await
}

/// The webhook body for message `i` to `address`, in the documented field order, built here.
fn webhook_body(i: u64) -> String {
    format!(
        r#"{{"delivery_id":"bench-{i}","notification_id":"n-{i}","attempt":1,"tenant":"{TENANT}","recipient_user_id":"user-{}","category":"orders","priority":"NORMAL","title":"Order {i} shipped","body":"{BODY}","action_url":"{LINK}","requested_at_ms":1767225600000}}"#,
        i % 1_000
    )
}

/// `v1=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"`, computed here.
fn sign(timestamp: u64, body: &[u8]) -> Option<String> {
    use hmac::Mac;
    use std::fmt::Write;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).ok()?;
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let mut out = String::with_capacity(67);
    out.push_str("v1=");
    for b in mac.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    Some(out)
}

async fn webhook_overhead() -> anyhow::Result<Overhead> {
    let receiver = Receiver::start(WEBHOOK_SECRET.as_bytes()).await?;
    let dir = crate::test_dir()?;
    let config = WebhookConfig {
        secret_file: Some(write(dir.path(), "secret", WEBHOOK_SECRET)?),
        timeout_ms: 5_000,
        ca_file: Some(write(dir.path(), "ca.pem", &receiver.ca_pem)?),
        ..WebhookConfig::default()
    };
    let url = receiver.url("/ok");
    let herald =
        herald_connectors::webhook::request::body(&dispatch(Channel::Webhook, url.clone(), 7));
    anyhow::ensure!(
        herald == webhook_body(7).as_bytes(),
        "the baseline's body differs"
    );
    let secret = herald_connectors::webhook::load_secret(&config)?;
    let connector = Arc::new(WebhookConnector::new(&config, secret)?);
    let address = url.clone();
    let via_connector = move |i: u64| {
        let (connector, address) = (Arc::clone(&connector), address.clone());
        async move {
            let d = dispatch(Channel::Webhook, address, i);
            matches!(
                connector.send(&d).await,
                herald_connectors::Outcome::Delivered { .. }
            )
        }
    };
    let client = bare_client(&receiver.ca_pem)?;
    let bare = move |i: u64| {
        let body = webhook_body(i);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let call = sign(now, body.as_bytes()).map(|signature| {
            client
                .post(&url)
                .header("content-type", "application/json")
                .header("idempotency-key", format!("bench-{i}"))
                .header("herald-timestamp", now.to_string())
                .header("herald-signature", signature)
                .body(body)
                .send()
        });
        async move {
            match call {
                Some(call) => call.await.is_ok_and(|a| a.status().is_success()),
                None => false,
            }
        }
    };
    let overhead = compare(via_connector, bare).await?;
    let unsigned = receiver.requests().iter().filter(|r| !r.signed).count();
    anyhow::ensure!(
        unsigned == 0,
        "{unsigned} webhook calls were not signed right"
    );
    Ok(overhead)
}

/// One platform, the SMS channel through the Twilio stand-in and webhooks through the receiver:
/// bursts to recipients whose webhooks answer 200 and to fresh recipients whose webhooks answer
/// 503 (`/down`; the webhook channel's budget: 2 attempts, a second apart), in the order
/// healthy, down, down, healthy so a drift of the platform weighs on both alike.
async fn isolation(broker: &Broker) -> anyhow::Result<Isolation> {
    let twilio = Provider::start(Api::Twilio).await?;
    let receiver = Receiver::start(WEBHOOK_SECRET.as_bytes()).await?;
    let platform = Platform::configure(broker, &super::experiment())?;
    let extra = format!(
        "[rate_limit]\nper_recipient = {{ limit = 100000, window_seconds = 1 }}\n\
         per_tenant = {{ limit = 10000000, window_seconds = 1 }}\n{}\
         [provider.webhook]\nsecret_file = \"{}\"\nca_file = \"{}\"\ntimeout_ms = 5000\n\
         [deliver.channel_retry.webhook]\nmax_attempts = 2\nfirst_backoff_ms = 500\n\
         max_backoff_ms = 1000\n",
        twilio.config(
            &platform.write_file("sms.secret", Provider::SECRET)?,
            &platform.write_file("twilio.pem", &twilio.server.ca_pem)?
        ),
        platform
            .write_file("webhook.secret", WEBHOOK_SECRET)?
            .display(),
        platform
            .write_file("webhook.pem", &receiver.ca_pem)?
            .display(),
    );
    let platform = platform.with_extra_config(&extra)?;
    {
        let store = herald_stores::open(&platform.store_url).await?;
        let groups = [("warm", "/ok"), ("ok1", "/ok"), ("ok2", "/ok")]
            .into_iter()
            .chain([("down1", "/down"), ("down2", "/down")]);
        for (group, path) in groups {
            for u in 0..USERS {
                let user = format!("{group}-{u}");
                for (channel, address) in [
                    (Channel::Sms, phone(u)),
                    (Channel::Webhook, receiver.url(path)),
                ] {
                    store
                        .put_contact(TENANT, &user, &Contact { channel, address })
                        .await?;
                }
            }
        }
    }
    let platform = platform.start().await?;
    let ingress = platform.ingress_client(TENANT).await?;
    let send = |group: &'static str| {
        let ingress = ingress.clone();
        move |i: u64| {
            let mut client = ingress.clone();
            let request = herald_proto::v1::SendNotificationRequest {
                tenant: TENANT.into(),
                recipient_user_id: format!("{group}-{}", i % USERS),
                ..produce::request(i)
            };
            async move { client.send_notification(request).await.is_ok() }
        }
    };
    // A few through first, so every stage has joined its group.
    const WARM: u64 = 10;
    let warm = stats::closed_loop_count(WARM as usize, WARM, send("warm")).await;
    anyhow::ensure!(
        warm == WARM,
        "only {warm} of {WARM} warm-up notifications accepted"
    );
    pipeline::wait_until(Duration::from_secs(300), || {
        twilio.accepted() as u64 >= WARM
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", platform.log_tail()))?;
    let (mut healthy, mut webhooks_down, mut webhook_503s) = (0.0, 0.0, 0);
    for group in ["ok1", "down1", "down2", "ok2"] {
        // The webhook retries of the burst before are over: a burst has the platform to itself.
        let quiet = Duration::from_millis(1_500);
        let before = crate::settled_for(Duration::from_secs(120), quiet, "webhook calls", || {
            let calls = receiver.requests().len();
            async move { Ok(Some(calls)) }
        })
        .await?;
        let rate = sms_rate(&twilio, send(group)).await?;
        if group.starts_with("ok") {
            healthy += rate / 2.0;
        } else {
            webhooks_down += rate / 2.0;
            webhook_503s += receiver.requests()[before..]
                .iter()
                .filter(|r| r.status == 503)
                .count();
        }
    }
    drop(platform);
    Ok(Isolation {
        healthy,
        webhooks_down,
        webhook_503s,
    })
}

/// Sends a burst of [`BURST`] with `send` and returns the SMS stand-in's rate for it: messages
/// per second from its first acceptance to its last.
async fn sms_rate<F, Fut>(twilio: &Provider, send: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let base = twilio.accepted();
    let sent = stats::closed_loop_count(WORKERS, BURST, send).await;
    anyhow::ensure!(sent == BURST, "only {sent} of {BURST} accepted");
    let want = base + BURST as usize;
    pipeline::wait_until(Duration::from_secs(300), || twilio.accepted() >= want).await?;
    let at = twilio.accepted_at();
    let (first, last) = (at[base], at[want - 1]);
    Ok((BURST - 1) as f64 / (last - first).as_secs_f64().max(1e-3))
}
