//! One delivery attempt through the delivery ledger, as a pure state machine: the deliver stage
//! does the I/O each state asks for and feeds back what happened.
//!
//! With the ledger (a connector that is not idempotent):
//!
//! ```text
//! Begin ──Begun(Fresh)──────► Calling ──Called(final)──► Finishing ──Finished──► Done(Report)
//!   │  ──Begun(Unfinished)──► Calling (resend: a crash in the provider window)
//!   └────Begun(Done)────────────────────────────────────────────────────────────► Done(Report)
//!                             Calling ──Called(retry)──► Abandoning ──Abandoned──► Done(Later)
//! ```
//!
//! Without it (an idempotent connector, for which a repeat is harmless): `Calling` goes straight
//! to `Done(Report)` or `Done(Later)`.
//!
//! An invalid address (`INVALID_TOKEN`) is removed from the recipient's contacts before it is
//! reported: where the diagram says `Done(Report)` for such an entry, the attempt goes through
//! `Disabling ──Disabled──► Done(Report)`. A replay that finds the outcome recorded removes it
//! again (harmless: the removal is idempotent), so a crash between the two loses nothing.
//! Any other event is a broken protocol.

use std::time::Duration;

use herald_connectors::Outcome;
use herald_schemas::{DeliveryState, Dispatch};
use herald_store::{LedgerBegin, LedgerEntry};

use super::logic::ledger_entry;

/// Where one attempt is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Look the delivery up in the ledger (and mark it begun).
    Begin,
    /// Call the provider.
    Calling {
        /// The ledger found an attempt that never recorded its outcome: this calls again.
        resend: bool,
        /// Whether the ledger is kept (then the outcome is recorded before it is reported).
        ledger: bool,
    },
    /// Record this final outcome in the ledger.
    Finishing(LedgerEntry),
    /// Mark the begun attempt abandoned, so a later attempt starts fresh.
    Abandoning(Later),
    /// Remove the address the provider refused from the recipient's contacts, then report.
    Disabling(LedgerEntry),
    /// Nothing left to do.
    Done(Verdict),
}

/// What happened in answer to a state's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The ledger's answer to `Begin`.
    Begun(LedgerBegin),
    /// The provider's answer.
    Called(Outcome),
    /// The outcome is recorded.
    Finished,
    /// The attempt is marked abandoned.
    Abandoned,
    /// The refused address is removed.
    Disabled,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A final outcome, as recorded: report it.
    Report(LedgerEntry),
    /// A temporary failure: try again later.
    Later(Later),
}

/// A temporary failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Later {
    /// What failed.
    pub reason: String,
    /// The provider's Retry-After, if it gave one.
    pub after: Option<Duration>,
}

impl Attempt {
    /// The first state: `Begin` with the ledger, `Calling` without.
    pub fn start(ledger: bool) -> Attempt {
        if ledger {
            Attempt::Begin
        } else {
            Attempt::Calling {
                resend: false,
                ledger: false,
            }
        }
    }

    /// The state after `event`, for dispatch `d` at `now_ms`; an error names a broken protocol.
    pub fn step(self, event: Event, d: &Dispatch, now_ms: i64) -> Result<Attempt, String> {
        match (self, event) {
            (Attempt::Begin, Event::Begun(LedgerBegin::Fresh)) => Ok(Attempt::Calling {
                resend: false,
                ledger: true,
            }),
            (Attempt::Begin, Event::Begun(LedgerBegin::Unfinished)) => Ok(Attempt::Calling {
                resend: true,
                ledger: true,
            }),
            (Attempt::Begin, Event::Begun(LedgerBegin::Done(entry))) => Ok(report(entry)),
            (Attempt::Calling { ledger, .. }, Event::Called(outcome)) => {
                let entry = ledger_entry(d, &outcome, now_ms);
                Ok(match (entry, outcome, ledger) {
                    (Some(entry), _, true) => Attempt::Finishing(entry),
                    (Some(entry), _, false) => report(entry),
                    (None, Outcome::Retry { reason, after }, true) => {
                        Attempt::Abandoning(Later { reason, after })
                    }
                    (None, Outcome::Retry { reason, after }, false) => {
                        Attempt::Done(Verdict::Later(Later { reason, after }))
                    }
                    (None, outcome, _) => {
                        return Err(format!("no ledger entry for the final outcome {outcome:?}"));
                    }
                })
            }
            (Attempt::Finishing(entry), Event::Finished) => Ok(report(entry)),
            (Attempt::Disabling(entry), Event::Disabled) => {
                Ok(Attempt::Done(Verdict::Report(entry)))
            }
            (Attempt::Abandoning(later), Event::Abandoned) => {
                Ok(Attempt::Done(Verdict::Later(later)))
            }
            (state, event) => Err(format!(
                "delivery {}: {event:?} does not follow {state:?}",
                d.delivery_id
            )),
        }
    }
}

/// Report `entry`, once a refused address is removed.
fn report(entry: LedgerEntry) -> Attempt {
    if entry.state == DeliveryState::InvalidToken {
        Attempt::Disabling(entry)
    } else {
        Attempt::Done(Verdict::Report(entry))
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::Channel;

    use super::*;

    fn dispatch() -> Dispatch {
        Dispatch {
            delivery_id: "d1".into(),
            ..crate::deliver::test_dispatch(Channel::Email, 1)
        }
    }

    fn delivered() -> Outcome {
        Outcome::Delivered {
            provider_message_id: Some("m1".into()),
        }
    }

    fn entry(state: DeliveryState, reason: Option<&str>, id: Option<&str>) -> LedgerEntry {
        LedgerEntry {
            delivery_id: "d1".into(),
            state,
            reason: reason.map(str::to_owned),
            provider_message_id: id.map(str::to_owned),
            at_ms: 50,
        }
    }

    fn step(state: Attempt, event: Event) -> Result<Attempt, String> {
        state.step(event, &dispatch(), 50)
    }

    fn calling(resend: bool, ledger: bool) -> Attempt {
        Attempt::Calling { resend, ledger }
    }

    fn later(after: Option<Duration>) -> Later {
        Later {
            reason: "503".into(),
            after,
        }
    }

    fn retry(after: Option<Duration>) -> Outcome {
        Outcome::Retry {
            reason: "503".into(),
            after,
        }
    }

    #[test]
    fn a_ledger_begins_and_otherwise_calls_at_once() {
        assert_eq!(Attempt::start(true), Attempt::Begin);
        assert_eq!(Attempt::start(false), calling(false, false));
    }

    #[test]
    fn a_fresh_delivery_calls_the_provider() {
        let next = step(Attempt::Begin, Event::Begun(LedgerBegin::Fresh));
        assert_eq!(next, Ok(calling(false, true)));
    }

    #[test]
    fn an_unfinished_attempt_calls_again_as_a_resend() {
        let next = step(Attempt::Begin, Event::Begun(LedgerBegin::Unfinished));
        assert_eq!(next, Ok(calling(true, true)));
    }

    #[test]
    fn a_recorded_outcome_is_reported_again_without_a_call() {
        let recorded = entry(DeliveryState::Delivered, None, Some("m0"));
        let next = step(
            Attempt::Begin,
            Event::Begun(LedgerBegin::Done(recorded.clone())),
        );
        assert_eq!(next, Ok(Attempt::Done(Verdict::Report(recorded))));
    }

    #[test]
    fn a_final_outcome_is_recorded_before_it_is_reported() {
        let next = step(calling(false, true), Event::Called(delivered()));
        let recorded = entry(DeliveryState::Delivered, None, Some("m1"));
        assert_eq!(next, Ok(Attempt::Finishing(recorded.clone())));
        let done = step(Attempt::Finishing(recorded.clone()), Event::Finished);
        assert_eq!(done, Ok(Attempt::Done(Verdict::Report(recorded))));
    }

    #[test]
    fn a_failure_and_an_invalid_address_are_final_too() {
        let failed = step(
            calling(true, true),
            Event::Called(Outcome::Failed("bad".into())),
        );
        let entry_failed = entry(DeliveryState::Failed, Some("bad"), None);
        assert_eq!(failed, Ok(Attempt::Finishing(entry_failed)));
        let invalid = step(
            calling(false, true),
            Event::Called(Outcome::InvalidToken("410".into())),
        );
        let entry_invalid = entry(DeliveryState::InvalidToken, Some("410"), None);
        assert_eq!(invalid, Ok(Attempt::Finishing(entry_invalid)));
    }

    #[test]
    fn a_recorded_invalid_address_is_removed_before_it_is_reported() {
        let invalid = entry(DeliveryState::InvalidToken, Some("410"), None);
        let next = step(Attempt::Finishing(invalid.clone()), Event::Finished);
        assert_eq!(next, Ok(Attempt::Disabling(invalid.clone())));
        let done = step(Attempt::Disabling(invalid.clone()), Event::Disabled);
        assert_eq!(done, Ok(Attempt::Done(Verdict::Report(invalid))));
    }

    #[test]
    fn a_replayed_invalid_address_is_removed_again() {
        let invalid = entry(DeliveryState::InvalidToken, Some("410"), None);
        let next = step(
            Attempt::Begin,
            Event::Begun(LedgerBegin::Done(invalid.clone())),
        );
        assert_eq!(next, Ok(Attempt::Disabling(invalid)));
    }

    #[test]
    fn without_a_ledger_an_invalid_address_is_removed_at_once() {
        let next = step(
            calling(false, false),
            Event::Called(Outcome::InvalidToken("410".into())),
        );
        let invalid = entry(DeliveryState::InvalidToken, Some("410"), None);
        assert_eq!(next, Ok(Attempt::Disabling(invalid)));
    }

    #[test]
    fn a_temporary_failure_abandons_the_attempt_then_asks_for_a_later_one() {
        let after = Some(Duration::from_secs(30));
        let next = step(calling(false, true), Event::Called(retry(after)));
        assert_eq!(next, Ok(Attempt::Abandoning(later(after))));
        let done = step(Attempt::Abandoning(later(after)), Event::Abandoned);
        assert_eq!(done, Ok(Attempt::Done(Verdict::Later(later(after)))));
    }

    #[test]
    fn without_a_ledger_outcomes_are_reported_at_once() {
        let reported = step(calling(false, false), Event::Called(delivered()));
        let recorded = entry(DeliveryState::Delivered, None, Some("m1"));
        assert_eq!(reported, Ok(Attempt::Done(Verdict::Report(recorded))));
        let later_now = step(calling(false, false), Event::Called(retry(None)));
        assert_eq!(later_now, Ok(Attempt::Done(Verdict::Later(later(None)))));
    }

    #[test]
    fn any_other_event_is_a_broken_protocol() {
        let recorded = entry(DeliveryState::Delivered, None, None);
        for (state, event) in [
            (Attempt::Begin, Event::Finished),
            (Attempt::Begin, Event::Called(delivered())),
            (calling(false, true), Event::Begun(LedgerBegin::Fresh)),
            (calling(false, true), Event::Abandoned),
            (Attempt::Finishing(recorded.clone()), Event::Abandoned),
            (Attempt::Abandoning(later(None)), Event::Finished),
            (
                Attempt::Done(Verdict::Report(recorded.clone())),
                Event::Finished,
            ),
            (Attempt::Disabling(recorded.clone()), Event::Finished),
            (Attempt::Finishing(recorded), Event::Disabled),
        ] {
            assert!(
                step(state.clone(), event.clone()).is_err(),
                "{state:?} + {event:?}"
            );
        }
    }
}
