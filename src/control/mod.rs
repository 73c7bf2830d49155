//! The control loop: the only writer of the routing snapshot.
//!
//! Reload triggers (file watch, `SIGHUP`, explicit requests) arrive on one
//! channel. For each, the file is read and hashed; a file event whose content
//! did not change is skipped. The new text is parsed and validated whole: if
//! anything is wrong the old snapshot keeps serving and the error is logged,
//! counted and kept for `/status`. Otherwise a new snapshot is compiled,
//! carrying over every unchanged endpoint (pools, health, counters), and
//! swapped in atomically: requests in flight finish on the snapshot they
//! loaded.

pub mod analysis;
pub mod discovery;
pub mod engine;
pub mod handle;
pub mod health;
pub mod history;
mod probe;
pub mod prometheus;
pub mod state_file;
pub mod watch;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, Semaphore};

use crate::config::{self, Config, Release};
use crate::events::{EventKind, ReloadRecord};
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::tls::{TlsError, TlsMaterial};
use discovery::{Answer, Discovery, Key};
use engine::Engine;
pub use handle::{Handle, ReloadOutcome, Trigger};
use health::Probes;
use state_file::Writer;

/// How often the release engine looks whether an analysis is due.
const ENGINE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// What cannot change without a restart, as the process was started.
struct Fixed {
    workers: usize,
    listeners: Vec<config::Listener>,
    admin: std::net::SocketAddr,
}

pub struct Control {
    shared: Arc<Shared>,
    /// DNS-discovered versions and their addresses in force.
    discovery: Discovery,
    /// The release timeline, sampled from the engine tick.
    history: history::History,
    /// The config file; `None` when started from a config value (no reloads).
    path: Option<PathBuf>,
    engine: Engine,
    probes: Probes,
    prometheus: prometheus::PromClient,
    /// Backends whose Prometheus query is in flight.
    querying: std::collections::HashSet<String>,
    last_hash: Option<u64>,
    /// The config generation serving (1 at start, +1 per applied reload).
    generation: u64,
    slots: Arc<Semaphore>,
    max_connections: usize,
    fixed: Fixed,
}

impl Control {
    /// `text` is the content the running config was loaded from.
    /// Sets up the control of a snapshot that is not serving yet: the
    /// release engine restores its state and sets the snapshot's live
    /// weights before the first request.
    pub fn new(
        shared: Arc<Shared>,
        path: Option<PathBuf>,
        text: Option<&str>,
        slots: Arc<Semaphore>,
        writer: Writer,
        discovery: Discovery,
    ) -> Result<Self, TlsError> {
        let snapshot = shared.snapshot.load_full();
        let config = &snapshot.config;
        let mut engine = Engine::new(config.state_file.clone(), Some(writer));
        engine.reconcile(&snapshot, &shared);
        Ok(Control {
            discovery,
            history: history::History::default(),
            path,
            engine,
            probes: Probes::default(),
            prometheus: prometheus::client()?,
            querying: Default::default(),
            last_hash: text.map(content_hash),
            generation: 1,
            slots,
            max_connections: config.limits.max_connections,
            fixed: Fixed {
                workers: config.workers,
                listeners: config.listeners.clone(),
                admin: config.admin.bind,
            },
            shared,
        })
    }

    /// Serves triggers and runs the release engine until the channel closes.
    pub async fn run(mut self, mut triggers: mpsc::Receiver<Trigger>) {
        self.probes
            .reconcile(&self.shared.snapshot.load_full(), &self.shared);
        let (verdicts_tx, mut verdicts_rx) = mpsc::channel(16);
        let (answers_tx, mut answers_rx) = mpsc::channel::<(Key, Answer)>(16);
        let mut tick = tokio::time::interval(ENGINE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The probes' upstream connections live in this thread's pools.
        let mut sweep = tokio::time::interval(crate::upstream::pool::SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    let snapshot = self.shared.snapshot.load_full();
                    crate::upstream::sweep(&|id| snapshot.has_endpoint(id));
                }
                trigger = triggers.recv() => match trigger {
                    None => return,
                    Some(Trigger::FileChanged) => {
                        self.reload(false).await;
                    }
                    Some(Trigger::Signal) => {
                        self.reload(true).await;
                    }
                    Some(Trigger::Request(reply)) => {
                        let _ = reply.send(self.reload(true).await);
                    }
                    Some(Trigger::Action { backend, action, reply }) => {
                        let snapshot = self.shared.snapshot.load_full();
                        let _ = reply.send(self.engine.act(&snapshot, &backend, action, &self.shared));
                    }
                    Some(Trigger::Inspect(reply)) => {
                        let snapshot = self.shared.snapshot.load_full();
                        let _ = reply.send(self.engine.views(&snapshot));
                    }
                    Some(Trigger::History { since, reply }) => {
                        let _ = reply.send(self.history.page(since));
                    }
                },
                _ = tick.tick() => {
                    for lookup in self.discovery.due(tokio::time::Instant::now()) {
                        let answers = answers_tx.clone();
                        tokio::spawn(async move {
                            let _ = answers.send(lookup.run().await).await;
                        });
                    }
                    let snapshot = self.shared.snapshot.load_full();
                    let queries = self.engine.tick(&snapshot, &self.shared);
                    let engine = &self.engine;
                    let now = self.shared.clock.now_ms();
                    self.history.tick(&snapshot, now, |b| engine.timeline_state(b), &self.shared.events);
                    for query in queries {
                        // One query per backend at a time; a slow Prometheus
                        // delays decisions, it never queues them up.
                        if !self.querying.insert(query.backend.clone()) {
                            continue;
                        }
                        let (client, verdicts) = (self.prometheus.clone(), verdicts_tx.clone());
                        tokio::spawn(async move {
                            let judged = prometheus::analyse(&client, &query).await;
                            let _ = verdicts.send((query.backend, judged)).await;
                        });
                    }
                }
                Some((key, answer)) = answers_rx.recv() => {
                    let now = tokio::time::Instant::now();
                    if let Some(change) = self.discovery.settle(&key, answer, now, &self.shared.metrics) {
                        self.rediscovered(&[change]);
                    }
                }
                Some((backend, judged)) = verdicts_rx.recv() => {
                    self.querying.remove(&backend);
                    let snapshot = self.shared.snapshot.load_full();
                    self.engine.decide(&snapshot, &backend, judged, &self.shared);
                }
            }
        }
    }

    /// Reads the file and applies it. `force` reloads even when the content
    /// is unchanged (SIGHUP and the admin API re-read certificates too). The
    /// file and certificate reads run off the runtime.
    pub async fn reload(&mut self, force: bool) -> ReloadOutcome {
        let Some(path) = self.path.clone() else {
            return ReloadOutcome::Failed(
                "started without a config file: nothing to reload".into(),
            );
        };
        let last_hash = self.last_hash;
        let read = tokio::task::spawn_blocking(move || read(&path, last_hash, force)).await;
        match read {
            Ok(Read::Unchanged) => ReloadOutcome::Unchanged,
            Ok(Read::Refused { error, hash }) => {
                // Remembered even when invalid, so one bad save is reported once.
                self.last_hash = hash.or(self.last_hash);
                self.refuse(error)
            }
            Ok(Read::Ready { config, tls, hash }) => {
                self.last_hash = Some(hash);
                let tls = self.keep_tls_listeners(tls);
                self.apply(*config, tls).await
            }
            Err(e) => self.refuse(format!("the config reader failed: {e}")),
        }
    }

    /// A listener that serves TLS keeps serving TLS until a restart, even if
    /// the new config dropped its `tls` block.
    fn keep_tls_listeners(&self, mut tls: TlsMaterial) -> TlsMaterial {
        let previous = self.shared.snapshot.load_full();
        for listener in self.fixed.listeners.iter().filter(|l| l.tls.is_some()) {
            if !tls.listeners.contains_key(&listener.name) {
                if let Some(kept) = previous.tls.listeners.get(&listener.name) {
                    tls.listeners
                        .insert(listener.name.clone(), Arc::clone(kept));
                }
            }
        }
        tls
    }

    fn refuse(&mut self, error: String) -> ReloadOutcome {
        for line in error.lines() {
            tracing::error!("config reload refused: {line}");
        }
        let first = error.lines().next().unwrap_or_default().to_string();
        self.shared.metrics.reload(false);
        self.shared.events.set_last_reload(ReloadRecord {
            success: false,
            generation: self.generation,
            at: SystemTime::now(),
            error: Some(first.clone()),
        });
        self.shared.events.push(EventKind::ReloadError, None, first);
        ReloadOutcome::Failed(error)
    }

    async fn apply(&mut self, config: Config, tls: TlsMaterial) -> ReloadOutcome {
        self.warn_fixed(&config);
        self.resize_slots(config.limits.max_connections);
        let metrics = &self.shared.metrics;
        let lookups = self.discovery.reconcile(&config, metrics).await;
        let found = discovery::settle_all(&mut self.discovery, lookups, metrics).await;
        let previous = self.shared.snapshot.load_full();
        let changes = describe_changes(&previous.config, &config);
        let next = Arc::new(Snapshot::build(
            Arc::new(config),
            Some(&previous),
            &self.shared.metrics,
            tls,
            self.discovery.addresses(),
        ));
        // Live weights are set before the snapshot serves its first request.
        self.engine.reconcile(&next, &self.shared);
        self.shared.snapshot.store(Arc::clone(&next));
        self.probes.reconcile(&next, &self.shared);
        self.generation += 1;
        let generation = self.generation;
        self.shared.metrics.reload(true);
        let summary = if changes.is_empty() {
            "no changes".to_string()
        } else {
            changes.join("; ")
        };
        tracing::info!(generation, changes = %summary, "config reloaded");
        self.shared.events.set_last_reload(ReloadRecord {
            success: true,
            generation,
            at: SystemTime::now(),
            error: None,
        });
        self.shared.events.push(
            EventKind::Reload,
            None,
            format!("generation {generation}: {summary}"),
        );
        self.report_discovered(&found);
        ReloadOutcome::Applied { generation }
    }

    /// Serves the discovered sets in force: the same config, a snapshot
    /// with the new endpoints (unchanged ones carried over whole), the
    /// release going on as it was (its identity is the `discover` block).
    fn rediscovered(&mut self, changes: &[discovery::Change]) {
        let previous = self.shared.snapshot.load_full();
        let next = Arc::new(Snapshot::build(
            Arc::clone(&previous.config),
            Some(&previous),
            &self.shared.metrics,
            previous.tls.clone(),
            self.discovery.addresses(),
        ));
        self.engine.reconcile(&next, &self.shared);
        self.shared.snapshot.store(Arc::clone(&next));
        self.probes.reconcile(&next, &self.shared);
        self.report_discovered(changes);
    }

    fn report_discovered(&self, changes: &[discovery::Change]) {
        for change in changes {
            let message = change.describe();
            tracing::info!(backend = %change.backend, change = %message, "discovered endpoints changed");
            self.shared
                .events
                .push(EventKind::Discovery, Some(&change.backend), message);
        }
    }

    /// Logs the edits that only a restart applies.
    fn warn_fixed(&self, config: &Config) {
        if config.workers != self.fixed.workers {
            tracing::warn!(
                running = self.fixed.workers,
                configured = config.workers,
                "workers changed: restart to apply"
            );
        }
        if config.admin.bind != self.fixed.admin {
            tracing::warn!(running = %self.fixed.admin, configured = %config.admin.bind, "admin.bind changed: restart to apply");
        }
        let same = |a: &config::Listener, b: &config::Listener| {
            a.name == b.name && a.bind == b.bind && a.tls.is_some() == b.tls.is_some()
        };
        let differs = config.listeners.len() != self.fixed.listeners.len()
            || config
                .listeners
                .iter()
                .zip(&self.fixed.listeners)
                .any(|(a, b)| !same(a, b));
        if differs {
            tracing::warn!("listeners changed (name, bind or tls on/off): restart to apply; the running listeners keep serving as they are");
        }
    }

    /// Applies a new `max_connections` to the running connection slots.
    fn resize_slots(&mut self, wanted: usize) {
        if wanted > self.max_connections {
            self.slots.add_permits(wanted - self.max_connections);
        } else if wanted < self.max_connections {
            // Only free slots can be withdrawn now; busy ones return as usual.
            let withdrawn = self.slots.forget_permits(self.max_connections - wanted);
            if withdrawn < self.max_connections - wanted {
                tracing::info!(
                    wanted,
                    "max_connections lowered: takes full effect as connections close"
                );
            }
        }
        self.max_connections = wanted;
    }
}

/// What reading the config file for a reload found.
enum Read {
    /// The content is what was loaded last (or the file is briefly gone).
    Unchanged,
    /// Unreadable or invalid; `hash` is the content's when it was read.
    Refused { error: String, hash: Option<u64> },
    /// A valid config and its certificates.
    Ready {
        config: Box<Config>,
        tls: TlsMaterial,
        hash: u64,
    },
}

/// Reads, hashes, parses and validates the config file, and loads the
/// certificates it names (re-read on every reload; a bad one refuses it
/// all). Blocking: runs on a blocking thread.
fn read(path: &Path, last_hash: Option<u64>, force: bool) -> Read {
    let name = path.display().to_string();
    let text = match config::read(path) {
        Ok(text) => text,
        // Mid-swap (ConfigMap, rename-save) the file can vanish for a
        // moment; the next event or the safety net retries.
        Err(e) if !force && e.kind() == std::io::ErrorKind::NotFound => return Read::Unchanged,
        Err(e) => {
            let error = format!("{name}: cannot read: {e}");
            return Read::Refused { error, hash: None };
        }
    };
    let hash = content_hash(&text);
    if !force && last_hash == Some(hash) {
        return Read::Unchanged;
    }
    let refused = |error: String| Read::Refused {
        error,
        hash: Some(hash),
    };
    let config = match config::parse(&text, &name) {
        Ok(config) => config,
        Err(e) => return refused(e.to_string()),
    };
    match crate::tls::load(&config) {
        Ok(tls) => Read::Ready {
            config: Box::new(config),
            tls,
            hash,
        },
        Err(e) => refused(format!("{name}: TLS: {e}")),
    }
}

fn content_hash(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// A short human list of what changed between two configs.
fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    for name in new
        .backends
        .keys()
        .filter(|n| !old.backends.contains_key(*n))
    {
        changes.push(format!("backend {name} added"));
    }
    for name in old
        .backends
        .keys()
        .filter(|n| !new.backends.contains_key(*n))
    {
        changes.push(format!("backend {name} removed"));
    }
    for (name, b) in &new.backends {
        let Some(before) = old.backends.get(name) else {
            continue;
        };
        if b == before {
            continue;
        }
        match (&before.release, &b.release) {
            (Release::Canary(x), Release::Canary(y)) if x.weight != y.weight => {
                changes.push(format!(
                    "backend {name}: canary weight {} -> {}",
                    x.weight, y.weight
                ));
            }
            (Release::BlueGreen(x), Release::BlueGreen(y)) if x.active != y.active => {
                changes.push(format!(
                    "backend {name}: active {} -> {}",
                    x.active, y.active
                ));
            }
            _ => changes.push(format!("backend {name} changed")),
        }
    }
    if old.routes != new.routes {
        changes.push(format!(
            "routes: {} -> {}",
            old.routes.len(),
            new.routes.len()
        ));
    }
    if old.limits != new.limits {
        changes.push("limits changed".to_string());
    }
    if old.access_log != new.access_log {
        changes.push(format!("access_log {}", new.access_log));
    }
    changes
}
