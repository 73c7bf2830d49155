//! The release timeline: per backend, one sample per analysis interval (or
//! per second for a backend without analysis) of the weights, the phase and
//! each version's window figures, with the release events since the sample
//! before as marks. Kept in memory, in a ring per backend sized for
//! [`KEEP`]: a fixed amount of memory whatever the uptime.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::events::{EventKind, Events};
use crate::release::progress::Phase;
use crate::snapshot::{BackendRt, Snapshot};

/// How far back the timeline reaches.
pub const KEEP: Duration = Duration::from_secs(15 * 60);
/// The sample interval of a backend without analysis.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// At most this many samples per backend (15 min at 100 ms).
const MAX_SAMPLES: usize = 9_001;
/// The release events that become marks on the timeline.
const MARKS: [EventKind; 7] = [
    EventKind::Step,
    EventKind::Hold,
    EventKind::Promote,
    EventKind::Rollback,
    EventKind::Pause,
    EventKind::Resume,
    EventKind::Retry,
];

/// One version's figures at a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSample {
    pub name: String,
    /// Percent of the traffic (0-100).
    pub weight: f64,
    /// Over the analysis window at that moment.
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub kind: EventKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Increases by one per sample, across backends.
    pub seq: u64,
    pub at: SystemTime,
    /// `None` for a backend without a release (a single version).
    pub phase: Option<Phase>,
    pub step: Option<usize>,
    pub versions: Vec<VersionSample>,
    pub marks: Vec<Mark>,
}

struct Track {
    interval_ms: u64,
    /// Monotonic ms of the last sample.
    last_ms: Option<u64>,
    /// Wall time of the last sample: events after it are the next marks.
    last_at: SystemTime,
    samples: VecDeque<Sample>,
}

/// What a page of the history holds.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The shortest sample interval of any backend, in ms.
    pub interval_ms: u64,
    /// The newest sample's `seq` (0 before the first).
    pub seq: u64,
    pub backends: BTreeMap<String, Vec<Sample>>,
}

#[derive(Default)]
pub struct History {
    tracks: BTreeMap<String, Track>,
    seq: u64,
}

/// A release's phase and step, as the history needs them.
pub struct Release {
    pub phase: Phase,
    pub step: Option<usize>,
}

impl History {
    /// Takes the samples that are due at monotonic `now_ms`; `release`
    /// tells each backend's release phase and step.
    pub fn tick(
        &mut self,
        snapshot: &Snapshot,
        now_ms: u64,
        release: impl Fn(&str) -> Option<Release>,
        events: &Events,
    ) {
        self.tracks
            .retain(|name, _| snapshot.backend(name).is_some());
        for backend in &snapshot.backends {
            let interval = backend
                .analysis
                .as_ref()
                .map_or(DEFAULT_INTERVAL, |a| a.interval);
            let interval_ms = (interval.as_millis() as u64).max(1);
            let capacity = capacity(interval);
            let track = self
                .tracks
                .entry(backend.name.clone())
                .or_insert_with(|| Track {
                    interval_ms,
                    last_ms: None,
                    // The first sample takes the release events so far.
                    last_at: SystemTime::UNIX_EPOCH,
                    samples: VecDeque::new(),
                });
            track.interval_ms = interval_ms;
            if track
                .last_ms
                .is_some_and(|last| now_ms.saturating_sub(last) < interval_ms)
            {
                continue;
            }
            let at = SystemTime::now();
            let marks = events
                .since(track.last_at, &backend.name, &MARKS)
                .into_iter()
                .map(|(kind, message)| Mark { kind, message })
                .collect();
            self.seq += 1;
            let state = release(&backend.name);
            let sample = Sample {
                seq: self.seq,
                at,
                phase: state.as_ref().map(|r| r.phase),
                step: state.and_then(|r| r.step),
                versions: versions(backend, now_ms),
                marks,
            };
            while track.samples.len() >= capacity {
                track.samples.pop_front();
            }
            track.samples.push_back(sample);
            track.last_ms = Some(now_ms);
            track.last_at = at;
        }
    }

    /// The samples newer than `since` (every one with `since` 0).
    pub fn page(&self, since: u64) -> Page {
        Page {
            interval_ms: self
                .tracks
                .values()
                .map(|t| t.interval_ms)
                .min()
                .unwrap_or(DEFAULT_INTERVAL.as_millis() as u64),
            seq: self.seq,
            backends: self
                .tracks
                .iter()
                .map(|(name, t)| {
                    let newer = t.samples.iter().filter(|s| s.seq > since).cloned();
                    (name.clone(), newer.collect())
                })
                .collect(),
        }
    }
}

/// Samples to keep for [`KEEP`] at one per `interval`, within bounds.
fn capacity(interval: Duration) -> usize {
    let wanted = KEEP.as_millis() / interval.as_millis().max(1);
    (wanted as usize + 1).clamp(2, MAX_SAMPLES)
}

fn versions(backend: &BackendRt, now_ms: u64) -> Vec<VersionSample> {
    let span = backend
        .analysis
        .as_ref()
        .map_or(Duration::from_secs(30), |a| a.window);
    let weights = backend.weights();
    backend
        .versions
        .iter()
        .zip(weights)
        .map(|(v, weight)| {
            let figures = v.window.figures(now_ms, span);
            VersionSample {
                name: v.name.clone(),
                weight,
                requests: figures.requests,
                errors: figures.errors,
                p99_ms: figures.p99_ms,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_covers_fifteen_minutes_within_bounds() {
        assert_eq!(capacity(Duration::from_secs(1)), 901);
        assert_eq!(capacity(Duration::from_secs(5)), 181);
        assert_eq!(capacity(Duration::from_millis(100)), MAX_SAMPLES);
        assert_eq!(capacity(Duration::from_millis(10)), MAX_SAMPLES);
        assert_eq!(capacity(Duration::from_secs(3600)), 2);
    }
}
