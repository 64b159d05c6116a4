//! Turning received records into outputs: reset the state of partitions the runner (re)started
//! reading, hand the records to [`Processor::process_batch`], and handle each error by its class
//! — a poison record becomes a dead letter, a retriable one is retried alone with capped
//! backoff within the retry budget (then dead-lettered), a fatal one stops the runner.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Carried, Input, Output, ProcessError, Processor, RunStats, RunnerSpec, Started};
use crate::{KafkaConfig, Result, RuntimeError};

/// Capped exponential backoff (100 ms doubling to 30 s) within the retry budget, shared by
/// processing a record and resetting a partition's state.
struct Retrying {
    backoff: Duration,
    first_failure: std::time::Instant,
    budget: Duration,
}

impl Retrying {
    fn new(budget: Duration) -> Retrying {
        Retrying {
            backoff: Duration::from_millis(100),
            first_failure: std::time::Instant::now(),
            budget,
        }
    }

    /// Whether the budget allows another attempt.
    fn within_budget(&self) -> bool {
        self.first_failure.elapsed() < self.budget
    }

    /// Counts a retry and waits out the backoff; false if shutdown was requested meanwhile.
    async fn wait(&mut self, shutdown: &CancellationToken, stats: &mut RunStats) -> bool {
        stats.retries += 1;
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(self.backoff) => {}
        }
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        true
    }
}

/// Resets the processor's state of `message`'s partition if the runner (re)started reading it.
/// `Ok(false)` means shutdown was requested while retrying.
async fn ensure_started<P: Processor>(
    processor: &mut P,
    started: &mut Started,
    message: &BorrowedMessage<'_>,
    dead: &DeadLetters,
    shutdown: &CancellationToken,
    stats: &mut RunStats,
) -> Result<bool> {
    if started.contains(message.topic(), message.partition()) {
        return Ok(true);
    }
    let partition = (message.topic().to_owned(), message.partition());
    let mut retrying = Retrying::new(dead.budget);
    loop {
        match processor.reset_partition(&partition.0, partition.1).await {
            Ok(()) => break,
            Err(ProcessError::Retry(reason)) if retrying.within_budget() => {
                warn!(topic = %partition.0, partition = partition.1, %reason,
                      backoff = ?retrying.backoff, "retrying the reset of a partition's state");
                if !retrying.wait(shutdown, stats).await {
                    return Ok(false);
                }
            }
            Err(e) => {
                return Err(RuntimeError::Fatal(format!(
                    "resetting the state of {}[{}]: {e}",
                    partition.0, partition.1
                )));
            }
        }
    }
    stats.resets += 1;
    started.0.push(partition);
    Ok(true)
}

/// Where a runner sends what it cannot process, and how long it retries.
pub(crate) struct DeadLetters {
    topic: String,
    stage: String,
    budget: Duration,
}

impl DeadLetters {
    pub(crate) fn new(kafka: &KafkaConfig, spec: &RunnerSpec) -> DeadLetters {
        DeadLetters {
            topic: crate::topics::Topics::new(&kafka.topic_prefix).dead_letter(),
            stage: spec.name.clone(),
            budget: Duration::from_millis(kafka.retry_budget_ms),
        }
    }

    /// The dead-letter record for `message`, which failed `attempts` times with `error`.
    fn output(&self, message: &BorrowedMessage<'_>, error: &str, attempts: u32) -> Result<Output> {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| herald_schemas::RecordHeader {
                        key: h.key.to_owned(),
                        value: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let failed = Failed {
            stage: &self.stage,
            error,
            attempts,
        };
        dead_letter(&self.topic, &input(message, None), headers, &failed)
            .map_err(|e| RuntimeError::Fatal(format!("encoding a dead letter failed: {e}")))
    }

    /// Counts and logs a dead letter, and makes it the record's only output.
    fn send(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
        attempts: u32,
        stats: &mut RunStats,
    ) -> Result<Vec<Output>> {
        warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(),
              %reason, "sending the record to the dead-letter topic");
        stats.dead_letters += 1;
        Ok(vec![self.output(message, reason, attempts)?])
    }
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct Failed<'a> {
    /// The stage that gave up on it.
    pub stage: &'a str,
    /// The last error.
    pub error: &'a str,
    /// How many times it was tried.
    pub attempts: u32,
}

/// The dead-letter record (for topic `topic`) of `input`, carrying its `headers`: the record
/// whole, where it came from, and why it failed. Stamped with the input's time, so a replay
/// writes the same record. A stage that gives up on a record itself (a delivery whose retries
/// are spent) emits this as one of its outputs.
pub fn dead_letter(
    topic: &str,
    input: &Input<'_>,
    headers: Vec<herald_schemas::RecordHeader>,
    failed: &Failed<'_>,
) -> std::result::Result<Output, herald_schemas::codec::SchemaError> {
    let letter = herald_schemas::DeadLetter {
        source_topic: input.topic.to_owned(),
        source_partition: input.partition,
        source_offset: input.offset,
        source_timestamp_ms: input.timestamp_ms,
        stage: failed.stage.to_owned(),
        error: failed.error.to_owned(),
        attempts: i32::try_from(failed.attempts).unwrap_or(i32::MAX),
        key: input.key.map(<[u8]>::to_vec),
        value: input.payload.to_vec(),
        headers,
        at_ms: input.timestamp_ms,
    };
    Ok(Output {
        topic: topic.to_owned(),
        key: String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned(),
        payload: herald_schemas::codec::encode(&letter)?,
        partition: None,
    })
}

fn input<'a>(message: &'a BorrowedMessage<'_>, trace: Option<&'a str>) -> Input<'a> {
    Input {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload().unwrap_or_default(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
        trace,
    }
}

/// What became of one received record.
#[derive(Debug)]
pub(crate) enum Handled {
    /// Processed (or dead-lettered): its outputs.
    Done(Vec<Output>),
    /// Not due for this long: its partition is set aside, to be read again from this record.
    NotDue(Duration),
    /// A later record of a partition set aside: read again when the partition is.
    Skipped,
}

/// Runs the processor on `messages` (in the order received; each partition's in offset order),
/// resetting the state of partitions the runner (re)started reading first. Returns what became
/// of each record, in the same order — for a poison record, or one still failing when the
/// retry budget is spent, its dead letter. `Ok(None)` means shutdown was requested meanwhile.
pub(crate) async fn process_all<P: Processor>(
    processor: &mut P,
    started: &mut Started,
    messages: &[BorrowedMessage<'_>],
    carried: &[Carried],
    dead: &DeadLetters,
    shutdown: &CancellationToken,
    stats: &mut RunStats,
) -> Result<Option<Vec<Handled>>> {
    for message in messages {
        if !ensure_started(processor, started, message, dead, shutdown, stats).await? {
            return Ok(None);
        }
    }
    let inputs: Vec<Input<'_>> = messages
        .iter()
        .zip(carried)
        .map(|(m, c)| input(m, c.trace.as_deref()))
        .collect();
    let mut handled: Vec<Option<Handled>> =
        std::iter::repeat_with(|| None).take(inputs.len()).collect();
    let mut pending: Vec<usize> = (0..inputs.len()).collect();
    while !pending.is_empty() {
        let round: Vec<Input<'_>> = pending.iter().map(|&i| inputs[i]).collect();
        let results = processor.process_batch(&round).await;
        if results.is_empty() || results.len() > round.len() {
            return Err(RuntimeError::Fatal(format!(
                "the processor returned {} results for {} records",
                results.len(),
                round.len()
            )));
        }
        let mut taken = 0;
        for result in results {
            let at = pending[taken];
            taken += 1;
            let message = &messages[at];
            let failed = result.is_err();
            let outcome = match result {
                Ok(produced) => Handled::Done(produced),
                Err(ProcessError::Fatal(reason)) => return Err(RuntimeError::Fatal(reason)),
                Err(ProcessError::Poison(reason)) => {
                    Handled::Done(dead.send(message, &reason, 1, stats)?)
                }
                Err(ProcessError::NotDue(wait)) => Handled::NotDue(wait),
                Err(ProcessError::Retry(reason)) => {
                    let retried = retry(
                        processor,
                        message,
                        &inputs[at],
                        reason,
                        dead,
                        shutdown,
                        stats,
                    );
                    match retried.await? {
                        Some(outcome) => outcome,
                        None => return Ok(None),
                    }
                }
            };
            if matches!(outcome, Handled::NotDue(_)) {
                // The partition's later records wait with it, in order.
                for &later in &pending[taken..] {
                    if same_partition(&messages[later], message) {
                        handled[later] = Some(Handled::Skipped);
                    }
                }
            }
            handled[at] = Some(outcome);
            if failed {
                break;
            }
        }
        pending = pending[taken..]
            .iter()
            .copied()
            .filter(|&i| handled[i].is_none())
            .collect();
    }
    Ok(Some(
        handled
            .into_iter()
            .map(|h| h.unwrap_or(Handled::Skipped))
            .collect(),
    ))
}

fn same_partition(a: &BorrowedMessage<'_>, b: &BorrowedMessage<'_>) -> bool {
    a.partition() == b.partition() && a.topic() == b.topic()
}

/// Processes one record that just failed with a retriable error again, alone, with capped
/// exponential backoff, until it succeeds, fails otherwise, or the retry budget is spent (then
/// it is dead-lettered). `Ok(None)` means shutdown was requested while waiting.
async fn retry<P: Processor>(
    processor: &mut P,
    message: &BorrowedMessage<'_>,
    input: &Input<'_>,
    first_reason: String,
    dead: &DeadLetters,
    shutdown: &CancellationToken,
    stats: &mut RunStats,
) -> Result<Option<Handled>> {
    let mut retrying = Retrying::new(dead.budget);
    let mut attempts = 1u32;
    let mut reason = first_reason;
    loop {
        if !retrying.within_budget() {
            let reason = format!(
                "still failing after {attempts} attempts over {:?}: {reason}",
                retrying.first_failure.elapsed()
            );
            return Ok(Some(Handled::Done(
                dead.send(message, &reason, attempts, stats)?,
            )));
        }
        warn!(topic = input.topic, offset = input.offset, %reason,
              backoff = ?retrying.backoff, "retrying");
        if !retrying.wait(shutdown, stats).await {
            return Ok(None);
        }
        attempts += 1;
        match processor.process(input).await {
            Ok(outputs) => return Ok(Some(Handled::Done(outputs))),
            Err(ProcessError::Poison(reason)) => {
                return Ok(Some(Handled::Done(
                    dead.send(message, &reason, attempts, stats)?,
                )));
            }
            Err(ProcessError::NotDue(wait)) => return Ok(Some(Handled::NotDue(wait))),
            Err(ProcessError::Retry(again)) => reason = again,
            Err(ProcessError::Fatal(reason)) => return Err(RuntimeError::Fatal(reason)),
        }
    }
}
