//! The validated configuration: plain values, every reference resolved, every
//! default applied. Built only by `validate.rs`; read by everything else.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub state_file: Option<PathBuf>,
    /// Runtime worker threads, already resolved from `auto`.
    pub workers: usize,
    pub access_log: bool,
    pub limits: Limits,
    pub shutdown: Shutdown,
    pub routes: Vec<Route>,
    pub backends: BTreeMap<String, Backend>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub certs: Vec<CertPaths>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub bind: SocketAddr,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 65536,
            max_body_bytes: 10 * 1024 * 1024,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shutdown {
    pub drain_delay: Duration,
    pub timeout: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            drain_delay: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Which hosts a route answers for; names are lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` is stored as `.example.com`: one or more labels before it.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub host: HostMatch,
    /// Normalised: starts with `/`, no trailing `/` except for the root.
    pub path_prefix: String,
    pub backend: String,
    /// Upstream time for the whole response head (default 60 s).
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancing {
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: String,
    pub versions: BTreeMap<String, Version>,
    pub load_balancing: LoadBalancing,
    pub connect_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    pub outlier: Outlier,
    pub release: Release,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// `host:port`, host being an IP address or a DNS name. Empty when the
    /// version discovers its endpoints.
    pub endpoints: Vec<String>,
    /// Endpoints found by DNS instead of listed (SPEC §10).
    pub discover: Option<Discover>,
    pub tls: Option<UpstreamTls>,
    pub protocol: Protocol,
}

/// `discover:`: one endpoint per A/AAAA record of `dns`, re-resolved every
/// `interval`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Discover {
    pub dns: String,
    pub port: u16,
    pub interval: Duration,
    /// The DNS server to ask; `None`: the system's configuration.
    pub resolver: Option<SocketAddr>,
    /// How long an answer without records keeps the last set.
    pub hold_empty: Duration,
}

impl Discover {
    /// `dns:NAME:PORT`, how events and the release identity name it.
    pub fn describe(&self) -> String {
        format!("dns:{}:{}", self.dns, self.port)
    }
}

/// What a version's endpoints are spoken to in (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2: h2c by prior knowledge in the clear, h2 by ALPN over TLS.
    H2,
    /// With `tls`: whatever ALPN picks (h2 or HTTP/1.1); in the clear,
    /// HTTP/1.1.
    Auto,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    /// `grpc`: probe with `grpc.health.v1.Health/Check` for this service
    /// name ("" = the server as a whole) instead of `GET path`.
    pub grpc: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub ejection_time: Duration,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// A backend with one version and no release block.
    Single {
        version: String,
    },
    Canary(Canary),
    BlueGreen(BlueGreen),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub stable: String,
    pub canary: String,
    /// Percent of traffic to the canary, 0–100.
    pub weight: f64,
    pub steps: Vec<f64>,
    pub step_interval: Duration,
    pub sticky: Option<Sticky>,
    pub override_header: Option<HeaderName>,
    pub retry_on_stable: bool,
    pub mirror_percent: f64,
    pub analysis: Analysis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlueGreen {
    pub active: String,
    pub preview: Option<String>,
    pub override_header: Option<HeaderName>,
    pub analysis: Analysis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Cookie(String),
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub interval: Duration,
    pub window: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_p99_latency: Duration,
    pub source: AnalysisSource,
    /// `baseline: stable`: the canary is judged against stable too.
    pub against_stable: bool,
    /// With `against_stable`: how much worse than stable a breach must be.
    pub max_error_rate_delta: f64,
    pub max_p99_ratio: f64,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(30),
            min_requests: 20,
            max_error_rate: 0.05,
            max_p99_latency: Duration::from_millis(800),
            source: AnalysisSource::Local,
            against_stable: false,
            max_error_rate_delta: 0.01,
            max_p99_ratio: 1.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisSource {
    Local,
    Prometheus {
        url: String,
        requests_query: Option<String>,
        error_rate_query: Option<String>,
        p99_query: Option<String>,
    },
}

impl Config {
    /// A one-line summary for `switchyard check`.
    pub fn summary(&self) -> String {
        let (mut canary, mut blue_green) = (0, 0);
        for backend in self.backends.values() {
            match backend.release {
                Release::Canary(_) => canary += 1,
                Release::BlueGreen(_) => blue_green += 1,
                Release::Single { .. } => {}
            }
        }
        format!(
            "{} listener(s), {} route(s), {} backend(s) ({} canary, {} blue/green), {} worker(s)",
            self.listeners.len(),
            self.routes.len(),
            self.backends.len(),
            canary,
            blue_green,
            self.workers
        )
    }
}
