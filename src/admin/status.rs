//! The `/status` document (SPEC §6) and the state gauges of `/metrics`, both
//! read from the current snapshot and the release engine's states.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::{AnalysisSource, Release};
use crate::control::engine::{ReleaseState, ReleaseView};
use crate::control::history::Page;
use crate::release::progress::Phase;
use crate::release::verdict::Evidence;
use crate::shared::Shared;
use crate::snapshot::{BackendRt, Shape};

/// The span over which `rate_rps` is computed (shorter if the window is).
const RATE_SPAN: Duration = Duration::from_secs(10);

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn from_wall_ms(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

fn role(backend: &BackendRt, index: usize) -> &'static str {
    match backend.shape {
        Shape::Single(_) => "only",
        Shape::Canary { stable, .. } if index == stable => "stable",
        Shape::Canary { canary, .. } if index == canary => "canary",
        Shape::BlueGreen { .. } if index == backend.live.active.load(Ordering::Relaxed) => "active",
        Shape::BlueGreen { preview: Some(p) } if index == p => "preview",
        _ => "other",
    }
}

/// The `/status` document.
pub fn document(shared: &Shared, ready: bool, views: &[ReleaseView]) -> Value {
    let snapshot = shared.snapshot.load_full();
    let now = shared.clock.now_ms();
    let mut backends = Map::new();
    for backend in &snapshot.backends {
        let Some(config) = snapshot.config.backends.get(&backend.name) else {
            continue;
        };
        let view = views.iter().find(|v| v.backend == backend.name);
        let state = view.map(|v| &v.state);
        let weights = backend.weights();
        let window_span = backend
            .analysis
            .as_ref()
            .map_or(Duration::from_secs(30), |a| a.window);
        let mut versions = Map::new();
        let mut weight_map = Map::new();
        for (i, v) in backend.versions.iter().enumerate() {
            let figures = v.window.figures(now, window_span);
            let rate_span = RATE_SPAN.min(window_span);
            let recent = v.window.figures(now, rate_span);
            weight_map.insert(v.name.clone(), json!(weights[i]));
            versions.insert(
                v.name.clone(),
                json!({
                    "role": role(backend, i),
                    "discover": config.versions.get(&v.name).and_then(|c| c.discover.as_ref()).map(|d| json!({
                        "dns": d.dns,
                        "port": d.port,
                        "interval_ms": d.interval.as_millis() as u64,
                        "resolver": d.resolver.map(|r| r.to_string()),
                    })),
                    "endpoints": v.endpoints.iter().map(|e| json!({
                        "address": e.address,
                        "healthy": e.healthy.load(Ordering::Relaxed),
                        "ejected": e.ejected(&shared.clock),
                        "in_flight": e.in_flight.load(Ordering::Relaxed),
                    })).collect::<Vec<_>>(),
                    "window": {
                        "requests": figures.requests,
                        "errors": figures.errors,
                        "error_rate": figures.error_rate(),
                        "p99_ms": figures.p99_ms,
                    },
                    "rate_rps": recent.requests as f64 / rate_span.as_secs_f64(),
                }),
            );
        }
        let (strategy, steps) = match &config.release {
            Release::Single { .. } => ("single", Value::Null),
            Release::Canary(c) => ("canary", json!(c.steps)),
            Release::BlueGreen(_) => ("blue_green", Value::Null),
        };
        let (phase, reason, since, step) = match state {
            Some(ReleaseState::Canary(c)) => {
                let reason = c
                    .reason
                    .clone()
                    .or_else(|| c.hold.as_ref().map(|h| format!("holding: {h}")));
                (c.phase, reason, Some(c.since_ms), json!(c.step))
            }
            Some(ReleaseState::BlueGreen(b)) => {
                (b.phase, b.reason.clone(), Some(b.since_ms), Value::Null)
            }
            None => (Phase::Stable, None, None, Value::Null),
        };
        let analysis = backend.analysis.as_ref().map_or(Value::Null, |a| {
            json!({
                "interval_ms": a.interval.as_millis() as u64,
                "window_s": a.window.as_secs_f64(),
                "min_requests": a.min_requests,
                "max_error_rate": a.max_error_rate,
                "max_p99_ms": a.max_p99_latency.as_secs_f64() * 1e3,
                "source": match a.source { AnalysisSource::Local => "local", AnalysisSource::Prometheus { .. } => "prometheus" },
                "baseline": if a.against_stable { "stable" } else { "none" },
                "max_error_rate_delta": a.against_stable.then_some(a.max_error_rate_delta),
                "max_p99_ratio": a.against_stable.then_some(a.max_p99_ratio),
            })
        });
        let last_verdict = view
            .and_then(|v| v.last_verdict.as_ref())
            .map_or(Value::Null, verdict);
        backends.insert(
            backend.name.clone(),
            json!({
                "strategy": strategy,
                "phase": phase.as_str(),
                "reason": reason,
                "since": since.map(from_wall_ms),
                "weights": weight_map,
                "step": step,
                "steps": steps,
                "analysis": analysis,
                "versions": versions,
                "last_verdict": last_verdict,
            }),
        );
    }
    let last_reload = shared.events.last_reload().map_or(Value::Null, |r| {
        json!({
            "result": if r.success { "success" } else { "error" },
            "at": rfc3339(r.at),
            "error": r.error,
        })
    });
    let events: Vec<Value> = shared
        .events
        .recent()
        .into_iter()
        .rev()
        .take(100)
        .map(|e| json!({ "at": rfc3339(e.at), "backend": e.backend, "kind": e.kind.as_str(), "message": e.message }))
        .collect();
    json!({
        "generation": shared.events.generation(),
        "ready": ready,
        "last_reload": last_reload,
        "backends": backends,
        "events": events,
    })
}

/// `last_verdict`: the decision, its reason and every version's figures.
fn verdict(evidence: &Evidence) -> Value {
    let versions: Map<String, Value> = evidence
        .versions
        .iter()
        .map(|(name, f)| {
            let figures = json!({
                "requests": f.requests,
                "errors": f.errors,
                "error_rate": f.error_rate(),
                "p99_ms": f.p99_ms,
            });
            (name.clone(), figures)
        })
        .collect();
    json!({
        "at": from_wall_ms(evidence.at_ms),
        "decision": evidence.decision.as_str(),
        "reason": evidence.reason,
        "versions": versions,
    })
}

/// Sets the state gauges (weight, phase, endpoint health) to what holds now;
/// label sets of removed backends and endpoints disappear.
pub fn refresh_gauges(shared: &Shared, releases: &HashMap<String, ReleaseState>) {
    let snapshot = shared.snapshot.load_full();
    let m = &shared.metrics;
    m.canary_weight.reset();
    m.release_phase.reset();
    m.endpoint_healthy.reset();
    for backend in &snapshot.backends {
        if let Shape::Canary { .. } = backend.shape {
            let weight = f64::from(backend.live.threshold.load(Ordering::Relaxed)) / 100.0;
            m.canary_weight
                .with_label_values(&[&backend.name])
                .set(weight);
        }
        if let Some(state) = releases.get(&backend.name) {
            for phase in Phase::ALL {
                let on = i64::from(state.phase() == phase);
                m.release_phase
                    .with_label_values(&[&backend.name, phase.as_str()])
                    .set(on);
            }
        }
        for v in &backend.versions {
            for e in &v.endpoints {
                m.endpoint_healthy
                    .with_label_values(&[&backend.name, &v.name, &e.address])
                    .set(i64::from(e.usable(&shared.clock)));
            }
        }
    }
}

/// The `/status/history` document: per backend, the timeline samples,
/// oldest first (SPEC §6).
pub fn history_document(page: &Page) -> Value {
    let backends: Map<String, Value> = page
        .backends
        .iter()
        .map(|(name, samples)| {
            let samples: Vec<Value> = samples
                .iter()
                .map(|s| {
                    let weights: Map<String, Value> = s
                        .versions
                        .iter()
                        .map(|v| (v.name.clone(), json!(v.weight)))
                        .collect();
                    let versions: Map<String, Value> = s
                        .versions
                        .iter()
                        .map(|v| {
                            let error_rate = if v.requests == 0 {
                                0.0
                            } else {
                                v.errors as f64 / v.requests as f64
                            };
                            let figures = json!({
                                "requests": v.requests,
                                "errors": v.errors,
                                "error_rate": error_rate,
                                "p99_ms": v.p99_ms,
                            });
                            (v.name.clone(), figures)
                        })
                        .collect();
                    let marks: Vec<Value> = s
                        .marks
                        .iter()
                        .map(|m| json!({ "kind": m.kind.as_str(), "message": m.message }))
                        .collect();
                    json!({
                        "seq": s.seq,
                        "at": humantime::format_rfc3339_millis(s.at).to_string(),
                        "phase": s.phase.map(Phase::as_str),
                        "step": s.step,
                        "weights": weights,
                        "versions": versions,
                        "marks": marks,
                    })
                })
                .collect();
            (name.clone(), Value::Array(samples))
        })
        .collect();
    json!({ "interval_ms": page.interval_ms, "seq": page.seq, "backends": backends })
}
