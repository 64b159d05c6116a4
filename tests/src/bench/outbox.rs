//! The outbox's drain rate: records kept in the embedded store during an outage, replayed into
//! a running broker by Herald's outbox, against raw produce of records of the same size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_runtime::KafkaConfig;
use herald_runtime::outbox::Outbox;
use herald_store::OutboxRecord;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Records kept before the drain.
pub const RECORDS: u64 = 20_000;

/// What the drain measured.
pub struct OutboxResults {
    /// Records replayed.
    pub records: u64,
    /// Records per second, from the start of the replay until the outbox was empty.
    pub drain_per_s: f64,
}

impl OutboxResults {
    /// For the report.
    pub fn json(&self) -> Value {
        json!({ "records": self.records, "drain_per_s": self.drain_per_s })
    }
}

/// Keeps [`RECORDS`] records of `size` bytes for `topic` in a fresh embedded store, then times
/// Herald's outbox replaying them.
pub async fn run(kafka: &KafkaConfig, topic: &str, size: usize) -> anyhow::Result<OutboxResults> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = herald_stores::open(&url).await?;
    let owner = "ingress.bench";
    eprintln!("bench: keeping {RECORDS} records in the outbox…");
    for i in 0..RECORDS {
        store
            .outbox_put(&OutboxRecord {
                owner: owner.into(),
                id: format!("r{i}"),
                topic: topic.into(),
                key: format!("k{}", i % 97).into_bytes(),
                payload: vec![b'x'; size],
                headers: Vec::new(),
                created_at_ms: i as i64,
            })
            .await?;
    }
    let times = kafka.outbox_times(Duration::from_secs(5), RECORDS as usize * 2);
    let outbox = Outbox::new(&kafka.producer(), Arc::clone(&store), owner.into(), times)?;
    eprintln!("bench: replaying them…");
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let replay = tokio::spawn(outbox.replay(shutdown.clone()));
    let deadline = started + Duration::from_secs(300);
    while store.outbox_count(owner, 1).await? > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the outbox did not drain in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    replay.await?;
    Ok(OutboxResults {
        records: RECORDS,
        drain_per_s: RECORDS as f64 / elapsed,
    })
}
