//! `make bench`: Herald's throughput, latency and memory, each next to a raw baseline measured
//! in the same run on the same machine and broker. Prints a table and writes
//! `target/bench/results.json`. Nothing here asserts a speed: the goals are reported as ratios.
//!
//! Sections: [`produce`] (raw rdkafka produce vs the ingress, closed loop and open loop at
//! 25/50/75/100 % of the ingress maximum, and at twice it), [`pipeline`] (a pass-through chain
//! with Herald's number of hops vs Herald end to end), [`query`] (ListInbox vs raw store reads),
//! [`outbox`] (the outbox's drain after an outage vs raw produce), [`providers`] (each
//! connector vs a bare client, and one channel's rate while another's provider answers 503),
//! [`templates`] (importing 10,000 templates from a workbook vs calamine + SQLite), [`lanes`]
//! (one-time codes during a broadcast vs alone), [`scale`] (1 → 2 → 3 deliver instances and
//! ingress processes on six partitions), the [`capacity`] model's inputs, and the peak RSS of
//! every Herald process.

pub mod bare;
pub mod callgrind;
pub mod capacity;
pub mod hops;
pub mod lanes;
pub mod load;
pub mod outbox;
pub mod pipeline;
pub mod produce;
pub mod providers;
pub mod query;
pub mod scale;
pub mod stats;
pub mod templates;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tonic::transport::Channel as GrpcChannel;

use crate::{Broker, BrokerKind, Platform, random_name};

/// Seconds per measured level.
pub const LEVEL_SECONDS: u64 = 5;
/// Requests in flight in closed-loop runs: enough that the servers, not the round trips, limit.
pub const WORKERS: usize = 256;
/// Notifications in the pipeline burst.
const BURST: u64 = 5_000;
/// Users the pipeline's notifications go to (each with an e-mail address).
const USERS: usize = 1_000;
/// The rate limits lifted, so that the bench measures the pipeline, not its limits.
const UNLIMITED: &str = "[rate_limit]\nper_recipient = { limit = 100000, window_seconds = 1 }\nper_tenant = { limit = 10000000, window_seconds = 1 }\n";

/// Peak RSS (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds each process used between two snapshots.
fn cpu_delta(before: &[(String, i32, f64)]) -> Vec<(String, f64)> {
    before
        .iter()
        .filter_map(|(name, pid, b)| cpu_seconds(*pid).map(|a| (name.clone(), a - b)))
        .collect()
}

/// The CPU seconds a set of processes has used, sampled every 10 ms in the background, so that a
/// window whose ends are only known afterwards (a chain's first send and last arrival) can be
/// measured without the time around it.
struct CpuSampler {
    samples: std::sync::Arc<std::sync::Mutex<Vec<(Instant, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CpuSampler {
    fn start(pids: Vec<i32>) -> CpuSampler {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&samples);
        let task = tokio::spawn(async move {
            loop {
                let total: f64 = pids.iter().filter_map(|p| cpu_seconds(*p)).sum();
                if let Ok(mut s) = sink.lock() {
                    s.push((Instant::now(), total));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        CpuSampler { samples, task }
    }

    /// CPU seconds used between the samples nearest `from` and `to`.
    fn between(&self, from: Instant, to: Instant) -> f64 {
        let Ok(samples) = self.samples.lock() else {
            return f64::NAN;
        };
        let nearest = |t: Instant| {
            samples
                .iter()
                .min_by_key(|(at, _)| if *at > t { *at - t } else { t - *at })
                .map_or(f64::NAN, |(_, cpu)| *cpu)
        };
        nearest(to) - nearest(from)
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn snapshot(procs: Vec<(String, i32)>) -> Vec<(String, i32, f64)> {
    procs
        .into_iter()
        .filter_map(|(name, pid)| cpu_seconds(pid).map(|c| (name, pid, c)))
        .collect()
}

fn row(name: &str, herald: f64, baseline: f64, unit: &str, goal: &str) -> Value {
    let ratio = herald / baseline;
    #[allow(clippy::print_stdout)]
    {
        println!("{name:<44} {herald:>10.1} {baseline:>10.1} {unit:<6} {ratio:>6.2}  {goal}");
    }
    json!({ "metric": name, "herald": herald, "baseline": baseline, "unit": unit, "ratio": ratio, "goal": goal })
}

/// Runs every section against a fresh local broker and writes the report.
pub async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let broker = Broker::start().await?;
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine());
    // For working on one section: it alone, printed, nothing written.
    match std::env::var("HERALD_BENCH_ONLY").as_deref() {
        Ok("scale") => {
            let scale = scale::run(&broker).await?;
            for level in scale.deliver.iter().chain(&scale.ingress) {
                eprintln!("bench: {}", level.line("per"));
            }
            return Ok(());
        }
        Ok("pipeline") => {
            let pipeline = pipeline_section(&broker).await?;
            let model = pipeline.model(f64::NAN);
            for line in model.lines() {
                eprintln!("bench: {line}");
            }
            return Ok(());
        }
        _ => {}
    }

    // 1–2: raw produce vs the ingress (only the ingress runs, so both see the same broker load).
    let platform = Platform::configure(&broker, &experiment())?;
    let mut ingress_proc = platform
        .spawn_component(&["ingress"], Some(platform.ingress))
        .await?;
    let kafka = bench_kafka(&broker, &platform.prefix);
    herald_runtime::topics::ensure_topics(&kafka).await?;
    let raw_topic = format!("{}.raw", platform.prefix);
    bare::create_topics(&broker.bootstrap, std::slice::from_ref(&raw_topic)).await?;
    let key = platform.api_key("bench").await?;
    let pids = vec![
        (
            format!("broker ({})", broker.name()),
            broker.pid().unwrap_or_default() as i32,
        ),
        (
            "ingress".to_owned(),
            ingress_proc
                .pid()
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or_default(),
        ),
    ];
    let produce = produce::run(
        &kafka,
        &raw_topic,
        &Platform::url(platform.ingress),
        &key,
        &pids,
    )
    .await?;
    let ingress_rss = ingress_proc.pid().and_then(|p| peak_rss_mib(p as i32));
    // Gone, not dying: the next ingress listens on the same port.
    ingress_proc.kill().await;
    report.insert("produce".into(), produce.json());
    eprintln!("bench: instructions per request in the ingress (callgrind)…");
    let ingress_instructions = callgrind::ingress_per_request(&platform).await?;
    report.insert(
        "ingress_instructions_per_request".into(),
        json!(ingress_instructions),
    );
    report.insert(
        "load_generator_pinned_to_core".into(),
        json!(load::pinned()),
    );
    let drain = outbox::run(&kafka, &raw_topic, produce::record_size()).await?;
    report.insert("outbox".into(), drain.json());

    // 3: the pipeline, all of Herald under `herald run`, against the pass-through chain.
    let pipeline = pipeline_section(&broker).await?;
    report.insert("pipeline".into(), pipeline.json.clone());

    // 3b: the yardsticks that share no Herald code, and the runner chain exactly-once.
    let yard = yardsticks(&broker, pipeline.herald.at_rate.offered).await?;
    report.insert("yardsticks".into(), yard.json());

    // 4: queries.
    let query = query::run(&broker).await?;
    report.insert("query".into(), query.json());

    // 5: the providers: connectors vs bare clients, and one channel while another's is down.
    let providers = providers::run(&broker).await?;
    report.insert("providers".into(), providers.json());

    // 6: importing templates from a spreadsheet.
    eprintln!(
        "bench: importing 10000 templates from a workbook, and the calamine + SQLite baseline…"
    );
    let templates = templates::run().await?;
    report.insert("templates".into(), templates.json());

    // 7: the priority lanes: one-time codes alone, then during a broadcast on the bulk lane.
    let lanes = lanes::run(&broker).await?;
    report.insert("lanes".into(), lanes.json());

    // 8: scale-out: six partitions, 1 → 2 → 3 deliver instances and ingress processes.
    let scale = scale::run(&broker).await?;
    report.insert("scale".into(), scale.json());

    #[allow(clippy::print_stdout)]
    {
        println!(
            "\n{:<44} {:>10} {:>10} {:<6} {:>6}  goal",
            "", "herald", "baseline", "unit", "ratio"
        );
    }
    let (chain, herald) = (&pipeline.chain, &pipeline.herald);
    let mut table = vec![(
        "ingress rate vs raw produce (closed loop)".to_owned(),
        produce.ingress_max.achieved,
        produce.raw_max.achieved,
        "/s",
        ">= 0.8",
    )];
    for (fraction, raw, ing) in &produce.levels {
        table.push((
            format!(
                "ingress p99 at {:.0} % load vs raw produce p99",
                fraction * 100.0
            ),
            ing.quantile_ms(0.99),
            raw.quantile_ms(0.99),
            "ms",
            "<= 1.5",
        ));
    }
    table.extend([
        (
            format!("outbox drain ({} records) vs raw produce", drain.records),
            drain.drain_per_s,
            produce.raw_max.achieved,
            "/s",
            "-",
        ),
        (
            "raw consume vs raw produce (broker limits)".to_owned(),
            yard.raw.consume_per_s,
            yard.raw.produce_per_s,
            "/s",
            "-",
        ),
        (
            "bare chain ALO vs raw produce".to_owned(),
            yard.bare_alo.rate,
            yard.raw.produce_per_s,
            "/s",
            "-",
        ),
        (
            "runner chain ALO vs bare chain ALO".to_owned(),
            chain.rate,
            yard.bare_alo.rate,
            "/s",
            "-",
        ),
    ]);
    if let (Some(bare_eos), Some(runner_eos)) = (yard.bare_eos.map(|b| b.rate), yard.runner_eos) {
        table.extend([
            (
                "bare chain EOS vs bare chain ALO".to_owned(),
                bare_eos,
                yard.bare_alo.rate,
                "/s",
                "-",
            ),
            (
                "runner chain EOS vs bare chain EOS".to_owned(),
                runner_eos,
                bare_eos,
                "/s",
                "-",
            ),
        ]);
    }
    let (bare_same_mode, mode) = match yard.bare_eos {
        Some(eos) => (eos, "EOS"),
        None => (yard.bare_alo, "ALO"),
    };
    let (bare_same_mode, bare_cpu_s) = (bare_same_mode.rate, bare_same_mode.cpu_s);
    let model = pipeline.model(bare_cpu_s / BURST as f64);
    table.extend([
        (
            format!("pipeline burst rate vs bare chain {mode}"),
            herald.rate,
            bare_same_mode,
            "/s",
            ">= 0.8",
        ),
        (
            "pipeline burst rate vs runner chain ALO".to_owned(),
            herald.rate,
            chain.rate,
            "/s",
            "-",
        ),
        (
            "pipeline e2e p50 vs chain p50".to_owned(),
            herald.at_rate.quantile_ms(0.5),
            chain.at_rate.quantile_ms(0.5),
            "ms",
            "-",
        ),
        (
            "pipeline e2e p99 vs chain p99".to_owned(),
            herald.at_rate.quantile_ms(0.99),
            chain.at_rate.quantile_ms(0.99),
            "ms",
            "<= 1.25",
        ),
    ]);
    if let Some(eos) = &yard.runner_eos_at_rate {
        table.extend([
            (
                "pipeline e2e p50 vs runner chain EOS p50".to_owned(),
                herald.at_rate.quantile_ms(0.5),
                eos.quantile_ms(0.5),
                "ms",
                "-",
            ),
            (
                "pipeline e2e p99 vs runner chain EOS p99".to_owned(),
                herald.at_rate.quantile_ms(0.99),
                eos.quantile_ms(0.99),
                "ms",
                "-",
            ),
        ]);
    }
    table.extend([
        (
            "ListInbox QPS vs raw store reads".to_owned(),
            query.grpc.achieved,
            query.raw.achieved,
            "/s",
            ">= 0.8",
        ),
        (
            "ListInbox p99 vs raw store read p99".to_owned(),
            query.grpc.quantile_ms(0.99),
            query.raw.quantile_ms(0.99),
            "ms",
            "<= 1.5",
        ),
        (
            format!(
                "ListInbox QPS vs raw, both under {:.0} writes/s",
                query.writes_per_second
            ),
            query.grpc_loaded.achieved,
            query.raw_loaded.achieved,
            "/s",
            ">= 0.8",
        ),
        (
            "ListInbox QPS under writes vs idle".to_owned(),
            query.grpc_loaded.achieved,
            query.grpc.achieved,
            "/s",
            "-",
        ),
        (
            "ListInbox p99 under writes vs idle".to_owned(),
            query.grpc_loaded.quantile_ms(0.99),
            query.grpc.quantile_ms(0.99),
            "ms",
            "-",
        ),
    ]);
    table.extend(providers.rows());
    table.push((
        format!(
            "template import ({} rows) vs calamine + SQLite",
            templates::ROWS
        ),
        templates.herald_per_s,
        templates.baseline_per_s,
        "/s",
        "-",
    ));
    let ((_, idle_p99), (_, busy_p99)) = lanes.quantiles();
    table.push((
        format!(
            "OTP e2e p99 during a {}-subscriber broadcast vs idle",
            lanes::SUBSCRIBERS
        ),
        busy_p99,
        idle_p99,
        "ms",
        "~1",
    ));
    for (what, levels) in [("deliver", &scale.deliver), ("ingress", &scale.ingress)] {
        if let (Some(one), Some(last)) = (levels.first(), levels.last()) {
            table.push((
                format!(
                    "{what} x{} vs x1 ({} partitions)",
                    last.instances,
                    scale::PARTITIONS
                ),
                last.rate,
                one.rate,
                "/s",
                ">= 1",
            ));
        }
    }
    let rows: Vec<Value> = table
        .iter()
        .map(|(name, herald, baseline, unit, goal)| row(name, *herald, *baseline, unit, goal))
        .collect();
    let overload = &produce.overload;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "\ningress offered 2x its maximum ({:.0}/s): accepted {:.0}/s, {} errors, p99 {:.1} ms",
            overload.offered,
            overload.achieved,
            overload.errors,
            overload.quantile_ms(0.99)
        );
        println!(
            "CPU µs per accepted request, closed loop ({WORKERS} in flight): raw produce | ingress"
        );
        let (mut raw_total, mut ingress_total) = (0.0, 0.0);
        for (name, raw, ingress) in &produce.cpu {
            println!("  {name:<24} {raw:>8.1} {ingress:>8.1}");
            raw_total += raw;
            ingress_total += ingress;
        }
        println!(
            "  {:<24} {raw_total:>8.1} {ingress_total:>8.1}  (raw ÷ ingress {:.2}: the rate ratio if both filled the cores)",
            "all",
            raw_total / ingress_total
        );
        match ingress_instructions {
            Some(n) => println!("ingress instructions per request (callgrind): {n:.0}"),
            None => println!("ingress instructions per request: SKIPPED (valgrind not installed)"),
        }
        println!(
            "peak RSS (MiB, goal <= 100 each): ingress {:.1}",
            ingress_rss.unwrap_or(f64::NAN)
        );
        for (name, mib) in pipeline.rss.iter() {
            println!("  {name:<24} {mib:>6.1}");
        }
        println!("query service {:.1}", query.rss_mib.unwrap_or(f64::NAN));
        println!(
            "\nScale-out, {} partitions per topic (deliver: e-mails; ingress: {} connections, one address):",
            scale::PARTITIONS,
            scale::CONNECTIONS
        );
        for level in &scale.deliver {
            println!("  deliver {}", level.line("notifications"));
        }
        for level in &scale.ingress {
            println!("  ingress {}", level.line("requests"));
        }
        println!(
            "\nCapacity model: the burst of {BURST} at {:.0}/s, per notification, extrapolated linearly:",
            herald.rate
        );
        for line in model.lines() {
            println!("  {line}");
        }
    }
    report.insert("summary".into(), Value::Array(rows));
    report.insert("capacity_model".into(), model.json());
    report.insert("peak_rss_mib".into(), json!({
        "ingress_under_load": ingress_rss,
        "pipeline_components": pipeline.rss.iter().map(|(n, m)| json!({ "component": n, "mib": m })).collect::<Vec<_>>(),
        "query": query.rss_mib,
    }));
    report.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    let dir = crate::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(report))?)?;
    eprintln!(
        "bench: wrote {} after {:.0} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `HERALD_BENCH_KAFKA`: extra `[kafka]` lines for Herald's processes (the ingress and the
/// platform), for experiments (e.g. `fetch_wait_max_ms = 500`); the baselines are not affected.
fn experiment() -> String {
    std::env::var("HERALD_BENCH_KAFKA")
        .unwrap_or_default()
        .replace("\\n", "\n")
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
    });
    json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu, "broker": BrokerKind::default_local().map(|k| k.name()).unwrap_or("?") })
}

fn bench_kafka(broker: &Broker, prefix: &str) -> herald_runtime::KafkaConfig {
    herald_runtime::KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        topic_prefix: prefix.to_owned(),
        delivery_mode: herald_runtime::DeliveryMode::AtLeastOnce,
        instance_id: random_name("bench"),
        ..herald_runtime::KafkaConfig::default()
    }
}

/// The chains measured beside Herald's pipeline (bursts of [`BURST`], records per second).
struct Yardsticks {
    /// The broker's raw produce and consume rates.
    raw: bare::Raw,
    /// Bare copier processes, at-least-once.
    bare_alo: bare::ChainBurst,
    /// Bare copier processes with transactions (a broker with transactions only).
    bare_eos: Option<bare::ChainBurst>,
    /// The chain on Herald's runner, exactly-once (a broker with transactions only).
    runner_eos: Option<f64>,
    /// That chain's latency at the rate Herald's latency was measured at.
    runner_eos_at_rate: Option<stats::Run>,
}

impl Yardsticks {
    fn json(&self) -> Value {
        json!({
            "raw": self.raw.json(), "bare_chain_alo_per_s": self.bare_alo.rate,
            "bare_chain_alo_cpu_s": self.bare_alo.cpu_s,
            "bare_chain_eos_per_s": self.bare_eos.map(|b| b.rate),
            "bare_chain_eos_cpu_s": self.bare_eos.map(|b| b.cpu_s),
            "runner_chain_eos_per_s": self.runner_eos,
            "runner_chain_eos_at_rate": self.runner_eos_at_rate.as_ref().map(stats::Run::json),
        })
    }
}

/// Measures the yardsticks that share no Herald code, and the runner chain exactly-once (its
/// latency at `rate`/s).
async fn yardsticks(broker: &Broker, rate: f64) -> anyhow::Result<Yardsticks> {
    let size = produce::record_size();
    let count = usize::try_from(BURST)?;
    eprintln!("bench: raw produce and consume of {count} records…");
    let raw = bare::raw(broker, count, size).await?;
    eprintln!(
        "bench: bare chain of {} copier processes, at-least-once…",
        pipeline::HOPS
    );
    let bare_alo = bare::chain_burst(broker, "alo", pipeline::HOPS, count, size).await?;
    let (mut bare_eos, mut runner_eos, mut runner_eos_at_rate) = (None, None, None);
    if broker.transactions() {
        eprintln!("bench: bare chain with transactions…");
        bare_eos = Some(bare::chain_burst(broker, "eos", pipeline::HOPS, count, size).await?);
        eprintln!("bench: the chain on Herald's runner, exactly-once…");
        let kafka = herald_runtime::KafkaConfig {
            delivery_mode: herald_runtime::DeliveryMode::ExactlyOnce,
            ..bench_kafka(broker, &random_name("chaineos"))
        };
        let chain = pipeline::Chain::start(&kafka, size).await?;
        runner_eos = Some(pipeline::chain_burst(&chain, BURST).await?);
        runner_eos_at_rate = Some(pipeline::chain_at_rate(&chain, rate, LEVEL_SECONDS).await?);
        chain.stop().await;
    }
    Ok(Yardsticks {
        raw,
        bare_alo,
        bare_eos,
        runner_eos,
        runner_eos_at_rate,
    })
}

/// What the pipeline section measured.
struct PipelineSection {
    json: Value,
    /// The runner chain, at-least-once.
    chain: pipeline::PipelineRun,
    herald: pipeline::PipelineRun,
    /// Peak RSS per component.
    rss: Vec<(String, f64)>,
    /// CPU seconds per process during Herald's burst.
    cpu: Vec<(String, f64)>,
    /// The records and bytes in Herald's topics after the burst (and its warm-up).
    topics: Vec<capacity::TopicUse>,
}

impl PipelineSection {
    /// The capacity model of Herald's burst, beside a bare chain's CPU per record.
    fn model(&self, bare_cpu_per_record: f64) -> capacity::Model {
        capacity::Model {
            notifications: BURST,
            in_topics: BURST + pipeline::WARM,
            rate: self.herald.rate,
            cpu: self.cpu.clone(),
            topics: self.topics.clone(),
            bare_cpu_per_record,
        }
    }
}

async fn pipeline_section(broker: &Broker) -> anyhow::Result<PipelineSection> {
    let platform = Platform::configure(broker, &experiment())?.with_extra_config(UNLIMITED)?;
    crate::seed_email_contacts(&platform.store_url, "bench", USERS).await?;
    let platform = platform.start().await?;
    let ingress = GrpcChannel::from_shared(Platform::url(platform.ingress))?
        .connect()
        .await?;
    let ingress = crate::clients::ingress_on(ingress, &platform.api_key("bench").await?)?;

    eprintln!("bench: Herald end to end, a burst of {BURST}…");
    let mut procs: Vec<(String, i32)> = platform
        .components()
        .into_iter()
        .map(|(pid, a)| (a, pid))
        .collect();
    procs.push((
        format!("broker ({})", broker.name()),
        broker.pid().unwrap_or_default() as i32,
    ));
    procs.push(("bench load generator".into(), std::process::id() as i32));
    // A few notifications through first, so every stage has joined its group (as the chains'
    // warm-up does); then the timed burst.
    const WARM: u64 = pipeline::WARM;
    let warm =
        stats::closed_loop_count(WARM as usize, WARM, produce::ingress_send(ingress.clone())).await;
    anyhow::ensure!(
        warm == WARM,
        "only {warm} of {WARM} warm-up notifications accepted"
    );
    let recording = platform.recording.clone();
    pipeline::wait_until(Duration::from_secs(300), || {
        herald_connectors::recording::delivered_ids(&recording).unwrap_or(0) >= WARM
    })
    .await?;
    let cpu_before = snapshot(procs);
    let started = Instant::now();
    let sent =
        stats::closed_loop_count(WORKERS, BURST, produce::ingress_send(ingress.clone())).await;
    anyhow::ensure!(sent == BURST, "only {sent} of {BURST} accepted");
    pipeline::wait_until(Duration::from_secs(600), || {
        herald_connectors::recording::delivered_ids(&recording).unwrap_or(0) >= WARM + BURST
    })
    .await?;
    let herald_rate = BURST as f64 / started.elapsed().as_secs_f64();
    let herald_cpu = cpu_delta(&cpu_before);
    let topics = {
        let (bootstrap, prefix) = (broker.bootstrap.clone(), platform.prefix.clone());
        tokio::task::spawn_blocking(move || capacity::footprint(&bootstrap, &prefix)).await??
    };
    let (_, watermark) = herald_connectors::recording::latencies_since(&platform.recording, 0)?;
    let rate = (herald_rate * 0.5).max(1.0);
    eprintln!("bench: Herald end to end at {rate:.0}/s…");
    let at_rate_since = herald_store::Clock::now_ms(&herald_store::SystemClock);
    let offered = stats::open_loop(
        rate,
        Duration::from_secs(LEVEL_SECONDS),
        produce::ingress_send(ingress.clone()),
    )
    .await;
    let want = WARM + BURST + offered.latencies.len() as u64;
    pipeline::wait_until(Duration::from_secs(300), || {
        herald_connectors::recording::delivered_ids(&recording).unwrap_or(0) >= want
    })
    .await?;
    let (ms, _) = herald_connectors::recording::latencies_since(&platform.recording, watermark)?;
    let hops = hops::measure(
        &broker.bootstrap,
        &herald_runtime::topics::Topics::new(&platform.prefix),
        &platform.recording,
        at_rate_since,
    )?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "\nPer hop at {rate:.0}/s ({} notifications, e-mail path; record timestamps):",
            hops.samples
        );
        for (hop, p50, p99) in &hops.hops {
            println!("  {hop:<36} p50 {p50:>6.0} ms  p99 {p99:>6.0} ms");
        }
        println!("Time to process one hand-over, per runner (the stages' own metrics, whole run):");
        for line in hops::batch_times(&platform).await {
            println!("  {line}");
        }
    }
    let mut latencies: Vec<Duration> = ms
        .into_iter()
        .map(|m| Duration::from_millis(m.max(0) as u64))
        .collect();
    latencies.sort();
    let herald = pipeline::PipelineRun {
        rate: herald_rate,
        at_rate: stats::Run {
            latencies,
            ..offered
        },
    };
    let rss: Vec<(String, f64)> = platform
        .components()
        .into_iter()
        .filter_map(|(pid, args)| peak_rss_mib(pid).map(|m| (args, m)))
        .collect();
    drop(platform);

    eprintln!("bench: pass-through chain of {} hops…", pipeline::HOPS);
    let kafka = bench_kafka(broker, &random_name("chain"));
    let chain = pipeline::Chain::start(&kafka, produce::record_size()).await?;
    let cpu_before = snapshot(vec![
        (
            format!("broker ({})", broker.name()),
            broker.pid().unwrap_or_default() as i32,
        ),
        (
            "chain runners + producer (bench process)".into(),
            std::process::id() as i32,
        ),
    ]);
    let chain_rate = pipeline::chain_burst(&chain, BURST).await?;
    let chain_cpu = cpu_delta(&cpu_before);
    let chain_run = pipeline::PipelineRun {
        rate: chain_rate,
        at_rate: pipeline::chain_at_rate(&chain, rate, LEVEL_SECONDS).await?,
    };
    chain.stop().await;
    let cpu_json = |cpu: &[(String, f64)]| {
        cpu.iter()
            .map(|(n, s)| json!({ "process": n, "cpu_s": s }))
            .collect::<Vec<_>>()
    };
    #[allow(clippy::print_stdout)]
    {
        println!("\nCPU seconds during the Herald burst, per process:");
        for (n, s) in &herald_cpu {
            println!("  {n:<40} {s:>6.2}");
        }
        println!("CPU seconds during the chain burst:");
        for (n, s) in &chain_cpu {
            println!("  {n:<40} {s:>6.2}");
        }
    }
    let json = json!({
        "herald": herald.json(), "chain": chain_run.json(), "hops": pipeline::HOPS, "offered_per_s": rate,
        "herald_burst_cpu_s": cpu_json(&herald_cpu), "chain_cpu_s": cpu_json(&chain_cpu),
        "herald_hops": hops.json(),
    });
    Ok(PipelineSection {
        json,
        chain: chain_run,
        herald,
        rss,
        cpu: herald_cpu,
        topics,
    })
}
