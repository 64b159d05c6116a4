//! The start-up check for exactly-once mode: does the broker support transactions?
//!
//! It opens a transaction with the runner's own probe id (`<transactional id>.probe`: distinct
//! for every runner, also for several runners in one process, and stable across restarts, so a
//! restart reuses it instead of leaving ids behind on the broker), writes one record to the
//! `txn-probe` topic and aborts. A broker without transactions fails at `EndTxn` (tansu, for
//! one, accepts InitProducerId and AddPartitionsToTxn but not EndTxn); on a real cluster the
//! aborted record is invisible to `read_committed` readers and nothing else is touched.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::topics::Topics;
use crate::{KafkaConfig, Result, RuntimeError};

const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

fn unsupported(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion)
    ) || e.to_string().contains("not supported by broker")
}

/// The probe's transactional id for the runner whose transactional id is `transactional_id`.
///
/// It must differ between runners: two probes with one id fence each other (the deliver and
/// rate-limit processes run several runners, which all start at once).
pub fn probe_id(transactional_id: &str) -> String {
    format!("{transactional_id}.probe")
}

fn probe(kafka: &KafkaConfig, id: &str) -> Result<()> {
    let producer: BaseProducer = kafka.transactional_producer(id).create()?;
    let topic = Topics::new(&kafka.topic_prefix).txn_probe();
    let steps = || -> std::result::Result<(), KafkaError> {
        producer.init_transactions(PROBE_TIMEOUT)?;
        producer.begin_transaction()?;
        producer
            .send(BaseRecord::<(), [u8]>::to(&topic).payload(b"probe"))
            .map_err(|(e, _)| e)?;
        producer.flush(PROBE_TIMEOUT)?;
        producer.abort_transaction(PROBE_TIMEOUT)
    };
    match steps() {
        Ok(()) => Ok(()),
        Err(e) if unsupported(&e) => Err(RuntimeError::TransactionsUnsupported {
            bootstrap: kafka.bootstrap_servers.clone(),
            reason: e.to_string(),
        }),
        Err(e) => Err(crate::fatal::explain(e, producer.client())),
    }
}

/// Fails with [`RuntimeError::TransactionsUnsupported`] if the broker has no transactions.
/// `transactional_id` is the runner's own; the probe uses [`probe_id`] of it.
pub async fn require_transactions(kafka: &KafkaConfig, transactional_id: &str) -> Result<()> {
    let (kafka, id) = (kafka.clone(), probe_id(transactional_id));
    tokio::task::spawn_blocking(move || probe(&kafka, &id))
        .await
        .map_err(|e| RuntimeError::Fatal(format!("transaction probe panicked: {e}")))?
}
