//! What stops a runner from outside its processor: a consumer that has stalled (no partition,
//! or records waiting that never arrive), and consumer errors that leave it unusable.

use std::time::Duration;

use tracing::warn;

use super::RunStats;
use crate::{KafkaConfig, Result, RuntimeError};

/// Notices a stalled consumer: nothing consumed for `rejoin_if_unassigned_ms` while it holds
/// no partition, or while an assigned partition (not set aside on purpose) has records beyond
/// its position.
pub(crate) struct Starvation {
    limit: Option<Duration>,
    idle_since: Option<std::time::Instant>,
    last_consumed: u64,
}

impl Starvation {
    pub(crate) fn new(kafka: &KafkaConfig) -> Starvation {
        let limit = (kafka.rejoin_if_unassigned_ms > 0)
            .then(|| Duration::from_millis(kafka.rejoin_if_unassigned_ms));
        Starvation {
            limit,
            idle_since: None,
            last_consumed: 0,
        }
    }

    /// An error once the consumer has been stalled for the limit.
    pub(crate) fn check<C, X>(
        &mut self,
        consumer: &C,
        stats: &RunStats,
        set_aside: impl Fn(&str, i32) -> bool,
    ) -> Result<()>
    where
        C: rdkafka::consumer::Consumer<X>,
        X: rdkafka::consumer::ConsumerContext,
    {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        if stats.consumed != self.last_consumed {
            self.last_consumed = stats.consumed;
            self.idle_since = None;
            return Ok(());
        }
        let since = *self.idle_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < limit {
            return Ok(());
        }
        // Idle for the whole limit: stalled, or simply nothing to do? Ask the broker once.
        self.idle_since = Some(std::time::Instant::now());
        let stalled = stalled_partition(consumer, set_aside)?;
        match stalled {
            None => Ok(()),
            Some(reason) => Err(RuntimeError::Fatal(format!(
                "nothing consumed for {limit:?} although {reason}; exiting so that a restart rejoins the group"
            ))),
        }
    }
}

/// Why the consumer looks stalled, if it does.
fn stalled_partition<C, X>(
    consumer: &C,
    set_aside: impl Fn(&str, i32) -> bool,
) -> Result<Option<String>>
where
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    let timeout = Duration::from_secs(2);
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Some("no partition is assigned".into()));
    }
    let positions = consumer.position()?;
    let committed = consumer.committed(timeout)?;
    for element in positions.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        if set_aside(topic, partition) {
            continue;
        }
        let position = match element.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => committed
                .find_partition(topic, partition)
                .and_then(|c| c.offset().to_raw()),
        };
        let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        if let Some(position) = position.filter(|p| *p >= 0 && *p < high) {
            return Ok(Some(format!(
                "{topic}[{partition}] has records {position}..{high} waiting"
            )));
        }
    }
    Ok(None)
}

/// What a consumer error means for a runner. A fatal one (e.g. fenced as a static member by a
/// newer instance) leaves the consumer unusable. Losing every broker connection stops the
/// runner too: a broker that comes back may have restarted and lost what it acknowledged last
/// (noida-db does), and then this process's positions and producer state no longer match it —
/// a fresh process starts from the committed offsets, which the broker kept consistent with its
/// records. Anything else is logged and the loop goes on.
pub(crate) fn on_consumer_error<C, X>(
    e: rdkafka::error::KafkaError,
    consumer: &C,
    stage: &str,
) -> Result<()>
where
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    if crate::fatal::is_fatal(&e) {
        return Err(crate::fatal::explain(e, consumer.client()));
    }
    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
        return Err(RuntimeError::BrokerLost(e.to_string()));
    }
    warn!(stage, error = %e, "consumer error");
    Ok(())
}
