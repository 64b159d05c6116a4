//! The exactly-once runner against librdkafka's mock cluster, with broker errors injected into
//! the transaction protocol. The mock runs the client state machine for real but does not
//! enforce read_committed or fencing (TEST-INFRA.md), so these tests check how the *runner*
//! reacts to each error class: commit, abort-and-rewind, retry, or stop. Each test shows that its
//! fault happened (the runner's counters of aborts, rewinds and transactional retries) and reads
//! what a consumer would then see in the output topic. The mock answers TxnOffsetCommit without
//! storing the offsets, so committed offsets are checked on a real transactional broker instead
//! (`tests/tests/exactly_once.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The mock cluster's request log is reachable only through rdkafka-sys.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunStats, RunnerSpec};
use herald_runtime::topics::Topics;
use herald_runtime::{DeliveryMode, KafkaConfig, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

/// What the processor was handed, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handed {
    /// `reset_partition` of this partition.
    Reset(i32),
    /// A record: partition, offset.
    Record(i32, i64),
}

/// Copies each input to the output topic and remembers every payload it saw, and what it was
/// handed in order.
#[derive(Clone, Default)]
struct Copy {
    calls: Arc<AtomicU64>,
    seen: Arc<Mutex<BTreeSet<Vec<u8>>>>,
    handed: Arc<Mutex<Vec<Handed>>>,
}

#[async_trait]
impl Processor for Copy {
    async fn reset_partition(&mut self, _topic: &str, partition: i32) -> Result<(), ProcessError> {
        self.handed.lock().unwrap().push(Handed::Reset(partition));
        Ok(())
    }

    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().insert(input.payload.to_vec());
        self.handed
            .lock()
            .unwrap()
            .push(Handed::Record(input.partition, input.offset));
        Ok(vec![Output {
            topic: "out".into(),
            key: String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned(),
            payload: input.payload.to_vec(),
            partition: None,
        }])
    }
}

struct Rig {
    /// The client that owns the mock cluster (which lives as long as it does).
    owner: BaseProducer,
    kafka: KafkaConfig,
    spec: RunnerSpec,
    copy: Copy,
    produced: u64,
}

impl Rig {
    fn new() -> Rig {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "3")
            .create()
            .unwrap();
        let mock = owner.client().mock_cluster().unwrap();
        let prefix = format!("m{}", std::process::id());
        for (topic, partitions) in [
            ("in", 3),
            ("out", 3),
            (&Topics::new(&prefix).txn_probe()[..], 1),
            (&Topics::new(&prefix).txn_ids()[..], 1),
        ] {
            mock.create_topic(topic, partitions, 1).unwrap();
        }
        let kafka = KafkaConfig {
            bootstrap_servers: mock.bootstrap_servers(),
            topic_prefix: prefix,
            delivery_mode: DeliveryMode::ExactlyOnce,
            commit_interval_ms: 50,
            transaction_timeout_ms: 10_000,
            instance_id: "test".into(),
            compression: "none".into(),
            ..KafkaConfig::default()
        };
        let spec = RunnerSpec {
            name: "copy".into(),
            group: "copy-group".into(),
            input_topics: vec!["in".into()],
        };
        drop(mock);
        Rig {
            owner,
            kafka,
            spec,
            copy: Copy::default(),
            produced: 0,
        }
    }

    fn mock(&self) -> MockCluster<'_, rdkafka::producer::DefaultProducerContext> {
        self.owner.client().mock_cluster().unwrap()
    }

    fn raw_mock(&self) -> *mut rdkafka_sys::rd_kafka_mock_cluster_t {
        // SAFETY: the handle is valid while `owner` lives, and `self` owns it.
        unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(self.owner.client().native_ptr()) }
    }

    /// Starts logging the requests the mock cluster receives (forgetting earlier ones).
    fn track_requests(&self) {
        // SAFETY: a valid mock cluster handle (see `raw_mock`).
        unsafe {
            rdkafka_sys::rd_kafka_mock_clear_requests(self.raw_mock());
            rdkafka_sys::rd_kafka_mock_start_request_tracking(self.raw_mock());
        }
    }

    /// How many requests with `api` the mock cluster received since [`Rig::track_requests`].
    fn requests(&self, api: RDKafkaApiKey) -> usize {
        let mut count = 0;
        // SAFETY: the array and its `count` elements are librdkafka's until destroyed here.
        unsafe {
            let requests = rdkafka_sys::rd_kafka_mock_get_requests(self.raw_mock(), &mut count);
            let found = (0..count)
                .filter(|i| {
                    rdkafka_sys::rd_kafka_mock_request_api_key(*requests.add(*i)) == api as i16
                })
                .count();
            rdkafka_sys::rd_kafka_mock_request_destroy_array(requests, count);
            found
        }
    }

    fn produce(&mut self, n: u64) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.mock().bootstrap_servers())
            .create()
            .unwrap();
        for _ in 0..n {
            let i = self.produced;
            self.produced += 1;
            let (key, payload) = (format!("k{}", i % 7), format!("record-{i}"));
            producer
                .send(BaseRecord::to("in").key(&key).payload(&payload))
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    fn start(&self) -> (CancellationToken, tokio::task::JoinHandle<Result<RunStats>>) {
        let shutdown = CancellationToken::new();
        let (kafka, spec, copy, token) = (
            self.kafka.clone(),
            self.spec.clone(),
            self.copy.clone(),
            shutdown.clone(),
        );
        let handle = tokio::spawn(async move { runner::run(&kafka, &spec, copy, token).await });
        (shutdown, handle)
    }

    /// Waits until every produced record has been seen at least once.
    async fn all_seen(&self) {
        let want = self.produced as usize;
        tokio::time::timeout(LIMIT, async {
            while self.copy.seen.lock().unwrap().len() < want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("runner did not process every record in time");
    }

    fn calls(&self) -> u64 {
        self.copy.calls.load(Ordering::SeqCst)
    }

    fn reader(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.mock().bootstrap_servers())
            .set("group.id", "reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap()
    }

    /// Every record in `out`, counted by payload (the mock does not hide aborted records, so
    /// after an abort a payload may appear more than once).
    fn output(&self) -> BTreeMap<Vec<u8>, u32> {
        let consumer = self.reader();
        let mut list = TopicPartitionList::new();
        let mut left = 0;
        for p in 0..3 {
            list.add_partition_offset("out", p, Offset::Beginning)
                .unwrap();
            left += consumer
                .fetch_watermarks("out", p, Duration::from_secs(10))
                .unwrap()
                .1;
        }
        consumer.assign(&list).unwrap();
        let mut counts = BTreeMap::new();
        let deadline = std::time::Instant::now() + LIMIT;
        while left > 0 {
            assert!(std::time::Instant::now() < deadline, "could not read out");
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                *counts.entry(m.payload().unwrap().to_vec()).or_insert(0) += 1;
                left -= 1;
            }
        }
        counts
    }

    /// Whether every input record is in `out`.
    fn output_complete(&self) -> bool {
        let want = (0..self.produced).map(|i| format!("record-{i}").into_bytes());
        let out = self.output();
        want.into_iter().all(|w| out.contains_key(&w))
    }

    /// What a consumer sees afterwards: every input record in `out`, exactly once when `exact`.
    fn assert_output_has_everything(&self, exact: bool) {
        let out = self.output();
        let want: BTreeSet<Vec<u8>> = (0..self.produced)
            .map(|i| format!("record-{i}").into_bytes())
            .collect();
        assert_eq!(out.keys().cloned().collect::<BTreeSet<_>>(), want);
        if exact {
            let repeated: Vec<_> = out.iter().filter(|(_, n)| **n != 1).collect();
            assert!(repeated.is_empty(), "repeated in out: {repeated:?}");
        }
    }
}

/// Runs a scenario: a first wave; then `inject`; then a second wave, until `done` holds (or the
/// runner stops by itself); then stops the runner and returns its result.
async fn scenario(
    inject: impl FnOnce(&MockCluster<'_, rdkafka::producer::DefaultProducerContext>),
    done: impl Fn(&Rig) -> bool,
) -> (Rig, Result<RunStats>) {
    scenario_on(Rig::new(), inject, done).await
}

/// [`scenario`] on a rig configured by the caller.
async fn scenario_on(
    mut rig: Rig,
    inject: impl FnOnce(&MockCluster<'_, rdkafka::producer::DefaultProducerContext>),
    done: impl Fn(&Rig) -> bool,
) -> (Rig, Result<RunStats>) {
    rig.produce(50);
    let (shutdown, handle) = rig.start();
    // Past the start-up probe transaction: the fault hits one of the runner's own.
    rig.all_seen().await;
    rig.track_requests();
    inject(&rig.mock());
    rig.produce(50);
    // Done, and every input in `out`: a batch redone after an abort is processed in batches of
    // what was fetched, partition by partition, so the first record processed twice does not
    // mean the whole redo is over. (A lost record never arrives: the scenario times out.)
    let finished = tokio::time::timeout(LIMIT, async {
        loop {
            let finished = done(&rig) && rig.output_complete();
            if handle.is_finished() || finished {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(finished.is_ok(), "scenario timed out");
    shutdown.cancel();
    let result = tokio::time::timeout(LIMIT, handle)
        .await
        .expect("runner did not stop")
        .expect("runner panicked");
    (rig, result)
}

/// Every record seen.
fn seen_all(rig: &Rig) -> bool {
    rig.copy.seen.lock().unwrap().len() as u64 >= rig.produced
}

/// Every record seen, and an aborted batch processed again.
fn redone(rig: &Rig) -> bool {
    seen_all(rig) && rig.calls() > rig.produced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_every_batch_with_its_offsets() {
    let (rig, result) = scenario(|_| {}, seen_all).await;
    let stats = result.expect("runner failed");
    assert_eq!(
        (stats.aborts, stats.rewinds, stats.txn_retries),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.commits >= 1, "{stats:?}");
    assert_eq!(rig.calls(), 100, "each record processed exactly once");
    assert_eq!(stats.produced, 100, "{stats:?}");
    let resets = assert_reset_before_every_restart(&rig);
    assert_eq!(resets as u64, stats.resets);
    assert!(
        resets >= 3,
        "each of the three partitions is reset before its first record: {resets}"
    );
    rig.assert_output_has_everything(true);
}

/// Every record of a partition comes after a reset of it, and a partition read again from an
/// offset it had passed (an aborted batch redone) was reset in between; returns the resets.
fn assert_reset_before_every_restart(rig: &Rig) -> usize {
    let handed = rig.copy.handed.lock().unwrap().clone();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let mut reset = BTreeSet::new();
    let mut resets = 0;
    for h in handed {
        match h {
            Handed::Reset(p) => {
                resets += 1;
                reset.insert(p);
                last.remove(&p);
            }
            Handed::Record(p, offset) => {
                assert!(
                    reset.contains(&p),
                    "a record of partition {p} before its reset"
                );
                if let Some(prev) = last.get(&p) {
                    assert!(
                        offset > *prev,
                        "partition {p} read again at {offset} after {prev} without a reset"
                    );
                }
                last.insert(p, offset);
            }
        }
    }
    resets
}

fn assert_aborted_and_redone(rig: &Rig, result: Result<RunStats>) {
    let stats = result.expect("an abortable error must not stop the runner");
    assert_reset_before_every_restart(rig);
    assert!(
        stats.resets > 3,
        "an aborted batch's partitions are reset before the redo: {stats:?}"
    );
    assert!(stats.aborts >= 1, "expected an abort: {stats:?}");
    assert!(stats.rewinds >= 1, "expected a rewind: {stats:?}");
    assert!(
        rig.calls() > 100,
        "the aborted batch is processed again: {} calls",
        rig.calls()
    );
    assert!(stats.commits >= 1, "{stats:?}");
    rig.assert_output_has_everything(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abortable_end_txn_error_aborts_and_rewinds() {
    let (rig, result) = scenario(
        |mock| {
            mock.request_errors(
                RDKafkaApiKey::EndTxn,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
            );
        },
        redone,
    )
    .await;
    assert_aborted_and_redone(&rig, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abortable_add_offsets_to_txn_error_aborts_and_rewinds() {
    let (rig, result) = scenario(
        |mock| {
            mock.request_errors(
                RDKafkaApiKey::AddOffsetsToTxn,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
            );
        },
        redone,
    )
    .await;
    assert_aborted_and_redone(&rig, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abortable_txn_offset_commit_error_aborts_and_rewinds() {
    let (rig, result) = scenario(
        |mock| {
            mock.request_errors(
                RDKafkaApiKey::TxnOffsetCommit,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
            );
        },
        redone,
    )
    .await;
    assert_aborted_and_redone(&rig, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_loss_is_retried_without_abort() {
    // librdkafka finds the coordinator again and repeats EndTxn itself; the runner does not see
    // the error. The evidence is the mock's request log: one EndTxn per commit after the fault,
    // plus one per injected error. Batches of a second keep the first wave in at most one
    // transaction before the fault, so without the errors there would be at most `commits`.
    let mut rig = Rig::new();
    rig.kafka.commit_interval_ms = 1_000;
    let (rig, result) = scenario_on(
        rig,
        |mock| {
            mock.request_errors(
                RDKafkaApiKey::EndTxn,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                ],
            );
        },
        seen_all,
    )
    .await;
    let stats = result.expect("coordinator loss must not stop the runner");
    let end_txns = rig.requests(RDKafkaApiKey::EndTxn) as u64;
    assert!(
        end_txns > stats.commits,
        "EndTxn failed and was repeated: {end_txns} EndTxn requests for {stats:?}"
    );
    assert_eq!((stats.aborts, stats.rewinds), (0, 0), "{stats:?}");
    assert_eq!(rig.calls(), 100, "no batch redone");
    rig.assert_output_has_everything(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_stops_the_runner() {
    let (rig, result) = scenario(
        |mock| {
            mock.request_errors(
                RDKafkaApiKey::EndTxn,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
            );
        },
        |_| false,
    )
    .await;
    let error = result.expect_err("a fenced producer must stop the runner");
    assert!(
        error.to_string().to_lowercase().contains("fenced"),
        "{error}"
    );
    assert!(
        rig.calls() >= 50,
        "the runner was processing when it was fenced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_broker_stops_the_runner_and_a_new_one_finishes_the_work() {
    let (rig, result) = scenario(
        |mock| {
            for broker in 1..=3 {
                mock.broker_down(broker).unwrap();
            }
            std::thread::sleep(Duration::from_secs(2));
            for broker in 1..=3 {
                mock.broker_up(broker).unwrap();
            }
        },
        |_| false,
    )
    .await;
    // A broker that comes back may have restarted and lost what it acknowledged last: the
    // runner does not trust its own positions after that.
    let error = result.expect_err("an outage of every broker stops the runner");
    assert!(
        matches!(error, herald_runtime::RuntimeError::BrokerLost(_)),
        "{error}"
    );
    let (shutdown, handle) = rig.start();
    rig.all_seen().await;
    shutdown.cancel();
    let stats = tokio::time::timeout(LIMIT, handle)
        .await
        .unwrap()
        .unwrap()
        .expect("the restarted runner runs");
    assert_eq!(rig.copy.seen.lock().unwrap().len(), 100, "{stats:?}");
    rig.assert_output_has_everything(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_close_by_count_as_well_as_by_time() {
    let mut rig = Rig::new();
    rig.kafka.commit_interval_ms = 60_000;
    rig.kafka.max_batch_records = 10;
    rig.produce(100);
    let (shutdown, handle) = rig.start();
    rig.all_seen().await;
    shutdown.cancel();
    let stats = tokio::time::timeout(LIMIT, handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // 100 records in batches of 10 (the last may close at shutdown), never a one-minute wait.
    assert!(stats.commits >= 10, "{stats:?}");
    assert_eq!(stats.produced, 100, "{stats:?}");
    rig.assert_output_has_everything(true);
}
