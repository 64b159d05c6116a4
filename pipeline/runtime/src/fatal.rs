//! Naming the cause of a fatal Kafka client error.
//!
//! librdkafka reports the call that hit a fatal state with a generic code (a produce after the
//! producer was fenced fails with `Fatal`, "Fatal error"), while the cause — fenced by a newer
//! instance, an out-of-order sequence, an authorisation failure — is kept on the client
//! (`rd_kafka_fatal_error`). [`explain`] asks for it, so the error a stage exits with says why.

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::RuntimeError;

/// Whether `e` reports that the client is in a fatal state.
pub fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        KafkaError::MessageConsumptionFatal(_) => true,
        other => other.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal),
    }
}

/// `e` as a runtime error; a fatal one carries the client's underlying fatal error.
pub fn explain<C: ClientContext>(e: KafkaError, client: &Client<C>) -> RuntimeError {
    if !is_fatal(&e) {
        return RuntimeError::Kafka(e);
    }
    let cause = match client.fatal_error() {
        // Some calls already report the cause themselves; don't say it twice.
        Some((_, reason)) if e.to_string().contains(&reason) => "as reported".to_owned(),
        Some((code, reason)) => format!("{reason} ({code:?})"),
        None => "librdkafka recorded no underlying fatal error".to_owned(),
    };
    RuntimeError::KafkaFatal { error: e, cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fatal_codes_are_fatal() {
        assert!(is_fatal(&KafkaError::MessageProduction(
            RDKafkaErrorCode::Fatal
        )));
        assert!(is_fatal(&KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::UnknownMemberId
        )));
        assert!(!is_fatal(&KafkaError::MessageProduction(
            RDKafkaErrorCode::QueueFull
        )));
        assert!(!is_fatal(&KafkaError::Canceled));
    }

    #[test]
    fn a_fatal_error_names_the_cause_the_client_recorded() {
        // A fresh client has no fatal error: the message says so rather than inventing one.
        let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .expect("a producer needs no broker to be created");
        let e = explain(
            KafkaError::MessageProduction(RDKafkaErrorCode::Fatal),
            rdkafka::producer::Producer::client(&producer),
        );
        let text = e.to_string();
        assert!(text.contains("no underlying fatal error"), "{text}");
        assert!(matches!(e, RuntimeError::KafkaFatal { .. }));
        let plain = explain(
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
            rdkafka::producer::Producer::client(&producer),
        );
        assert!(matches!(plain, RuntimeError::Kafka(_)));
    }
}
