//! What the release engine judges a backend on: its analysed version (the
//! canary, or blue/green's active), stable beside it in baseline mode, and
//! every version's figures over the window as the evidence.
//!
//! Local figures come from the request path's windows at once; fleet-wide
//! ones are a [`Query`] the control loop sends to Prometheus
//! (`prometheus::analyse`), whose answer comes back as the same [`Judged`].

use std::time::Duration;

use crate::config::{Analysis, Release};
use crate::release::verdict::{judge, Baseline, Figures, Observed, Thresholds, Verdict};
use crate::snapshot::BackendRt;

/// What one analysis of a backend judged, and the figures behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    /// Each version's figures over the window, by name.
    pub versions: Vec<(String, Figures)>,
}

impl Judged {
    /// Nothing could be judged (no figures).
    pub fn nothing() -> Judged {
        Judged {
            verdict: Verdict::Inconclusive,
            versions: Vec::new(),
        }
    }
}

/// The versions one analysis looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// The version judged: the canary, or blue/green's active.
    pub candidate: String,
    /// Stable, judged beside the canary in baseline mode.
    pub stable: Option<String>,
}

impl Subject {
    /// The subject of `release` (`None` for a single-version backend);
    /// `active` is blue/green's version in force.
    pub fn of(release: &Release, analysis: &Analysis, active: Option<&str>) -> Option<Subject> {
        match release {
            Release::Single { .. } => None,
            Release::Canary(c) => Some(Subject {
                candidate: c.canary.clone(),
                stable: analysis.against_stable.then(|| c.stable.clone()),
            }),
            Release::BlueGreen(b) => Some(Subject {
                candidate: active.unwrap_or(&b.active).to_string(),
                stable: None,
            }),
        }
    }
}

/// The thresholds of `analysis`.
pub fn thresholds(analysis: &Analysis) -> Thresholds {
    Thresholds {
        min_requests: analysis.min_requests,
        max_error_rate: analysis.max_error_rate,
        max_p99_ms: analysis.max_p99_latency.as_secs_f64() * 1e3,
        baseline: analysis.against_stable.then_some(Baseline {
            max_error_rate_delta: analysis.max_error_rate_delta,
            max_p99_ratio: analysis.max_p99_ratio,
        }),
    }
}

/// Judges `subject` on the gateway's own windows at `now_ms`.
pub fn local(backend: &BackendRt, subject: &Subject, analysis: &Analysis, now_ms: u64) -> Judged {
    let versions: Vec<(String, Figures)> = backend
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.window.figures(now_ms, analysis.window)))
        .collect();
    let verdict = judge_figures(&versions, subject, &thresholds(analysis));
    Judged { verdict, versions }
}

/// Judges `subject` on `versions`' figures (missing candidate figures decide
/// nothing; missing stable figures judge the candidate on its own).
pub fn judge_figures(
    versions: &[(String, Figures)],
    subject: &Subject,
    limits: &Thresholds,
) -> Verdict {
    let find = |name: &str| versions.iter().find(|(n, _)| n == name).map(|(_, f)| f);
    let Some(candidate) = find(&subject.candidate) else {
        return Verdict::Inconclusive;
    };
    let stable = subject.stable.as_deref().and_then(|name| {
        find(name).map(|figures| Observed {
            version: name,
            figures,
        })
    });
    let candidate = Observed {
        version: &subject.candidate,
        figures: candidate,
    };
    judge(candidate, stable, limits)
}

/// A fleet-wide analysis to run against Prometheus (see `prometheus`).
#[derive(Debug, Clone)]
pub struct Query {
    pub backend: String,
    pub subject: Subject,
    /// Every version of the backend, for the evidence.
    pub versions: Vec<String>,
    pub url: String,
    pub requests: Option<String>,
    pub error_rate: Option<String>,
    pub p99: Option<String>,
    pub window: Duration,
    pub limits: Thresholds,
}
