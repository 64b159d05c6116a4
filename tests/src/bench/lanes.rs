//! Section 7: the priority lanes. One-time codes (category `security`, high priority, e-mail)
//! are sent at a steady rate twice: with nothing else running, then while a broadcast to
//! 10,000 subscribers (e-mail too, on the bulk lane) is expanded and delivered. The baseline is
//! the first run: the ratio of their end-to-end p99s says how much a broadcast delays an OTP
//! when it travels its own lane (same processes, broker and provider).

use std::time::{Duration, Instant};

use herald_connectors::recording::{delivered_ids, latencies_titled};
use herald_proto::v1::send_notification_request::Content;
use herald_proto::v1::{
    BroadcastRequest, Channel, InlineContent, Priority, SendNotificationRequest, broadcast_request,
};
use serde_json::{Value, json};
use tonic::transport::Channel as GrpcChannel;

use super::{LEVEL_SECONDS, experiment, pipeline, stats};
use crate::{Broker, Platform};

/// Broadcast subscribers (each with an e-mail address).
pub const SUBSCRIBERS: usize = 10_000;
/// Users receiving the one-time codes.
const OTP_USERS: usize = 100;
/// One-time codes per second.
const OTP_RATE: f64 = 20.0;

/// What the section measured.
pub struct Results {
    /// OTP end-to-end latencies (ms) with nothing else running.
    pub idle: Vec<i64>,
    /// The same during the broadcast.
    pub during: Vec<i64>,
    /// Seconds from the broadcast's acceptance to its last delivery.
    pub broadcast_s: f64,
}

fn quantile(ms: &[i64], q: f64) -> f64 {
    let mut sorted = ms.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize] as f64
}

impl Results {
    /// For the report.
    pub fn json(&self) -> Value {
        json!({
            "otp_rate": OTP_RATE,
            "subscribers": SUBSCRIBERS,
            "idle_p50_ms": quantile(&self.idle, 0.5),
            "idle_p99_ms": quantile(&self.idle, 0.99),
            "during_broadcast_p50_ms": quantile(&self.during, 0.5),
            "during_broadcast_p99_ms": quantile(&self.during, 0.99),
            "otp_samples": [self.idle.len(), self.during.len()],
            "broadcast_seconds": self.broadcast_s,
            "broadcast_per_second": SUBSCRIBERS as f64 / self.broadcast_s,
        })
    }

    /// (p50, p99) idle and during the broadcast.
    pub fn quantiles(&self) -> ((f64, f64), (f64, f64)) {
        (
            (quantile(&self.idle, 0.5), quantile(&self.idle, 0.99)),
            (quantile(&self.during, 0.5), quantile(&self.during, 0.99)),
        )
    }
}

fn otp(i: u64) -> SendNotificationRequest {
    SendNotificationRequest {
        tenant: "bench".into(),
        recipient_user_id: format!("user-{}", SUBSCRIBERS + (i as usize % OTP_USERS)),
        category: "security".into(),
        priority: Priority::High as i32,
        channels: vec![Channel::Email as i32],
        content: Some(Content::Inline(InlineContent {
            title: "otp".into(),
            body: format!("your code is {:06}", i % 1_000_000),
            action_url: String::new(),
        })),
        ..Default::default()
    }
}

/// Runs the section on `broker`.
pub async fn run(broker: &Broker) -> anyhow::Result<Results> {
    let limits = "[rate_limit]\nper_recipient = { limit = 100000, window_seconds = 1 }\nper_tenant = { limit = 10000000, window_seconds = 1 }\n";
    let platform = Platform::configure(broker, &experiment())?.with_extra_config(limits)?;
    crate::seed_email_contacts(&platform.store_url, "bench", SUBSCRIBERS + OTP_USERS).await?;
    let store = herald_stores::open(&platform.store_url).await?;
    for u in 0..SUBSCRIBERS {
        store
            .subscribe("bench", &format!("user-{u}"), "releases", true)
            .await?;
    }
    drop(store);
    let platform = platform.start().await?;
    let channel = GrpcChannel::from_shared(Platform::url(platform.ingress))?
        .connect()
        .await?;
    let ingress = crate::clients::ingress_on(channel, &platform.api_key("bench").await?)?;
    let recording = platform.recording.clone();
    let send = |i: u64| {
        let mut ingress = ingress.clone();
        async move { ingress.send_notification(otp(i)).await.is_ok() }
    };
    let otps_delivered = |n: u64| {
        let recording = recording.clone();
        move || latencies_titled(&recording, "otp", 0).map_or(0, |(_, all)| all) >= n
    };

    // Warm-up: every runner has joined its group.
    for i in 0..10 {
        anyhow::ensure!(send(i).await, "warm-up OTP refused");
    }
    pipeline::wait_until(Duration::from_secs(300), otps_delivered(10)).await?;
    let (_, watermark) = herald_connectors::recording::latencies_since(&recording, 0)?;

    eprintln!("bench: one-time codes at {OTP_RATE}/s, nothing else running…");
    let idle = stats::open_loop(OTP_RATE, Duration::from_secs(LEVEL_SECONDS), send).await;
    let mut sent = 10 + idle.latencies.len() as u64;
    pipeline::wait_until(Duration::from_secs(300), otps_delivered(sent)).await?;
    let (idle_ms, _) = latencies_titled(&recording, "otp", watermark)?;
    let (_, watermark) = herald_connectors::recording::latencies_since(&recording, 0)?;

    eprintln!("bench: one-time codes at {OTP_RATE}/s during a broadcast to {SUBSCRIBERS}…");
    let before = delivered_ids(&recording)?;
    let started = Instant::now();
    ingress
        .clone()
        .broadcast(BroadcastRequest {
            tenant: "bench".into(),
            broadcast_key: "bench-release".into(),
            topic: "releases".into(),
            category: "news".into(),
            channels: vec![Channel::Email as i32],
            content: Some(broadcast_request::Content::Inline(InlineContent {
                title: "release".into(),
                body: "what is new".into(),
                action_url: String::new(),
            })),
            ..Default::default()
        })
        .await?;
    let offset = sent;
    let during = stats::open_loop(OTP_RATE, Duration::from_secs(LEVEL_SECONDS), move |i| {
        send(offset + i)
    })
    .await;
    sent += during.latencies.len() as u64;
    pipeline::wait_until(Duration::from_secs(300), otps_delivered(sent)).await?;
    pipeline::wait_until(Duration::from_secs(600), || {
        delivered_ids(&recording).unwrap_or(0)
            >= before + SUBSCRIBERS as u64 + during.latencies.len() as u64
    })
    .await?;
    let broadcast_s = started.elapsed().as_secs_f64();
    let (during_ms, _) = latencies_titled(&recording, "otp", watermark)?;
    Ok(Results {
        idle: idle_ms,
        during: during_ms,
        broadcast_s,
    })
}
