//! The load generator in its own process (`herald-load`), so that what it costs is not taken
//! from the process under test, and it can be pinned to a core. The bench runs it for the raw
//! produce baseline and for the ingress alike, with the same arguments, and reads one JSON line
//! back: the [`Run`] it measured.
//!
//! `herald-load ingress <url> <api key> | ingress-spread <url> <api key> <connections> |
//! raw <bootstrap> <topic> <bytes>` then
//! `closed <workers> <seconds>`, `open <rate> <seconds>` or `count <workers> <n>` (the warm-up request
//! not counted).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::produce::{futures_like::BoxFuture, ingress_send, raw_send};
use super::stats::{Run, closed_loop, closed_loop_count, open_loop};
use crate::clients::ingress_on;

/// The longest one `herald-load` run may take.
const GENERATOR_LIMIT: Duration = Duration::from_secs(300);

/// With `HERALD_BENCH_PIN=1`, the core the generator is pinned to when `taskset` is there (the
/// last of the machine's). Not by default: pinned to one of two cores, the gRPC generator could
/// not offer 75 % of the ingress's closed-loop maximum in an open loop (it reached 16.1k of
/// 20.2k/s; BENCHMARKS.md), so the ingress's latency measured the generator.
fn pin_core() -> Option<usize> {
    if !std::env::var("HERALD_BENCH_PIN").is_ok_and(|v| v == "1") {
        return None;
    }
    let cores = std::thread::available_parallelism().ok()?.get();
    (cores > 1).then(|| cores - 1)
}

/// Runs one measurement in a `herald-load` process (pinned if asked, see [`pinned`]) and
/// returns what it measured. `target` and `shape` are the generator's arguments.
pub async fn measure(target: &[String], shape: &[String]) -> anyhow::Result<Run> {
    measure_with(target, shape, true).await
}

async fn measure_with(target: &[String], shape: &[String], pin: bool) -> anyhow::Result<Run> {
    let exe = std::env::current_exe()?
        .parent()
        .context("the bench binary has no directory")?
        .join("herald-load");
    let mut command = match pinned().filter(|_| pin) {
        Some(core) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(&exe);
            c
        }
        _ => tokio::process::Command::new(&exe),
    };
    // Every load is seconds long; one that hangs is killed (kill_on_drop) and fails the bench.
    let output = tokio::time::timeout(
        GENERATOR_LIMIT,
        command.args(target).args(shape).kill_on_drop(true).output(),
    )
    .await
    .with_context(|| format!("{} did not finish in {GENERATOR_LIMIT:?}", exe.display()))?
    .with_context(|| format!("running {}", exe.display()))?;
    if !output.status.success() {
        bail!(
            "herald-load failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line: Value = serde_json::from_slice(&output.stdout).context("herald-load's answer")?;
    Ok(Run {
        offered: line["offered"].as_f64().unwrap_or_default(),
        achieved: line["achieved"].as_f64().unwrap_or_default(),
        errors: line["errors"].as_u64().unwrap_or_default(),
        latencies: line["latencies_us"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(Duration::from_micros)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Sends exactly `n` requests to the ingress at `url`, calling with API `key` (of tenant
/// `bench`), `workers` at a time, from a `herald-load` process (not pinned); how many succeeded.
pub async fn count(url: &str, key: &str, workers: usize, n: u64) -> anyhow::Result<u64> {
    let target = ["ingress".to_owned(), url.to_owned(), key.to_owned()];
    let shape = ["count".to_owned(), workers.to_string(), n.to_string()];
    Ok(measure_with(&target, &shape, false).await?.achieved as u64)
}

/// Whether the method section may say the generator was pinned.
pub fn pinned() -> Option<usize> {
    pin_core().filter(|_| which("taskset"))
}

pub(crate) fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The generator's `main`: parses its arguments, warms the target up with one request, runs
/// the load and prints the JSON line.
pub async fn generator(args: &[String]) -> anyhow::Result<Value> {
    let (send, rest): (Box<dyn Fn(u64) -> BoxFuture + Send + Sync>, &[String]) = match args {
        [kind, url, key, rest @ ..] if kind == "ingress" => {
            let channel = Channel::from_shared(url.clone())?.connect().await?;
            let send = ingress_send(ingress_on(channel, key)?);
            (Box::new(send), rest)
        }
        [kind, url, key, connections, rest @ ..] if kind == "ingress-spread" => {
            // One gRPC connection each: behind one address shared by several ingress
            // processes, the kernel hands each connection to one of them.
            let mut sends = Vec::new();
            for _ in 0..connections.parse::<usize>()?.max(1) {
                let channel = Channel::from_shared(url.clone())?.connect().await?;
                sends.push(ingress_send(ingress_on(channel, key)?));
            }
            let send = move |i: u64| {
                let n = sends.len() as u64;
                sends[usize::try_from(i % n).unwrap_or(0)](i)
            };
            (Box::new(send), rest)
        }
        [kind, bootstrap, topic, bytes, rest @ ..] if kind == "raw" => {
            let producer =
                Arc::new(bare_kafka::producer_config(bootstrap).create::<FutureProducer>()?);
            let send = raw_send(producer, Arc::from(topic.as_str()), bytes.parse()?);
            (Box::new(send), rest)
        }
        _ => {
            bail!(
                "usage: herald-load ingress <url> <api key> | ingress-spread <url> <api key> \
                 <connections> | raw <bootstrap> <topic> <bytes> …"
            )
        }
    };
    let send: Arc<dyn Fn(u64) -> BoxFuture + Send + Sync> = Arc::from(send);
    if !send(u64::MAX).await {
        bail!("the warm-up request failed");
    }
    let request = move |i: u64| send(i);
    let run = match rest {
        [shape, workers, seconds] if shape == "closed" => {
            closed_loop(
                workers.parse()?,
                Duration::from_secs(seconds.parse()?),
                request,
            )
            .await
        }
        [shape, workers, n] if shape == "count" => {
            let ok = closed_loop_count(workers.parse()?, n.parse()?, request).await;
            Run {
                achieved: ok as f64,
                ..Run::default()
            }
        }
        [shape, rate, seconds] if shape == "open" => {
            open_loop(
                rate.parse()?,
                Duration::from_secs(seconds.parse()?),
                request,
            )
            .await
        }
        _ => bail!(
            "the shape is `closed <workers> <seconds>`, `open <rate> <seconds>` or `count <workers> <n>`"
        ),
    };
    Ok(json!({
        "offered": run.offered,
        "achieved": run.achieved,
        "errors": run.errors,
        "latencies_us": run.latencies.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>(),
    }))
}
