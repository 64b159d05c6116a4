//! One stage killed three times within three seconds under load, the pattern that wedged tansu's
//! group coordinator (ARCHITECTURE.md): the platform must still deliver everything, promptly,
//! without the rejoin watchdog.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use herald_schemas::{Channel, DeliveryState};
use herald_tests::{Broker, Platform, inline_request};

const NOTIFICATIONS: usize = 1_500;
const USERS: usize = 100;
const TEST_LIMIT: Duration = Duration::from_secs(300);
/// After the last kill, everything must be delivered within this.
const RECOVERY: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_killed_three_times_in_three_seconds_recovers() {
    tokio::time::timeout(TEST_LIMIT, rapid_restarts())
        .await
        .expect("test timed out")
        .unwrap();
}

async fn rapid_restarts() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    // No watchdog: the point is whether the broker hands the partitions back by itself.
    let limits = "[rate_limit]\nper_recipient = { limit = 100000, window_seconds = 1 }\n\
                  per_tenant = { limit = 1000000, window_seconds = 1 }\n";
    let platform = Platform::configure(&broker, "rejoin_if_unassigned_ms = 0")?
        .with_extra_config(limits)?
        .start()
        .await?;
    let store = herald_stores::open(&platform.store_url).await?;
    let mut ingress = platform.ingress_client("acme").await?;
    let mut ids = Vec::new();
    let mut killed = 0;
    for i in 0..NOTIFICATIONS {
        let user = format!("user-{}", i % USERS);
        let mut request = inline_request("acme", &user, "orders", &format!("n{i}"));
        request.idempotency_key = format!("rr-{i}");
        request.channels = vec![herald_proto::v1::Channel::InApp as i32];
        loop {
            match ingress.send_notification(request.clone()).await {
                Ok(r) => {
                    ids.push(r.into_inner().notification_id);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        // Three kills of fan-out, a second apart, a third of the way in.
        if i >= NOTIFICATIONS / 3 && killed < 3 && i % 50 == 0 {
            if platform.kill_component("stage fan-out") {
                killed += 1;
            }
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
    }
    anyhow::ensure!(killed == 3, "fan-out was killed {killed} times, not 3");
    let last_kill = Instant::now();
    let mut pending = ids.clone();
    while !pending.is_empty() {
        if last_kill.elapsed() > RECOVERY {
            anyhow::bail!(
                "{} of {NOTIFICATIONS} notifications still undelivered {RECOVERY:?} after the \
                 kills on {}: the group did not recover\n{}",
                pending.len(),
                broker.name(),
                platform.log_tail()
            );
        }
        let mut still = Vec::new();
        for id in pending {
            let delivered = store
                .get_notification("acme", &id)
                .await?
                .is_some_and(|(_, t)| {
                    t.iter().any(|e| {
                        e.channel == Some(Channel::InApp) && e.state == DeliveryState::Delivered
                    })
                });
            if !delivered {
                still.push(id);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "rapid restarts ({}): all {NOTIFICATIONS} delivered {:?} after the last kill",
        broker.name(),
        last_kill.elapsed()
    );
    Ok(())
}
