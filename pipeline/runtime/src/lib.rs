//! Herald's Kafka runtime, shared by the ingress and every stage.
//!
//! - [`changelog`]: reading a stage's state records back when it (re)starts a partition.
//! - [`config`]: the `[kafka]` settings and the librdkafka client configs built from them.
//! - [`topics`]: topic names under a prefix, and creating them at start-up.
//! - [`follow`]: reading a topic from its end without a group (cache invalidation).
//! - [`outbox`]: a producer that keeps what Kafka cannot take in the store and replays it.
//! - [`release`]: producing notifications held in the store (quiet hours) once they are due.
//! - [`runner`]: the one generic consume → process → produce → commit loop; a stage only
//!   supplies a [`runner::Processor`].

pub mod changelog;
pub mod config;
pub mod fatal;
pub mod follow;
pub mod lag;
pub mod outbox;
pub mod probe;
pub mod release;
pub mod runner;
pub mod topics;

pub use config::{DeliveryMode, KafkaConfig};

/// What can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A Kafka client call failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A Kafka client reached a fatal state (fenced, out-of-order sequence, authorisation): the
    /// process must restart. `cause` is the client's own account of it.
    #[error("kafka (fatal): {error} (cause: {cause})")]
    KafkaFatal {
        /// The error the failing call returned (often a generic "Fatal error").
        error: rdkafka::error::KafkaError,
        /// The underlying fatal error librdkafka recorded.
        cause: String,
    },
    /// Creating a topic failed for a reason other than "it exists".
    #[error("creating topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// Exactly-once delivery is configured but the broker has no transactions.
    #[error(
        "kafka.delivery_mode is \"exactly-once\", but the broker at {bootstrap} does not support \
         Kafka transactions ({reason}). Use a broker that does (Apache Kafka, Redpanda), or set \
         kafka.delivery_mode = \"at-least-once\" (env HERALD__KAFKA__DELIVERY_MODE=at-least-once) \
         to run on this one; Herald's idempotent stages keep at-least-once free of duplicate effects"
    )]
    TransactionsUnsupported {
        /// The configured brokers.
        bootstrap: String,
        /// What the broker answered.
        reason: String,
    },
    /// Every broker connection was lost. The broker may come back restarted, having lost what it
    /// acknowledged last; the process restarts to resume from the committed offsets.
    #[error(
        "lost every broker connection ({0}); stopping, to start again from the committed offsets \
         once the broker is back"
    )]
    BrokerLost(String),
    /// A processor reported an error that needs the process restarted.
    #[error("stage failed: {0}")]
    Fatal(String),
}

/// Result alias for the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
