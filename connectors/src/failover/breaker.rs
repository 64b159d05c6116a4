//! A circuit breaker, pure: it counts a provider's recent calls, opens when too many failed,
//! turns callers away while open, lets one probe through after a cool-down, and closes when
//! the probe succeeds (or opens again when it fails). Time is passed in.
//!
//! ```text
//!            failures/calls ≥ ratio (over ≥ min_calls of the last `window`)
//!   Closed ─────────────────────────────────────────────────────────▶ Open{until}
//!     ▲                                                                 │ now ≥ until:
//!     │ probe succeeded                                                 │ admit one probe
//!     └──────────────────────────── HalfOpen ◀──────────────────────────┘
//!                                      │ probe failed
//!                                      └──────────────────────────────▶ Open{now + open_for}
//! ```
//!
//! A failure is the provider's (a timeout, a 5xx, throttling: a retry); a refused message
//! (invalid address, permanent failure) says nothing about the provider and counts as a call
//! that worked.

use std::collections::VecDeque;

use serde::Deserialize;

/// `[provider.<name>.breaker]`: when a provider's circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// How many of the latest calls are counted.
    pub window: u32,
    /// The fewest counted calls before the circuit may open.
    pub min_calls: u32,
    /// The share of failed calls among those counted that opens the circuit (0 < r ≤ 1).
    pub failure_ratio: f64,
    /// How long the circuit stays open before a probe (milliseconds).
    pub open_for_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            min_calls: 10,
            failure_ratio: 0.5,
            open_for_ms: 30_000,
        }
    }
}

impl BreakerConfig {
    /// Whether the settings make sense; a message naming the wrong one if not.
    pub fn check(&self) -> Result<(), String> {
        if self.window == 0 || self.min_calls == 0 || self.min_calls > self.window {
            return Err(format!(
                "breaker: need 0 < min_calls ({}) ≤ window ({})",
                self.min_calls, self.window
            ));
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(format!(
                "breaker: failure_ratio {} is not in (0, 1]",
                self.failure_ratio
            ));
        }
        Ok(())
    }
}

/// Where the circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through and are counted.
    Closed,
    /// Calls are turned away until `until_ms`.
    Open {
        /// When a probe may go.
        until_ms: i64,
    },
    /// One probe is out; other calls are turned away until it comes back.
    HalfOpen,
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Call.
    Call,
    /// Call: this is the probe that decides whether the circuit closes.
    Probe,
    /// Do not call (the circuit is open, or a probe is out); `until_ms` says when to ask again.
    Reject {
        /// When a probe may go (for a caller waiting on a probe: now).
        until_ms: i64,
    },
}

/// A change of state, for the timeline and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The circuit opened: `failed` of the last `calls` failed.
    Opened {
        /// Failed calls counted.
        failed: u32,
        /// Calls counted.
        calls: u32,
    },
    /// The probe failed: open again.
    Reopened,
    /// The probe succeeded: closed.
    Closed,
}

/// One provider's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// The latest calls' results (true: failed), newest last, at most `window`.
    recent: VecDeque<bool>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed,
            recent: VecDeque::new(),
        }
    }

    /// Where the circuit stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a call may go at `now_ms`; an open circuit past its time admits one probe.
    pub fn admit(&mut self, now_ms: i64) -> Admit {
        match self.state {
            State::Closed => Admit::Call,
            State::Open { until_ms } if now_ms >= until_ms => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Open { until_ms } => Admit::Reject { until_ms },
            State::HalfOpen => Admit::Reject { until_ms: now_ms },
        }
    }

    /// Records how an admitted call went (`failed`: the provider's failure) at `now_ms`.
    /// A probe's result decides the half-open circuit; a call admitted before the circuit
    /// opened and finished after is not counted.
    pub fn record(&mut self, admitted: Admit, failed: bool, now_ms: i64) -> Option<Change> {
        match (self.state, admitted) {
            (State::HalfOpen, Admit::Probe) if failed => {
                self.open(now_ms);
                Some(Change::Reopened)
            }
            (State::HalfOpen, Admit::Probe) => {
                self.state = State::Closed;
                self.recent.clear();
                Some(Change::Closed)
            }
            (State::Closed, Admit::Call) => {
                self.recent.push_back(failed);
                while self.recent.len() > self.config.window as usize {
                    self.recent.pop_front();
                }
                let calls = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
                let failures =
                    u32::try_from(self.recent.iter().filter(|f| **f).count()).unwrap_or(u32::MAX);
                let ratio = f64::from(failures) / f64::from(calls.max(1));
                (calls >= self.config.min_calls && ratio >= self.config.failure_ratio).then(|| {
                    self.open(now_ms);
                    Change::Opened {
                        failed: failures,
                        calls,
                    }
                })
            }
            _ => None,
        }
    }

    fn open(&mut self, now_ms: i64) {
        let open_for = i64::try_from(self.config.open_for_ms).unwrap_or(i64::MAX);
        self.state = State::Open {
            until_ms: now_ms.saturating_add(open_for),
        };
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        window: 4,
        min_calls: 3,
        failure_ratio: 0.5,
        open_for_ms: 1_000,
    };

    /// A breaker opened at time 0 by three failures.
    fn opened() -> Breaker {
        let mut b = Breaker::new(CONFIG);
        for _ in 0..2 {
            assert_eq!(b.record(Admit::Call, true, 0), None);
        }
        assert_eq!(
            b.record(Admit::Call, true, 0),
            Some(Change::Opened {
                failed: 3,
                calls: 3
            })
        );
        b
    }

    #[test]
    fn closed_admits_and_stays_closed_under_the_ratio() {
        let mut b = Breaker::new(CONFIG);
        assert_eq!(b.admit(0), Admit::Call);
        for failed in [true, false, false, false, true, false, false, false, true] {
            assert_eq!(b.record(Admit::Call, failed, 0), None);
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn closed_does_not_open_before_min_calls() {
        let mut b = Breaker::new(CONFIG);
        assert_eq!(b.record(Admit::Call, true, 0), None);
        assert_eq!(b.record(Admit::Call, true, 0), None);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn closed_opens_at_the_ratio_over_the_window() {
        let mut b = Breaker::new(CONFIG);
        // Old successes leave the window: the last four are two failures of four.
        for failed in [false, false, false, false, true] {
            assert_eq!(b.record(Admit::Call, failed, 5), None);
        }
        assert_eq!(
            b.record(Admit::Call, true, 5),
            Some(Change::Opened {
                failed: 2,
                calls: 4
            })
        );
        assert_eq!(b.state(), State::Open { until_ms: 1_005 });
    }

    #[test]
    fn open_rejects_until_its_time() {
        let mut b = opened();
        assert_eq!(b.admit(999), Admit::Reject { until_ms: 1_000 });
        assert_eq!(b.state(), State::Open { until_ms: 1_000 });
    }

    #[test]
    fn open_past_its_time_admits_one_probe_and_rejects_the_rest() {
        let mut b = opened();
        assert_eq!(b.admit(1_000), Admit::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit(1_001), Admit::Reject { until_ms: 1_001 });
    }

    #[test]
    fn a_probe_that_succeeds_closes_with_a_fresh_count() {
        let mut b = opened();
        let probe = b.admit(1_000);
        assert_eq!(b.record(probe, false, 1_010), Some(Change::Closed));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.record(Admit::Call, true, 1_011), None);
        assert_eq!(b.record(Admit::Call, true, 1_011), None);
    }

    #[test]
    fn a_probe_that_fails_opens_again_from_now() {
        let mut b = opened();
        let probe = b.admit(1_000);
        assert_eq!(b.record(probe, true, 1_200), Some(Change::Reopened));
        assert_eq!(b.state(), State::Open { until_ms: 2_200 });
    }

    #[test]
    fn a_call_admitted_before_the_circuit_opened_is_not_counted_after() {
        let mut b = opened();
        assert_eq!(b.record(Admit::Call, false, 10), None);
        assert_eq!(b.state(), State::Open { until_ms: 1_000 });
        let probe = b.admit(1_000);
        assert_eq!(b.record(Admit::Call, false, 1_001), None);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.record(probe, false, 1_002), Some(Change::Closed));
    }

    #[test]
    fn settings_are_checked() {
        assert!(BreakerConfig::default().check().is_ok());
        for bad in [
            BreakerConfig {
                window: 0,
                ..CONFIG
            },
            BreakerConfig {
                min_calls: 5,
                ..CONFIG
            },
            BreakerConfig {
                failure_ratio: 0.0,
                ..CONFIG
            },
            BreakerConfig {
                failure_ratio: f64::NAN,
                ..CONFIG
            },
            BreakerConfig {
                failure_ratio: 1.5,
                ..CONFIG
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
