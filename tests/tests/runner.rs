//! The generic runner on a real broker, in both delivery modes: a record that keeps failing for
//! a reason that might pass is retried until the retry budget is spent, then dead-lettered with
//! its last error, while the records after it on its partition flow; a poison record is
//! dead-lettered at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunnerSpec};
use herald_runtime::topics::{Topics, ensure_topics};
use herald_runtime::{DeliveryMode, KafkaConfig, Result};
use herald_schemas::DeadLetter;
use herald_schemas::codec::decode;
use herald_tests::topic::read_records;
use herald_tests::{Broker, eventually, random_name, settled};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Copies records to `out`, except `stuck` (always "store unavailable") and `poison`.
#[derive(Clone)]
struct Picky {
    out: String,
    stuck_attempts: Arc<AtomicU64>,
}

#[async_trait]
impl Processor for Picky {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        match input.payload {
            b"stuck" => {
                self.stuck_attempts.fetch_add(1, Ordering::SeqCst);
                Err(ProcessError::Retry("the store does not answer".into()))
            }
            b"poison" => Err(ProcessError::Poison("not a record of ours".into())),
            payload => Ok(vec![Output {
                topic: self.out.clone(),
                key: "k".into(),
                payload: payload.to_vec(),
                partition: None,
            }]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_past_its_retry_budget_is_dead_lettered_exactly_once_mode() {
    tokio::time::timeout(TEST_LIMIT, budget(DeliveryMode::ExactlyOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_past_its_retry_budget_is_dead_lettered_at_least_once_mode() {
    tokio::time::timeout(TEST_LIMIT, budget(DeliveryMode::AtLeastOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

async fn budget(mode: DeliveryMode) -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        topic_prefix: random_name("rn"),
        delivery_mode: mode,
        instance_id: "fixed".into(),
        partitions: 1,
        retry_budget_ms: 1_500,
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka).await?;
    let topics = Topics::new(&kafka.topic_prefix);
    // One partition: the records after the stuck one wait behind it until it is dead-lettered.
    let (input, out) = (topics.requested(), topics.enriched());
    let producer: FutureProducer = kafka.producer().create()?;
    for value in ["a", "stuck", "b", "poison", "c"] {
        producer
            .send(
                FutureRecord::to(&input).key("k").payload(value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let stuck_attempts = Arc::new(AtomicU64::new(0));
    let picky = Picky {
        out: out.clone(),
        stuck_attempts: Arc::clone(&stuck_attempts),
    };
    let spec = RunnerSpec {
        name: "picky".into(),
        group: topics.group("picky"),
        input_topics: vec![input.clone()],
    };
    let shutdown = CancellationToken::new();
    let (k, s, token) = (kafka.clone(), spec.clone(), shutdown.clone());
    let task = tokio::spawn(async move { runner::run(&k, &s, picky, token).await });

    let bootstrap = broker.bootstrap.clone();
    let copied = settled(Duration::from_secs(60), "every good record copied", || {
        let (b, t) = (bootstrap.clone(), out.clone());
        async move {
            let values: Vec<Vec<u8>> = tokio::task::spawn_blocking(move || read_records(&b, &t))
                .await??
                .into_iter()
                .map(|r| r.value)
                .collect();
            Ok((values.len() >= 3).then_some(values))
        }
    })
    .await?;
    assert_eq!(
        copied,
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        "the good records, in order"
    );
    shutdown.cancel();
    let stats = task.await??;
    assert_eq!(stats.dead_letters, 2, "{stats:?}");
    assert!(
        stats.retries >= 2,
        "the stuck record was retried: {stats:?}"
    );

    let (b, t) = (broker.bootstrap.clone(), topics.dead_letter());
    let letters: Vec<DeadLetter> = tokio::task::spawn_blocking(move || read_records(&b, &t))
        .await??
        .iter()
        .map(|r| decode(&r.value))
        .collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let stuck = letters.iter().find(|l| l.value == b"stuck").unwrap();
    assert_eq!(stuck.source_offset, 1);
    assert_eq!(stuck.stage, "picky");
    assert!(
        stuck.error.contains("still failing") && stuck.error.contains("does not answer"),
        "{}",
        stuck.error
    );
    assert_eq!(
        stuck.attempts as u64,
        stuck_attempts.load(Ordering::SeqCst),
        "every attempt counted"
    );
    let poison = letters.iter().find(|l| l.value == b"poison").unwrap();
    assert_eq!((poison.source_offset, poison.attempts), (3, 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runner_pauses_and_still_takes_every_record_exactly_once_mode() {
    tokio::time::timeout(TEST_LIMIT, idle_pauses(DeliveryMode::ExactlyOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runner_pauses_and_still_takes_every_record_at_least_once_mode() {
    tokio::time::timeout(TEST_LIMIT, idle_pauses(DeliveryMode::AtLeastOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

/// Records arriving one at a time, each after a quiet spell long enough for the runner to pause
/// its partitions: every one is copied once and in order, and the runner did pause.
async fn idle_pauses(mode: DeliveryMode) -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        topic_prefix: random_name("ip"),
        delivery_mode: mode,
        instance_id: "fixed".into(),
        partitions: 2,
        idle_pause_ms: 50,
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka).await?;
    let topics = Topics::new(&kafka.topic_prefix);
    let (input, out) = (topics.requested(), topics.enriched());
    let copier = Picky {
        out: out.clone(),
        stuck_attempts: Arc::new(AtomicU64::new(0)),
    };
    let spec = RunnerSpec {
        name: "copier".into(),
        group: topics.group("copier"),
        input_topics: vec![input.clone()],
    };
    let shutdown = CancellationToken::new();
    let (k, s, token) = (kafka.clone(), spec.clone(), shutdown.clone());
    let task = tokio::spawn(async move { runner::run(&k, &s, copier, token).await });

    let producer: FutureProducer = kafka.producer().create()?;
    let bootstrap = broker.bootstrap.clone();
    let copied = |n: usize| {
        let (b, t) = (bootstrap.clone(), out.clone());
        move || {
            let (b, t) = (b.clone(), t.clone());
            async move {
                let values: Vec<Vec<u8>> =
                    tokio::task::spawn_blocking(move || read_records(&b, &t))
                        .await??
                        .into_iter()
                        .map(|r| r.value)
                        .collect();
                Ok((values.len() >= n).then_some(values))
            }
        }
    };
    let mut sent = Vec::new();
    for i in 0..4 {
        // Quiet for several idle pauses first.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let value = format!("r{i}");
        producer
            .send(
                FutureRecord::to(&input).key("k").payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        sent.push(value.into_bytes());
        eventually(
            Duration::from_secs(60),
            "the record copied",
            copied(sent.len()),
        )
        .await?;
    }
    let all = settled(
        Duration::from_secs(60),
        "every record copied",
        copied(sent.len()),
    )
    .await?;
    assert_eq!(all, sent, "each record once, in order");
    shutdown.cancel();
    let stats = task.await??;
    assert!(
        stats.idle_pauses >= 4,
        "the runner paused before each record: {stats:?}"
    );
    assert_eq!(stats.consumed, 4, "{stats:?}");
    Ok(())
}

/// Copies `<due ms>:<name>` records once the wall clock reaches their due time, answering
/// `NotDue` before; notes when it copied each.
#[derive(Clone)]
struct Timed {
    out: String,
    copied_at: Arc<std::sync::Mutex<Vec<(String, i64)>>>,
}

#[async_trait]
impl Processor for Timed {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        let text = String::from_utf8_lossy(input.payload).into_owned();
        let (due, name) = text
            .split_once(':')
            .ok_or_else(|| ProcessError::Poison(text.clone()))?;
        let due: i64 = due
            .parse()
            .map_err(|_| ProcessError::Poison(text.clone()))?;
        let now = now_ms();
        if now < due {
            return Err(ProcessError::NotDue(Duration::from_millis(
                (due - now) as u64,
            )));
        }
        self.copied_at.lock().unwrap().push((name.to_owned(), now));
        Ok(vec![Output {
            topic: self.out.clone(),
            key: "k".into(),
            payload: name.as_bytes().to_vec(),
            partition: Some(input.partition),
        }])
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_not_yet_due_sets_its_partition_aside_while_others_flow_exactly_once_mode() {
    tokio::time::timeout(TEST_LIMIT, not_due(DeliveryMode::ExactlyOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_not_yet_due_sets_its_partition_aside_while_others_flow_at_least_once_mode() {
    tokio::time::timeout(TEST_LIMIT, not_due(DeliveryMode::AtLeastOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

/// Partition 0 starts with a record due in 8 s, then two due at once; partition 1 holds five
/// due at once. Partition 1 is copied while partition 0 waits; partition 0 is copied in order,
/// its head not before it is due; the partition was set aside once (idle pausing, which
/// pauses and resumes every partition, does not resume it early).
async fn not_due(mode: DeliveryMode) -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        topic_prefix: random_name("nd"),
        delivery_mode: mode,
        instance_id: "fixed".into(),
        partitions: 2,
        idle_pause_ms: 50,
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka).await?;
    let topics = Topics::new(&kafka.topic_prefix);
    let (input, out) = (topics.requested(), topics.enriched());
    let producer: FutureProducer = kafka.producer().create()?;
    let due = now_ms() + 8_000;
    let records = [
        (0, format!("{due}:late")),
        (0, "0:after-1".to_owned()),
        (0, "0:after-2".to_owned()),
    ]
    .into_iter()
    .chain((1..=5).map(|n| (1, format!("0:other-{n}"))));
    for (partition, value) in records {
        producer
            .send(
                FutureRecord::to(&input)
                    .key("k")
                    .payload(&value)
                    .partition(partition),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let timed = Timed {
        out: out.clone(),
        copied_at: Arc::default(),
    };
    let copied_at = Arc::clone(&timed.copied_at);
    let spec = RunnerSpec {
        name: "timed".into(),
        group: topics.group("timed"),
        input_topics: vec![input.clone()],
    };
    let shutdown = CancellationToken::new();
    let (k, s, token) = (kafka.clone(), spec.clone(), shutdown.clone());
    let task = tokio::task::spawn(async move { runner::run(&k, &s, timed, token).await });

    let bootstrap = broker.bootstrap.clone();
    let read = |b: String, t: String| async move {
        let records = tokio::task::spawn_blocking(move || read_records(&b, &t)).await??;
        let by_partition = |p: i32| -> Vec<String> {
            records
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| String::from_utf8_lossy(&r.value).into_owned())
                .collect()
        };
        anyhow::Ok((by_partition(0), by_partition(1)))
    };
    let (early0, early1) = eventually(Duration::from_secs(30), "partition 1 copied", || {
        let (b, t) = (bootstrap.clone(), out.clone());
        async move {
            let (p0, p1) = read(b, t).await?;
            Ok((p1.len() == 5).then_some((p0, p1)))
        }
    })
    .await?;
    assert!(
        now_ms() < due,
        "partition 1 took until the late record was due; the test says nothing"
    );
    assert!(
        early0.is_empty(),
        "partition 0 waits behind its head: {early0:?}"
    );
    assert_eq!(
        early1,
        ["other-1", "other-2", "other-3", "other-4", "other-5"]
    );

    let late = settled(Duration::from_secs(60), "partition 0 copied", || {
        let (b, t) = (bootstrap.clone(), out.clone());
        async move {
            let (p0, _) = read(b, t).await?;
            Ok((p0.len() >= 3).then_some(p0))
        }
    })
    .await?;
    assert_eq!(late, ["late", "after-1", "after-2"], "in order, once each");
    let copied_at = copied_at.lock().unwrap().clone();
    let (_, at) = copied_at.iter().find(|(n, _)| n == "late").unwrap();
    assert!(*at >= due, "copied {} ms before it was due", due - at);
    shutdown.cancel();
    let stats = task.await??;
    assert_eq!(stats.parked, 1, "set aside once: {stats:?}");
    Ok(())
}
