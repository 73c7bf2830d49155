//! The analysis verdict: a version's figures over the window against the
//! release's thresholds and, in baseline mode, against stable's figures over
//! the same window. With fewer than `min_requests` nothing is decided: one
//! failed request out of three is noise, not a signal.
//!
//! Reasons carry their evidence: rates as percentages with two decimals
//! (more when two of them would print alike) and the counts behind them,
//! e.g. `v2 error rate 5.21% > 5.00% (27 of 518 requests)`.

use serde::{Deserialize, Serialize};

/// What a window of requests to one version looked like.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
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

/// Judging the canary against stable (`analysis.baseline: stable`): a breach
/// counts only when the canary is worse than stable by more than these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Error-rate difference (a fraction: 0.01 = one percentage point).
    pub max_error_rate_delta: f64,
    /// p99 ratio canary / stable.
    pub max_p99_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_p99_ms: f64,
    /// `None`: absolute thresholds only.
    pub baseline: Option<Baseline>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too few requests to judge.
    Inconclusive,
    Healthy,
    /// Breached a threshold (against stable: and worse than stable by more
    /// than the tolerance); the text says which and by how much.
    Failing(String),
    /// Against stable: the canary breached, but the evidence does not tell it
    /// from stable (stable breaches too, or is as bad): neither step nor roll
    /// back until it does.
    Hold(String),
}

/// One version's figures, by name.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub version: &'a str,
    pub figures: &'a Figures,
}

/// Judges the canary `candidate`; `stable` is the stable version over the
/// same window, used in baseline mode.
pub fn judge(
    candidate: Observed<'_>,
    stable: Option<Observed<'_>>,
    limits: &Thresholds,
) -> Verdict {
    let figures = candidate.figures;
    if figures.requests < limits.min_requests.max(1) {
        return Verdict::Inconclusive;
    }
    let breaches = breaches_of(candidate, limits);
    if breaches.is_empty() {
        return Verdict::Healthy;
    }
    let (Some(baseline), Some(stable)) = (limits.baseline, stable) else {
        return Verdict::Failing(
            breaches
                .iter()
                .map(|b| b.text.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
    };
    // Without enough stable traffic there is nothing to excuse a breach with.
    let comparable = stable.figures.requests >= limits.min_requests.max(1);
    let mut counted = Vec::new();
    let mut excused = Vec::new();
    for breach in breaches {
        match compare(&breach, candidate, stable, &baseline, comparable) {
            Some(worse) => counted.push(format!("{}, {worse}", breach.text)),
            None => excused.push(breach),
        }
    }
    if !counted.is_empty() {
        return Verdict::Failing(counted.join("; "));
    }
    let stable_breaches = breaches_of(stable, limits);
    let reason = if stable_breaches.is_empty() {
        let texts: Vec<String> = excused.iter().map(|b| b.text.clone()).collect();
        format!(
            "{}, but {} is as bad: {}",
            texts.join("; "),
            stable.version,
            stable_summary(stable)
        )
    } else {
        let mine: Vec<&str> = excused.iter().map(|b| b.text.as_str()).collect();
        let theirs: Vec<&str> = stable_breaches.iter().map(|b| b.text.as_str()).collect();
        format!(
            "{} and {} both breach: {}; {}",
            stable.version,
            candidate.version,
            mine.join("; "),
            theirs.join("; ")
        )
    };
    Verdict::Hold(reason)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    ErrorRate,
    P99,
}

struct Breach {
    measure: Measure,
    text: String,
}

/// The thresholds `observed` breaches, each with its reason.
fn breaches_of(observed: Observed<'_>, limits: &Thresholds) -> Vec<Breach> {
    let f = observed.figures;
    let mut out = Vec::new();
    if f.requests < limits.min_requests.max(1) {
        return out;
    }
    let rate = f.error_rate();
    if rate > limits.max_error_rate {
        let (rate_text, max_text) = percent_pair(rate, limits.max_error_rate);
        out.push(Breach {
            measure: Measure::ErrorRate,
            text: format!(
                "{} error rate {rate_text} > {max_text} ({} of {} requests)",
                observed.version, f.errors, f.requests
            ),
        });
    }
    if let Some(p99) = f.p99_ms.filter(|&p99| p99 > limits.max_p99_ms) {
        out.push(Breach {
            measure: Measure::P99,
            text: format!(
                "{} p99 latency {} > {} ({} requests)",
                observed.version,
                millis(p99),
                millis(limits.max_p99_ms),
                f.requests
            ),
        });
    }
    out
}

/// How much worse the candidate is than stable on the breached measure, when
/// by more than the tolerance (the breach counts); `None` when it is not.
fn compare(
    breach: &Breach,
    candidate: Observed<'_>,
    stable: Observed<'_>,
    baseline: &Baseline,
    comparable: bool,
) -> Option<String> {
    let (c, s) = (candidate.figures, stable.figures);
    match breach.measure {
        Measure::ErrorRate => {
            let delta = c.error_rate() - s.error_rate();
            if comparable && delta <= baseline.max_error_rate_delta {
                return None;
            }
            let (stable_rate, _) = percent_pair(s.error_rate(), c.error_rate());
            Some(format!(
                "{} {stable_rate} ({} of {}): worse by more than {:.2} points",
                stable.version,
                s.errors,
                s.requests,
                baseline.max_error_rate_delta * 100.0
            ))
        }
        Measure::P99 => {
            let (Some(cp), Some(sp)) = (c.p99_ms, s.p99_ms) else {
                return Some(format!("{} has no p99 to compare", stable.version));
            };
            if comparable && cp <= sp * baseline.max_p99_ratio {
                return None;
            }
            Some(format!(
                "{} {}: more than {:.2} times slower",
                stable.version,
                millis(sp),
                baseline.max_p99_ratio
            ))
        }
    }
}

fn stable_summary(stable: Observed<'_>) -> String {
    let f = stable.figures;
    let (rate, _) = percent_pair(f.error_rate(), 0.0);
    match f.p99_ms {
        Some(p99) => format!(
            "{rate} errors ({} of {} requests), p99 {}",
            f.errors,
            f.requests,
            millis(p99)
        ),
        None => format!("{rate} errors ({} of {} requests)", f.errors, f.requests),
    }
}

/// `a` and `b` as percentages with two decimals, or more when two decimals
/// would print them alike (5.004% is not "5.00% > 5.00%").
pub fn percent_pair(a: f64, b: f64) -> (String, String) {
    let (a, b) = (a * 100.0, b * 100.0);
    for decimals in 2..=4 {
        let (x, y) = (format!("{a:.decimals$}%"), format!("{b:.decimals$}%"));
        if x != y || decimals == 4 {
            return (x, y);
        }
    }
    unreachable!("the loop returns at 4 decimals")
}

/// Milliseconds as `12ms`, or `1.5ms` under ten.
fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// What one analysis decided, and the figures it decided on (SPEC §4
/// "Evidence"): kept as the backend's `last_verdict`, and written into the
/// log line and the event of every step, hold, rollback and promotion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// Wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub decision: Decision,
    pub reason: Option<String>,
    /// Each version's figures over the window, by name.
    pub versions: Vec<(String, Figures)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Step,
    Hold,
    Rollback,
    Promote,
    /// Nothing to do this interval (too few requests, healthy between
    /// steps, paused, done).
    Wait,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Step => "step",
            Decision::Hold => "hold",
            Decision::Rollback => "rollback",
            Decision::Promote => "promote",
            Decision::Wait => "wait",
        }
    }
}

impl Evidence {
    /// The figures in one line: `v1 0.20% errors (1 of 500), p99 12ms; v2 …`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .versions
            .iter()
            .map(|(name, f)| {
                let rate = format!("{:.2}%", f.error_rate() * 100.0);
                let p99 = f.p99_ms.map_or_else(|| "-".to_string(), millis);
                format!(
                    "{name} {rate} errors ({} of {}), p99 {p99}",
                    f.errors, f.requests
                )
            })
            .collect();
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests;
