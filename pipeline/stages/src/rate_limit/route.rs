//! Where a notification goes after the limiter's decision, pure.

use herald_schemas::{DeliveryResult, DeliveryState, NotificationAdmitted, NotificationEnriched};

use super::{Decision, LimitsConfig, OverLimit};
use crate::{Subject, result_for};

/// What the rate-limit stage emits for one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Within its limits (or bypassing them): on to fan-out.
    Admit(NotificationAdmitted),
    /// Over a limit, deferred: the notification to park on `deferred` and its DEFERRED result.
    Defer(NotificationEnriched, DeliveryResult),
    /// Over a limit for good: its RATE_LIMITED result.
    Drop(DeliveryResult),
}

/// An admitted notification carries the enriched one unchanged.
pub fn admit(n: NotificationEnriched) -> NotificationAdmitted {
    NotificationAdmitted {
        notification_id: n.notification_id,
        tenant: n.tenant,
        recipient_user_id: n.recipient_user_id,
        category: n.category,
        priority: n.priority,
        requested_at_ms: n.requested_at_ms,
        deliveries: n.deliveries,
    }
}

/// Routes `n` after `decision`, taken at `at_ms` (event time).
pub fn route(
    n: NotificationEnriched,
    decision: Decision,
    limits: &LimitsConfig,
    at_ms: i64,
) -> Routed {
    let (reason, retry_after_ms) = match decision {
        Decision::Admit | Decision::Bypass => return Routed::Admit(admit(n)),
        Decision::Limited {
            reason,
            retry_after_ms,
        } => (reason, retry_after_ms),
    };
    let subject = Subject {
        notification_id: &n.notification_id,
        tenant: &n.tenant,
        recipient_user_id: &n.recipient_user_id,
        category: &n.category,
    };
    let deferrals = n.deferrals;
    if limits.over_limit == OverLimit::Defer && deferrals < limits.max_deferrals {
        let until = at_ms.saturating_add(retry_after_ms);
        let mut result = result_for(
            subject,
            None,
            DeliveryState::Deferred,
            Some(format!("{reason}; deferred until {until} (ms since epoch)")),
            at_ms,
        );
        // One DEFERRED result per deferral, each with its own id.
        result.result_id = herald_schemas::ids::result_id(
            &n.notification_id,
            None,
            deferrals + 1,
            DeliveryState::Deferred,
        );
        let parked = NotificationEnriched {
            deferrals: deferrals + 1,
            defer_until_ms: Some(until),
            ..n
        };
        return Routed::Defer(parked, result);
    }
    let reason = if deferrals > 0 {
        format!("{reason} (after {deferrals} deferrals)")
    } else {
        reason
    };
    Routed::Drop(result_for(
        subject,
        None,
        DeliveryState::RateLimited,
        Some(reason),
        at_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enriched(deferrals: i32) -> NotificationEnriched {
        super::super::test_enriched(deferrals, None)
    }

    fn limited() -> Decision {
        Decision::Limited {
            reason: "over".into(),
            retry_after_ms: 1_500,
        }
    }

    #[test]
    fn admitted_and_bypassing_go_on() {
        let limits = LimitsConfig::default();
        assert!(matches!(
            route(enriched(0), Decision::Admit, &limits, 0),
            Routed::Admit(_)
        ));
        assert!(matches!(
            route(enriched(0), Decision::Bypass, &limits, 0),
            Routed::Admit(_)
        ));
    }

    #[test]
    fn drop_mode_records_rate_limited() {
        let limits = LimitsConfig {
            over_limit: OverLimit::Drop,
            ..LimitsConfig::default()
        };
        match route(enriched(0), limited(), &limits, 10) {
            Routed::Drop(r) => {
                assert_eq!(r.state, DeliveryState::RateLimited);
                assert_eq!(r.reason.as_deref(), Some("over"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defer_mode_parks_until_the_limit_allows_then_gives_up() {
        let limits = LimitsConfig {
            over_limit: OverLimit::Defer,
            max_deferrals: 2,
            ..LimitsConfig::default()
        };
        let Routed::Defer(parked, result) = route(enriched(0), limited(), &limits, 10) else {
            panic!()
        };
        assert_eq!((parked.deferrals, parked.defer_until_ms), (1, Some(1_510)));
        assert_eq!(result.state, DeliveryState::Deferred);
        let Routed::Defer(again, second) = route(parked, limited(), &limits, 1_510) else {
            panic!()
        };
        assert_eq!(again.deferrals, 2);
        assert_ne!(
            result.result_id, second.result_id,
            "each deferral is its own timeline event"
        );
        assert_eq!(
            second.result_id,
            herald_schemas::ids::result_id(
                &again.notification_id,
                None,
                2,
                DeliveryState::Deferred
            ),
            "numbered by deferral"
        );
        match route(again, limited(), &limits, 3_010) {
            Routed::Drop(r) => assert!(r.reason.unwrap_or_default().contains("after 2 deferrals")),
            other => panic!("{other:?}"),
        }
    }
}
