//! The start-up check for exactly-once mode: does the broker support transactions?
//!
//! It opens a transaction with a throw-away transactional id, writes one record to the
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

fn probe(kafka: &KafkaConfig) -> Result<()> {
    let id = format!(
        "{}.txn-probe.{}.{}",
        kafka.topic_prefix,
        kafka.instance_id,
        std::process::id()
    );
    let producer: BaseProducer = kafka.transactional_producer(&id).create()?;
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
        Err(e) => Err(e.into()),
    }
}

/// Fails with [`RuntimeError::TransactionsUnsupported`] if the broker has no transactions.
pub async fn require_transactions(kafka: &KafkaConfig) -> Result<()> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || probe(&kafka))
        .await
        .map_err(|e| RuntimeError::Fatal(format!("transaction probe panicked: {e}")))?
}
