use super::*;
use proptest::prelude::*;

const LIMITS: Thresholds = Thresholds {
    min_requests: 20,
    max_error_rate: 0.05,
    max_p99_ms: 800.0,
    baseline: None,
};

const AGAINST_STABLE: Thresholds = Thresholds {
    baseline: Some(Baseline {
        max_error_rate_delta: 0.01,
        max_p99_ratio: 1.5,
    }),
    ..LIMITS
};

fn figures(requests: u64, errors: u64, p99: f64) -> Figures {
    Figures {
        requests,
        errors,
        p99_ms: Some(p99),
    }
}

fn v2(f: &Figures) -> Observed<'_> {
    Observed {
        version: "v2",
        figures: f,
    }
}

fn v1(f: &Figures) -> Observed<'_> {
    Observed {
        version: "v1",
        figures: f,
    }
}

#[test]
fn too_few_requests_decide_nothing_even_if_all_failed() {
    assert_eq!(
        judge(v2(&figures(19, 19, 5000.0)), None, &LIMITS),
        Verdict::Inconclusive
    );
    assert_eq!(
        judge(v2(&Figures::default()), None, &LIMITS),
        Verdict::Inconclusive
    );
}

#[test]
fn an_error_rate_above_the_limit_fails_with_percentages_and_counts() {
    assert_eq!(
        judge(v2(&figures(518, 27, 10.0)), None, &LIMITS),
        Verdict::Failing("v2 error rate 5.21% > 5.00% (27 of 518 requests)".into())
    );
}

#[test]
fn a_rate_just_above_the_limit_prints_apart_from_it() {
    // 5.004 % would print "5.00% > 5.00%" with two decimals.
    let verdict = judge(v2(&figures(100_000, 5_004, 10.0)), None, &LIMITS);
    assert_eq!(
        verdict,
        Verdict::Failing("v2 error rate 5.004% > 5.000% (5004 of 100000 requests)".into())
    );
}

#[test]
fn an_error_rate_at_the_limit_passes() {
    assert_eq!(
        judge(v2(&figures(100, 5, 10.0)), None, &LIMITS),
        Verdict::Healthy
    );
}

#[test]
fn a_slow_p99_fails() {
    assert_eq!(
        judge(v2(&figures(100, 0, 1200.0)), None, &LIMITS),
        Verdict::Failing("v2 p99 latency 1200ms > 800ms (100 requests)".into())
    );
}

#[test]
fn min_requests_of_zero_still_needs_one_request() {
    let limits = Thresholds {
        min_requests: 0,
        ..LIMITS
    };
    assert_eq!(
        judge(v2(&Figures::default()), None, &limits),
        Verdict::Inconclusive
    );
}

#[test]
fn against_stable_a_canary_failing_alone_fails_with_both_figures() {
    let canary = figures(500, 60, 10.0);
    let stable = figures(500, 5, 10.0);
    assert_eq!(
        judge(v2(&canary), Some(v1(&stable)), &AGAINST_STABLE),
        Verdict::Failing(
            "v2 error rate 12.00% > 5.00% (60 of 500 requests), v1 1.00% (5 of 500): worse by more than 1.00 points"
                .into()
        )
    );
}

#[test]
fn against_stable_both_versions_failing_alike_hold() {
    let canary = figures(500, 150, 10.0);
    let stable = figures(500, 148, 10.0);
    let verdict = judge(v2(&canary), Some(v1(&stable)), &AGAINST_STABLE);
    let Verdict::Hold(reason) = verdict else {
        panic!("{verdict:?}");
    };
    assert!(reason.starts_with("v1 and v2 both breach"), "{reason}");
    assert!(reason.contains("(150 of 500 requests)"), "{reason}");
    assert!(reason.contains("(148 of 500 requests)"), "{reason}");
}

#[test]
fn against_stable_a_canary_above_the_limit_but_no_worse_than_stable_holds() {
    // Stable at 4.6 % (under the limit), canary at 5.4 %: within a point.
    let verdict = judge(
        v2(&figures(500, 27, 10.0)),
        Some(v1(&figures(500, 23, 10.0))),
        &AGAINST_STABLE,
    );
    assert!(
        matches!(verdict, Verdict::Hold(ref r) if r.contains("v1 is as bad")),
        "{verdict:?}"
    );
}

#[test]
fn against_stable_latency_counts_by_ratio() {
    let slow = figures(500, 0, 1500.0);
    assert!(matches!(
        judge(
            v2(&slow),
            Some(v1(&figures(500, 0, 1200.0))),
            &AGAINST_STABLE
        ),
        Verdict::Hold(_)
    ));
    assert!(matches!(
        judge(v2(&slow), Some(v1(&figures(500, 0, 900.0))), &AGAINST_STABLE),
        Verdict::Failing(ref r) if r.contains("more than 1.50 times slower")
    ));
}

#[test]
fn against_stable_without_enough_stable_traffic_a_breach_counts() {
    assert!(matches!(
        judge(
            v2(&figures(500, 150, 10.0)),
            Some(v1(&figures(5, 5, 10.0))),
            &AGAINST_STABLE
        ),
        Verdict::Failing(_)
    ));
}

#[test]
fn evidence_summarises_every_version() {
    let evidence = Evidence {
        at_ms: 0,
        decision: Decision::Rollback,
        reason: None,
        versions: vec![
            ("v1".into(), figures(500, 1, 12.0)),
            ("v2".into(), figures(518, 27, 15.0)),
        ],
    };
    assert_eq!(
        evidence.summary(),
        "v1 0.20% errors (1 of 500), p99 12ms; v2 5.21% errors (27 of 518), p99 15ms"
    );
}

fn arbitrary_figures() -> impl Strategy<Value = Figures> {
    (20u64..5_000, 0.0f64..1.0, 1.0f64..3_000.0).prop_map(|(requests, rate, p99)| Figures {
        requests,
        errors: (requests as f64 * rate) as u64,
        p99_ms: Some(p99),
    })
}

proptest! {
    /// A canary no worse than stable (error rate and p99, over enough
    /// stable traffic) is never rolled back in baseline mode.
    #[test]
    fn a_canary_no_worse_than_stable_is_never_rolled_back(
        stable in arbitrary_figures(),
        fewer_errors in 0.0f64..=1.0,
        faster in 0.0f64..=1.0,
        max_error_rate in 0.0f64..0.5,
        max_p99_ms in 1.0f64..2_000.0,
    ) {
        let canary = Figures {
            requests: stable.requests,
            errors: (stable.errors as f64 * fewer_errors) as u64,
            p99_ms: stable.p99_ms.map(|p| p * faster),
        };
        let limits = Thresholds { max_error_rate, max_p99_ms, ..AGAINST_STABLE };
        let verdict = judge(v2(&canary), Some(v1(&stable)), &limits);
        prop_assert!(!matches!(verdict, Verdict::Failing(_)), "{:?}", verdict);
    }

    /// In absolute mode every breach fails, and baseline mode only ever
    /// softens a failure into a hold, never a pass.
    #[test]
    fn baseline_mode_never_passes_a_breach(
        canary in arbitrary_figures(),
        stable in arbitrary_figures(),
    ) {
        let absolute = judge(v2(&canary), None, &LIMITS);
        let against = judge(v2(&canary), Some(v1(&stable)), &AGAINST_STABLE);
        if matches!(absolute, Verdict::Failing(_)) {
            prop_assert!(matches!(against, Verdict::Failing(_) | Verdict::Hold(_)), "{:?}", against);
        } else {
            prop_assert_eq!(absolute, against);
        }
    }
}
