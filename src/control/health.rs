//! Active health checks: one probe loop per endpoint of every backend with a
//! `health_check`, running on the control runtime and following reloads.
//!
//! An endpoint starts healthy (so a start or reload never causes a burst of
//! 503s) and is probed at once. `unhealthy_threshold` failed probes in a row
//! take it out of rotation; `healthy_threshold` good ones bring it back. A
//! probe is `GET path` answered with 2xx or 3xx within `timeout`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::probe;
use crate::config::HealthCheck;
use crate::endpoint::Endpoint;
use crate::events::EventKind;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::upstream::HeadTimer;

/// Consecutive probe results → health, with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    healthy: bool,
    streak: u32,
}

impl Counter {
    pub fn new(healthy: bool) -> Self {
        Counter { healthy, streak: 0 }
    }

    /// Takes one probe result; returns the new health when it flips.
    pub fn observe(&mut self, ok: bool, check: &HealthCheck) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok {
            check.healthy_threshold
        } else {
            check.unhealthy_threshold
        };
        if self.streak < needed {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        Some(ok)
    }
}

struct Probe {
    check: HealthCheck,
    endpoint: Arc<Endpoint>,
    task: JoinHandle<()>,
}

/// The running probe loops, keyed by backend, version and address.
#[derive(Default)]
pub struct Probes {
    running: HashMap<(String, String, String), Probe>,
}

impl Probes {
    /// Starts, keeps or stops probe loops to match `snapshot`. Must run on
    /// the control runtime.
    pub fn reconcile(&mut self, snapshot: &Snapshot, shared: &Arc<Shared>) {
        let mut next = HashMap::new();
        for backend in &snapshot.backends {
            let check = snapshot
                .config
                .backends
                .get(&backend.name)
                .and_then(|b| b.health_check.clone());
            for version in &backend.versions {
                for endpoint in &version.endpoints {
                    let key = (
                        backend.name.clone(),
                        version.name.clone(),
                        endpoint.address.clone(),
                    );
                    let kept = self.running.remove(&key);
                    let Some(check) = check.clone() else {
                        if let Some(probe) = kept {
                            probe.task.abort();
                            // No longer probed: whatever the probes decided
                            // no longer holds, it counts as healthy. (An
                            // endpoint that never was probed is left alone.)
                            endpoint.healthy.store(true, Ordering::Relaxed);
                        }
                        continue;
                    };
                    match kept {
                        Some(probe)
                            if probe.check == check && Arc::ptr_eq(&probe.endpoint, endpoint) =>
                        {
                            next.insert(key, probe);
                        }
                        other => {
                            if let Some(probe) = other {
                                probe.task.abort();
                            }
                            let target = Target {
                                backend: key.0.clone(),
                                version: key.1.clone(),
                                endpoint: Arc::clone(endpoint),
                            };
                            let task = tokio::spawn(run(target, check.clone(), Arc::clone(shared)));
                            next.insert(
                                key,
                                Probe {
                                    check,
                                    endpoint: Arc::clone(endpoint),
                                    task,
                                },
                            );
                        }
                    }
                }
            }
        }
        for (_, probe) in self.running.drain() {
            probe.task.abort();
        }
        self.running = next;
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for probe in self.running.values() {
            probe.task.abort();
        }
    }
}

/// What one probe loop probes.
struct Target {
    backend: String,
    version: String,
    endpoint: Arc<Endpoint>,
}

/// Probes one endpoint every `interval` until aborted.
async fn run(target: Target, check: HealthCheck, shared: Arc<Shared>) {
    let Target {
        backend,
        version,
        endpoint,
    } = target;
    let mut counter = Counter::new(endpoint.healthy.load(Ordering::Relaxed));
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut timer = HeadTimer::default();
    loop {
        tick.tick().await;
        let ok = probe::probe(&endpoint, &check, &mut timer).await;
        if let Some(healthy) = counter.observe(ok, &check) {
            endpoint.healthy.store(healthy, Ordering::Relaxed);
            let message = if healthy {
                format!("{} ({version}) healthy again", endpoint.address)
            } else {
                format!(
                    "{} ({version}) unhealthy after {} failed probes",
                    endpoint.address, check.unhealthy_threshold
                )
            };
            if healthy {
                tracing::info!(backend = %backend, "{message}");
            } else {
                tracing::warn!(backend = %backend, "{message}");
            }
            shared
                .events
                .push(EventKind::Health, Some(&backend), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check() -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            grpc: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    #[test]
    fn three_failures_in_a_row_make_it_unhealthy() {
        let mut c = Counter::new(true);
        assert_eq!(c.observe(false, &check()), None);
        assert_eq!(c.observe(false, &check()), None);
        assert_eq!(c.observe(false, &check()), Some(false));
    }

    #[test]
    fn a_good_probe_breaks_a_failure_streak() {
        let mut c = Counter::new(true);
        c.observe(false, &check());
        c.observe(false, &check());
        assert_eq!(c.observe(true, &check()), None);
        assert_eq!(c.observe(false, &check()), None);
        assert_eq!(c.observe(false, &check()), None);
        assert_eq!(c.observe(false, &check()), Some(false));
    }

    #[test]
    fn two_good_probes_bring_it_back() {
        let mut c = Counter::new(false);
        assert_eq!(c.observe(true, &check()), None);
        assert_eq!(c.observe(true, &check()), Some(true));
        assert_eq!(c.observe(true, &check()), None);
    }
}
