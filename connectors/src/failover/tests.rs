use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};

use herald_schemas::Channel;

use super::*;

/// A provider answering from a script (then `Delivered`), counting its calls.
struct Scripted {
    answers: Mutex<VecDeque<Outcome>>,
    calls: AtomicI64,
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Outcome>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into_iter().collect()),
            calls: AtomicI64::new(0),
        })
    }

    fn calls(&self) -> i64 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Connector for Scripted {
    async fn send(&self, _: &Dispatch) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self.answers.lock().expect("lock").pop_front();
        next.unwrap_or(Outcome::Delivered {
            provider_message_id: Some("m".into()),
        })
    }
}

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn guard(open_for_ms: u64) -> GuardConfig {
    GuardConfig {
        breaker: BreakerConfig {
            window: 4,
            min_calls: 2,
            failure_ratio: 1.0,
            open_for_ms,
        },
        ..GuardConfig::default()
    }
}

fn down(n: usize) -> Vec<Outcome> {
    vec![Outcome::retry("twilio answered 503"); n]
}

fn dispatch() -> Dispatch {
    let mut d = crate::sms::test_dispatch("+15550100000");
    d.channel = Channel::Sms;
    d
}

#[tokio::test]
async fn the_primary_is_used_while_its_circuit_is_closed() {
    let (primary, secondary) = (Scripted::new([]), Scripted::new([]));
    let clock = Arc::new(TestClock(AtomicI64::new(0)));
    let failover = Failover::new(
        vec![
            Guarded::new("twilio", primary.clone(), &guard(1_000)).expect("guard"),
            Guarded::new("vonage", secondary.clone(), &guard(1_000)).expect("guard"),
        ],
        clock,
    )
    .expect("failover");
    assert_eq!(
        failover.send(&dispatch()).await,
        Outcome::Delivered {
            provider_message_id: Some("twilio:m".into())
        }
    );
    assert_eq!((primary.calls(), secondary.calls()), (1, 0));
}

#[tokio::test]
async fn an_open_primary_fails_over_until_a_probe_closes_it() {
    let (primary, secondary) = (Scripted::new(down(2)), Scripted::new([]));
    let clock = Arc::new(TestClock(AtomicI64::new(0)));
    let failover = Failover::new(
        vec![
            Guarded::new("twilio", primary.clone(), &guard(1_000)).expect("guard"),
            Guarded::new("vonage", secondary.clone(), &guard(1_000)).expect("guard"),
        ],
        clock.clone(),
    )
    .expect("failover");
    // Two failures open the primary's circuit; the second says so.
    assert_eq!(
        failover.send(&dispatch()).await,
        Outcome::retry("twilio answered 503")
    );
    assert_eq!(
        failover.send(&dispatch()).await,
        Outcome::retry("twilio answered 503 (twilio's circuit opened: 2 of 2 calls failed)")
    );
    // While open, the secondary delivers and the primary is not called.
    for _ in 0..3 {
        assert_eq!(
            failover.send(&dispatch()).await,
            Outcome::Delivered {
                provider_message_id: Some("vonage:m".into())
            }
        );
    }
    assert_eq!((primary.calls(), secondary.calls()), (2, 3));
    // Past the cool-down one probe goes to the primary; it succeeds and closes the circuit.
    clock.0.store(1_000, Ordering::SeqCst);
    assert_eq!(
        failover.send(&dispatch()).await,
        Outcome::Delivered {
            provider_message_id: Some("twilio:m".into())
        }
    );
    assert_eq!((primary.calls(), secondary.calls()), (3, 3));
}

#[tokio::test]
async fn a_failed_probe_keeps_the_secondary_in_use() {
    let (primary, secondary) = (Scripted::new(down(3)), Scripted::new([]));
    let clock = Arc::new(TestClock(AtomicI64::new(0)));
    let failover = Failover::new(
        vec![
            Guarded::new("twilio", primary.clone(), &guard(1_000)).expect("guard"),
            Guarded::new("vonage", secondary.clone(), &guard(1_000)).expect("guard"),
        ],
        clock.clone(),
    )
    .expect("failover");
    failover.send(&dispatch()).await;
    failover.send(&dispatch()).await;
    clock.0.store(1_500, Ordering::SeqCst);
    assert_eq!(
        failover.send(&dispatch()).await,
        Outcome::retry("twilio answered 503 (twilio's circuit opened again: the probe failed)")
    );
    clock.0.store(2_000, Ordering::SeqCst);
    assert!(matches!(
        failover.send(&dispatch()).await,
        Outcome::Delivered { provider_message_id: Some(id) } if id == "vonage:m"
    ));
    assert_eq!(primary.calls(), 3);
}

#[tokio::test]
async fn with_every_circuit_open_the_delivery_waits_for_the_first_probe() {
    let only = Scripted::new(down(2));
    let clock = Arc::new(TestClock(AtomicI64::new(0)));
    let failover = Failover::new(
        vec![Guarded::new("twilio", only.clone(), &guard(5_000)).expect("guard")],
        clock.clone(),
    )
    .expect("failover");
    failover.send(&dispatch()).await;
    failover.send(&dispatch()).await;
    clock.0.store(1_000, Ordering::SeqCst);
    assert_eq!(
        failover.send(&dispatch()).await,
        Outcome::Retry {
            reason: "every provider's circuit is open (twilio: circuit open)".into(),
            after: Some(Duration::from_millis(4_000)),
        }
    );
    assert_eq!(only.calls(), 2);
}

#[tokio::test]
async fn refusals_of_a_message_do_not_open_the_circuit() {
    let refusals = [
        Outcome::InvalidToken("21211".into()),
        Outcome::Failed("21602".into()),
        Outcome::InvalidToken("21211".into()),
    ];
    let only = Scripted::new(refusals);
    let clock = Arc::new(TestClock(AtomicI64::new(0)));
    let failover = Failover::new(
        vec![Guarded::new("twilio", only.clone(), &guard(5_000)).expect("guard")],
        clock,
    )
    .expect("failover");
    for _ in 0..4 {
        failover.send(&dispatch()).await;
    }
    assert_eq!(only.calls(), 4);
    // One provider: its ids are its own.
    assert_eq!(
        failover.send(&dispatch()).await,
        Outcome::Delivered {
            provider_message_id: Some("m".into())
        }
    );
}

#[tokio::test]
async fn the_rate_limit_spaces_calls_at_the_quota() {
    let only = Scripted::new([]);
    let config = GuardConfig {
        rate_per_s: Some(2),
        burst: Some(1),
        ..GuardConfig::default()
    };
    let failover = Failover::new(
        vec![Guarded::new("twilio", only.clone(), &config).expect("guard")],
        Arc::new(TestClock(AtomicI64::new(0))),
    )
    .expect("failover");
    let started = std::time::Instant::now();
    for _ in 0..3 {
        failover.send(&dispatch()).await;
    }
    // governor keeps real time: three calls at 2/s with a burst of one take about a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert_eq!(only.calls(), 3);
}

#[test]
fn bad_settings_are_refused() {
    let zero = GuardConfig {
        rate_per_s: Some(0),
        ..GuardConfig::default()
    };
    assert!(Guarded::new("x", Scripted::new([]), &zero).is_err());
    let ratio = GuardConfig {
        breaker: BreakerConfig {
            failure_ratio: 2.0,
            ..BreakerConfig::default()
        },
        ..GuardConfig::default()
    };
    assert!(Guarded::new("x", Scripted::new([]), &ratio).is_err());
    assert!(Failover::new(Vec::new(), Arc::new(TestClock(AtomicI64::new(0)))).is_err());
}
