//! The loop both delivery modes share: receive a record, reset its partition's state if the
//! runner (re)started reading it, process it (retrying, or dead-lettering), hand its outputs to
//! the mode, and commit when the batch is due — with idle pausing, progress logs and the
//! starvation check. A [`Mode`] supplies what differs: how outputs are produced, how a batch is
//! committed, and which partitions must be read again after an abort.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, ConsumerContext, MessageStream, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use super::health::{Starvation, on_consumer_error};
use super::idle::{self, IdleFetch};
use super::parking::Parking;
use super::position::{Partition, seek};
use super::process::{DeadLetters, Handled, process_all};
use super::{Carried, Output, Processor, Rebalances, RunStats, RunnerSpec, Started};
use crate::{KafkaConfig, Result};

/// Where a record's outputs come from: its partition and offset.
pub(crate) struct Source<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Its headers carried on to the outputs (and its span, which ends with the hand-over).
    pub(crate) carried: Carried,
}

/// A consumer context that notes the partitions each rebalance assigns.
pub(crate) trait NotesAssignments: ConsumerContext + 'static {
    fn rebalances(&self) -> &Rebalances;
}

impl NotesAssignments for Rebalances {
    fn rebalances(&self) -> &Rebalances {
        self
    }
}

/// What a delivery mode does at each step of the loop.
#[async_trait]
pub(crate) trait Mode: Send {
    type Context: NotesAssignments;

    /// After every receive (which runs the consumer's rebalance callbacks): the partitions to
    /// read again from these offsets, because a batch of theirs was aborted meanwhile.
    fn after_receive(&mut self, stats: &mut RunStats) -> Result<HashMap<Partition, i64>>;

    /// Hands on one processed record's outputs; the record counts as done in the open batch.
    async fn emit(&mut self, source: Source<'_>, outputs: Vec<Output>) -> Result<()>;

    /// Commits the open batch (`last`: the runner is stopping). Returns the partitions to read
    /// again, from these offsets, if the batch was aborted instead.
    async fn commit(
        &mut self,
        consumer: &StreamConsumer<Self::Context>,
        last: bool,
        stats: &mut RunStats,
    ) -> Result<HashMap<Partition, i64>>;
}

/// The stage's group consumer, with `context`, subscribed to its input topics.
pub(crate) fn subscribed<C: NotesAssignments>(
    kafka: &KafkaConfig,
    spec: &RunnerSpec,
    context: C,
) -> Result<StreamConsumer<C>> {
    let consumer: StreamConsumer<C> = kafka.consumer(&spec.group).create_with_context(context)?;
    let topics: Vec<&str> = spec.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Runs the loop until `shutdown` (then commits the open batch) or an error; its counters.
pub(crate) async fn run_loop<M: Mode, P: Processor>(
    kafka: &KafkaConfig,
    spec: &RunnerSpec,
    processor: &mut P,
    mode: &mut M,
    consumer: &StreamConsumer<M::Context>,
    shutdown: &CancellationToken,
) -> Result<RunStats> {
    let mut counted = RunStats::default();
    let stats = &mut counted;
    let mut progress = Progress::new(&spec.name);
    let meters = herald_telemetry::metrics::StageMeters::new(&spec.name);
    let mut clock = BatchClock::new(kafka);
    let mut starvation = Starvation::new(kafka);
    let dead = DeadLetters::new(kafka, spec);
    // One stream for the runner's life: its waker slot stays registered between receives.
    let mut stream = consumer.stream();
    let mut reading = Reading {
        started: Started::default(),
        idling: IdleFetch::new(
            kafka.idle_pause_ms,
            kafka.idle_pause_max_ms,
            kafka.commit_interval_ms,
            Instant::now(),
        ),
        parking: Parking::default(),
    };
    loop {
        let received = received(tokio::select! {
            () = shutdown.cancelled() => break,
            r = tokio::time::timeout(reading.wait(&clock), stream.next()) => r,
        });
        reading.parking.resume_due(consumer, Instant::now())?;
        let (rewound, _) = reading.rebalanced(mode, consumer, stats)?;
        let mut messages = Vec::new();
        match received {
            // From a partition just rewound: the seek delivers it again.
            Ok(Ok(message))
                if rewound.contains(&(message.topic().to_owned(), message.partition())) => {}
            Ok(Ok(message)) => {
                messages.push(message);
                gather(
                    consumer,
                    &mut stream,
                    &mut messages,
                    clock.room(stats),
                    &spec.name,
                )?;
                // A rebalance served while gathering came after every record gathered.
                if reading.rebalanced(mode, consumer, stats)?.1 {
                    reading.read_again(consumer, &mut messages, stats)?;
                }
                // Fetched before the partition was set aside: read again when it resumes.
                messages.retain(|m| !reading.parking.holds(m.topic(), m.partition()));
            }
            Ok(Err(e)) => on_consumer_error(e, consumer, &spec.name)?,
            Err(_) => {} // nothing arrived in time
        }
        if !messages.is_empty() {
            reading.idle(IdleFetch::on_record, consumer, stats);
            let carried: Vec<Carried> = messages
                .iter()
                .map(|m| Carried::of(&spec.name, m))
                .collect();
            let began = Instant::now();
            let handled = process_all(
                processor,
                &mut reading.started,
                &messages,
                &carried,
                &dead,
                shutdown,
                stats,
            )
            .await?;
            meters.batch_took(began.elapsed());
            let Some(handled) = handled else { break };
            for ((message, handled), carried) in messages.iter().zip(handled).zip(carried) {
                let outputs = match handled {
                    Handled::Done(outputs) => outputs,
                    Handled::NotDue(wait) => {
                        let partition = (message.topic().to_owned(), message.partition());
                        let (offset, now) = (message.offset(), Instant::now());
                        reading
                            .parking
                            .park(consumer, partition, offset, wait, now, stats)?;
                        continue;
                    }
                    Handled::Skipped => continue,
                };
                let source = Source {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                    carried,
                };
                mode.emit(source, outputs).await?;
                stats.consumed += 1;
            }
        }
        if clock.due(stats) {
            let began = Instant::now();
            let aborted = mode.commit(consumer, false, stats).await?;
            meters.commit_took(began.elapsed());
            reading.rewind(consumer, aborted, stats)?;
            clock.restart(stats);
        }
        reading.idle(IdleFetch::on_tick, consumer, stats);
        progress.tick(stats);
        meters.publish(stats.counts());
        let parking = &reading.parking;
        starvation.check(consumer, stats, |t, p| parking.holds(t, p))?;
    }
    let aborted = mode.commit(consumer, true, stats).await?;
    reading.rewind(consumer, aborted, stats)?;
    Ok(counted)
}

/// Adds to `messages` what the consumer has already fetched, without waiting, until it holds
/// `room` or an event (a rebalance) is served.
fn gather<'c, C: NotesAssignments>(
    consumer: &StreamConsumer<C>,
    stream: &mut MessageStream<'c, C>,
    messages: &mut Vec<BorrowedMessage<'c>>,
    room: usize,
    stage: &str,
) -> Result<()> {
    while messages.len() < room {
        match stream.next().now_or_never().flatten() {
            Some(Ok(message)) => messages.push(message),
            Some(Err(e)) => return on_consumer_error(e, consumer, stage),
            None => break,
        }
    }
    Ok(())
}

/// What one wait for a record gave: the stream never ends, so its end counts as a timeout.
fn received<T>(
    r: std::result::Result<Option<T>, tokio::time::error::Elapsed>,
) -> std::result::Result<T, ()> {
    r.ok().flatten().ok_or(())
}

/// Where the runner reads: which partitions' processor state is current, and the idle pausing.
struct Reading {
    started: Started,
    idling: IdleFetch,
    /// Partitions set aside until a record of theirs is due.
    parking: Parking,
}

impl Reading {
    /// How long to wait for the next record: until the batch is due, the idle pausing changes
    /// or a partition set aside is due, whichever comes first.
    fn wait(&self, clock: &BatchClock) -> Duration {
        let wait = clock.wait(&self.idling);
        self.parking.next_due().map_or(wait, |due| {
            wait.min(due.saturating_duration_since(Instant::now()))
        })
    }

    /// Applies what the idle pausing decides now, leaving partitions set aside paused.
    fn idle<C: NotesAssignments>(
        &mut self,
        decide: impl FnOnce(&mut IdleFetch, Instant) -> idle::Action,
        consumer: &StreamConsumer<C>,
        stats: &mut RunStats,
    ) {
        let action = decide(&mut self.idling, Instant::now());
        let parking = &self.parking;
        idle::apply(action, consumer, |t, p| parking.holds(t, p), stats);
    }

    /// After receiving (which runs the consumer's rebalance callbacks): forgets the state of
    /// partitions newly assigned, and reads those whose batch was aborted meanwhile again.
    /// Returns the partitions rewound, and whether anything happened (assigned or rewound).
    fn rebalanced<M: Mode>(
        &mut self,
        mode: &mut M,
        consumer: &StreamConsumer<M::Context>,
        stats: &mut RunStats,
    ) -> Result<(Vec<Partition>, bool)> {
        let owed = mode.after_receive(stats)?;
        let assigned = consumer.context().rebalances().take_assigned();
        if !assigned.is_empty() {
            self.idle(IdleFetch::wake, consumer, stats);
        }
        for partition in &assigned {
            self.started.forget(partition);
        }
        let rewound: Vec<Partition> = owed.keys().cloned().collect();
        let happened = !rewound.is_empty() || !assigned.is_empty();
        self.rewind(consumer, owed, stats)?;
        Ok((rewound, happened))
    }

    /// After a rebalance while records were being gathered (so before it): gives them up and
    /// seeks each partition still owned back to the first of them, to read them again after
    /// the rebalance — a partition lost, reassigned or rewound must not be processed from
    /// records fetched before. Rare, so simply all of them.
    fn read_again<C: NotesAssignments>(
        &mut self,
        consumer: &StreamConsumer<C>,
        messages: &mut Vec<BorrowedMessage<'_>>,
        stats: &mut RunStats,
    ) -> Result<()> {
        let mut first: HashMap<Partition, i64> = HashMap::new();
        for m in messages.drain(..) {
            let offset = first
                .entry((m.topic().to_owned(), m.partition()))
                .or_insert(m.offset());
            *offset = (*offset).min(m.offset());
        }
        self.rewind(consumer, first, stats)
    }

    /// Reads `offsets`' partitions again from there: their processor state is reset before
    /// their next record, and they fetch at once (not left paused while idle).
    fn rewind<C: NotesAssignments>(
        &mut self,
        consumer: &StreamConsumer<C>,
        offsets: HashMap<Partition, i64>,
        stats: &mut RunStats,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.idle(IdleFetch::wake, consumer, stats);
        for partition in offsets.keys() {
            self.started.forget(partition);
        }
        stats.rewinds += seek(consumer, offsets)?;
        Ok(())
    }
}

/// When the open batch is due: `commit_interval_ms` after it began, or `max_batch_records`
/// input records into it, whichever comes first.
pub(crate) struct BatchClock {
    interval: Duration,
    max_records: u64,
    handover: u64,
    began: std::time::Instant,
    began_at_record: u64,
}

impl BatchClock {
    pub(crate) fn new(kafka: &KafkaConfig) -> BatchClock {
        BatchClock {
            interval: Duration::from_millis(kafka.commit_interval_ms.max(1)),
            max_records: kafka.max_batch_records,
            handover: kafka.max_handover_records.max(1),
            began: std::time::Instant::now(),
            began_at_record: 0,
        }
    }

    /// How long to wait for the next record before checking again: the batch interval, or
    /// less if the idle pausing (`idle`) changes sooner.
    pub(crate) fn wait(&self, idle: &idle::IdleFetch) -> Duration {
        idle.next_change(std::time::Instant::now())
            .map_or(self.interval, |d| d.min(self.interval))
    }

    /// How many records to hand over now: what the open batch still takes (at least one), at
    /// most `max_handover_records`.
    pub(crate) fn room(&self, stats: &RunStats) -> usize {
        let taken = stats.consumed - self.began_at_record;
        let room = self
            .max_records
            .saturating_sub(taken)
            .max(1)
            .min(self.handover);
        usize::try_from(room).unwrap_or(usize::MAX)
    }

    pub(crate) fn due(&self, stats: &RunStats) -> bool {
        self.began.elapsed() >= self.interval
            || stats.consumed - self.began_at_record >= self.max_records
    }

    /// A new batch begins now.
    pub(crate) fn restart(&mut self, stats: &RunStats) {
        self.began = std::time::Instant::now();
        self.began_at_record = stats.consumed;
    }
}

/// Logs a stage's counters every `PROGRESS_EVERY` when they changed, so an operator (or a
/// `make run` user) sees each stage at work without a line per record.
pub(crate) struct Progress {
    stage: String,
    last: RunStats,
    at: std::time::Instant,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub(crate) fn new(stage: &str) -> Progress {
        Progress {
            stage: stage.to_owned(),
            last: RunStats::default(),
            at: std::time::Instant::now(),
        }
    }

    pub(crate) fn tick(&mut self, stats: &RunStats) {
        if self.at.elapsed() < PROGRESS_EVERY || *stats == self.last {
            return;
        }
        tracing::info!(
            stage = %self.stage,
            consumed = stats.consumed,
            new = stats.consumed - self.last.consumed,
            produced = stats.produced,
            dead_letters = stats.dead_letters,
            retries = stats.retries,
            aborts = stats.aborts,
            "progress"
        );
        self.last = *stats;
        self.at = std::time::Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_over_is_what_the_batch_still_takes_at_most_its_cap() {
        let kafka = KafkaConfig {
            max_batch_records: 1_000,
            max_handover_records: 250,
            ..KafkaConfig::default()
        };
        let clock = BatchClock::new(&kafka);
        let mut stats = RunStats::default();
        assert_eq!(clock.room(&stats), 250);
        stats.consumed = 900;
        assert_eq!(clock.room(&stats), 100);
        stats.consumed = 1_200;
        assert_eq!(clock.room(&stats), 1, "a full batch still takes one");
        let uncapped = BatchClock::new(&KafkaConfig {
            max_handover_records: 0,
            ..kafka
        });
        assert_eq!(
            uncapped.room(&RunStats::default()),
            1,
            "a zero cap hands over one"
        );
    }
}
