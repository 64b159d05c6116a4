//! Herald's exactly-once runner against a broker with Kafka transactions: a local noida-db
//! started by `scripts/noida.sh`, or the real cluster at `HERALD_TEST_KAFKA` when it is set.
//! What only real transactions can show: a crashed batch is invisible to `read_committed`
//! readers and redone once; a zombie with the same transactional id is fenced; several runners
//! in one process start side by side without fencing each other; and a second live instance
//! takes partitions over from one with a batch in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunStats, RunnerSpec};
use herald_runtime::topics::Topics;
use herald_runtime::{DeliveryMode, KafkaConfig, Result};
use herald_tests::topic::read_records;
use herald_tests::{Broker, random_name};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Copies each input to `out` and counts calls.
#[derive(Clone)]
struct Copy {
    out: String,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Processor for Copy {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(vec![Output {
            topic: self.out.clone(),
            key: String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned(),
            payload: input.payload.to_vec(),
            partition: None,
        }])
    }
}

/// Topics `<prefix>.in` (holding `n` records `0`…`n-1`), `<prefix>.out` and the probe topic.
struct Setup {
    kafka: KafkaConfig,
    input: String,
    out: String,
}

async fn setup(broker: &Broker, n: u64) -> anyhow::Result<Setup> {
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        topic_prefix: random_name("eos"),
        delivery_mode: DeliveryMode::ExactlyOnce,
        instance_id: "fixed".into(),
        transaction_timeout_ms: 10_000,
        ..KafkaConfig::default()
    };
    let (input, out) = (
        format!("{}.in", kafka.topic_prefix),
        format!("{}.out", kafka.topic_prefix),
    );
    create_topics(&kafka, &[&input, &out]).await?;
    produce(&kafka, &input, 0..n).await?;
    Ok(Setup { kafka, input, out })
}

async fn create_topics(kafka: &KafkaConfig, names: &[&str]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka.admin().create()?;
    let herald = Topics::new(&kafka.topic_prefix);
    let (probe, registry) = (herald.txn_probe(), herald.txn_ids());
    let mut topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, 3, TopicReplication::Fixed(1)))
        .collect();
    topics.push(NewTopic::new(&probe, 1, TopicReplication::Fixed(1)));
    topics.push(
        NewTopic::new(&registry, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"),
    );
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// Produces the values of `values` (as text, each its own key).
async fn produce(
    kafka: &KafkaConfig,
    topic: &str,
    values: std::ops::Range<u64>,
) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka.producer().create()?;
    let sends = values.map(|i| {
        let producer = &producer;
        async move {
            let value = i.to_string();
            producer
                .send(
                    FutureRecord::to(topic).key(&value).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}

fn spec(setup: &Setup, group: &str) -> RunnerSpec {
    RunnerSpec {
        name: group.into(),
        group: format!("{}.{group}", setup.kafka.topic_prefix),
        input_topics: vec![setup.input.clone()],
    }
}

/// How many times each value appears in `topic` for a `read_committed` reader.
fn committed_counts(bootstrap: &str, topic: &str) -> anyhow::Result<HashMap<String, u32>> {
    let mut counts = HashMap::new();
    for r in read_records(bootstrap, topic)? {
        *counts
            .entry(String::from_utf8_lossy(&r.value).into_owned())
            .or_default() += 1;
    }
    Ok(counts)
}

/// Runs `run` on a copy of `setup` until `out` holds `want` committed records, then stops it.
async fn run_until(
    setup: &Setup,
    spec: &RunnerSpec,
    copy: Copy,
    want: usize,
) -> anyhow::Result<RunStats> {
    let shutdown = CancellationToken::new();
    let (kafka, spec, token) = (setup.kafka.clone(), spec.clone(), shutdown.clone());
    let task = tokio::spawn(async move { runner::run(&kafka, &spec, copy, token).await });
    let (bootstrap, out) = (setup.kafka.bootstrap_servers.clone(), setup.out.clone());
    herald_tests::eventually(Duration::from_secs(90), "the committed output", || {
        let (bootstrap, out) = (bootstrap.clone(), out.clone());
        async move {
            let n: u32 = tokio::task::spawn_blocking(move || committed_counts(&bootstrap, &out))
                .await??
                .values()
                .sum();
            Ok((n as usize >= want).then_some(()))
        }
    })
    .await?;
    shutdown.cancel();
    Ok(task.await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_batch_is_invisible_to_read_committed_and_redone_once() {
    tokio::time::timeout(TEST_LIMIT, crashed_batch())
        .await
        .expect("test timed out")
        .unwrap();
}

/// The first instance is a real process, SIGKILLed with a transaction open: 500 records
/// committed (batches close every 500 records), 199 more produced in the open transaction, the
/// 700th being processed. (An instance stopped by dropping its task is not a crash: closing its
/// consumer runs the revoke callback, which commits the open batch.)
async fn crashed_batch() -> anyhow::Result<()> {
    const N: u64 = 2_000;
    const BATCH: u64 = 500;
    const HOLD_AT: u64 = 700;
    let broker = Broker::transactional().await?;
    let s = setup(&broker, N).await?;
    let spec = spec(&s, "copy");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_eos-copy"))
        .args([
            &s.kafka.bootstrap_servers,
            &s.kafka.topic_prefix,
            &spec.group,
            &s.input,
            &s.out,
            &HOLD_AT.to_string(),
            &BATCH.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut first_calls = 0u64;
    loop {
        match lines.next_line().await? {
            Some(line) if line == "holding" => break,
            Some(line) if line.starts_with("call ") => first_calls += 1,
            Some(_) => {}
            None => anyhow::bail!("the first instance exited before holding its batch"),
        }
    }
    // Let the open transaction's records reach the broker, then crash.
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.kill().await?;
    assert_eq!(first_calls, HOLD_AT - 1, "the first instance's calls");
    // Where each partition ends now.
    let ends = {
        let (bootstrap, out) = (s.kafka.bootstrap_servers.clone(), s.out.clone());
        tokio::task::spawn_blocking(move || ends(&bootstrap, &out)).await??
    };

    let (bootstrap, out) = (s.kafka.bootstrap_servers.clone(), s.out.clone());
    let seen = tokio::task::spawn_blocking(move || committed_counts(&bootstrap, &out)).await??;
    assert_eq!(
        seen.values().sum::<u32>() as u64,
        BATCH,
        "only the committed batch is visible; the open transaction's {} records are not",
        HOLD_AT - 1 - BATCH
    );

    // Second instance, same transactional id: fences the first and redoes its open batch.
    let calls = Arc::new(AtomicU64::new(0));
    let copy = Copy {
        out: s.out.clone(),
        calls: Arc::clone(&calls),
    };
    let stats = run_until(&s, &spec, copy, N as usize).await?;
    let (bootstrap, out) = (s.kafka.bootstrap_servers.clone(), s.out.clone());
    let counts = tokio::task::spawn_blocking(move || committed_counts(&bootstrap, &out)).await??;
    assert_eq!(counts.len() as u64, N, "every input reached the output");
    let repeated: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        repeated.is_empty(),
        "duplicates under read_committed: {repeated:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        N - BATCH,
        "the second instance redid exactly what was not committed"
    );
    assert_eq!(stats.aborts, 0, "{stats:?}");
    // A consumer that starts where the log ended at the crash, past the aborted records (as a
    // downstream stage resuming from its committed offsets does), sees everything committed
    // after the abort.
    let (bootstrap, out) = (s.kafka.bootstrap_servers.clone(), s.out.clone());
    let later = tokio::task::spawn_blocking(move || read_from(&bootstrap, &out, &ends)).await??;
    assert_eq!(
        later as u64,
        N - BATCH,
        "records committed after the abort, read from where the log ended at the crash"
    );
    Ok(())
}

/// The high watermark of each partition of `topic`.
fn ends(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<(i32, i64)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut out = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        out.push((p.id(), consumer.fetch_watermarks(topic, p.id(), timeout)?.1));
    }
    Ok(out)
}

/// How many records a `read_committed` reader gets from `starts` (partition, offset) to the end.
fn read_from(bootstrap: &str, topic: &str, starts: &[(i32, i64)]) -> anyhow::Result<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", random_name("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for (p, offset) in starts {
        assignment.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*offset))?;
    }
    consumer.assign(&assignment)?;
    let (mut open, mut n) = (starts.len(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while open > 0 && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => n += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_instance_is_fenced_and_says_so() {
    tokio::time::timeout(TEST_LIMIT, zombie())
        .await
        .expect("test timed out")
        .unwrap();
}

/// Holds the zombie inside its batch until the successor has started.
struct Gated {
    copy: Copy,
    hold_at: u64,
    reached: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Processor for Gated {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        if self.copy.calls.load(Ordering::SeqCst) + 1 == self.hold_at {
            self.reached.notify_one();
            let _permit = self.release.acquire().await;
        }
        self.copy.process(input).await
    }
}

/// The zombie holds a batch open while a successor with the same transactional id (and
/// group.instance.id) starts; then it carries on and must stop with an error that says it was
/// fenced — librdkafka reports its next produce or commit as a bare "Fatal error", so the
/// runner has to ask for the underlying one.
async fn zombie() -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let s = setup(&broker, 200).await?;
    let spec = spec(&s, "copy");
    let copy = Copy {
        out: s.out.clone(),
        calls: Arc::new(AtomicU64::new(0)),
    };
    let gated = Gated {
        copy: copy.clone(),
        hold_at: 50,
        reached: Arc::new(tokio::sync::Notify::new()),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let (reached, release) = (Arc::clone(&gated.reached), Arc::clone(&gated.release));
    let (kafka, zspec) = (s.kafka.clone(), spec.clone());
    let zombie =
        tokio::spawn(
            async move { runner::run(&kafka, &zspec, gated, CancellationToken::new()).await },
        );
    tokio::time::timeout(Duration::from_secs(60), reached.notified())
        .await
        .map_err(|_| anyhow::anyhow!("the zombie never reached its 50th record"))?;
    let fresh = Copy {
        out: s.out.clone(),
        calls: Arc::new(AtomicU64::new(0)),
    };
    let successor = run_until(&s, &spec, fresh, 200);
    let release_later = async {
        // Long enough for the successor to have initialised its transactions.
        tokio::time::sleep(Duration::from_secs(5)).await;
        release.add_permits(1);
    };
    let (zombie_result, successor, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(90), zombie),
        successor,
        release_later
    );
    successor?;
    let error = zombie_result
        .expect("the zombie kept running")?
        .expect_err("the zombie must stop with an error");
    eprintln!("the zombie stopped with: {error}");
    let text = error.to_string().to_lowercase();
    assert!(text.contains("fenc"), "{error}");
    let counts = committed_counts(&s.kafka.bootstrap_servers, &s.out)?;
    assert_eq!(counts.len(), 200, "every input reached the output");
    assert!(
        counts.values().all(|c| *c == 1),
        "the zombie's open batch stayed invisible"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_runners_in_one_process_start_in_exactly_once_mode() {
    tokio::time::timeout(TEST_LIMIT, several_runners())
        .await
        .expect("test timed out")
        .unwrap();
}

/// As in the deliver and rate-limit processes: several runners (one consumer group each) start
/// at the same moment with one config. Each must pass its start-up transaction probe and copy
/// every record; none may fence another's probe or producer.
async fn several_runners() -> anyhow::Result<()> {
    const RUNNERS: usize = 4;
    const N: u64 = 100;
    let broker = Broker::transactional().await?;
    let s = setup(&broker, N).await?;
    let outs: Vec<String> = (0..RUNNERS)
        .map(|i| format!("{}.out{i}", s.kafka.topic_prefix))
        .collect();
    let names: Vec<&str> = outs.iter().map(String::as_str).collect();
    let admin: AdminClient<DefaultClientContext> = s.kafka.admin().create()?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, 3, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    let shutdown = CancellationToken::new();
    let mut runners = tokio::task::JoinSet::new();
    for (i, out) in outs.iter().enumerate() {
        let copy = Copy {
            out: out.clone(),
            calls: Arc::new(AtomicU64::new(0)),
        };
        let (kafka, spec, token) = (
            s.kafka.clone(),
            spec(&s, &format!("runner{i}")),
            shutdown.clone(),
        );
        runners.spawn(async move { runner::run(&kafka, &spec, copy, token).await });
    }
    let outputs = async {
        for out in &outs {
            let (bootstrap, out) = (s.kafka.bootstrap_servers.clone(), out.clone());
            herald_tests::eventually(Duration::from_secs(90), "every runner's output", || {
                let (bootstrap, out) = (bootstrap.clone(), out.clone());
                async move {
                    let counts =
                        tokio::task::spawn_blocking(move || committed_counts(&bootstrap, &out))
                            .await??;
                    Ok((counts.len() as u64 == N).then_some(()))
                }
            })
            .await?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        done = outputs => done?,
        Some(stopped) = runners.join_next() => {
            anyhow::bail!("a runner stopped while the others were starting: {stopped:?}")
        }
    }
    shutdown.cancel();
    while let Some(r) = runners.join_next().await {
        r??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_takes_partitions_over_from_one_with_a_batch_in_flight() {
    tokio::time::timeout(TEST_LIMIT, handover())
        .await
        .expect("test timed out")
        .unwrap();
}

/// Instance `a` copies with a transaction open (batches close only every 10 s); instance `b`
/// joins the group, so `a` hands partitions over in the rebalance with its batch in flight; more
/// records follow until `b` copies some. A `read_committed` reader sees every record exactly
/// once.
async fn handover() -> anyhow::Result<()> {
    const FIRST: u64 = 300;
    let broker = Broker::transactional().await?;
    let s = setup(&broker, 0).await?;
    let spec = spec(&s, "handover");
    let instance = |name: &str, calls: &Arc<AtomicU64>| {
        let mut kafka = s.kafka.clone();
        kafka.instance_id = name.into();
        kafka.commit_interval_ms = 10_000;
        kafka.max_batch_records = 100_000;
        let copy = Copy {
            out: s.out.clone(),
            calls: Arc::clone(calls),
        };
        let (spec, shutdown) = (spec.clone(), CancellationToken::new());
        let token = shutdown.clone();
        let task = tokio::spawn(async move { runner::run(&kafka, &spec, copy, token).await });
        (shutdown, task)
    };
    let committed = || {
        let (bootstrap, out) = (s.kafka.bootstrap_servers.clone(), s.out.clone());
        async move {
            tokio::task::spawn_blocking(move || committed_counts(&bootstrap, &out))
                .await
                .map_err(anyhow::Error::from)?
        }
    };

    let (a_calls, b_calls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (a_stop, a) = instance("a", &a_calls);
    produce(&s.kafka, &s.input, 0..FIRST).await?;
    herald_tests::eventually(Duration::from_secs(60), "a's first calls", || {
        let n = a_calls.load(Ordering::SeqCst);
        async move { Ok((n >= FIRST).then_some(())) }
    })
    .await?;
    assert_eq!(
        committed().await?.values().sum::<u32>(),
        0,
        "a's batch is still in flight when b joins"
    );
    let (b_stop, b) = instance("b", &b_calls);
    // More records, 50 at a time, until b has been given partitions and copies some of them.
    let mut all = FIRST;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while b_calls.load(Ordering::SeqCst) == 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "b was never given a partition"
        );
        produce(&s.kafka, &s.input, all..all + 50).await?;
        all += 50;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let counts = herald_tests::settled(Duration::from_secs(90), "every record committed", || {
        let read = committed();
        async move {
            let counts = read.await?;
            let n: u32 = counts.values().sum();
            Ok((u64::from(n) >= all).then_some(
                counts
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ))
        }
    })
    .await?;
    a_stop.cancel();
    b_stop.cancel();
    let (a_stats, b_stats) = (a.await??, b.await??);
    assert_eq!(
        counts.len() as u64,
        all,
        "every input reached the output: a {a_stats:?}, b {b_stats:?}"
    );
    let repeated: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        repeated.is_empty(),
        "duplicates under read_committed: {repeated:?}"
    );
    Ok(())
}
