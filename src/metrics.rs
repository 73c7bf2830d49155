//! Metrics (SPEC §7): one explicit registry, owned here, with every metric's
//! name, type and labels. The request path only touches pre-resolved handles
//! ([`VersionMetrics`], built once per snapshot); label lookups happen when a
//! snapshot is built, never per request. State gauges (weights, phases,
//! endpoint health) are refreshed when `/metrics` is scraped.

use std::sync::{Arc, OnceLock};

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::UpstreamFailure;

/// Latency buckets in seconds: 1 ms to 10 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const FAILURE_KINDS: [UpstreamFailure; 4] = [
    UpstreamFailure::Connect,
    UpstreamFailure::Timeout,
    UpstreamFailure::Reset,
    UpstreamFailure::Protocol,
];

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    pub canary_weight: GaugeVec,
    pub release_phase: IntGaugeVec,
    pub rollbacks: IntCounterVec,
    pub endpoint_healthy: IntGaugeVec,
    pub fallbacks: IntCounterVec,
    pub mirror_dropped: IntCounterVec,
    client_aborts: IntCounterVec,
    grpc_responses: IntCounterVec,
    reloads: IntCounterVec,
    pub active_connections: IntGaugeVec,
    pub discovered_endpoints: IntGaugeVec,
    pub discovery_errors: IntCounterVec,
}

/// Pre-resolved handles for one (route, backend, version) label set. A real
/// version's series exist from the start (at 0, so rates and alerts see
/// them); those of the gateway's own answers (version "") appear with their
/// first answer, and never for upstream errors, which have a version.
#[derive(Clone)]
pub struct VersionMetrics {
    codes: [OnceLock<IntCounter>; 5],
    duration: OnceLock<Histogram>,
    errors: [OnceLock<IntCounter>; 4],
    /// Only for a real version (the gateway's own answers have none).
    pub client_aborts: Option<IntCounter>,
    /// The vectors and labels to make a handle on first use.
    lazy: Arc<Lazy>,
}

struct Lazy {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    route: String,
    backend: String,
    version: String,
}

impl Lazy {
    fn code(&self, class: usize) -> IntCounter {
        let code = CODE_CLASSES[class];
        self.requests
            .with_label_values(&[&self.route, &self.backend, &self.version, code])
    }

    fn duration(&self) -> Histogram {
        self.duration
            .with_label_values(&[&self.route, &self.backend, &self.version])
    }

    fn error(&self, i: usize) -> IntCounter {
        let kind = FAILURE_KINDS[i].as_str();
        self.upstream_errors
            .with_label_values(&[&self.backend, &self.version, kind])
    }
}

impl VersionMetrics {
    /// Counts one answer (an upstream attempt, or the gateway's own).
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.codes[class]
            .get_or_init(|| self.lazy.code(class))
            .inc();
        self.duration
            .get_or_init(|| self.lazy.duration())
            .observe(seconds);
    }

    pub fn upstream_error(&self, kind: UpstreamFailure) {
        let i = FAILURE_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors[i].get_or_init(|| self.lazy.error(i)).inc();
    }
}

/// `switchyard_grpc_responses_total` for one version: a handle per status
/// code, made on the first answer with that code (a label set appears once
/// something happened under it).
pub struct GrpcCodes {
    vec: IntCounterVec,
    backend: String,
    version: String,
    handles: [OnceLock<IntCounter>; 17],
}

impl GrpcCodes {
    /// Counts one answer with status `code` (named by `name`).
    pub fn count(&self, code: u32, name: &str) {
        let make = || {
            self.vec
                .with_label_values(&[&self.backend, &self.version, name])
        };
        match self.handles.get(code as usize) {
            Some(handle) => handle.get_or_init(make).inc(),
            None => make().inc(),
        }
    }
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // Names and labels below are constants; a failure here is a programming
    // error caught by the first test that builds a Metrics.
    match result {
        Ok(value) => value,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "switchyard_request_duration_seconds",
                "Time to the response head, per upstream attempt",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "backend", "version"],
        ));
        must(registry.register(Box::new(duration.clone())));
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if !process.desc().is_empty() {
            must(registry.register(Box::new(process)));
        }
        Metrics {
            requests: counter(
                "switchyard_requests_total",
                "Answers per upstream attempt (retries and mirrors included) and the gateway's own answers, by status class",
                &["route", "backend", "version", "code"],
            ),
            duration,
            upstream_errors: counter(
                "switchyard_upstream_errors_total",
                "Upstream failures by kind",
                &["backend", "version", "kind"],
            ),
            canary_weight: {
                let g = must(GaugeVec::new(
                    Opts::new("switchyard_canary_weight_percent", "Canary weight in force"),
                    &["backend"],
                ));
                must(registry.register(Box::new(g.clone())));
                g
            },
            release_phase: gauge("switchyard_release_phase", "1 for the release's current phase", &["backend", "phase"]),
            rollbacks: counter("switchyard_rollbacks_total", "Automatic and operator rollbacks", &["backend"]),
            endpoint_healthy: gauge(
                "switchyard_endpoint_healthy",
                "1 when the endpoint takes traffic (healthy and not ejected)",
                &["backend", "version", "endpoint"],
            ),
            fallbacks: counter(
                "switchyard_version_fallbacks_total",
                "Requests served by the other version because the chosen one had no usable endpoint",
                &["backend", "from", "to"],
            ),
            grpc_responses: counter(
                "switchyard_grpc_responses_total",
                "gRPC answers by grpc-status (trailers-only or in the trailers)",
                &["backend", "version", "grpc_code"],
            ),
            client_aborts: counter(
                "switchyard_client_aborts_total",
                "Requests the client abandoned (closed or reset before the answer ended, or let its body stall): the client's failure, never the version's",
                &["route", "backend", "version"],
            ),
            mirror_dropped: counter(
                "switchyard_mirror_dropped_total",
                "Mirrored copies not sent because too many were in flight to the canary",
                &["backend"],
            ),
            reloads: counter("switchyard_config_reloads_total", "Config reloads by result", &["result"]),
            active_connections: gauge("switchyard_active_connections", "Open client connections", &["listener"]),
            discovered_endpoints: gauge(
                "switchyard_discovered_endpoints",
                "Endpoints a discovered version has now (addresses of its DNS name)",
                &["backend", "version"],
            ),
            discovery_errors: counter(
                "switchyard_discovery_errors_total",
                "Failed DNS lookups of a discovered version (timeout, SERVFAIL, refused); the last set kept serving",
                &["backend", "version"],
            ),
            registry,
        }
        .preset()
    }

    /// Creates the series that exist from the start (at 0).
    fn preset(self) -> Self {
        for result in ["success", "error"] {
            self.reloads.with_label_values(&[result]);
        }
        self
    }

    /// Handles for one label set; a real version's are made now, the
    /// gateway's own answers' (`version` "") on first use.
    pub fn version(&self, route: &str, backend: &str, version: &str) -> VersionMetrics {
        let lazy = Arc::new(Lazy {
            requests: self.requests.clone(),
            duration: self.duration.clone(),
            upstream_errors: self.upstream_errors.clone(),
            route: route.to_string(),
            backend: backend.to_string(),
            version: version.to_string(),
        });
        let handles = VersionMetrics {
            codes: std::array::from_fn(|_| OnceLock::new()),
            duration: OnceLock::new(),
            errors: std::array::from_fn(|_| OnceLock::new()),
            client_aborts: (!version.is_empty()).then(|| {
                self.client_aborts
                    .with_label_values(&[route, backend, version])
            }),
            lazy,
        };
        if !version.is_empty() {
            for (class, code) in handles.codes.iter().enumerate() {
                let _ = code.set(handles.lazy.code(class));
            }
            let _ = handles.duration.set(handles.lazy.duration());
            for (i, error) in handles.errors.iter().enumerate() {
                let _ = error.set(handles.lazy.error(i));
            }
        }
        handles
    }

    pub fn reload(&self, success: bool) {
        self.reloads
            .with_label_values(&[if success { "success" } else { "error" }])
            .inc();
    }

    /// `switchyard_grpc_responses_total` for one version.
    pub fn grpc_codes(&self, backend: &str, version: &str) -> GrpcCodes {
        GrpcCodes {
            vec: self.grpc_responses.clone(),
            backend: backend.to_string(),
            version: version.to_string(),
            handles: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Reloads applied (`true`) or refused (`false`) since start.
    pub fn reloads(&self, success: bool) -> u64 {
        self.reloads
            .with_label_values(&[if success { "success" } else { "error" }])
            .get()
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
