//! The config file as written: serde structs that mirror SPEC §2 key for key.
//!
//! Nothing here is checked beyond what serde enforces (types, unknown keys);
//! `validate.rs` turns a [`ConfigFile`] into a usable `Config` and reports every
//! semantic problem with its position. Values that validation may have to point
//! at are wrapped in [`Spanned`] so their line and column survive deserialization.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A humane duration (`250ms`, `2s`, `1m`), parsed by `humantime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 250ms, 2s or 1m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s.trim())
                    .map(Dur)
                    .map_err(|e| E::custom(format!("invalid duration {s:?}: {e}")))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listeners: Option<Spanned<Vec<Spanned<ListenerFile>>>>,
    pub admin: Option<Spanned<AdminFile>>,
    pub state_file: Option<Spanned<String>>,
    pub workers: Option<Spanned<Workers>>,
    pub access_log: Option<bool>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub shutdown: ShutdownFile,
    pub routes: Option<Spanned<Vec<Spanned<RouteFile>>>>,
    pub backends: Option<Spanned<BTreeMap<String, Spanned<BackendFile>>>>,
}

/// `workers: auto` or a thread count.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Workers {
    Count(i64),
    Word(WorkersWord),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkersWord {
    Auto,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    pub tls: Option<Spanned<TlsFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub certs: Spanned<Vec<Spanned<CertFile>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub bind: Spanned<String>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub header_read_timeout: Option<Spanned<Dur>>,
    pub max_header_bytes: Option<Spanned<u64>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub idle_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    pub drain_delay: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Spanned<String>,
    #[serde(rename = "match", default)]
    pub matcher: Option<Spanned<MatchFile>>,
    pub backend: Spanned<String>,
    pub timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    pub versions: Spanned<BTreeMap<String, Spanned<VersionFile>>>,
    pub load_balancing: Option<Spanned<LoadBalancingFile>>,
    pub connect_timeout: Option<Spanned<Dur>>,
    pub health_check: Option<Spanned<HealthCheckFile>>,
    pub outlier: Option<Spanned<OutlierFile>>,
    pub release: Option<Spanned<ReleaseFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionFile {
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub discover: Option<Spanned<DiscoverFile>>,
    pub tls: Option<Spanned<UpstreamTlsFile>>,
    pub protocol: Option<Spanned<ProtocolFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverFile {
    pub dns: Option<Spanned<String>>,
    pub port: Option<Spanned<u32>>,
    pub interval: Option<Spanned<Dur>>,
    pub resolver: Option<Spanned<String>>,
    pub hold_empty: Option<Spanned<Dur>>,
}

/// `protocol: http1 | h2 | auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolFile {
    Http1,
    H2,
    Auto,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    pub ca_file: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancingFile {
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub path: Option<Spanned<String>>,
    pub grpc: Option<Spanned<GrpcCheckFile>>,
    pub interval: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
}

/// `health_check.grpc: { service: "" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcCheckFile {
    pub service: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierFile {
    pub consecutive_failures: Option<Spanned<u32>>,
    pub ejection_time: Option<Spanned<Dur>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyFile {
    Canary,
    BlueGreen,
}

/// One flat struct for both strategies: which keys belong to which strategy is
/// checked by validation, so the error can name the key and its position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFile {
    pub strategy: Spanned<StrategyFile>,
    pub stable: Option<Spanned<String>>,
    pub canary: Option<Spanned<String>>,
    pub active: Option<Spanned<String>>,
    pub preview: Option<Spanned<String>>,
    pub weight: Option<Spanned<f64>>,
    pub steps: Option<Spanned<Vec<Spanned<f64>>>>,
    pub step_interval: Option<Spanned<Dur>>,
    pub sticky: Option<Spanned<StickyFile>>,
    pub override_header: Option<Spanned<String>>,
    pub retry_on_stable: Option<bool>,
    pub mirror_percent: Option<Spanned<f64>>,
    pub analysis: Option<Spanned<AnalysisFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyFile {
    pub cookie: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisFile {
    pub interval: Option<Spanned<Dur>>,
    pub window: Option<Spanned<Dur>>,
    pub min_requests: Option<Spanned<u64>>,
    pub max_error_rate: Option<Spanned<f64>>,
    pub max_p99_latency: Option<Spanned<Dur>>,
    pub source: Option<Spanned<SourceFile>>,
    pub baseline: Option<Spanned<BaselineFile>>,
    pub max_error_rate_delta: Option<Spanned<f64>>,
    pub max_p99_ratio: Option<Spanned<f64>>,
}

/// `baseline: none | stable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineFile {
    None,
    Stable,
}

/// `source: local` or `source: { prometheus: { url, ... } }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFile {
    Local,
    Prometheus(PrometheusFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusFile {
    pub url: Spanned<String>,
    pub requests_query: Option<String>,
    pub error_rate_query: Option<String>,
    pub p99_query: Option<String>,
}
