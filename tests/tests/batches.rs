//! The runner hands records fetched together to the processor at once, and the processor works
//! on different keys concurrently ([`lanes::by_key`]): on a real broker, in both delivery
//! modes, records arrive in batches, each key's outputs keep their input order, and while one
//! record is unfinished nothing at or past it is committed, however much of the batch after it
//! is done.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_runtime::lag::group_lag;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunnerSpec, lanes};
use herald_runtime::topics::{Topics, ensure_topics};
use herald_runtime::{DeliveryMode, KafkaConfig, Result};
use herald_tests::topic::read_records;
use herald_tests::{Broker, eventually, random_name, settled};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TEST_LIMIT: Duration = Duration::from_secs(120);
const RECORDS: usize = 300;
const KEYS: usize = 10;
/// The record the processor holds until the test lets it go.
const GATED: i64 = 120;

/// Copies records, working on the keys of a batch concurrently; holds the record at offset
/// `GATED` until `open` turns true. Notes each batch's size and how many records are done.
#[derive(Clone)]
struct Gate {
    out: String,
    open: watch::Receiver<bool>,
    batches: Arc<Mutex<Vec<usize>>>,
    done: Arc<AtomicUsize>,
}

impl Gate {
    async fn copy(&self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        if input.offset == GATED {
            let mut open = self.open.clone();
            open.wait_for(|open| *open)
                .await
                .map_err(|e| ProcessError::Fatal(e.to_string()))?;
        }
        tokio::task::yield_now().await;
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(vec![Output {
            topic: self.out.clone(),
            key: String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned(),
            payload: input.payload.to_vec(),
            partition: Some(0),
        }])
    }
}

#[async_trait]
impl Processor for Gate {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        self.copy(input).await
    }

    async fn process_batch(
        &mut self,
        inputs: &[Input<'_>],
    ) -> Vec<Result<Vec<Output>, ProcessError>> {
        self.batches.lock().unwrap().push(inputs.len());
        let keys: Vec<Option<&[u8]>> = inputs.iter().map(|i| i.key).collect();
        let this = &*self;
        lanes::by_key(&keys, 16, |i| this.copy(&inputs[i])).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_each_keys_order_and_commit_nothing_past_unfinished_work_exactly_once_mode() {
    tokio::time::timeout(TEST_LIMIT, batches(DeliveryMode::ExactlyOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_each_keys_order_and_commit_nothing_past_unfinished_work_at_least_once_mode() {
    tokio::time::timeout(TEST_LIMIT, batches(DeliveryMode::AtLeastOnce))
        .await
        .expect("test timed out")
        .unwrap();
}

async fn batches(mode: DeliveryMode) -> anyhow::Result<()> {
    let broker = Broker::transactional().await?;
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap.clone(),
        topic_prefix: random_name("bt"),
        delivery_mode: mode,
        instance_id: "fixed".into(),
        partitions: 1,
        // Batches of at most 100: the first commits before the gated record's batch begins.
        max_batch_records: 100,
        ..KafkaConfig::default()
    };
    ensure_topics(&kafka).await?;
    let topics = Topics::new(&kafka.topic_prefix);
    let (input, out) = (topics.requested(), topics.enriched());
    // Written before the runner starts, so it fetches many at once.
    let producer: FutureProducer = kafka.producer().create()?;
    for n in 0..RECORDS {
        let (key, value) = (format!("k{}", n % KEYS), format!("{n}"));
        producer
            .send(
                FutureRecord::to(&input).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let (open, gate_open) = watch::channel(false);
    let gate = Gate {
        out: out.clone(),
        open: gate_open,
        batches: Arc::default(),
        done: Arc::default(),
    };
    let (batches, done) = (Arc::clone(&gate.batches), Arc::clone(&gate.done));
    let spec = RunnerSpec {
        name: "gate".into(),
        group: topics.group("gate"),
        input_topics: vec![input.clone()],
    };
    let shutdown = CancellationToken::new();
    let (k, s, token) = (kafka.clone(), spec.clone(), shutdown.clone());
    let task = tokio::spawn(async move { runner::run(&k, &s, gate, token).await });

    // Everything up to the gated record, and records of other keys after it, get done.
    eventually(
        Duration::from_secs(60),
        "records after the gated one done",
        || {
            let done = Arc::clone(&done);
            async move { Ok((done.load(Ordering::SeqCst) > GATED as usize + 5).then_some(())) }
        },
    )
    .await?;
    // Several commit intervals pass with the gated record unfinished.
    tokio::time::sleep(Duration::from_millis(5 * kafka.commit_interval_ms)).await;
    let lag = group_lag(&kafka, &spec.group, std::slice::from_ref(&input)).await?;
    let committed = lag.first().and_then(|l| l.committed).unwrap_or(0);
    assert!(
        (1..=GATED).contains(&committed),
        "committed up to {committed} while record {GATED} was unfinished ({} done; an earlier \
         batch should have committed)",
        done.load(Ordering::SeqCst)
    );

    open.send(true)?;
    let bootstrap = broker.bootstrap.clone();
    let copied = settled(Duration::from_secs(60), "every record copied", || {
        let (b, t) = (bootstrap.clone(), out.clone());
        async move {
            let records: Vec<(Vec<u8>, Vec<u8>)> =
                tokio::task::spawn_blocking(move || read_records(&b, &t))
                    .await??
                    .into_iter()
                    .map(|r| (r.key, r.value))
                    .collect();
            Ok((records.len() >= RECORDS).then_some(records))
        }
    })
    .await?;
    shutdown.cancel();
    task.await??;

    assert_eq!(copied.len(), RECORDS, "each record copied once");
    let mut per_key: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (key, value) in &copied {
        per_key
            .entry(key.clone())
            .or_default()
            .push(String::from_utf8(value.clone())?.parse()?);
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, values) in &per_key {
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "key {} out of order: {values:?}",
            String::from_utf8_lossy(key)
        );
    }
    let batches = batches.lock().unwrap().clone();
    assert!(
        batches.iter().any(|&n| n > 1),
        "records fetched together were handed over together: {batches:?}"
    );
    Ok(())
}
