//! Long polling done by the client, for brokers that answer an empty fetch at once.
//!
//! A Kafka broker holds a fetch that finds no record for up to `fetch.wait.max.ms`, so an idle
//! consumer costs a few requests a second. noida-db (the local default broker) answers it
//! immediately, whatever the wait and `fetch.min.bytes`, and librdkafka fetches again at once:
//! every idle consumer then spins, costing ~0.4 of a core in the client and more in the broker
//! (BENCHMARKS.md). With `kafka.idle_pause_ms` set, a runner that has received nothing for that
//! long (and for two commit intervals) pauses its partitions for that long, listens for
//! [`LISTEN`], pauses again, and so on until a record arrives. A pause lasts `idle_pause_ms`,
//! or a quarter of the time the runner has been idle if that is longer, up to
//! `kafka.idle_pause_max_ms`: a runner idle for long (another channel's, the bulk lane's)
//! fetches a few times a second at most, while one in a flow whose records come once per
//! upstream commit (gaps of a few hundred milliseconds) keeps the short pause. The price is
//! latency: the first record after a quiet spell waits up to the current pause more — at most a
//! quarter of the spell. Pausing is safe at any point: librdkafka resumes a paused partition at
//! the position after the last record the application consumed.
//!
//! [`IdleFetch`] is the pure state machine (time is passed in); the loops apply its
//! [`Action`]s to their consumer.

use std::time::{Duration, Instant};

/// How long a runner fetches between two idle pauses.
pub(crate) const LISTEN: Duration = Duration::from_millis(10);

/// What the runner must do to its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Nothing,
    /// Pause every assigned partition.
    Pause,
    /// Resume every assigned partition.
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Fetching; the last record (or wake-up) was at this time.
    Active { since: Instant },
    /// Partitions paused until this time.
    Paused { until: Instant },
    /// Fetching again until this time, after a pause.
    Listening { until: Instant },
}

/// Whether a runner's consumer is fetching, and when that changes.
#[derive(Debug)]
pub(crate) struct IdleFetch {
    /// `None`: never pause (a broker that holds empty fetches).
    pause: Option<Duration>,
    /// The longest pause.
    longest: Duration,
    /// The last record (or wake-up): pauses grow with the time since.
    active_at: Instant,
    /// How long without a record before the first pause.
    quiet: Duration,
    state: State,
}

impl IdleFetch {
    /// `pause_ms` 0 turns pausing off. The first pause comes after `pause_ms` without a record,
    /// or two of the upstream's commit intervals (`commit_interval_ms`) if that is longer: an
    /// exactly-once upstream makes its records visible once per commit, so a stage in a steady
    /// flow sees nothing for about one interval at a time and must not pause in between. A
    /// pause lasts a quarter of the time idle if that is more than `pause_ms`, up to
    /// `longest_ms`.
    pub(crate) fn new(
        pause_ms: u64,
        longest_ms: u64,
        commit_interval_ms: u64,
        now: Instant,
    ) -> IdleFetch {
        let pause = (pause_ms > 0).then(|| Duration::from_millis(pause_ms));
        IdleFetch {
            pause,
            longest: Duration::from_millis(longest_ms.max(pause_ms)),
            active_at: now,
            quiet: Duration::from_millis(pause_ms.max(commit_interval_ms.saturating_mul(2))),
            state: State::Active { since: now },
        }
    }

    /// A record arrived: fetch on.
    pub(crate) fn on_record(&mut self, now: Instant) -> Action {
        self.wake(now)
    }

    /// Something other than a record needs the partitions fetching (a rebalance, a rewind).
    pub(crate) fn wake(&mut self, now: Instant) -> Action {
        self.active_at = now;
        let was = std::mem::replace(&mut self.state, State::Active { since: now });
        match was {
            State::Paused { .. } => Action::Resume,
            State::Active { .. } | State::Listening { .. } => Action::Nothing,
        }
    }

    /// Moves on if a period ended by `now`.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Action {
        let Some(pause) = self.pause else {
            return Action::Nothing;
        };
        match self.state {
            State::Active { since } if now.saturating_duration_since(since) >= self.quiet => {
                self.state = State::Paused {
                    until: now + self.pause_at(pause, now),
                };
                Action::Pause
            }
            State::Listening { until } if now >= until => {
                self.state = State::Paused {
                    until: now + self.pause_at(pause, now),
                };
                Action::Pause
            }
            State::Paused { until } if now >= until => {
                self.state = State::Listening {
                    until: now + LISTEN,
                };
                Action::Resume
            }
            _ => Action::Nothing,
        }
    }

    /// A pause starting at `now`: a quarter of the time idle, at least `pause`, at most the
    /// longest.
    fn pause_at(&self, pause: Duration, now: Instant) -> Duration {
        let idle = now.saturating_duration_since(self.active_at);
        (idle / 4).clamp(pause, self.longest)
    }

    /// How long from `now` until [`IdleFetch::on_tick`] may change something (`None`: never).
    pub(crate) fn next_change(&self, now: Instant) -> Option<Duration> {
        self.pause?;
        let at = match self.state {
            State::Active { since } => since + self.quiet,
            State::Paused { until } | State::Listening { until } => until,
        };
        Some(at.saturating_duration_since(now))
    }
}

/// How long the request that wakes librdkafka's fetcher after a resume may take.
const WAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// Pauses or resumes every partition `consumer` is assigned. A consumer error here is logged
/// and ignored: at worst the consumer keeps fetching (as without pausing), or stays paused
/// until the next period resumes it.
///
/// librdkafka does not wake the broker thread when a partition is resumed (it notices at its
/// next wake-up, up to a second later: confluent-kafka-go issue 630), so a resume is followed by
/// a watermark query of the first assigned partition, a request that thread serves at once (one
/// round trip, blocking this thread). With one broker, as on the local brokers that need
/// pausing, that wakes every partition's fetcher.
pub(crate) fn apply<C, X>(
    action: Action,
    consumer: &C,
    keep_paused: impl Fn(&str, i32) -> bool,
    stats: &mut super::RunStats,
) where
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    match action {
        Action::Nothing => return,
        Action::Pause => stats.idle_pauses += 1,
        Action::Resume => {}
    }
    let result = consumer.assignment().and_then(|assigned| {
        if action == Action::Pause {
            return consumer.pause(&assigned);
        }
        let mut resumed = rdkafka::TopicPartitionList::new();
        for e in assigned.elements() {
            if !keep_paused(e.topic(), e.partition()) {
                resumed.add_partition(e.topic(), e.partition());
            }
        }
        resume_and_wake(consumer, &resumed)
    });
    if let Err(e) = result {
        tracing::debug!(error = %e, ?action, "idle pause or resume failed");
    }
}

/// Resumes `partitions` and wakes librdkafka's fetcher (see [`apply`]) with a watermark query
/// of the first of them; nothing to do for an empty list. The wake-up is best effort (logged):
/// without it the fetcher still resumes, later.
pub(crate) fn resume_and_wake<C, X>(
    consumer: &C,
    partitions: &rdkafka::TopicPartitionList,
) -> rdkafka::error::KafkaResult<()>
where
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
{
    let Some(first) = partitions
        .elements()
        .first()
        .map(|e| (e.topic().to_owned(), e.partition()))
    else {
        return Ok(());
    };
    consumer.resume(partitions)?;
    let wake = || consumer.fetch_watermarks(&first.0, first.1, WAKE_TIMEOUT);
    if let Err(e) = off_the_runtime(wake) {
        tracing::debug!(error = %e, "waking the fetcher after a resume failed");
    }
    Ok(())
}

/// Runs a blocking librdkafka call without holding up the other tasks of this runtime thread:
/// on a multi-threaded runtime they move to another thread meanwhile. (Each idle runner of a
/// process wakes its fetcher about nine times a second; made in place, those round trips held
/// up the busy runner beside them — BENCHMARKS.md, "Per hop".)
fn off_the_runtime<T>(call: impl FnOnce() -> T) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(call)
    } else {
        call()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Pausing for `pause_ms` (never longer), with a commit interval short enough not to
    /// matter.
    fn idle(pause_ms: u64) -> (IdleFetch, Instant) {
        let t0 = Instant::now();
        (IdleFetch::new(pause_ms, pause_ms, 10, t0), t0)
    }

    #[test]
    fn the_first_pause_waits_two_upstream_commit_intervals() {
        let t0 = Instant::now();
        let mut f = IdleFetch::new(100, 100, 150, t0);
        assert_eq!(f.on_tick(t0 + 299 * MS), Action::Nothing);
        assert_eq!(f.next_change(t0 + 299 * MS), Some(MS));
        assert_eq!(f.on_tick(t0 + 300 * MS), Action::Pause);
        // The pause itself is idle_pause_ms.
        assert_eq!(f.next_change(t0 + 300 * MS), Some(100 * MS));
    }

    #[test]
    fn off_never_pauses() {
        let (mut f, t0) = idle(0);
        assert_eq!(f.on_tick(t0 + Duration::from_secs(3600)), Action::Nothing);
        assert_eq!(f.next_change(t0), None);
    }

    #[test]
    fn active_pauses_once_quiet_for_the_pause() {
        let (mut f, t0) = idle(100);
        assert_eq!(f.on_tick(t0 + 99 * MS), Action::Nothing);
        assert_eq!(f.next_change(t0 + 99 * MS), Some(MS));
        assert_eq!(f.on_tick(t0 + 100 * MS), Action::Pause);
        assert_eq!(f.next_change(t0 + 100 * MS), Some(100 * MS));
    }

    #[test]
    fn a_record_restarts_the_quiet_period() {
        let (mut f, t0) = idle(100);
        assert_eq!(f.on_record(t0 + 60 * MS), Action::Nothing);
        assert_eq!(f.on_tick(t0 + 150 * MS), Action::Nothing);
        assert_eq!(f.on_tick(t0 + 160 * MS), Action::Pause);
    }

    #[test]
    fn paused_listens_when_the_pause_ends() {
        let (mut f, t0) = idle(100);
        f.on_tick(t0 + 100 * MS);
        assert_eq!(f.on_tick(t0 + 199 * MS), Action::Nothing);
        assert_eq!(f.on_tick(t0 + 200 * MS), Action::Resume);
        assert_eq!(f.next_change(t0 + 200 * MS), Some(LISTEN));
    }

    #[test]
    fn listening_pauses_again_when_nothing_came() {
        let (mut f, t0) = idle(100);
        f.on_tick(t0 + 100 * MS);
        f.on_tick(t0 + 200 * MS);
        assert_eq!(f.on_tick(t0 + 200 * MS + LISTEN - MS), Action::Nothing);
        assert_eq!(f.on_tick(t0 + 200 * MS + LISTEN), Action::Pause);
        assert_eq!(f.next_change(t0 + 200 * MS + LISTEN), Some(100 * MS));
    }

    #[test]
    fn a_record_while_listening_makes_it_active() {
        let (mut f, t0) = idle(100);
        f.on_tick(t0 + 100 * MS);
        f.on_tick(t0 + 200 * MS);
        assert_eq!(f.on_record(t0 + 205 * MS), Action::Nothing);
        // Active again: quiet for a whole pause before the next one.
        assert_eq!(f.on_tick(t0 + 210 * MS + LISTEN), Action::Nothing);
        assert_eq!(f.on_tick(t0 + 305 * MS), Action::Pause);
    }

    #[test]
    fn waking_a_paused_consumer_resumes_it() {
        let (mut f, t0) = idle(100);
        f.on_tick(t0 + 100 * MS);
        assert_eq!(f.wake(t0 + 150 * MS), Action::Resume);
        assert_eq!(f.on_tick(t0 + 200 * MS), Action::Nothing);
        assert_eq!(f.on_tick(t0 + 250 * MS), Action::Pause);
    }

    /// Ticks through pauses and listens until `end`; the pauses it took.
    fn pauses_until(f: &mut IdleFetch, mut now: Instant, end: Instant) -> Vec<Duration> {
        let mut pauses = Vec::new();
        while now < end {
            if f.on_tick(now) == Action::Pause {
                pauses.push(f.next_change(now).unwrap());
            }
            now += f.next_change(now).unwrap();
        }
        pauses
    }

    #[test]
    fn a_runner_idle_for_long_pauses_for_a_quarter_of_its_idle_time_up_to_the_longest() {
        let t0 = Instant::now();
        let mut f = IdleFetch::new(100, 800, 10, t0);
        let pauses = pauses_until(&mut f, t0, t0 + Duration::from_secs(6));
        // Idle under 400 ms: the shortest pause; then a quarter of the time idle; then 800 ms.
        assert_eq!(pauses[..3], [100 * MS, 100 * MS, 100 * MS]);
        assert!(pauses[3] > 100 * MS && pauses[3] < 200 * MS, "{pauses:?}");
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses.last(), Some(&(800 * MS)));
        // Each pause at most a quarter of the idle time before it (or the shortest).
        let mut idle = Duration::ZERO;
        for p in &pauses {
            idle += *p + LISTEN;
            assert!(*p <= (idle / 4).max(100 * MS), "{pauses:?}");
        }
    }

    #[test]
    fn a_record_after_long_pauses_starts_again_from_the_shortest() {
        let t0 = Instant::now();
        let mut f = IdleFetch::new(100, 800, 10, t0);
        let long = t0 + Duration::from_secs(10);
        pauses_until(&mut f, t0, long);
        assert_eq!(f.on_record(long), Action::Resume);
        let pauses = pauses_until(&mut f, long, long + 300 * MS);
        assert_eq!(pauses, [100 * MS, 100 * MS]);
    }

    #[test]
    fn a_flow_with_gaps_of_a_commit_interval_keeps_the_shortest_pause() {
        // Records every 300 ms (an upstream committing every 100 ms, each commit ~200 ms).
        let t0 = Instant::now();
        let mut f = IdleFetch::new(100, 800, 100, t0);
        let mut now = t0;
        for _ in 0..20 {
            let next_record = now + 300 * MS;
            for p in pauses_until(&mut f, now, next_record) {
                assert_eq!(p, 100 * MS);
            }
            now = next_record;
            f.on_record(now);
        }
    }

    #[test]
    fn a_record_left_over_from_before_a_pause_resumes() {
        // librdkafka purges a paused partition's queue, but a record already handed over can
        // still be received after the pause call.
        let (mut f, t0) = idle(100);
        f.on_tick(t0 + 100 * MS);
        assert_eq!(f.on_record(t0 + 101 * MS), Action::Resume);
    }
}
