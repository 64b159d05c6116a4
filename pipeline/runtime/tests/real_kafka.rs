//! Exactly-once guarantees that only a real Kafka cluster can show (no broker on these machines
//! implements transactions; see ../shared/TEST-INFRA.md). Skipped (ignored) by default; run them
//! with `HERALD_TEST_KAFKA=host:port make test-kafka`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunnerSpec};
use herald_runtime::topics::Topics;
use herald_runtime::{DeliveryMode, KafkaConfig, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;

const N: u64 = 2_000;

fn bootstrap() -> String {
    std::env::var("HERALD_TEST_KAFKA").expect("HERALD_TEST_KAFKA must point at a Kafka cluster")
}

/// Copies each input to `out` and counts calls; slow enough that a kill lands mid-transaction.
#[derive(Clone)]
struct Copy {
    out: String,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Processor for Copy {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(vec![Output {
            topic: self.out.clone(),
            key: "k".into(),
            payload: input.payload.to_vec(),
        }])
    }
}

struct Setup {
    kafka: KafkaConfig,
    spec: RunnerSpec,
    out: String,
}

async fn setup() -> Setup {
    let id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topic_prefix: format!("herald-test-{id}"),
        delivery_mode: DeliveryMode::ExactlyOnce,
        instance_id: "fixed".into(),
        transaction_timeout_ms: 10_000,
        ..KafkaConfig::default()
    };
    let (input, out) = (
        format!("{}.in", kafka.topic_prefix),
        format!("{}.out", kafka.topic_prefix),
    );
    let admin: AdminClient<DefaultClientContext> = kafka.admin().create().unwrap();
    let probe = Topics::new(&kafka.topic_prefix).txn_probe();
    let topics = [
        NewTopic::new(&input, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&out, 3, TopicReplication::Fixed(1)),
        NewTopic::new(&probe, 1, TopicReplication::Fixed(1)),
    ];
    admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap();
    let producer: BaseProducer = kafka.producer().create().unwrap();
    for i in 0..N {
        let payload = i.to_string();
        producer
            .send(BaseRecord::to(&input).key(&payload).payload(&payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let spec = RunnerSpec {
        name: "copy".into(),
        group: format!("{}.group", kafka.topic_prefix),
        input_topics: vec![input],
    };
    Setup { kafka, spec, out }
}

/// Every value in `topic` as a `read_committed` consumer sees it, read until `want` or a timeout.
fn read_committed(bootstrap: &str, topic: &str, want: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}.reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && values.len() < want {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // Anything beyond `want` would be a duplicate: give it a moment to show up.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Kafka with transactions: HERALD_TEST_KAFKA=host:port make test-kafka"]
async fn no_duplicates_visible_to_read_committed_after_a_crash() {
    let s = setup().await;
    let calls = Arc::new(AtomicU64::new(0));
    let copy = Copy {
        out: s.out.clone(),
        calls: Arc::clone(&calls),
    };
    // First instance: killed (its task dropped, transaction left open) part-way through.
    let (kafka, spec, c) = (s.kafka.clone(), s.spec.clone(), copy.clone());
    let first =
        tokio::spawn(async move { runner::run(&kafka, &spec, c, CancellationToken::new()).await });
    while calls.load(Ordering::SeqCst) < N / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.abort();
    // Second instance, same transactional id: fences the first and redoes its open batch.
    let shutdown = CancellationToken::new();
    let (kafka, spec, c, token) = (
        s.kafka.clone(),
        s.spec.clone(),
        copy.clone(),
        shutdown.clone(),
    );
    let second = tokio::spawn(async move { runner::run(&kafka, &spec, c, token).await });
    let values = tokio::task::spawn_blocking({
        let (bootstrap, out) = (s.kafka.bootstrap_servers.clone(), s.out.clone());
        move || read_committed(&bootstrap, &out, N as usize)
    })
    .await
    .unwrap();
    shutdown.cancel();
    second.await.unwrap().unwrap();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for v in &values {
        *counts.entry(v).or_default() += 1;
    }
    assert_eq!(counts.len() as u64, N, "every input reached the output");
    assert!(
        counts.values().all(|c| *c == 1),
        "no duplicates under read_committed"
    );
    assert!(
        calls.load(Ordering::SeqCst) > N,
        "the crashed batch really was processed twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Kafka with transactions: HERALD_TEST_KAFKA=host:port make test-kafka"]
async fn a_zombie_instance_is_fenced() {
    let s = setup().await;
    let copy = Copy {
        out: s.out.clone(),
        calls: Arc::new(AtomicU64::new(0)),
    };
    let (kafka, spec, c) = (s.kafka.clone(), s.spec.clone(), copy.clone());
    let zombie =
        tokio::spawn(async move { runner::run(&kafka, &spec, c, CancellationToken::new()).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A new instance with the same transactional id takes over; the old one must stop.
    let shutdown = CancellationToken::new();
    let (kafka, spec, token) = (s.kafka.clone(), s.spec.clone(), shutdown.clone());
    let successor = tokio::spawn(async move { runner::run(&kafka, &spec, copy, token).await });
    let zombie_result = tokio::time::timeout(Duration::from_secs(60), zombie)
        .await
        .expect("zombie kept running")
        .unwrap();
    let error = zombie_result.expect_err("the zombie must stop with an error");
    assert!(error.to_string().to_lowercase().contains("fenc"), "{error}");
    shutdown.cancel();
    successor.await.unwrap().unwrap();
}
