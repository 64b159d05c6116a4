//! Killing Herald's components at random while work flows, for the crash tests: every victim is
//! killed at least once, kills keep coming after the senders finish (while the backlog drains),
//! and every kill is recorded with its time, so that a test can tell which repeated provider
//! calls a kill explains.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::Platform;

/// The component processes worth killing (the query service serves no part of the flow).
pub const VICTIMS: &[&str] = &[
    "stage enrich",
    "stage rate-limit",
    "stage fan-out",
    "stage deliver",
    "stage store-writer",
    "ingress",
];

/// One SIGKILL.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The component (`herald` arguments, e.g. `stage deliver`).
    pub victim: &'static str,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Whether the senders had finished (the kill hit the drain).
    pub draining: bool,
}

/// What the chaos does.
#[derive(Debug, Clone, Copy)]
pub struct ChaosPlan {
    /// At least this many kills in all.
    pub kills: usize,
    /// At least this many of them after the senders finished.
    pub drain_kills: usize,
    /// The least time between two kills of the same component: tansu's coordinator wedges a
    /// group when one static member is replaced several times within seconds (ARCHITECTURE.md).
    pub rejoin_time: Duration,
    /// Pause between kills: uniformly in this range (ms).
    pub pause_ms: (u64, u64),
    /// Give up after this long, even if the plan is not fulfilled (the test then says which
    /// component was never killed).
    pub limit: Duration,
}

impl Default for ChaosPlan {
    fn default() -> Self {
        ChaosPlan {
            kills: 15,
            drain_kills: 3,
            rejoin_time: Duration::from_secs(5),
            pause_ms: (1_000, 2_500),
            limit: Duration::from_secs(180),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Kills components of `platform` following `plan` until it is fulfilled. `sent` turns true when
/// the senders have finished. The order starts with every victim once (shuffled), then random
/// ones, so every component dies at least once.
pub async fn run(
    platform: Arc<Platform>,
    seed: u64,
    plan: ChaosPlan,
    sent: Arc<AtomicBool>,
) -> Vec<Kill> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<&'static str> = VICTIMS.to_vec();
    order.shuffle(&mut rng);
    let mut kills: Vec<Kill> = Vec::new();
    let mut last_killed: HashMap<&'static str, Instant> = HashMap::new();
    let fulfilled = |kills: &[Kill]| {
        kills.len() >= plan.kills.max(VICTIMS.len())
            && kills.iter().filter(|k| k.draining).count() >= plan.drain_kills
    };
    let started = Instant::now();
    while !fulfilled(&kills) && started.elapsed() < plan.limit {
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(plan.pause_ms.0..=plan.pause_ms.1),
        ))
        .await;
        let victim = match order.get(kills.len()) {
            Some(v) => *v,
            None => VICTIMS[rng.random_range(0..VICTIMS.len())],
        };
        if last_killed
            .get(victim)
            .is_some_and(|t| t.elapsed() < plan.rejoin_time)
        {
            continue;
        }
        let draining = sent.load(Ordering::Acquire);
        if platform.kill_component(victim) {
            kills.push(Kill {
                victim,
                at_ms: now_ms(),
                draining,
            });
            last_killed.insert(victim, Instant::now());
        }
    }
    kills
}
