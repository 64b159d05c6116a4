//! The exactly-once runner against librdkafka's mock cluster, with broker errors injected into
//! the transaction protocol. The mock runs the client state machine for real but does not
//! enforce read_committed or fencing (TEST-INFRA.md), so these tests check how the *runner*
//! reacts to each error class: commit, abort-and-rewind, retry, or stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use herald_runtime::runner::{self, Input, Output, ProcessError, Processor, RunStats, RunnerSpec};
use herald_runtime::topics::Topics;
use herald_runtime::{DeliveryMode, KafkaConfig, Result};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

/// Copies each input to the output topic and remembers every payload it saw.
#[derive(Clone, Default)]
struct Copy {
    calls: Arc<AtomicU64>,
    seen: Arc<Mutex<BTreeSet<Vec<u8>>>>,
}

#[async_trait]
impl Processor for Copy {
    async fn process(&mut self, input: &Input<'_>) -> Result<Vec<Output>, ProcessError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().insert(input.payload.to_vec());
        Ok(vec![Output {
            topic: "out".into(),
            key: String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned(),
            payload: input.payload.to_vec(),
        }])
    }
}

struct Rig {
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    kafka: KafkaConfig,
    spec: RunnerSpec,
    copy: Copy,
    produced: u64,
}

impl Rig {
    fn new() -> Rig {
        let mock = MockCluster::new(3).unwrap();
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
        Rig {
            mock,
            kafka,
            spec,
            copy: Copy::default(),
            produced: 0,
        }
    }

    fn produce(&mut self, n: u64) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.mock.bootstrap_servers())
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
}

/// Runs a scenario: a first wave, then `inject`, then a second wave; returns the runner's result.
async fn scenario(
    inject: impl FnOnce(&MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
) -> (Rig, Result<RunStats>) {
    let mut rig = Rig::new();
    rig.produce(50);
    let (shutdown, handle) = rig.start();
    rig.all_seen().await;
    // Let the first wave commit before the fault, so the fault hits a later transaction.
    tokio::time::sleep(Duration::from_millis(300)).await;
    inject(&rig.mock);
    rig.produce(50);
    let finished = tokio::time::timeout(LIMIT, async {
        loop {
            if handle.is_finished() || rig.copy.seen.lock().unwrap().len() as u64 >= rig.produced {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(finished.is_ok(), "scenario timed out");
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let result = tokio::time::timeout(LIMIT, handle)
        .await
        .expect("runner did not stop")
        .expect("runner panicked");
    (rig, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_every_batch_with_its_offsets() {
    let (rig, result) = scenario(|_| {}).await;
    let stats = result.expect("runner failed");
    assert_eq!(stats.aborts, 0, "{stats:?}");
    assert!(stats.commits >= 2, "{stats:?}");
    assert_eq!(rig.calls(), 100, "each record processed exactly once");
    assert_eq!(stats.produced, 100, "{stats:?}");
}

fn assert_aborted_and_redone(rig: &Rig, result: Result<RunStats>) {
    let stats = result.expect("an abortable error must not stop the runner");
    assert!(stats.aborts >= 1, "expected an abort: {stats:?}");
    assert!(
        rig.calls() > 100,
        "the aborted batch is processed again: {} calls",
        rig.calls()
    );
    assert_eq!(rig.copy.seen.lock().unwrap().len(), 100);
    assert!(stats.commits >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abortable_end_txn_error_aborts_and_rewinds() {
    let (rig, result) = scenario(|mock| {
        mock.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
        );
    })
    .await;
    assert_aborted_and_redone(&rig, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abortable_add_offsets_to_txn_error_aborts_and_rewinds() {
    let (rig, result) = scenario(|mock| {
        mock.request_errors(
            RDKafkaApiKey::AddOffsetsToTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
        );
    })
    .await;
    assert_aborted_and_redone(&rig, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abortable_txn_offset_commit_error_aborts_and_rewinds() {
    let (rig, result) = scenario(|mock| {
        mock.request_errors(
            RDKafkaApiKey::TxnOffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION],
        );
    })
    .await;
    assert_aborted_and_redone(&rig, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_loss_is_retried_without_abort() {
    let (rig, result) = scenario(|mock| {
        mock.request_errors(
            RDKafkaApiKey::EndTxn,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            ],
        );
    })
    .await;
    let stats = result.expect("coordinator loss must not stop the runner");
    assert_eq!(stats.aborts, 0, "{stats:?}");
    assert_eq!(rig.calls(), 100, "no batch redone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_stops_the_runner() {
    let (_rig, result) = scenario(|mock| {
        mock.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
        );
    })
    .await;
    let error = result.expect_err("a fenced producer must stop the runner");
    assert!(
        error.to_string().to_lowercase().contains("fenced"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_broker_stops_the_runner_and_a_new_one_resumes_from_the_commits() {
    let (rig, result) = scenario(|mock| {
        for broker in 1..=3 {
            mock.broker_down(broker).unwrap();
        }
        std::thread::sleep(Duration::from_secs(2));
        for broker in 1..=3 {
            mock.broker_up(broker).unwrap();
        }
    })
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
}
