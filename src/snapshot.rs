//! The compiled, immutable view of one config generation that the request
//! path reads: the routing table plus, per backend, its versions, endpoints,
//! prepared split and upstream clients.
//!
//! A snapshot is built once per config and swapped in whole (`ArcSwap`), so a
//! request sees one consistent generation from start to end. Endpoint health
//! and in-flight counts are atomics shared with the probes; they live behind
//! `Arc` so a later generation can carry them over.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderName, HeaderValue};

use crate::config::{self, Config, LoadBalancing, Release, Sticky};
use crate::release::bucket::threshold;
use crate::release::split::{Split, VersionIdx};
use crate::release::table::RouteTable;
use crate::request_id::random_below;
use crate::upstream::Upstream;

pub struct Snapshot {
    pub config: Arc<Config>,
    pub table: RouteTable,
    pub routes: Vec<RouteRt>,
    pub backends: Vec<Arc<BackendRt>>,
}

pub struct RouteRt {
    pub name: String,
    pub backend: usize,
    pub timeout: Duration,
}

pub struct BackendRt {
    pub name: String,
    pub versions: Vec<VersionRt>,
    pub split: Split,
    pub override_header: Option<HeaderName>,
    pub sticky: Option<Sticky>,
    pub load_balancing: LoadBalancing,
}

pub struct VersionRt {
    pub name: String,
    /// The `x-switchyard-version` value, built once.
    pub header: HeaderValue,
    pub endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

/// One upstream address, its pooled clients and its live state. Shared by
/// every snapshot that lists it unchanged, so a reload keeps its connections,
/// health and counters; dropped (closing its pool) once no snapshot and no
/// request in flight holds it any more.
pub struct Endpoint {
    pub address: String,
    pub authority: Authority,
    pub upstream: Upstream,
    /// Written by the health probes; read by every request.
    pub healthy: AtomicBool,
    /// Milliseconds since [`clock_origin`] until which outlier ejection keeps
    /// this endpoint out; 0 when not ejected.
    pub ejected_until: AtomicU64,
    /// Requests sent and not yet finished, for `least_request`.
    pub in_flight: AtomicU32,
}

impl Endpoint {
    pub fn new(address: &str, workers: usize, connect_timeout: Duration) -> Option<Self> {
        Some(Endpoint {
            address: address.to_string(),
            authority: address.parse().ok()?,
            upstream: Upstream::new(workers, connect_timeout),
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        })
    }

    pub fn usable(&self) -> bool {
        if !self.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= clock_ms()
    }
}

/// Milliseconds since the process's clock origin (a monotonic clock).
pub fn clock_ms() -> u64 {
    clock_origin().elapsed().as_millis() as u64
}

fn clock_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

/// Counts a request in flight on an endpoint until dropped.
pub struct InFlight(pub Arc<Endpoint>);

impl InFlight {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(endpoint)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl VersionRt {
    pub fn has_usable(&self) -> bool {
        self.endpoints.iter().any(|e| e.usable())
    }

    /// Picks a usable endpoint by the backend's policy.
    pub fn pick(&self, policy: LoadBalancing) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        match (policy, n) {
            (_, 0) => None,
            (_, 1) => self.endpoints.first().filter(|e| e.usable()),
            (LoadBalancing::RoundRobin, _) => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.endpoints[(start + i) % n])
                    .find(|e| e.usable())
            }
            (LoadBalancing::LeastRequest, _) => {
                // Power of two choices: two distinct random endpoints, the
                // one with fewer requests in flight wins.
                let a = random_below(n as u32) as usize;
                let b = (a + 1 + random_below(n as u32 - 1) as usize) % n;
                let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                match (ea.usable(), eb.usable()) {
                    (true, true) => Some(
                        if eb.in_flight.load(Ordering::Relaxed)
                            < ea.in_flight.load(Ordering::Relaxed)
                        {
                            eb
                        } else {
                            ea
                        },
                    ),
                    (true, false) => Some(ea),
                    (false, true) => Some(eb),
                    (false, false) => self
                        .endpoints
                        .iter()
                        .filter(|e| e.usable())
                        .min_by_key(|e| e.in_flight.load(Ordering::Relaxed)),
                }
            }
        }
    }
}

impl BackendRt {
    pub fn version_index(&self, name: &[u8]) -> Option<VersionIdx> {
        self.versions.iter().position(|v| v.name.as_bytes() == name)
    }

    fn build(backend: &config::Backend, workers: usize, previous: Option<&BackendRt>) -> Self {
        let versions: Vec<VersionRt> = backend
            .versions
            .iter()
            .map(|(name, v)| {
                let before = previous.and_then(|p| p.versions.iter().find(|pv| &pv.name == name));
                VersionRt {
                    name: name.clone(),
                    header: HeaderValue::from_str(name)
                        .unwrap_or(HeaderValue::from_static("invalid")),
                    endpoints: v
                        .endpoints
                        .iter()
                        .filter_map(|address| {
                            endpoint(address, workers, backend.connect_timeout, before)
                        })
                        .collect(),
                    next: AtomicUsize::new(0),
                }
            })
            .collect();
        let idx = |name: &str| versions.iter().position(|v| v.name == name).unwrap_or(0);
        let (split, override_header, sticky) = match &backend.release {
            Release::Single { version } => (Split::Single(idx(version)), None, None),
            Release::Canary(c) => (
                Split::Canary {
                    stable: idx(&c.stable),
                    canary: idx(&c.canary),
                    threshold: threshold(c.weight),
                },
                c.override_header.clone(),
                c.sticky.clone(),
            ),
            Release::BlueGreen(b) => (
                Split::BlueGreen {
                    active: idx(&b.active),
                    preview: b.preview.as_deref().map(idx),
                },
                b.override_header.clone(),
                None,
            ),
        };
        BackendRt {
            name: backend.name.clone(),
            versions,
            split,
            override_header,
            sticky,
            load_balancing: backend.load_balancing,
        }
    }
}

/// The endpoint for `address`: the previous generation's if it is the same
/// upstream (address and connect timeout), else a new one, healthy until
/// probed.
fn endpoint(
    address: &str,
    workers: usize,
    connect_timeout: Duration,
    before: Option<&VersionRt>,
) -> Option<Arc<Endpoint>> {
    let kept = before
        .and_then(|v| v.endpoints.iter().find(|e| e.address == address))
        .filter(|e| {
            e.upstream.connect_timeout == connect_timeout && e.upstream.workers() == workers
        });
    match kept {
        Some(e) => Some(Arc::clone(e)),
        None => Endpoint::new(address, workers, connect_timeout).map(Arc::new),
    }
}

impl Snapshot {
    /// Compiles a validated config for `workers` worker threads, carrying over
    /// the live state of every unchanged endpoint from `previous`. Cannot
    /// fail: validation already checked every reference and address.
    pub fn build(config: Arc<Config>, workers: usize, previous: Option<&Snapshot>) -> Self {
        let names: Vec<&String> = config.backends.keys().collect();
        let backends = config
            .backends
            .values()
            .map(|b| {
                let before = previous.and_then(|p| p.backends.iter().find(|pb| pb.name == b.name));
                Arc::new(BackendRt::build(b, workers, before.map(|b| &**b)))
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| RouteRt {
                name: r.name.clone(),
                backend: names.iter().position(|n| **n == r.backend).unwrap_or(0),
                timeout: r.timeout,
            })
            .collect();
        Snapshot {
            table: RouteTable::new(&config.routes),
            routes,
            backends,
            config,
        }
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<BackendRt>> {
        self.backends.iter().find(|b| b.name == name)
    }
}
