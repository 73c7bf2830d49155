//! The analysis verdict: a version's figures over the window against the
//! release's thresholds. With fewer than `min_requests` nothing is decided:
//! one failed request out of three is noise, not a signal.

/// What a window of requests to one version looked like.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    /// The 99th percentile latency in milliseconds, when there were requests.
    pub p99_ms: Option<f64>,
}

impl Figures {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too few requests to judge.
    Inconclusive,
    Healthy,
    /// Breached a threshold; the text says which and by how much.
    Failing(String),
}

/// Judges `version`'s figures.
pub fn judge(version: &str, figures: &Figures, limits: &Thresholds) -> Verdict {
    if figures.requests < limits.min_requests.max(1) {
        return Verdict::Inconclusive;
    }
    let rate = figures.error_rate();
    if rate > limits.max_error_rate {
        return Verdict::Failing(format!(
            "{version} error rate {rate:.2} > {}",
            limits.max_error_rate
        ));
    }
    if let Some(p99) = figures.p99_ms {
        if p99 > limits.max_p99_ms {
            return Verdict::Failing(format!(
                "{version} p99 latency {p99:.0}ms > {:.0}ms",
                limits.max_p99_ms
            ));
        }
    }
    Verdict::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds {
        min_requests: 20,
        max_error_rate: 0.05,
        max_p99_ms: 800.0,
    };

    fn figures(requests: u64, errors: u64, p99: f64) -> Figures {
        Figures {
            requests,
            errors,
            p99_ms: Some(p99),
        }
    }

    #[test]
    fn too_few_requests_decide_nothing_even_if_all_failed() {
        assert_eq!(
            judge("v2", &figures(19, 19, 5000.0), &LIMITS),
            Verdict::Inconclusive
        );
        assert_eq!(
            judge("v2", &Figures::default(), &LIMITS),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn an_error_rate_above_the_limit_fails_with_the_figures_in_the_reason() {
        let verdict = judge("v2", &figures(100, 31, 10.0), &LIMITS);
        assert_eq!(
            verdict,
            Verdict::Failing("v2 error rate 0.31 > 0.05".into())
        );
    }

    #[test]
    fn an_error_rate_at_the_limit_passes() {
        assert_eq!(
            judge("v2", &figures(100, 5, 10.0), &LIMITS),
            Verdict::Healthy
        );
    }

    #[test]
    fn a_slow_p99_fails() {
        let verdict = judge("v2", &figures(100, 0, 1200.0), &LIMITS);
        assert_eq!(
            verdict,
            Verdict::Failing("v2 p99 latency 1200ms > 800ms".into())
        );
    }

    #[test]
    fn min_requests_of_zero_still_needs_one_request() {
        let limits = Thresholds {
            min_requests: 0,
            ..LIMITS
        };
        assert_eq!(
            judge("v2", &Figures::default(), &limits),
            Verdict::Inconclusive
        );
    }
}
