use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn limits(per_recipient: u32, window: u64, per_tenant: u32) -> LimitsConfig {
    LimitsConfig {
        per_recipient: QuotaConfig {
            limit: per_recipient,
            window_seconds: window,
        },
        per_tenant: QuotaConfig {
            limit: per_tenant,
            window_seconds: window,
        },
        bypass_categories: vec!["otp".into()],
        ..LimitsConfig::default()
    }
}

#[test]
fn quota_per_recipient_and_category_then_refill() {
    let mut l = Limiter::new(limits(3, 60, 1_000));
    let mut decide = |user: &str, cat: &str, at| l.decide("t", user, cat, Priority::Normal, at);
    for _ in 0..3 {
        assert_eq!(decide("ana", "news", 0), Decision::Admit);
    }
    assert!(
        matches!(decide("ana", "news", 1_000), Decision::Limited { reason, retry_after_ms } if reason.contains("per-recipient") && (18_000..=20_000).contains(&retry_after_ms))
    );
    assert_eq!(
        decide("ana", "orders", 1_000),
        Decision::Admit,
        "other category"
    );
    assert_eq!(
        decide("bob", "news", 1_000),
        Decision::Admit,
        "other recipient"
    );
    // One token comes back every 20 s.
    assert_eq!(decide("ana", "news", 20_500), Decision::Admit);
    assert!(matches!(
        decide("ana", "news", 21_000),
        Decision::Limited { .. }
    ));
}

#[test]
fn event_time_is_bounded_by_the_clock() {
    let now = 1_700_000_000_000;
    assert_eq!(
        event_time(now - 5, now, 1_000),
        now - 5,
        "the past as it is"
    );
    assert_eq!(
        event_time(now + 500, now, 1_000),
        now + 500,
        "within the skew"
    );
    assert_eq!(
        event_time(i64::MAX, now, 1_000),
        now + 1_000,
        "far future: now + skew"
    );
    assert_eq!(
        event_time(i64::MIN, now, 1_000),
        0,
        "before the epoch: the epoch"
    );
    assert_eq!(event_time(now, i64::MAX, i64::MAX), now, "no overflow");
}

#[test]
fn a_far_future_record_neither_panics_nor_freezes_the_limiter() {
    let start = 1_700_000_000_000;
    let skew = 300_000;
    let mut l = Limiter::new(limits(1, 60, 1_000));
    // (record time, wall clock)
    let mut decide = |at: i64, now: i64| {
        l.decide(
            "t",
            "ana",
            "news",
            Priority::Normal,
            event_time(at, now, skew),
        )
    };
    assert_eq!(decide(start, start), Decision::Admit);
    // A record stamped in the year 292 million counts as now + 5 min: the bucket refills.
    assert_eq!(decide(i64::MAX, start), Decision::Admit);
    // Sane records after it are limited only until the wall clock passes that point plus the
    // window — not for ever, as a clock frozen in the far future would do.
    assert!(matches!(
        decide(start + 1, start + 1),
        Decision::Limited { .. }
    ));
    let later = start + skew + 60_001;
    assert_eq!(decide(later, later), Decision::Admit);
}

#[test]
fn tenant_quota_spans_recipients() {
    let mut l = Limiter::new(limits(100, 1, 5));
    for i in 0..5 {
        assert_eq!(
            l.decide("t", &format!("u{i}"), "news", Priority::Normal, 0),
            Decision::Admit
        );
    }
    assert!(
        matches!(l.decide("t", "u9", "news", Priority::Normal, 0), Decision::Limited { reason, .. } if reason.contains("tenant"))
    );
    assert_eq!(
        l.decide("other", "u9", "news", Priority::Normal, 0),
        Decision::Admit
    );
}

#[test]
fn critical_and_bypass_categories_are_never_limited() {
    let mut l = Limiter::new(limits(1, 3600, 1));
    assert_eq!(
        l.decide("t", "ana", "news", Priority::Normal, 0),
        Decision::Admit
    );
    for _ in 0..50 {
        assert_eq!(
            l.decide("t", "ana", "otp", Priority::Normal, 0),
            Decision::Bypass
        );
        assert_eq!(
            l.decide("t", "ana", "news", Priority::Critical, 0),
            Decision::Bypass
        );
    }
}

#[test]
fn time_never_runs_backwards() {
    let mut l = Limiter::new(limits(1, 10, 100));
    assert_eq!(
        l.decide("t", "ana", "news", Priority::Normal, 50_000),
        Decision::Admit
    );
    // An older timestamp (another producer's clock) must not refill or break the bucket.
    assert!(matches!(
        l.decide("t", "ana", "news", Priority::Normal, 1_000),
        Decision::Limited { .. }
    ));
    // Nor move the clock back, so that the next record would seem to come 49 s later.
    assert!(matches!(
        l.decide("t", "ana", "news", Priority::Normal, 50_001),
        Decision::Limited { .. }
    ));
}

proptest! {
    /// The limiter's invariant with a fake clock: in any interval of length D, one recipient and
    /// category get at most `limit + floor(D / T)` notifications, T = window / limit (a full bucket
    /// of `limit`, then one more every T). Over a long run that is `limit` per window.
    #[test]
    fn never_more_than_the_quota_allows(
        limit in 1u32..8,
        window in 1u64..20,
        gaps in proptest::collection::vec(0i64..3_000, 1..200),
    ) {
        let mut l = Limiter::new(limits(limit, window, u32::MAX));
        let mut at = 0i64;
        let mut admitted = Vec::new();
        for gap in gaps {
            at += gap;
            if l.decide("t", "ana", "news", Priority::Normal, at) == Decision::Admit {
                admitted.push(at);
            }
        }
        let t_ns = (window as i128 * 1_000_000_000) / limit as i128;
        for i in 0..admitted.len() {
            for j in i..admitted.len() {
                let span_ns = (admitted[j] - admitted[i]) as i128 * 1_000_000;
                let allowed = limit as i128 + span_ns / t_ns;
                prop_assert!((j - i + 1) as i128 <= allowed, "{} admitted in {} ms: {:?}", j - i + 1, admitted[j] - admitted[i], admitted);
            }
        }
    }
}

proptest! {
    /// Liveness: requests spaced at least T = window / limit apart are all admitted, however the
    /// bucket was used before them, once a full window has passed.
    #[test]
    fn requests_at_the_allowed_pace_are_all_admitted(
        limit in 1u32..8,
        window in 1u64..20,
        burst in 0usize..20,
        extra in proptest::collection::vec(0i64..5_000, 1..50),
    ) {
        let mut l = Limiter::new(limits(limit, window, u32::MAX));
        // Whatever came first (a burst, possibly limited) ...
        for _ in 0..burst {
            let _ = l.decide("t", "ana", "news", Priority::Normal, 0);
        }
        // ... a window later, requests at the pace of the quota all go through.
        let pace_ms = (window * 1_000).div_ceil(u64::from(limit)) as i64;
        let mut at = window as i64 * 1_000;
        for gap in extra {
            prop_assert_eq!(l.decide("t", "ana", "news", Priority::Normal, at), Decision::Admit, "at {}", at);
            at += pace_ms + gap;
        }
    }

    /// Liveness: after a quiet window the whole quota is available at once.
    #[test]
    fn a_quiet_window_refills_the_whole_quota(
        limit in 1u32..8,
        window in 1u64..20,
        before in proptest::collection::vec(0i64..3_000, 0..40),
    ) {
        let mut l = Limiter::new(limits(limit, window, u32::MAX));
        let mut at = 0i64;
        for gap in before {
            at += gap;
            let _ = l.decide("t", "ana", "news", Priority::Normal, at);
        }
        at += window as i64 * 1_000;
        for i in 0..limit {
            prop_assert_eq!(l.decide("t", "ana", "news", Priority::Normal, at), Decision::Admit, "#{}", i);
        }
        let over = l.decide("t", "ana", "news", Priority::Normal, at);
        prop_assert!(matches!(over, Decision::Limited { .. }), "{:?}", over);
    }

    /// The tenant quota counts every limited notification of the tenant, across recipients and
    /// categories, and nothing else: bypass categories and critical ones neither count nor are
    /// held back, and another tenant has its own quota.
    #[test]
    fn tenant_quota_counts_only_limited_categories(
        quota in 1u32..20,
        requests in proptest::collection::vec((0u8..5, 0u8..3, 0u8..4, any::<bool>()), 0..80),
    ) {
        let mut l = Limiter::new(limits(u32::MAX, 3_600, quota));
        let mut admitted = 0u32;
        let mut other_tenant = 0u32;
        for (user, kind, category, other) in requests {
            let user = format!("u{user}");
            let tenant = if other { "other" } else { "t" };
            let (category, priority) = match kind {
                0 => ("otp".to_owned(), Priority::Normal),
                1 => (format!("c{category}"), Priority::Critical),
                _ => (format!("c{category}"), Priority::Normal),
            };
            let d = l.decide(tenant, &user, &category, priority, 0);
            if kind < 2 {
                prop_assert_eq!(d, Decision::Bypass);
                continue;
            }
            let count = if other { &mut other_tenant } else { &mut admitted };
            if *count < quota {
                prop_assert_eq!(&d, &Decision::Admit);
                *count += 1;
            } else {
                prop_assert!(
                    matches!(&d, Decision::Limited { reason, .. } if reason.contains("tenant")),
                    "{:?}", d
                );
            }
        }
    }
}

/// One notification of a generated sequence: user, category, critical, time step (may be
/// negative: records arrive out of order).
type Step = (u8, u8, bool, i64);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (
            0u8..4,
            0u8..3,
            proptest::bool::weighted(0.1),
            -2_000i64..4_000,
        ),
        1..150,
    )
}

/// Decides `steps` on `l` from `at`, returning the decisions and each one's state record.
fn run(l: &mut Limiter, steps: &[Step], mut at: i64) -> (Vec<Decision>, Vec<LimiterState>) {
    let mut decisions = Vec::new();
    let mut states = Vec::new();
    for (user, category, critical, step) in steps {
        at = (at + step).max(0);
        let (user, category) = (
            format!("u{user}"),
            ["news", "otp", "orders"][*category as usize],
        );
        let priority = if *critical {
            Priority::Critical
        } else {
            Priority::Normal
        };
        decisions.push(l.decide("t", &user, category, priority, 1_700_000_000_000 + at));
        states.push(l.state("t", &user, category));
    }
    (decisions, states)
}

proptest! {
    /// A replay decides as the first attempt did: a limiter rebuilt from the state records of
    /// the first `cut` notifications, as a compacted changelog keeps them (only the newest per
    /// key, tenant/recipient/category, in any order), decides the rest exactly as the limiter
    /// that never stopped. (That an aborted batch's decisions are discarded before the redo is
    /// the processor's part: `rate_limit::tests::a_reset_discards_what_an_aborted_batch_decided`.)
    #[test]
    fn a_limiter_restored_from_its_state_records_decides_the_same(
        steps in steps(),
        cut in 0usize..150,
        reversed in any::<bool>(),
    ) {
        let cut = cut.min(steps.len());
        let config = limits(3, 10, 7);
        let mut whole = Limiter::new(config.clone());
        let (expected, states) = run(&mut whole, &steps, 0);
        let at_cut: i64 = steps[..cut].iter().fold(0, |at, s| (at + s.3).max(0));

        // The changelog of the first `cut` records, compacted by the record key.
        let mut newest: HashMap<(u8, u8), LimiterState> = HashMap::new();
        for (step, state) in steps[..cut].iter().zip(&states[..cut]) {
            newest.insert((step.0, step.1), state.clone());
        }
        let mut log: Vec<LimiterState> = newest.into_values().collect();
        log.sort_by_key(|s| s.clock_ms);
        if reversed {
            log.reverse();
        }

        let mut restored = Limiter::new(config);
        for s in log {
            prop_assert!(restored.restore(s, i64::MAX));
        }
        let (replayed, _) = run(&mut restored, &steps[cut..], at_cut);
        prop_assert_eq!(&replayed[..], &expected[cut..]);
    }
}

/// A state record is bounded before it is folded in: a clock past `latest_ms` (a corrupted or
/// foreign record far in the future would freeze every bucket), a negative clock, or an arrival
/// time further ahead of its clock than the quota's window allows, is refused and changes
/// nothing.
#[test]
fn state_records_beyond_their_bounds_are_refused() {
    let config = limits(2, 10, 1_000);
    let now = 1_700_000_000_000_i64;
    let mut source = Limiter::new(config.clone());
    assert_eq!(
        source.decide("t", "ana", "news", Priority::Normal, now),
        Decision::Admit
    );
    let good = source.state("t", "ana", "news");
    let ns = |ms: i64| u64::try_from(ms).expect("a time after the epoch") * 1_000_000;
    let mut far_clock = good.clone();
    far_clock.clock_ms = now + 365 * 86_400_000;
    let clock_only = |clock_ms| LimiterState {
        clock_ms,
        recipient: None,
        tenant: None,
    };
    let negative = clock_only(-1);
    let mut far_recipient = good.clone();
    far_recipient.recipient = Some(("t".into(), "ana".into(), "news".into(), ns(now + 10_001)));
    let mut far_tenant = good.clone();
    far_tenant.tenant = Some(("t".into(), ns(now + 10_001)));
    let mut l = Limiter::new(config);
    for bad in [far_clock, negative, far_recipient, far_tenant] {
        assert!(!l.restore(bad.clone(), now + 1_000), "{bad:?} was accepted");
        assert_eq!(l.keys(), (0, 0));
    }
    assert!(l.restore(good, now + 1_000));
    assert_eq!(l.keys(), (1, 1));
    // The bounds are inclusive: the epoch, and exactly `latest_ms`.
    let mut l = Limiter::new(limits(2, 10, 1_000));
    assert!(l.restore(clock_only(0), now));
    assert!(l.restore(clock_only(now), now));
    assert!(!l.restore(clock_only(now + 1), now));
}

#[test]
fn a_limiter_that_never_saw_the_state_decides_differently() {
    // The property above is not vacuous: without the restore, a replay admits again what the
    // first attempt had already counted.
    let config = limits(2, 60, 1_000);
    let mut whole = Limiter::new(config.clone());
    let steps: Vec<Step> = vec![(0, 0, false, 0); 4];
    let (expected, _) = run(&mut whole, &steps, 0);
    let mut fresh = Limiter::new(config);
    let (replayed, _) = run(&mut fresh, &steps[2..], 0);
    assert_ne!(&replayed[..], &expected[2..]);
}

#[test]
fn the_tenant_quota_is_shared_out_between_partitions() {
    let config = limits(10, 60, 1_000);
    assert_eq!(config.per_partition(3).per_tenant.limit, 334);
    assert_eq!(config.per_partition(1).per_tenant.limit, 1_000);
    assert_eq!(config.per_partition(0).per_tenant.limit, 1_000);
    assert_eq!(limits(10, 60, 2).per_partition(3).per_tenant.limit, 1);
    assert_eq!(config.per_partition(3).per_recipient, config.per_recipient);
}

#[test]
fn full_buckets_are_forgotten_and_state_records_name_the_buckets() {
    let mut l = Limiter::new(limits(2, 1, 1_000));
    assert_eq!(
        l.decide("t", "ana", "news", Priority::Normal, 5_000),
        Decision::Admit
    );
    let s = l.state("t", "ana", "news");
    assert_eq!(s.clock_ms, 5_000);
    assert!(
        matches!(&s.recipient, Some((t, u, c, tat)) if t == "t" && u == "ana" && c == "news" && *tat > 5_000_000_000)
    );
    assert!(matches!(&s.tenant, Some((t, _)) if t == "t"));
    assert_eq!(l.state("t", "bob", "news").recipient, None);
    assert_eq!(l.keys(), (1, 1));
    // 10,000 decisions later, much later, the idle buckets are gone; a bucket still being
    // refilled is kept (it still limits).
    for i in 0..9_996 {
        let _ = l.decide("t", "otp-user", "otp", Priority::Normal, 100_000 + i);
    }
    for _ in 0..2 {
        assert_eq!(
            l.decide("t", "bob", "news", Priority::Normal, 200_000),
            Decision::Admit
        );
    }
    assert_eq!(l.keys(), (2, 1), "ana's and bob's buckets, one tenant's");
    assert!(matches!(
        l.decide("t", "bob", "news", Priority::Normal, 200_000),
        Decision::Limited { .. }
    ));
    assert_eq!(
        l.keys(),
        (1, 1),
        "only bob's and the tenant's buckets are not full"
    );
    assert!(matches!(
        l.decide("t", "bob", "news", Priority::Normal, 200_000),
        Decision::Limited { .. }
    ));
}
