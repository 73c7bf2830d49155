//! `ConfigFile` → `Config`: applies defaults and checks the file as a whole.
//!
//! Every problem is collected (not just the first) with the position of the
//! offending key or value, so `switchyard check` can list them all at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

mod backend;
mod discover;
mod values;

use super::error::Diagnostic;
use super::file::*;
use super::model::*;
use backend::backends;
use values::*;

/// Upstream time for a response head when a route sets none (as NGINX's
/// `proxy_read_timeout`).
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Validates a parsed file. `cores` resolves `workers: auto`.
pub fn validate(file: ConfigFile, cores: usize) -> Result<Config, Vec<Diagnostic>> {
    let mut p = Problems::default();
    let listeners = listeners(&file, &mut p);
    let admin = admin(&file, &mut p);
    let workers = match &file.workers {
        None
        | Some(Spanned {
            value: Workers::Word(WorkersWord::Auto),
            ..
        }) => cores.max(1),
        Some(
            s @ Spanned {
                value: Workers::Count(n),
                ..
            },
        ) => {
            if (1..=1024).contains(n) {
                *n as usize
            } else {
                p.at(s, format!("workers must be auto or 1 to 1024, got {n}"));
                1
            }
        }
    };
    let limits = limits(&file.limits, &mut p);
    let defaults = Shutdown::default();
    let shutdown = Shutdown {
        drain_delay: file
            .shutdown
            .drain_delay
            .as_ref()
            .map_or(defaults.drain_delay, |d| d.value.0),
        timeout: dur_or(
            &file.shutdown.timeout,
            defaults.timeout,
            &mut p,
            "shutdown.timeout",
        ),
    };
    let backends = backends(&file, &mut p);
    let routes = routes(&file, &mut p);
    if p.0.is_empty() {
        Ok(Config {
            listeners,
            admin,
            state_file: file.state_file.map(|s| PathBuf::from(s.value)),
            workers,
            access_log: file.access_log.unwrap_or(true),
            limits,
            shutdown,
            routes,
            backends,
        })
    } else {
        p.0.sort_by_key(|d| (d.line, d.column));
        Err(p.0)
    }
}

fn listeners(file: &ConfigFile, p: &mut Problems) -> Vec<Listener> {
    let Some(list) = &file.listeners else {
        p.at_loc(
            Location::UNKNOWN,
            "no listeners: add at least one under `listeners:`",
        );
        return Vec::new();
    };
    if list.value.is_empty() {
        p.at(list, "no listeners: add at least one under `listeners:`");
    }
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    let mut out = Vec::new();
    for l in &list.value {
        let l = &l.value;
        if l.name.value.is_empty() {
            p.at(&l.name, "listener name must not be empty");
        } else if !names.insert(l.name.value.clone()) {
            p.at(
                &l.name,
                format!("duplicate listener name {:?}", l.name.value),
            );
        }
        let Some(bind) = socket_addr(&l.bind, p, "bind") else {
            continue;
        };
        if !binds.insert(bind) {
            p.at(&l.bind, format!("two listeners bind {bind}"));
        }
        let tls = l.tls.as_ref().map(|t| {
            if t.value.certs.value.is_empty() {
                p.at(&t.value.certs, "tls.certs needs at least one cert/key pair");
            }
            ListenerTls {
                certs: t
                    .value
                    .certs
                    .value
                    .iter()
                    .map(|c| CertPaths {
                        cert: PathBuf::from(&c.value.cert.value),
                        key: PathBuf::from(&c.value.key.value),
                    })
                    .collect(),
            }
        });
        out.push(Listener {
            name: l.name.value.clone(),
            bind,
            tls,
        });
    }
    out
}

fn admin(file: &ConfigFile, p: &mut Problems) -> Admin {
    let default = Admin {
        bind: SocketAddr::from(([127, 0, 0, 1], 9901)),
        token_file: None,
    };
    let Some(a) = &file.admin else { return default };
    Admin {
        bind: socket_addr(&a.value.bind, p, "admin.bind").unwrap_or(default.bind),
        token_file: a.value.token_file.as_ref().map(|t| PathBuf::from(&t.value)),
    }
}

fn limits(l: &LimitsFile, p: &mut Problems) -> Limits {
    let d = Limits::default();
    let max_header_bytes = count_or(
        &l.max_header_bytes,
        d.max_header_bytes as u64,
        p,
        "max_header_bytes",
    );
    if let Some(s) = &l.max_header_bytes {
        if !(1024..=1 << 20).contains(&s.value) {
            p.at(s, "max_header_bytes must be between 1024 and 1048576");
        }
    }
    Limits {
        header_read_timeout: dur_or(
            &l.header_read_timeout,
            d.header_read_timeout,
            p,
            "header_read_timeout",
        ),
        max_header_bytes: max_header_bytes as usize,
        max_body_bytes: l
            .max_body_bytes
            .as_ref()
            .map_or(d.max_body_bytes, |s| s.value),
        max_connections: count_or(
            &l.max_connections,
            d.max_connections as u64,
            p,
            "max_connections",
        ) as usize,
        idle_timeout: dur_or(&l.idle_timeout, d.idle_timeout, p, "idle_timeout"),
    }
}

fn routes(file: &ConfigFile, p: &mut Problems) -> Vec<Route> {
    let Some(list) = &file.routes else {
        p.at_loc(
            Location::UNKNOWN,
            "no routes: add at least one under `routes:`",
        );
        return Vec::new();
    };
    if list.value.is_empty() {
        p.at(list, "no routes: add at least one under `routes:`");
    }
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    let mut out = Vec::new();
    for r in &list.value {
        let route = &r.value;
        if route.name.value.is_empty() {
            p.at(&route.name, "route name must not be empty");
        } else if !names.insert(route.name.value.clone()) {
            p.at(
                &route.name,
                format!("duplicate route name {:?}", route.name.value),
            );
        }
        let declared = file
            .backends
            .as_ref()
            .is_some_and(|b| b.value.contains_key(&route.backend.value));
        if !declared {
            p.at(
                &route.backend,
                format!("unknown backend {:?}", route.backend.value),
            );
        }
        let matcher = route.matcher.as_ref().map(|m| &m.value);
        let host = match matcher.and_then(|m| m.host.as_ref()) {
            None => HostMatch::Any,
            Some(h) => host_match(h, p),
        };
        let path_prefix = match matcher.and_then(|m| m.path_prefix.as_ref()) {
            None => "/".to_string(),
            Some(s) => path_prefix(s, p),
        };
        if !matches.insert((host.clone(), path_prefix.clone())) {
            p.at(
                r,
                format!(
                    "route {:?} has the same host and path_prefix as an earlier route",
                    route.name.value
                ),
            );
        }
        out.push(Route {
            name: route.name.value.clone(),
            host,
            path_prefix,
            backend: route.backend.value.clone(),
            timeout: dur_or(&route.timeout, DEFAULT_ROUTE_TIMEOUT, p, "timeout"),
        });
    }
    out
}

fn host_match(h: &Spanned<String>, p: &mut Problems) -> HostMatch {
    let host = h.value.trim().to_ascii_lowercase();
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    if let Some(rest) = host.strip_prefix("*.") {
        if valid_name(rest) {
            return HostMatch::Wildcard(format!(".{rest}"));
        }
    } else if host == "*" {
        return HostMatch::Any;
    } else if valid_name(&host) {
        return HostMatch::Exact(host);
    }
    p.at(
        h,
        format!(
            "host {:?} must be a name such as api.example.com or *.example.com (no port)",
            h.value
        ),
    );
    HostMatch::Any
}

fn path_prefix(s: &Spanned<String>, p: &mut Problems) -> String {
    let v = &s.value;
    if !v.starts_with('/') || v.contains(['?', '#', ' ']) {
        p.at(
            s,
            format!("path_prefix {v:?} must start with / and hold no query, fragment or space"),
        );
        return "/".to_string();
    }
    let trimmed = v.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}
