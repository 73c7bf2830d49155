//! The replicas `ctl` talks to: `--admin` URLs and `host:port` pairs as
//! given, and `dns:NAME:PORT` as every A/AAAA address of NAME (a headless
//! Service in Kubernetes lists every gateway pod).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// One gateway's admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
}

/// Every replica the `--admin` values name, in order, without duplicates.
/// Values may hold several entries separated by commas or spaces (as
/// `SWITCHYARD_ADMIN` does).
pub async fn resolve(
    admins: &[String],
    resolver: Option<SocketAddr>,
    timeout: Duration,
) -> Result<Vec<Replica>, String> {
    let mut replicas = Vec::new();
    let entries = admins
        .iter()
        .flat_map(|a| a.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|e| !e.is_empty());
    for entry in entries {
        match entry.strip_prefix("dns:") {
            Some(spec) => {
                let (name, port) = dns_spec(spec)?;
                for ip in lookup(name, resolver, timeout).await? {
                    replicas.push(Replica {
                        base: format!("http://{}", SocketAddr::new(ip, port)),
                    });
                }
            }
            None => replicas.push(Replica {
                base: base_url(entry)?,
            }),
        }
    }
    let mut seen = BTreeSet::new();
    replicas.retain(|r| seen.insert(r.base.clone()));
    Ok(replicas)
}

/// `NAME:PORT`.
fn dns_spec(spec: &str) -> Result<(&str, u16), String> {
    let bad = || {
        format!("--admin dns:{spec}: expected dns:NAME:PORT, e.g. dns:switchyard-admin.switchyard.svc.cluster.local:9901")
    };
    let (name, port) = spec.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if name.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((name, port))
}

/// `http://host:port` from a URL or a `host:port` pair.
fn base_url(entry: &str) -> Result<String, String> {
    if entry.starts_with("https://") {
        return Err(format!(
            "--admin {entry}: the admin API is plain HTTP (http://...)"
        ));
    }
    let rest = entry
        .strip_prefix("http://")
        .unwrap_or(entry)
        .trim_end_matches('/');
    let valid = rest
        .parse::<http::uri::Authority>()
        .is_ok_and(|a| a.port_u16().is_some())
        && !rest.contains('/');
    if !valid {
        return Err(format!(
            "--admin {entry}: expected http://HOST:PORT, HOST:PORT or dns:NAME:PORT"
        ));
    }
    Ok(format!("http://{rest}"))
}

async fn lookup(
    name: &str,
    resolver: Option<SocketAddr>,
    timeout: Duration,
) -> Result<Vec<IpAddr>, String> {
    let builder = match resolver {
        Some(server) => {
            let mut ns = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut ns.connections {
                connection.port = server.port();
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's DNS settings: {e}"))?,
    };
    let mut builder = builder;
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = timeout;
    options.attempts = 1;
    let resolver = builder
        .build()
        .map_err(|e| format!("cannot set up the resolver: {e}"))?;
    let answer = tokio::time::timeout(timeout, resolver.lookup_ip(name))
        .await
        .map_err(|_| {
            format!(
                "dns:{name}: no answer within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("dns:{name}: {e}"))?;
    let ips: BTreeSet<IpAddr> = answer.iter().collect();
    if ips.is_empty() {
        return Err(format!("dns:{name}: no addresses"));
    }
    Ok(ips.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_values_become_base_urls() {
        assert_eq!(
            base_url("127.0.0.1:9901"),
            Ok("http://127.0.0.1:9901".into())
        );
        assert_eq!(base_url("http://gw-1:9901/"), Ok("http://gw-1:9901".into()));
        assert_eq!(
            base_url("http://[::1]:9901"),
            Ok("http://[::1]:9901".into())
        );
        for bad in [
            "gw-1",
            "http://gw-1",
            "http://gw-1:9901/status",
            "https://gw-1:9901",
            "gw:x",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
        assert_eq!(dns_spec("gw.ns.svc:9901"), Ok(("gw.ns.svc", 9901)));
        for bad in ["gw.ns.svc", ":9901", "gw:0", "gw:x"] {
            assert!(dns_spec(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn lists_split_and_duplicates_go() {
        let admins = vec![
            "127.0.0.1:1, 127.0.0.1:2".to_string(),
            "http://127.0.0.1:1".to_string(),
        ];
        let replicas = resolve(&admins, None, Duration::from_secs(1))
            .await
            .expect("replicas");
        let bases: Vec<&str> = replicas.iter().map(|r| r.base.as_str()).collect();
        assert_eq!(bases, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
    }
}
