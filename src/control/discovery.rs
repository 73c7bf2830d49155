//! DNS endpoint discovery (SPEC §10): the versions with a `discover` block
//! get one endpoint per A/AAAA record of their name, looked up again every
//! `interval`.
//!
//! Lookups run as tasks on the control runtime and report back to the
//! control loop, which rebuilds the snapshot when a set changed; the request
//! path only ever sees whole snapshots. [`Discovery`] keeps, per discovered
//! version, the addresses in force and decides what a lookup's answer does
//! to them: new records add endpoints, records gone remove theirs, a failed
//! lookup (timeout, SERVFAIL, refused) keeps the set and is counted, and an
//! answer without records empties the set only once it has lasted
//! `hold_empty`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::config::{Config, Discover};
use crate::metrics::Metrics;
use crate::snapshot::Discovered;

/// A discovered version: (backend, version).
pub type Key = (String, String);

/// The longest a lookup may take before it counts as failed.
const MAX_LOOKUP_TIME: Duration = Duration::from_secs(5);

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name's addresses (at least one).
    Found(Vec<IpAddr>),
    /// The server answered: no such name, or no A/AAAA records.
    NoRecords,
    /// No usable answer (timeout, SERVFAIL, refused, unreachable server).
    Failed(String),
}

/// A change to one version's set, as an event says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub backend: String,
    pub version: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Change {
    /// `v1: +10.0.0.5:8080 -10.0.0.4:8080`.
    pub fn describe(&self) -> String {
        let added = self.added.iter().map(|a| format!(" +{a}"));
        let removed = self.removed.iter().map(|a| format!(" -{a}"));
        let mut text = format!("{}:", self.version);
        text.extend(added.chain(removed));
        text
    }
}

/// One lookup to run: a task of its own, reporting its [`Answer`].
pub struct Lookup {
    pub key: Key,
    resolver: Result<TokioResolver, String>,
    name: String,
    timeout: Duration,
}

impl Lookup {
    pub async fn run(self) -> (Key, Answer) {
        let resolver = match self.resolver {
            Ok(resolver) => resolver,
            Err(why) => return (self.key, Answer::Failed(why)),
        };
        let answer = match tokio::time::timeout(self.timeout, resolver.lookup_ip(&self.name)).await
        {
            Err(_) => Answer::Failed(format!("no answer within {:?}", self.timeout)),
            Ok(Ok(found)) => {
                let ips: BTreeSet<IpAddr> = found.iter().collect();
                match ips.is_empty() {
                    true => Answer::NoRecords,
                    false => Answer::Found(ips.into_iter().collect()),
                }
            }
            Ok(Err(e)) if e.is_no_records_found() => Answer::NoRecords,
            Ok(Err(e)) => Answer::Failed(e.to_string()),
        };
        (self.key, answer)
    }
}

struct Target {
    spec: Discover,
    resolver: Result<TokioResolver, String>,
    /// `ip:port`, sorted: the set in force.
    addresses: Vec<String>,
    /// Since when the answers have had no records (the set not yet emptied).
    empty_since: Option<Instant>,
    next_due: Instant,
    in_flight: bool,
    /// Why the last lookup failed; `None` after a good one.
    last_error: Option<String>,
}

impl Target {
    fn lookup(&self, key: &Key) -> Lookup {
        Lookup {
            key: key.clone(),
            resolver: self.resolver.clone(),
            name: self.spec.dns.clone(),
            timeout: self.spec.interval.min(MAX_LOOKUP_TIME),
        }
    }
}

/// The discovered versions and the addresses in force for each.
#[derive(Default)]
pub struct Discovery {
    targets: BTreeMap<Key, Target>,
    /// The system's resolver settings (`/etc/resolv.conf`), read once.
    system: Option<(ResolverConfig, ResolverOpts)>,
}

impl Discovery {
    /// Follows `config`: starts discovering new `discover` blocks, forgets
    /// removed ones, and keeps the addresses of those whose name, port and
    /// resolver are unchanged. Returns the first lookups of the new ones;
    /// the caller settles them before serving the versions if it can.
    pub async fn reconcile(&mut self, config: &Config, metrics: &Metrics) -> Vec<Lookup> {
        let wanted: BTreeMap<Key, (&Discover, Duration)> = config
            .backends
            .values()
            .flat_map(|b| {
                b.versions.iter().filter_map(|(name, v)| {
                    let key = (b.name.clone(), name.clone());
                    v.discover.as_ref().map(|d| (key, (d, b.connect_timeout)))
                })
            })
            .collect();
        for key in self.targets.keys().filter(|k| !wanted.contains_key(*k)) {
            let labels = [key.0.as_str(), key.1.as_str()];
            let _ = metrics.discovered_endpoints.remove_label_values(&labels);
            let _ = metrics.discovery_errors.remove_label_values(&labels);
        }
        self.targets.retain(|k, _| wanted.contains_key(k));
        if self.system.is_none() && wanted.values().any(|(d, _)| d.resolver.is_none()) {
            self.system = system_settings().await;
        }
        let now = Instant::now();
        let mut first = Vec::new();
        for (key, (spec, connect_timeout)) in wanted {
            let same_source = |t: &Target| {
                t.spec.dns == spec.dns
                    && t.spec.port == spec.port
                    && t.spec.resolver == spec.resolver
            };
            match self.targets.get_mut(&key) {
                Some(t) if same_source(t) => t.spec = spec.clone(),
                _ => {
                    let labels = [key.0.as_str(), key.1.as_str()];
                    metrics
                        .discovered_endpoints
                        .with_label_values(&labels)
                        .set(0);
                    metrics.discovery_errors.with_label_values(&labels);
                    let target = Target {
                        resolver: self.resolver(spec),
                        spec: spec.clone(),
                        addresses: Vec::new(),
                        empty_since: None,
                        next_due: now + spec.interval,
                        in_flight: true,
                        last_error: None,
                    };
                    let mut lookup = target.lookup(&key);
                    // Before serving: as long as a connect may take.
                    lookup.timeout = lookup.timeout.min(connect_timeout);
                    first.push(lookup);
                    self.targets.insert(key, target);
                }
            }
        }
        first
    }

    fn resolver(&self, spec: &Discover) -> Result<TokioResolver, String> {
        let (config, mut opts) = match (spec.resolver, &self.system) {
            (Some(server), _) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut ns.connections {
                    connection.port = server.port();
                }
                (
                    ResolverConfig::from_parts(None, Vec::new(), vec![ns]),
                    ResolverOpts::default(),
                )
            }
            (None, Some((config, opts))) => (config.clone(), opts.clone()),
            // No system settings readable: fail each lookup visibly (an empty
            // server list answers every lookup with an error).
            (None, None) => (
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                ResolverOpts::default(),
            ),
        };
        // Every interval asks the server again: the point is to see pods
        // come and go, not to serve answers from a cache.
        opts.cache_size = 0;
        opts.timeout = spec.interval.min(MAX_LOOKUP_TIME);
        opts.attempts = 1;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        builder
            .build()
            .map_err(|e| format!("cannot set up the resolver: {e}"))
    }

    /// The lookups due at `now` (one in flight per version at a time).
    pub fn due(&mut self, now: Instant) -> Vec<Lookup> {
        let mut due = Vec::new();
        for (key, target) in &mut self.targets {
            if !target.in_flight && target.next_due <= now {
                target.in_flight = true;
                target.next_due = now + target.spec.interval;
                due.push(target.lookup(key));
            }
        }
        due
    }

    /// Takes a lookup's answer; returns the change to the version's set.
    pub fn settle(
        &mut self,
        key: &Key,
        answer: Answer,
        now: Instant,
        metrics: &Metrics,
    ) -> Option<Change> {
        let target = self.targets.get_mut(key)?;
        target.in_flight = false;
        let labels = [key.0.as_str(), key.1.as_str()];
        let next: Vec<String> = match answer {
            Answer::Failed(why) => {
                metrics.discovery_errors.with_label_values(&labels).inc();
                if target.last_error.as_deref() != Some(why.as_str()) {
                    tracing::warn!(backend = %key.0, version = %key.1, name = %target.spec.dns, error = %why, "DNS lookup failed: keeping the last {} endpoints", target.addresses.len());
                }
                target.last_error = Some(why);
                return None;
            }
            Answer::NoRecords => {
                target.last_error = None;
                let since = *target.empty_since.get_or_insert(now);
                if target.addresses.is_empty()
                    || now.saturating_duration_since(since) < target.spec.hold_empty
                {
                    return None;
                }
                Vec::new()
            }
            Answer::Found(ips) => {
                target.last_error = None;
                target.empty_since = None;
                let mut next: Vec<String> = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, target.spec.port).to_string())
                    .collect();
                next.sort_unstable();
                next.dedup();
                next
            }
        };
        if next == target.addresses {
            return None;
        }
        let added = next
            .iter()
            .filter(|a| !target.addresses.contains(a))
            .cloned()
            .collect();
        let removed = target
            .addresses
            .iter()
            .filter(|a| !next.contains(a))
            .cloned()
            .collect();
        metrics
            .discovered_endpoints
            .with_label_values(&labels)
            .set(next.len() as i64);
        target.addresses = next;
        Some(Change {
            backend: key.0.clone(),
            version: key.1.clone(),
            added,
            removed,
        })
    }

    /// The addresses in force, for building a snapshot.
    pub fn addresses(&self) -> Discovered {
        self.targets
            .iter()
            .map(|(key, t)| (key.clone(), t.addresses.clone()))
            .collect()
    }

    /// Why the last lookup of `key` failed, if it did.
    pub fn last_error(&self, key: &Key) -> Option<&str> {
        self.targets.get(key)?.last_error.as_deref()
    }
}

/// Reads `/etc/resolv.conf` (off the runtime); `None`, logged, when it
/// cannot be read.
async fn system_settings() -> Option<(ResolverConfig, ResolverOpts)> {
    let read = tokio::task::spawn_blocking(hickory_resolver::system_conf::read_system_conf).await;
    match read {
        Ok(Ok(settings)) => Some(settings),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the system's DNS settings: discovery without `resolver` fails until a restart");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the system's DNS settings failed");
            None
        }
    }
}

/// Runs `lookups` at once and settles each, each bounded by its own timeout.
pub async fn settle_all(
    discovery: &mut Discovery,
    lookups: Vec<Lookup>,
    metrics: &Metrics,
) -> Vec<Change> {
    let mut running = tokio::task::JoinSet::new();
    for lookup in lookups {
        running.spawn(lookup.run());
    }
    let mut changes = Vec::new();
    while let Some(done) = running.join_next().await {
        if let Ok((key, answer)) = done {
            changes.extend(discovery.settle(&key, answer, Instant::now(), metrics));
        }
    }
    changes
}
