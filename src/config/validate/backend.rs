//! Validation of `backends:`: versions and endpoints, health checks,
//! outlier ejection, and each strategy's release block with its analysis.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::super::file::*;
use super::super::model::*;
use super::discover;
use super::values::*;

pub(super) fn backends(file: &ConfigFile, p: &mut Problems) -> BTreeMap<String, Backend> {
    let Some(map) = &file.backends else {
        p.at_loc(
            Location::UNKNOWN,
            "no backends: add at least one under `backends:`",
        );
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, b) in &map.value {
        if let Some(backend) = backend(name, b, p) {
            out.insert(name.clone(), backend);
        }
    }
    out
}

fn backend(name: &str, b: &Spanned<BackendFile>, p: &mut Problems) -> Option<Backend> {
    let file = &b.value;
    if file.versions.value.is_empty() {
        p.at(&file.versions, format!("backend {name:?} has no versions"));
        return None;
    }
    let mut versions = BTreeMap::new();
    for (vname, v) in &file.versions.value {
        let (endpoints, discover) = discover::endpoints(vname, v, p);
        let tls = v.value.tls.as_ref().map(|t| UpstreamTls {
            ca_file: t.value.ca_file.as_ref().map(|c| PathBuf::from(&c.value)),
            server_name: t.value.server_name.as_ref().map(|s| s.value.clone()),
        });
        let protocol = match v.value.protocol.as_ref().map(|p| p.value) {
            None | Some(ProtocolFile::Http1) => Protocol::Http1,
            Some(ProtocolFile::H2) => Protocol::H2,
            Some(ProtocolFile::Auto) => Protocol::Auto,
        };
        versions.insert(
            vname.clone(),
            Version {
                endpoints,
                discover,
                tls,
                protocol,
            },
        );
    }
    let health_check = file
        .health_check
        .as_ref()
        .map(|h| health_check(&h.value, p));
    if let (Some(check), Some(h)) = (&health_check, &file.health_check) {
        let speaks_h2 = |v: &Version| match v.protocol {
            Protocol::H2 => true,
            Protocol::Auto => v.tls.is_some(),
            Protocol::Http1 => false,
        };
        if check.grpc.is_some() && !versions.values().all(speaks_h2) {
            p.at(
                h,
                "health_check.grpc needs every version to speak HTTP/2 (protocol: h2, or auto with tls)",
            );
        }
    }
    let outlier = file.outlier.as_ref().map_or_else(Outlier::default, |o| {
        let d = Outlier::default();
        Outlier {
            consecutive_failures: o.value.consecutive_failures.as_ref().map_or(
                d.consecutive_failures,
                |c| {
                    if c.value == 0 {
                        p.at(c, "consecutive_failures must be at least 1");
                    }
                    c.value
                },
            ),
            ejection_time: dur_or(&o.value.ejection_time, d.ejection_time, p, "ejection_time"),
        }
    });
    let release = match &file.release {
        Some(r) => release(r, &versions, p),
        None if versions.len() == 1 => Release::Single {
            version: versions.keys().next().cloned().unwrap_or_default(),
        },
        None => {
            p.at(
                &file.versions,
                format!("backend {name:?} has several versions and needs a `release:` block"),
            );
            Release::Single {
                version: String::new(),
            }
        }
    };
    Some(Backend {
        name: name.to_string(),
        versions,
        load_balancing: match file.load_balancing.as_ref().map(|l| l.value) {
            None | Some(LoadBalancingFile::RoundRobin) => LoadBalancing::RoundRobin,
            Some(LoadBalancingFile::LeastRequest) => LoadBalancing::LeastRequest,
        },
        connect_timeout: dur_or(
            &file.connect_timeout,
            Duration::from_secs(2),
            p,
            "connect_timeout",
        ),
        health_check,
        outlier,
        release,
    })
}

fn health_check(h: &HealthCheckFile, p: &mut Problems) -> HealthCheck {
    if let (Some(path), Some(_)) = (&h.path, &h.grpc) {
        p.at(path, "health_check: `path` and `grpc` exclude each other");
    }
    let grpc = h.grpc.as_ref().map(|g| {
        g.value
            .service
            .as_ref()
            .map_or_else(String::new, |s| s.value.clone())
    });
    let path = match &h.path {
        Some(s) if !s.value.starts_with('/') => {
            p.at(s, "health_check.path must start with /");
            "/".to_string()
        }
        Some(s) => s.value.clone(),
        None => "/".to_string(),
    };
    let threshold = |v: &Option<Spanned<u32>>, default: u32, what: &str, p: &mut Problems| match v {
        Some(s) if s.value == 0 => {
            p.at(s, format!("{what} must be at least 1"));
            default
        }
        Some(s) => s.value,
        None => default,
    };
    HealthCheck {
        path,
        grpc,
        interval: dur_or(
            &h.interval,
            Duration::from_secs(2),
            p,
            "health_check.interval",
        ),
        timeout: dur_or(
            &h.timeout,
            Duration::from_secs(1),
            p,
            "health_check.timeout",
        ),
        healthy_threshold: threshold(&h.healthy_threshold, 2, "healthy_threshold", p),
        unhealthy_threshold: threshold(&h.unhealthy_threshold, 3, "unhealthy_threshold", p),
    }
}

/// Checks that a version named in the release block exists.
fn version_ref(
    v: &Spanned<String>,
    versions: &BTreeMap<String, Version>,
    role: &str,
    p: &mut Problems,
) -> String {
    if !versions.contains_key(&v.value) {
        let known: Vec<&str> = versions.keys().map(String::as_str).collect();
        p.at(
            v,
            format!(
                "{role} version {:?} is not one of this backend's versions ({})",
                v.value,
                known.join(", ")
            ),
        );
    }
    v.value.clone()
}

fn release(
    r: &Spanned<ReleaseFile>,
    versions: &BTreeMap<String, Version>,
    p: &mut Problems,
) -> Release {
    let f = &r.value;
    let analysis = f
        .analysis
        .as_ref()
        .map_or_else(Analysis::default, |a| analysis(a, f.strategy.value, p));
    let override_header = f
        .override_header
        .as_ref()
        .and_then(|h| header_name(h, p, "override_header"));
    let require = |v: &Option<Spanned<String>>, key: &str, p: &mut Problems| -> String {
        match v {
            Some(v) => version_ref(v, versions, key, p),
            None => {
                p.at(r, format!("release needs `{key}:` naming a version"));
                String::new()
            }
        }
    };
    match f.strategy.value {
        StrategyFile::Canary => {
            for (key, present) in [
                ("active", f.active.is_some()),
                ("preview", f.preview.is_some()),
            ] {
                if present {
                    p.at(
                        r,
                        format!("`{key}` belongs to strategy blue_green, not canary"),
                    );
                }
            }
            let stable = require(&f.stable, "stable", p);
            let canary = require(&f.canary, "canary", p);
            if !stable.is_empty() && stable == canary {
                if let Some(c) = &f.canary {
                    p.at(c, "canary must differ from stable");
                }
            }
            let steps = match &f.steps {
                None => Vec::new(),
                Some(s) => {
                    let mut last = -1.0;
                    let mut steps = Vec::new();
                    for step in &s.value {
                        if step.value <= last {
                            p.at(step, "steps must increase");
                        }
                        last = step.value;
                        steps.push(percent(step, p, "step"));
                    }
                    steps
                }
            };
            let sticky = f
                .sticky
                .as_ref()
                .and_then(|s| match (&s.value.cookie, &s.value.header) {
                    (Some(c), None) => {
                        let valid = !c.value.is_empty()
                            && c.value
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                        if !valid {
                            p.at(
                                c,
                                format!(
                                    "cookie name {:?} may hold only letters, digits, - _ .",
                                    c.value
                                ),
                            );
                        }
                        Some(Sticky::Cookie(c.value.clone()))
                    }
                    (None, Some(h)) => header_name(h, p, "sticky header").map(Sticky::Header),
                    _ => {
                        p.at(s, "sticky needs exactly one of `cookie` or `header`");
                        None
                    }
                });
            Release::Canary(Canary {
                stable,
                canary,
                weight: f.weight.as_ref().map_or(0.0, |w| percent(w, p, "weight")),
                steps,
                step_interval: dur_or(
                    &f.step_interval,
                    Duration::from_secs(30),
                    p,
                    "step_interval",
                ),
                sticky,
                override_header,
                retry_on_stable: f.retry_on_stable.unwrap_or(true),
                mirror_percent: f
                    .mirror_percent
                    .as_ref()
                    .map_or(0.0, |m| percent(m, p, "mirror_percent")),
                analysis,
            })
        }
        StrategyFile::BlueGreen => {
            for (key, present) in [
                ("stable", f.stable.is_some()),
                ("canary", f.canary.is_some()),
                ("weight", f.weight.is_some()),
                ("steps", f.steps.is_some()),
                ("step_interval", f.step_interval.is_some()),
                ("sticky", f.sticky.is_some()),
                ("mirror_percent", f.mirror_percent.is_some()),
                ("retry_on_stable", f.retry_on_stable.is_some()),
            ] {
                if present {
                    p.at(
                        r,
                        format!("`{key}` belongs to strategy canary, not blue_green"),
                    );
                }
            }
            let active = require(&f.active, "active", p);
            let preview = f
                .preview
                .as_ref()
                .map(|v| version_ref(v, versions, "preview", p));
            if preview.as_deref() == Some(active.as_str()) {
                if let Some(v) = &f.preview {
                    p.at(v, "preview must differ from active");
                }
            }
            Release::BlueGreen(BlueGreen {
                active,
                preview,
                override_header,
                analysis,
            })
        }
    }
}

fn analysis(a: &Spanned<AnalysisFile>, strategy: StrategyFile, p: &mut Problems) -> Analysis {
    let f = &a.value;
    let d = Analysis::default();
    let against_stable = matches!(
        f.baseline.as_ref().map(|b| b.value),
        Some(BaselineFile::Stable)
    );
    if let (true, StrategyFile::BlueGreen, Some(b)) = (against_stable, strategy, &f.baseline) {
        p.at(
            b,
            "baseline: stable applies to canary releases (blue/green has no stable taking traffic beside it)",
        );
    }
    let max_error_rate_delta = match &f.max_error_rate_delta {
        Some(s) if !(0.0..=1.0).contains(&s.value) => {
            p.at(
                s,
                "max_error_rate_delta is a fraction between 0 and 1 (0.01 = one point)",
            );
            d.max_error_rate_delta
        }
        Some(s) => s.value,
        None => d.max_error_rate_delta,
    };
    let max_p99_ratio = match &f.max_p99_ratio {
        Some(s) if !(s.value >= 1.0 && s.value.is_finite()) => {
            p.at(
                s,
                "max_p99_ratio is a ratio of at least 1 (1.5 = 50% slower than stable)",
            );
            d.max_p99_ratio
        }
        Some(s) => s.value,
        None => d.max_p99_ratio,
    };
    for (key, present) in [
        ("max_error_rate_delta", f.max_error_rate_delta.is_some()),
        ("max_p99_ratio", f.max_p99_ratio.is_some()),
    ] {
        if present && !against_stable {
            p.at(a, format!("`{key}` needs `baseline: stable`"));
        }
    }
    let interval = dur_or(&f.interval, d.interval, p, "analysis.interval");
    let window = dur_or(&f.window, d.window, p, "analysis.window");
    if window < interval {
        if let Some(w) = &f.window {
            p.at(w, "analysis.window must be at least analysis.interval");
        }
    }
    let max_error_rate = match &f.max_error_rate {
        Some(s) if !(0.0..=1.0).contains(&s.value) => {
            p.at(
                s,
                "max_error_rate is a fraction between 0 and 1 (0.05 = 5%)",
            );
            d.max_error_rate
        }
        Some(s) => s.value,
        None => d.max_error_rate,
    };
    let source = match f.source.as_ref().map(|s| &s.value) {
        None | Some(SourceFile::Local) => AnalysisSource::Local,
        Some(SourceFile::Prometheus(prom)) => {
            let url = &prom.url;
            if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
                p.at(url, "prometheus url must start with http:// or https://");
            }
            AnalysisSource::Prometheus {
                url: url.value.clone(),
                requests_query: prom.requests_query.clone(),
                error_rate_query: prom.error_rate_query.clone(),
                p99_query: prom.p99_query.clone(),
            }
        }
    };
    Analysis {
        interval,
        window,
        min_requests: f.min_requests.as_ref().map_or(d.min_requests, |m| m.value),
        max_error_rate,
        max_p99_latency: dur_or(&f.max_p99_latency, d.max_p99_latency, p, "max_p99_latency"),
        source,
        against_stable,
        max_error_rate_delta,
        max_p99_ratio,
    }
}
