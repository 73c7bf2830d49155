//! The release engine: each backend's release state, driven by the analysis.
//!
//! Owned by the control loop, which calls [`Engine::reconcile`] before a new
//! snapshot is swapped in (start and every reload), [`Engine::tick`] on a
//! short timer, and [`Engine::act`] for operator actions. Decisions come from
//! the pure state machine in `release::progress`; the engine only reads the
//! windows, writes the backends' live weights, logs, records events and
//! persists the state file.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::analysis::{self, Judged, Query, Subject};
use super::state_file::{self, Writer};
use crate::config::{AnalysisSource, Config, Release};
use crate::events::EventKind;
use crate::release::blue_green::BlueGreen;
use crate::release::bucket::threshold;
use crate::release::progress::{self, Action, Change, Phase, Plan};
use crate::release::verdict::{Decision, Evidence, Verdict};
use crate::shared::Shared;
use crate::snapshot::{BackendRt, Snapshot};

/// The live state of one backend's release, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum ReleaseState {
    Canary(progress::Canary),
    BlueGreen(BlueGreen),
}

impl ReleaseState {
    pub fn phase(&self) -> Phase {
        match self {
            ReleaseState::Canary(c) => c.phase,
            ReleaseState::BlueGreen(b) => b.phase,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            ReleaseState::Canary(c) => c.reason.as_deref(),
            ReleaseState::BlueGreen(b) => b.reason.as_deref(),
        }
    }
}

/// Why an operator action was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    #[error("unknown backend {0:?}")]
    UnknownBackend(String),
    #[error("backend {0:?} has no release")]
    NoRelease(String),
    #[error("{0}")]
    Conflict(String),
}

/// A backend's release as the admin API shows it.
#[derive(Debug, Clone)]
pub struct ReleaseView {
    pub backend: String,
    pub state: ReleaseState,
    /// The last analysis: its decision and the figures it was taken on.
    pub last_verdict: Option<Evidence>,
}

pub struct Engine {
    releases: BTreeMap<String, ReleaseState>,
    last_analysis: HashMap<String, u64>,
    /// Each backend's last verdict, with its evidence (in memory only).
    verdicts: HashMap<String, Evidence>,
    state_file: Option<PathBuf>,
    writer: Option<Writer>,
}

fn plan(c: &crate::config::Canary) -> Plan {
    Plan {
        weight: c.weight,
        steps: c.steps.clone(),
        step_interval_ms: c.step_interval.as_millis() as u64,
    }
}

/// backend + canary version + its endpoints: what makes a release new. A
/// discovered canary is named by its `discover` block, so pods coming and
/// going never restart its release.
fn canary_identity(config: &Config, backend: &BackendRt, canary: &str) -> String {
    let discover = config
        .backends
        .get(&backend.name)
        .and_then(|b| b.versions.get(canary))
        .and_then(|v| v.discover.as_ref());
    if let Some(discover) = discover {
        return format!("{}/{canary}/{}", backend.name, discover.describe());
    }
    let mut endpoints: Vec<&str> = backend
        .version_named(canary)
        .map(|v| v.endpoints.iter().map(|e| e.address.as_str()).collect())
        .unwrap_or_default();
    endpoints.sort_unstable();
    format!("{}/{canary}/{}", backend.name, endpoints.join(","))
}

fn blue_green_identity(backend: &BackendRt) -> String {
    let names: Vec<&str> = backend.versions.iter().map(|v| v.name.as_str()).collect();
    format!("{}/blue_green/{}", backend.name, names.join(","))
}

impl Engine {
    /// An engine for `state_file`, restoring what it holds (a missing file
    /// is normal; an unreadable or corrupt one is reported and ignored), and
    /// persisting every change through `writer`. Reads the file: call it
    /// before the runtime serves, not on it.
    pub fn new(state_file: Option<PathBuf>, writer: Option<Writer>) -> Engine {
        let releases = state_file
            .as_deref()
            .map(state_file::restore)
            .unwrap_or_default();
        Engine {
            releases,
            last_analysis: HashMap::new(),
            verdicts: HashMap::new(),
            state_file,
            writer,
        }
    }

    pub fn state(&self, backend: &str) -> Option<&ReleaseState> {
        self.releases.get(backend)
    }

    /// Every release of `snapshot`'s backends, with its last verdict.
    /// `backend`'s release phase and step now, for the timeline.
    pub fn timeline_state(&self, backend: &str) -> Option<super::history::Release> {
        let state = self.releases.get(backend)?;
        let step = match state {
            ReleaseState::Canary(c) => c.step,
            ReleaseState::BlueGreen(_) => None,
        };
        Some(super::history::Release {
            phase: state.phase(),
            step,
        })
    }

    pub fn views(&self, snapshot: &Snapshot) -> Vec<ReleaseView> {
        snapshot
            .backends
            .iter()
            .filter_map(|b| {
                Some(ReleaseView {
                    backend: b.name.clone(),
                    state: self.releases.get(&b.name)?.clone(),
                    last_verdict: self.verdicts.get(&b.name).cloned(),
                })
            })
            .collect()
    }

    /// Brings the release states in line with a new snapshot and sets its
    /// live weights. Called before the snapshot serves.
    pub fn reconcile(&mut self, snapshot: &Snapshot, shared: &Shared) {
        if snapshot.config.state_file != self.state_file {
            self.state_file = snapshot.config.state_file.clone();
        }
        let now = shared.clock.wall_ms();
        let mut next = BTreeMap::new();
        for backend in &snapshot.backends {
            let Some(config) = snapshot.config.backends.get(&backend.name) else {
                continue;
            };
            let state = match &config.release {
                Release::Single { .. } => continue,
                Release::Canary(c) => {
                    let identity = canary_identity(&snapshot.config, backend, &c.canary);
                    let plan = plan(c);
                    match self.releases.remove(&backend.name) {
                        Some(ReleaseState::Canary(mut s)) if s.identity == identity => {
                            if let Some(change) = s.reconfigure(&plan, now) {
                                report(&backend.name, &change, None, shared);
                            }
                            ReleaseState::Canary(s)
                        }
                        _ => {
                            let s = progress::Canary::start(identity, &plan, now);
                            tracing::info!(backend = %backend.name, canary = %c.canary, weight = s.weight, "release started");
                            let message = format!("release started: {} at {}%", c.canary, s.weight);
                            shared
                                .events
                                .push(EventKind::Step, Some(&backend.name), message);
                            ReleaseState::Canary(s)
                        }
                    }
                }
                Release::BlueGreen(b) => {
                    let identity = blue_green_identity(backend);
                    match self.releases.remove(&backend.name) {
                        Some(ReleaseState::BlueGreen(mut s)) if s.identity == identity => {
                            if let Some(change) = s.reconfigure(&b.active, identity, now) {
                                report(&backend.name, &change, None, shared);
                            }
                            ReleaseState::BlueGreen(s)
                        }
                        _ => ReleaseState::BlueGreen(BlueGreen::start(identity, &b.active, now)),
                    }
                }
            };
            apply_live(backend, &state);
            next.insert(backend.name.clone(), state);
        }
        let changed = next != self.releases;
        self.releases = next;
        if changed {
            self.persist();
        }
    }

    /// Runs the analysis of every backend whose interval has come. Local
    /// windows are judged at once; for the Prometheus source the queries to
    /// run are returned, and their verdicts come back through [`Engine::decide`].
    pub fn tick(&mut self, snapshot: &Snapshot, shared: &Shared) -> Vec<Query> {
        let mono = shared.clock.now_ms();
        let mut queries = Vec::new();
        for backend in &snapshot.backends {
            let (Some(analysis), Some(state)) =
                (&backend.analysis, self.releases.get(&backend.name))
            else {
                continue;
            };
            // A rolled-back release decides nothing more: its last verdict
            // (the rollback and its evidence) stays.
            if state.phase() == Phase::RolledBack {
                continue;
            }
            let interval = analysis.interval.as_millis() as u64;
            let last = self.last_analysis.entry(backend.name.clone()).or_insert(0);
            if mono.saturating_sub(*last) < interval {
                continue;
            }
            *last = mono;
            let active = match state {
                ReleaseState::BlueGreen(s) => Some(s.active.as_str()),
                ReleaseState::Canary(_) => None,
            };
            let Some(subject) = snapshot
                .config
                .backends
                .get(&backend.name)
                .and_then(|b| Subject::of(&b.release, analysis, active))
            else {
                continue;
            };
            match &analysis.source {
                AnalysisSource::Local => {
                    let judged = analysis::local(backend, &subject, analysis, mono);
                    self.decide(snapshot, &backend.name, judged, shared);
                }
                AnalysisSource::Prometheus {
                    url,
                    requests_query,
                    error_rate_query,
                    p99_query,
                } => queries.push(Query {
                    backend: backend.name.clone(),
                    subject,
                    versions: backend.versions.iter().map(|v| v.name.clone()).collect(),
                    url: url.clone(),
                    requests: requests_query.clone(),
                    error_rate: error_rate_query.clone(),
                    p99: p99_query.clone(),
                    window: analysis.window,
                    limits: analysis::thresholds(analysis),
                }),
            }
        }
        queries
    }

    /// Applies one analysis to `backend`'s release and keeps its evidence.
    pub fn decide(&mut self, snapshot: &Snapshot, backend: &str, judged: Judged, shared: &Shared) {
        let (Some(rt), Some(state)) = (snapshot.backend(backend), self.releases.get_mut(backend))
        else {
            return;
        };
        let Some(analysis) = &rt.analysis else { return };
        let now = shared.clock.wall_ms();
        let verdict = &judged.verdict;
        let change = match state {
            ReleaseState::Canary(s) => {
                match snapshot.config.backends.get(backend).map(|b| &b.release) {
                    Some(Release::Canary(c)) => s.tick(&plan(c), verdict, now),
                    _ => None,
                }
            }
            ReleaseState::BlueGreen(s) => s.tick(verdict, analysis.window.as_millis() as u64, now),
        };
        let holding = matches!(state, ReleaseState::Canary(s) if s.hold.is_some());
        let decision = match change.as_ref().map(|c| c.kind) {
            Some(EventKind::Step) => Decision::Step,
            Some(EventKind::Promote) => Decision::Promote,
            Some(EventKind::Rollback) => Decision::Rollback,
            Some(EventKind::Hold) => Decision::Hold,
            _ if holding => Decision::Hold,
            _ => Decision::Wait,
        };
        let reason = match (&change, verdict) {
            (Some(change), _) => Some(change.message.clone()),
            (None, Verdict::Failing(r) | Verdict::Hold(r)) => Some(r.clone()),
            (None, _) => None,
        };
        let evidence = Evidence {
            at_ms: now,
            decision,
            reason,
            versions: judged.versions,
        };
        if let Some(change) = change {
            report(backend, &change, Some(&evidence), shared);
            apply_live(rt, state);
            self.persist();
        }
        self.verdicts.insert(backend.to_string(), evidence);
    }

    /// An operator action on `backend`'s release.
    pub fn act(
        &mut self,
        snapshot: &Snapshot,
        backend: &str,
        action: Action,
        shared: &Shared,
    ) -> Result<String, ActError> {
        let rt = snapshot
            .backend(backend)
            .ok_or_else(|| ActError::UnknownBackend(backend.into()))?;
        let state = self
            .releases
            .get_mut(backend)
            .ok_or_else(|| ActError::NoRelease(backend.into()))?;
        let now = shared.clock.wall_ms();
        let change = match state {
            ReleaseState::Canary(s) => {
                let Some(Release::Canary(c)) =
                    snapshot.config.backends.get(backend).map(|b| &b.release)
                else {
                    return Err(ActError::NoRelease(backend.into()));
                };
                s.act(action, &plan(c), now)
            }
            ReleaseState::BlueGreen(s) => s.act(action, now),
        }
        .map_err(ActError::Conflict)?;
        if action == Action::Retry {
            // The failures that caused the rollback must not roll the new
            // attempt back at once.
            let analysed = match state {
                ReleaseState::Canary(_) => rt.canary().map(|v| &rt.versions[v]),
                ReleaseState::BlueGreen(s) => rt.version_named(&s.active),
            };
            if let Some(version) = analysed {
                version.window.clear();
            }
        }
        report(backend, &change, None, shared);
        apply_live(rt, state);
        self.persist();
        Ok(change.message)
    }

    /// Queues the release states for the state file (written off the
    /// runtime, by the state writer's thread).
    fn persist(&self) {
        if let (Some(path), Some(writer)) = (&self.state_file, &self.writer) {
            writer.write(path, &self.releases);
        }
    }
}

/// Sets the request path's live values from a release state.
fn apply_live(backend: &BackendRt, state: &ReleaseState) {
    match state {
        ReleaseState::Canary(s) => backend
            .live
            .threshold
            .store(threshold(s.weight), Ordering::Relaxed),
        ReleaseState::BlueGreen(s) => {
            if let Some(idx) = backend.version_index(s.active.as_bytes()) {
                backend.live.active.store(idx, Ordering::Relaxed);
            }
        }
    }
}

/// Logs a change and records its event; an analysis's change carries the
/// figures it was decided on.
fn report(backend: &str, change: &Change, evidence: Option<&Evidence>, shared: &Shared) {
    let figures = evidence.map(Evidence::summary);
    let kind = change.kind.as_str();
    match (change.kind, &figures) {
        (EventKind::Rollback, Some(evidence)) => {
            tracing::warn!(backend, reason = %change.message, %evidence, "release rolled back")
        }
        (EventKind::Rollback, None) => {
            tracing::warn!(backend, reason = %change.message, "release rolled back")
        }
        (_, Some(evidence)) => tracing::info!(backend, kind, %evidence, "{}", change.message),
        (_, None) => tracing::info!(backend, kind, "{}", change.message),
    }
    if change.kind == EventKind::Rollback {
        shared.metrics.rollbacks.with_label_values(&[backend]).inc();
    }
    let message = match &figures {
        Some(evidence) => format!("{} [{evidence}]", change.message),
        None => change.message.clone(),
    };
    shared.events.push(change.kind, Some(backend), message);
}
