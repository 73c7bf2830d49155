//! Validation of a version's endpoints: listed (`endpoints`) or found by DNS
//! (`discover`, SPEC §10), exactly one of the two.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::super::file::*;
use super::super::model::*;
use super::values::*;

/// Re-resolve period when `interval` is not given.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// How long an empty answer keeps the last set when `hold_empty` is not given.
const DEFAULT_HOLD_EMPTY: Duration = Duration::from_secs(30);
/// The port of a `resolver` given without one.
const DNS_PORT: u16 = 53;

/// The version's listed endpoints, or its `discover` block.
pub(super) fn endpoints(
    vname: &str,
    v: &Spanned<VersionFile>,
    p: &mut Problems,
) -> (Vec<String>, Option<Discover>) {
    let file = &v.value;
    match (&file.endpoints, &file.discover) {
        (Some(_), Some(d)) => {
            p.at(
                d,
                format!(
                    "version {vname:?}: `endpoints` and `discover` exclude each other; keep one"
                ),
            );
            (Vec::new(), None)
        }
        (None, None) => {
            p.at(
                v,
                format!("version {vname:?} has no endpoints: add `endpoints: [host:port, ...]` or a `discover:` block"),
            );
            (Vec::new(), None)
        }
        (Some(list), None) => {
            if list.value.is_empty() {
                p.at(list, format!("version {vname:?} has no endpoints"));
            }
            for ep in &list.value {
                endpoint(ep, p);
            }
            (list.value.iter().map(|e| e.value.clone()).collect(), None)
        }
        (None, Some(d)) => (Vec::new(), discover(d, p)),
    }
}

fn endpoint(ep: &Spanned<String>, p: &mut Problems) {
    let ok = match ep.value.rsplit_once(':') {
        Some((host, port)) => {
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            port.parse::<u16>().is_ok_and(|port| port != 0)
                && !host.is_empty()
                && (host.parse::<IpAddr>().is_ok() || dns_name(host))
        }
        None => false,
    };
    if !ok {
        p.at(
            ep,
            format!(
                "endpoint {:?} must be host:port, e.g. 10.0.0.11:8000 or users-v1:8000",
                ep.value
            ),
        );
    }
}

/// A host name as DNS takes it: dot-separated labels of letters, digits,
/// `-` and `_`, at most 63 bytes each and 253 in all, a final dot allowed.
fn dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn discover(d: &Spanned<DiscoverFile>, p: &mut Problems) -> Option<Discover> {
    let file = &d.value;
    let dns = match &file.dns {
        None => {
            p.at(
                d,
                "discover needs `dns`: the name to resolve (a headless Service in Kubernetes)",
            );
            None
        }
        Some(name) if name.value.parse::<IpAddr>().is_ok() => {
            p.at(name, format!("discover.dns {:?} is an address, not a name: list it under `endpoints` instead", name.value));
            None
        }
        Some(name) if !dns_name(&name.value) => {
            p.at(
                name,
                format!(
                    "discover.dns {:?} is not a DNS name such as app-v1.shop.svc.cluster.local",
                    name.value
                ),
            );
            None
        }
        Some(name) => Some(name.value.clone()),
    };
    let port = match &file.port {
        None => {
            p.at(
                d,
                "discover needs `port`: the port every discovered address serves on",
            );
            None
        }
        Some(port) => match u16::try_from(port.value) {
            Ok(n) if n != 0 => Some(n),
            _ => {
                p.at(
                    port,
                    format!("discover.port must be 1..65535, got {}", port.value),
                );
                None
            }
        },
    };
    let interval = dur_or(&file.interval, DEFAULT_INTERVAL, p, "discover.interval");
    let hold_empty = file
        .hold_empty
        .as_ref()
        .map_or(DEFAULT_HOLD_EMPTY, |h| h.value.0);
    let resolver = file.resolver.as_ref().and_then(|r| resolver(r, p));
    Some(Discover {
        dns: dns?,
        port: port?,
        interval,
        resolver: if file.resolver.is_some() {
            Some(resolver?)
        } else {
            None
        },
        hold_empty,
    })
}

/// `IP` or `IP:PORT` (`[IPv6]:PORT`); port 53 when not given.
fn resolver(r: &Spanned<String>, p: &mut Problems) -> Option<SocketAddr> {
    let text = r.value.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    p.at(
        r,
        format!(
            "discover.resolver {:?} is not a DNS server address such as 10.96.0.10, 10.96.0.10:53 or [fd00::10]:53",
            r.value
        ),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked_label_by_label() {
        for ok in [
            "app-v1.shop.svc.cluster.local",
            "app",
            "app.",
            "_svc.x",
            "a-b.c1",
        ] {
            assert!(dns_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", ".", "a..b", "a b", "app:80", long.as_str(), "ä.example"] {
            assert!(!dns_name(bad), "{bad:?}");
        }
    }
}
