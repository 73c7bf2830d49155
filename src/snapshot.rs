//! The compiled, immutable view of one config generation that the request
//! path reads: the routing table plus, per backend, its versions, endpoints,
//! statistics windows and release settings.
//!
//! A snapshot is built once per config and swapped in whole (`ArcSwap`), so a
//! request sees one consistent generation from start to end. What changes
//! between reloads lives in atomics: endpoint health and ejection (see
//! `endpoint`), and each backend's [`Live`] release values, which only the
//! control thread writes (the release engine sets them before a snapshot is
//! swapped in, and on every step or rollback).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use prometheus::IntCounter;

use crate::clock::Clock;
use crate::config::{self, Analysis, Config, LoadBalancing, Outlier, Protocol, Release, Sticky};
use crate::endpoint::Endpoint;
use crate::metrics::{GrpcCodes, Metrics, VersionMetrics};
use crate::release::bucket::threshold;
use crate::release::split::{Split, VersionIdx};
use crate::release::table::RouteTable;
use crate::request_id::random_below;
use crate::stats::Window;
use crate::tls::{TlsMaterial, UpstreamTls};

/// Addresses found by DNS discovery (`ip:port`), by backend and version:
/// what a discovered version's endpoints are in a snapshot.
pub type Discovered = BTreeMap<(String, String), Vec<String>>;

pub struct Snapshot {
    pub config: Arc<Config>,
    /// The discovered addresses this snapshot was built with.
    pub discovered: Discovered,
    /// Certificates, keys and CAs as loaded for this generation.
    pub tls: TlsMaterial,
    pub table: RouteTable,
    pub routes: Vec<RouteRt>,
    pub backends: Vec<Arc<BackendRt>>,
    /// Metric handles for answers no route matched.
    pub unrouted: VersionMetrics,
}

pub struct RouteRt {
    pub name: String,
    pub backend: usize,
    pub timeout: Duration,
    /// Metric handles per version of the route's backend (by index).
    pub metrics: Vec<VersionMetrics>,
    /// Metric handles for the gateway's own answers on this route (503...).
    pub own: VersionMetrics,
}

/// The shape of a backend's release, by version index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single(VersionIdx),
    Canary {
        stable: VersionIdx,
        canary: VersionIdx,
    },
    BlueGreen {
        preview: Option<VersionIdx>,
    },
}

/// Release values the engine moves without a reload.
#[derive(Debug, Default)]
pub struct Live {
    /// Canary buckets (0..=10000): the canary weight in force.
    pub threshold: AtomicU32,
    /// Blue/green: the version taking traffic.
    pub active: AtomicUsize,
}

pub struct BackendRt {
    pub name: String,
    pub versions: Vec<VersionRt>,
    pub shape: Shape,
    pub live: Live,
    pub override_header: Option<HeaderName>,
    pub sticky: Option<Sticky>,
    pub load_balancing: LoadBalancing,
    pub outlier: Outlier,
    pub retry_on_stable: bool,
    /// Stable requests copied to the canary, in buckets (0..=10000).
    pub mirror_threshold: u32,
    /// Mirrored requests in flight now (bounded by the request path).
    pub mirrors_in_flight: AtomicUsize,
    /// Mirrored requests dropped for too many in flight; only for backends
    /// that mirror.
    pub mirror_dropped: Option<IntCounter>,
    pub analysis: Option<Analysis>,
}

pub struct VersionRt {
    pub name: String,
    /// The `x-switchyard-version` value, built once.
    pub header: HeaderValue,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Recent requests, for the analysis; carried over across reloads.
    pub window: Arc<Window>,
    /// gRPC answers by status.
    pub grpc_codes: GrpcCodes,
    next: AtomicUsize,
}

impl VersionRt {
    /// Whether some endpoint may take requests now.
    pub fn has_usable(&self, clock: &Clock) -> bool {
        self.endpoints.iter().any(|e| e.usable(clock))
    }

    /// Whether some endpoint passes its health checks, ejected or not.
    pub fn has_healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.healthy())
    }

    /// A healthy endpoint, ejection ignored, taken in turn: when every
    /// healthy endpoint of the backend is ejected, the passive verdict yields
    /// to availability (as Envoy's panic threshold does) rather than failing
    /// every request.
    fn pick_ejected(&self) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| e.healthy())
    }

    /// The next usable endpoint after `failed`, in order, other than it;
    /// else the next healthy one, ejected or not.
    pub fn pick_other(&self, failed: &Endpoint, clock: &Clock) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        let at = self.endpoints.iter().position(|e| e.id == failed.id)?;
        let others = || (1..n).map(move |i| &self.endpoints[(at + i) % n]);
        others()
            .find(|e| e.usable(clock))
            .or_else(|| others().find(|e| e.healthy()))
    }

    /// Picks an endpoint by the backend's policy among the usable ones now;
    /// when there is none, a healthy one whatever its ejection.
    pub fn pick(&self, policy: LoadBalancing, clock: &Clock) -> Option<&Arc<Endpoint>> {
        self.pick_usable(policy, clock)
            .or_else(|| self.pick_ejected())
    }

    fn pick_usable(&self, policy: LoadBalancing, clock: &Clock) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        let usable = |e: &&Arc<Endpoint>| e.usable(clock);
        match (policy, n) {
            (_, 0) => None,
            (_, 1) => self.endpoints.first().filter(usable),
            (LoadBalancing::RoundRobin, _) => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.endpoints[(start + i) % n])
                    .find(usable)
            }
            (LoadBalancing::LeastRequest, _) => {
                // Power of two choices: two distinct random endpoints, the
                // one with fewer requests in flight wins.
                let a = random_below(n as u32) as usize;
                let b = (a + 1 + random_below(n as u32 - 1) as usize) % n;
                let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                let load = |e: &Arc<Endpoint>| e.in_flight.load(Ordering::Relaxed);
                match (usable(&ea), usable(&eb)) {
                    (true, true) => Some(if load(eb) < load(ea) { eb } else { ea }),
                    (true, false) => Some(ea),
                    (false, true) => Some(eb),
                    (false, false) => self.endpoints.iter().filter(usable).min_by_key(|e| load(e)),
                }
            }
        }
    }
}

impl BackendRt {
    pub fn version_index(&self, name: &[u8]) -> Option<VersionIdx> {
        self.versions.iter().position(|v| v.name.as_bytes() == name)
    }

    pub fn version_named(&self, name: &str) -> Option<&VersionRt> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The split in force now.
    pub fn split(&self) -> Split {
        match self.shape {
            Shape::Single(v) => Split::Single(v),
            Shape::Canary { stable, canary } => Split::Canary {
                stable,
                canary,
                threshold: self.live.threshold.load(Ordering::Relaxed),
            },
            Shape::BlueGreen { preview } => {
                let active = self.live.active.load(Ordering::Relaxed);
                Split::BlueGreen {
                    active,
                    preview: preview.filter(|&p| p != active),
                }
            }
        }
    }

    /// Each version's share of the traffic now, in percent, by index.
    pub fn weights(&self) -> Vec<f64> {
        let mut weights = vec![0.0; self.versions.len()];
        match self.shape {
            Shape::Single(v) => weights[v] = 100.0,
            Shape::Canary { stable, canary } => {
                let canary_share = f64::from(self.live.threshold.load(Ordering::Relaxed)) / 100.0;
                weights[canary] = canary_share;
                weights[stable] = 100.0 - canary_share;
            }
            Shape::BlueGreen { .. } => {
                let active = self.live.active.load(Ordering::Relaxed);
                if let Some(w) = weights.get_mut(active) {
                    *w = 100.0;
                }
            }
        }
        weights
    }

    /// The stable version of a canary release.
    pub fn stable(&self) -> Option<VersionIdx> {
        match self.shape {
            Shape::Canary { stable, .. } => Some(stable),
            _ => None,
        }
    }

    /// The canary version of a canary release.
    pub fn canary(&self) -> Option<VersionIdx> {
        match self.shape {
            Shape::Canary { canary, .. } => Some(canary),
            _ => None,
        }
    }

    /// Whether some endpoint other than `except` can take requests now.
    pub fn others_usable(&self, except: &Endpoint, clock: &Clock) -> bool {
        self.versions
            .iter()
            .flat_map(|v| &v.endpoints)
            .any(|e| !std::ptr::eq(&**e, except) && e.usable(clock))
    }

    fn build(
        backend: &config::Backend,
        previous: Option<&BackendRt>,
        tls: &TlsMaterial,
        metrics: &Metrics,
        discovered: &Discovered,
    ) -> Self {
        let analysis = match &backend.release {
            Release::Canary(c) => Some(c.analysis.clone()),
            Release::BlueGreen(b) => Some(b.analysis.clone()),
            Release::Single { .. } => None,
        };
        let span = analysis
            .as_ref()
            .map_or(Duration::from_secs(30), |a| a.window);
        let versions: Vec<VersionRt> = backend
            .versions
            .iter()
            .map(|(name, v)| {
                let before = previous.and_then(|p| p.version_named(name));
                let upstream_tls = tls.upstreams.get(&(backend.name.clone(), name.clone()));
                let addresses = match &v.discover {
                    None => &v.endpoints,
                    Some(_) => discovered
                        .get(&(backend.name.clone(), name.clone()))
                        .unwrap_or(&NONE),
                };
                VersionRt {
                    name: name.clone(),
                    header: HeaderValue::from_str(name)
                        .unwrap_or(HeaderValue::from_static("invalid")),
                    endpoints: addresses
                        .iter()
                        .filter_map(|address| {
                            let timeout = backend.connect_timeout;
                            endpoint(address, timeout, upstream_tls, v.protocol, before)
                        })
                        .collect(),
                    window: before
                        .map(|b| &b.window)
                        .filter(|w| w.span() == span)
                        .map_or_else(|| Arc::new(Window::new(span)), Arc::clone),
                    grpc_codes: metrics.grpc_codes(&backend.name, name),
                    next: AtomicUsize::new(0),
                }
            })
            .collect();
        let idx = |name: &str| versions.iter().position(|v| v.name == name).unwrap_or(0);
        let live = Live::default();
        let mut rt = BackendRt {
            name: backend.name.clone(),
            shape: Shape::Single(0),
            live,
            override_header: None,
            sticky: None,
            load_balancing: backend.load_balancing,
            outlier: backend.outlier,
            retry_on_stable: false,
            mirror_threshold: 0,
            mirrors_in_flight: AtomicUsize::new(0),
            mirror_dropped: None,
            analysis,
            versions: Vec::new(),
        };
        match &backend.release {
            Release::Single { version } => rt.shape = Shape::Single(idx(version)),
            Release::Canary(c) => {
                rt.shape = Shape::Canary {
                    stable: idx(&c.stable),
                    canary: idx(&c.canary),
                };
                rt.live
                    .threshold
                    .store(threshold(c.weight), Ordering::Relaxed);
                rt.override_header = c.override_header.clone();
                rt.sticky = c.sticky.clone();
                rt.retry_on_stable = c.retry_on_stable;
                rt.mirror_threshold = threshold(c.mirror_percent);
                if rt.mirror_threshold > 0 {
                    rt.mirror_dropped =
                        Some(metrics.mirror_dropped.with_label_values(&[&backend.name]));
                }
            }
            Release::BlueGreen(b) => {
                rt.shape = Shape::BlueGreen {
                    preview: b.preview.as_deref().map(idx),
                };
                rt.live.active.store(idx(&b.active), Ordering::Relaxed);
                rt.override_header = b.override_header.clone();
            }
        }
        rt.versions = versions;
        rt
    }
}

/// A discovered version with nothing found yet.
static NONE: Vec<String> = Vec::new();

/// The endpoint for `address`: the previous generation's if it is the same
/// upstream (address and connect timeout), else a new one, healthy until
/// probed.
fn endpoint(
    address: &str,
    connect_timeout: Duration,
    tls: Option<&UpstreamTls>,
    protocol: Protocol,
    before: Option<&VersionRt>,
) -> Option<Arc<Endpoint>> {
    let kept = before
        .and_then(|v| v.endpoints.iter().find(|e| e.address == address))
        .filter(|e| e.same_upstream(connect_timeout, tls, protocol));
    match kept {
        Some(e) => Some(Arc::clone(e)),
        None => Endpoint::new(address, connect_timeout, tls, protocol).map(Arc::new),
    }
}

impl Snapshot {
    /// Compiles a validated config, carrying over
    /// the live state of every unchanged endpoint and window from `previous`.
    /// Cannot fail: validation already checked every reference and address.
    pub fn build(
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        tls: TlsMaterial,
        discovered: Discovered,
    ) -> Self {
        let names: Vec<&String> = config.backends.keys().collect();
        let backends: Vec<Arc<BackendRt>> = config
            .backends
            .values()
            .map(|b| {
                let before = previous.and_then(|p| p.backend(&b.name));
                let before = before.map(|b| &**b);
                Arc::new(BackendRt::build(b, before, &tls, metrics, &discovered))
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let versions: Vec<&String> = config
                    .backends
                    .get(&r.backend)
                    .map(|b| b.versions.keys().collect())
                    .unwrap_or_default();
                RouteRt {
                    name: r.name.clone(),
                    backend: names.iter().position(|n| **n == r.backend).unwrap_or(0),
                    timeout: r.timeout,
                    metrics: versions
                        .iter()
                        .map(|v| metrics.version(&r.name, &r.backend, v))
                        .collect(),
                    own: metrics.version(&r.name, &r.backend, ""),
                }
            })
            .collect();
        // Series that would otherwise appear only with their first event
        // start at 0, so rates and alerts see them from the beginning.
        for backend in &backends {
            let backend: &Arc<BackendRt> = backend;
            let pair = match backend.shape {
                Shape::Canary { stable, canary } => Some((stable, canary)),
                Shape::BlueGreen {
                    preview: Some(preview),
                } => Some((backend.live.active.load(Ordering::Relaxed), preview)),
                Shape::Single(_) | Shape::BlueGreen { preview: None } => None,
            };
            if let Some((a, b)) = pair {
                metrics.rollbacks.with_label_values(&[&backend.name]);
                let (a, b) = (&backend.versions[a].name, &backend.versions[b].name);
                metrics.fallbacks.with_label_values(&[&backend.name, a, b]);
                metrics.fallbacks.with_label_values(&[&backend.name, b, a]);
            }
        }
        Snapshot {
            table: RouteTable::new(&config.routes),
            routes,
            backends,
            unrouted: metrics.version("", "", ""),
            tls,
            config,
            discovered,
        }
    }

    /// Whether endpoint `id` is one of this snapshot's.
    pub fn has_endpoint(&self, id: u64) -> bool {
        self.backends
            .iter()
            .flat_map(|b| &b.versions)
            .any(|v| v.endpoints.iter().any(|e| e.id == id))
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<BackendRt>> {
        self.backends.iter().find(|b| b.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    fn version(n: usize) -> VersionRt {
        VersionRt {
            name: "v1".into(),
            header: HeaderValue::from_static("v1"),
            endpoints: (0..n)
                .map(|i| {
                    let address = format!("127.0.0.1:{}", 9000 + i);
                    Arc::new(
                        Endpoint::new(&address, Duration::from_secs(1), None, Protocol::Http1)
                            .expect("endpoint"),
                    )
                })
                .collect(),
            window: Arc::new(Window::new(Duration::from_secs(10))),
            grpc_codes: Metrics::new().grpc_codes("b", "v1"),
            next: AtomicUsize::new(0),
        }
    }

    fn eject(e: &Endpoint, clock: &Clock) {
        e.ejected_until
            .store(clock.now_ms() + 60_000, Ordering::Relaxed);
    }

    #[test]
    fn usable_endpoints_come_first_then_ejected_healthy_ones_then_none() {
        let (v, clock) = (version(3), Clock::new());
        eject(&v.endpoints[0], &clock);
        v.endpoints[1].healthy.store(false, Ordering::Relaxed);
        for policy in [LoadBalancing::RoundRobin, LoadBalancing::LeastRequest] {
            for _ in 0..10 {
                let picked = v.pick(policy, &clock).expect("a usable endpoint");
                assert_eq!(picked.id, v.endpoints[2].id);
            }
        }
        // The only usable one ejected too: the healthy ejected ones serve.
        eject(&v.endpoints[2], &clock);
        assert!(!v.has_usable(&clock) && v.has_healthy());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let picked = v
                .pick(LoadBalancing::RoundRobin, &clock)
                .expect("a healthy endpoint");
            assert!(picked.healthy());
            seen.insert(picked.id);
        }
        assert_eq!(seen.len(), 2, "taken in turn");
        // Nothing healthy: nothing.
        for e in &v.endpoints {
            e.healthy.store(false, Ordering::Relaxed);
        }
        assert!(v.pick(LoadBalancing::RoundRobin, &clock).is_none());
        assert!(v.pick_other(&v.endpoints[0], &clock).is_none());
    }

    #[test]
    fn another_endpoint_is_the_next_usable_one_never_the_failed_one() {
        let (v, clock) = (version(3), Clock::new());
        assert_eq!(
            v.pick_other(&v.endpoints[0], &clock).map(|e| e.id),
            Some(v.endpoints[1].id)
        );
        assert_eq!(
            v.pick_other(&v.endpoints[2], &clock).map(|e| e.id),
            Some(v.endpoints[0].id)
        );
        eject(&v.endpoints[1], &clock);
        assert_eq!(
            v.pick_other(&v.endpoints[0], &clock).map(|e| e.id),
            Some(v.endpoints[2].id)
        );
        eject(&v.endpoints[2], &clock);
        // Only ejected ones left besides the failed one: the next healthy.
        assert_eq!(
            v.pick_other(&v.endpoints[0], &clock).map(|e| e.id),
            Some(v.endpoints[1].id)
        );
        let single = version(1);
        assert!(single.pick_other(&single.endpoints[0], &clock).is_none());
    }
}
