//! Builds the shared state, starts the worker runtimes, the admin listener
//! and the signal handling, and owns shutdown.
//!
//! Threads: one per worker (a current-thread runtime serving the listeners)
//! and one control thread (admin API, signals). [`Gateway`] is the handle the
//! binary and the integration tests hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, Semaphore};

use crate::admin::Readiness;
use crate::config::{self, Config, ConfigError};
use crate::control::discovery::{self, Change, Discovery};
use crate::control::engine::{ActError, ReleaseState};
use crate::control::state_file::Writer;
use crate::control::watch::{self as config_watch, FileWatch};
use crate::control::{Control, Handle, ReloadOutcome};
use crate::events::{EventKind, ReloadRecord};
use crate::metrics::Metrics;
use crate::proxy::Worker;
use crate::release::progress::Action;
use crate::server::evict::Registry;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::{admin, server};

/// How long shutdown waits for the state file's last write.
const STATE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot bind {0}")]
    Bind(std::io::Error),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot watch the config file: {0}")]
    Watch(String),
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsError),
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    control_handle: Handle,
    readiness: Arc<Readiness>,
    /// Open client connections, for closing idle ones at `max_connections`.
    conns: Arc<Registry>,
    /// Flushed at shutdown, so the last release state is on disk.
    state_writer: Writer,
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    control: Option<Runtime>,
    _watch: Option<FileWatch>,
    signals: Option<Signals>,
}

/// The process's signal handlers, installed before serving starts.
struct Signals {
    hup: Option<Signal>,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: Some(signal(SignalKind::hangup())?),
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

impl Gateway {
    /// Loads `path`, starts serving it, and reloads it when it changes, on
    /// `SIGHUP` and on request.
    pub fn start_from_file(path: &Path) -> Result<Gateway, StartError> {
        Self::launch_file(path, false)
    }

    /// As [`Gateway::start_from_file`], and owns the process's signals:
    /// `SIGHUP` reloads, `SIGTERM`/`SIGINT` end [`Gateway::run_until_signal`].
    /// The handlers are in place before the listeners are announced, so an
    /// early signal never kills the process.
    pub fn serve_file(path: &Path) -> Result<Gateway, StartError> {
        Self::launch_file(path, true)
    }

    /// Reads and validates `path`, then launches with the file behind it (so
    /// it can be watched and reloaded).
    fn launch_file(path: &Path, own_signals: bool) -> Result<Gateway, StartError> {
        let (config, text) = config::load(path)?;
        Self::launch(config, Some((path.to_path_buf(), text)), own_signals)
    }

    /// Serves a config that has no file behind it, owning the process's
    /// signals (as [`Gateway::serve_file`] does).
    pub fn serve_config(config: Config) -> Result<Gateway, StartError> {
        Self::launch(config, None, true)
    }

    /// Starts serving a config that has no file behind it (no reloads).
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        Self::launch(config, None, false)
    }

    /// Binds every listener and the admin address, then starts serving.
    fn launch(
        config: Config,
        file: Option<(PathBuf, String)>,
        own_signals: bool,
    ) -> Result<Gateway, StartError> {
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let tls = crate::tls::load(&config).map_err(StartError::Tls)?;
        let control = Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("switchyard-control")
            .build()
            .map_err(StartError::Runtime)?;
        let (discovery, found) = discover_first(&control, &config, &metrics)?;
        let snapshot = Snapshot::build(
            Arc::clone(&config),
            None,
            &metrics,
            tls,
            discovery.addresses(),
        );
        let shared = Arc::new(Shared::new(snapshot, metrics));
        for change in &found {
            let message = change.describe();
            shared
                .events
                .push(EventKind::Discovery, Some(&change.backend), message);
        }
        let readiness = Arc::new(Readiness::default());
        let conns = Arc::new(Registry::default());
        let runtimes = (0..config.workers)
            .map(|i| {
                Builder::new_current_thread()
                    .enable_all()
                    .thread_name(format!("switchyard-worker-{i}"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Runtime)?;
        let (per_worker, listeners) = server::bind(&config, &runtimes).map_err(StartError::Bind)?;

        let admin_listener = {
            let _entered = control.enter();
            let std = std::net::TcpListener::bind(config.admin.bind).map_err(|e| {
                StartError::Bind(std::io::Error::new(
                    e.kind(),
                    format!("admin {}: {e}", config.admin.bind),
                ))
            })?;
            std.set_nonblocking(true).map_err(StartError::Bind)?;
            tokio::net::TcpListener::from_std(std).map_err(StartError::Bind)?
        };
        let admin = admin_listener.local_addr().map_err(StartError::Bind)?;

        let mut signals = if own_signals {
            let _entered = control.enter();
            Some(Signals::install().map_err(StartError::Runtime)?)
        } else {
            None
        };

        // The release engine restores its state and sets the live weights
        // before the first request is served.
        let slots = Arc::new(Semaphore::new(config.limits.max_connections));
        let (path, text) = file.map_or((None, None), |(p, t)| (Some(p), Some(t)));
        let state_writer = Writer::start().map_err(StartError::Runtime)?;
        let control_loop = Control::new(
            Arc::clone(&shared),
            path.clone(),
            text.as_deref(),
            Arc::clone(&slots),
            state_writer.clone(),
            discovery,
        )
        .map_err(StartError::Tls)?;
        let (control_handle, receiver) = Handle::channel();
        shared.events.set_last_reload(ReloadRecord {
            success: true,
            generation: 1,
            at: std::time::SystemTime::now(),
            error: None,
        });

        let (stop, stop_rx) = watch::channel(false);
        let mut workers = Vec::new();
        for (id, (rt, bound)) in runtimes.into_iter().zip(per_worker).enumerate() {
            let context = server::Context {
                worker: Arc::new(Worker::new(id, &shared)),
                conns: Arc::clone(&conns),
                connections: shared.metrics.active_connections.clone(),
                limits: config.limits,
                slots: Arc::clone(&slots),
            };
            let stop_rx = stop_rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("switchyard-worker-{id}"))
                .spawn(move || rt.block_on(server::serve(context, bound, stop_rx)))
                .map_err(StartError::Runtime)?;
            workers.push(handle);
        }
        let admin_context = admin::Context {
            shared: Arc::clone(&shared),
            control: control_handle.clone(),
            readiness: Arc::clone(&readiness),
        };
        control.spawn(admin::run(admin_listener, Arc::new(admin_context), stop_rx));
        control.spawn(control_loop.run(receiver));
        let watch = match path {
            Some(path) => {
                let triggers = control_handle.sender();
                if let Some(hup) = signals.as_mut().and_then(|s| s.hup.take()) {
                    control.spawn(config_watch::forward_sighup(hup, triggers.clone()));
                }
                control.spawn(config_watch::safety_net(triggers.clone()));
                Some(config_watch::watch_file(&path, triggers).map_err(StartError::Watch)?)
            }
            None => None,
        };
        readiness.set_ready();
        for (name, addr) in &listeners {
            tracing::info!(listener = %name, %addr, "listening");
        }
        tracing::info!(%admin, "admin listening");
        Ok(Gateway {
            shared,
            control_handle,
            readiness,
            conns,
            state_writer,
            listeners,
            admin,
            stop,
            workers,
            control: Some(control),
            _watch: watch,
            signals,
        })
    }

    /// The bound address of the listener `name` (port 0 resolved).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The snapshot handle, metrics and events the gateway runs on.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The control loop's request/reply handle.
    pub fn control(&self) -> &Handle {
        &self.control_handle
    }

    /// The config generation serving now.
    pub fn generation(&self) -> u64 {
        self.shared.events.generation()
    }

    /// Times a client connection was parked between requests, since start.
    pub fn parks(&self) -> u64 {
        self.conns.parks()
    }

    /// Reloads the config file now, as `POST /admin/reload` does.
    pub async fn reload(&self) -> ReloadOutcome {
        self.control_handle.reload().await
    }

    /// An operator action on a backend's release (promote, abort, pause,
    /// resume, retry), as the admin API's POSTs do.
    pub async fn act(&self, backend: &str, action: Action) -> Result<String, ActError> {
        self.control_handle.act(backend, action).await
    }

    /// Every backend's release state now.
    pub async fn releases(&self) -> Vec<(String, ReleaseState)> {
        self.control_handle.releases().await
    }

    /// Blocks until SIGTERM or SIGINT (handlers installed by
    /// [`Gateway::serve_file`]), then shuts down gracefully.
    pub fn run_until_signal(mut self) {
        if let (Some(mut signals), Some(rt)) = (self.signals.take(), self.control.as_ref()) {
            let signal = rt.block_on(async {
                tokio::select! {
                    _ = signals.term.recv() => "SIGTERM",
                    _ = signals.int.recv() => "SIGINT",
                }
            });
            tracing::info!(signal, "shutting down");
        }
        self.shutdown(true);
    }

    /// Graceful shutdown: readiness fails at once; with `drain`, keep serving
    /// for `drain_delay` so load balancers notice; then stop accepting and
    /// wait up to `shutdown.timeout` for requests in flight.
    pub fn shutdown(mut self, drain: bool) {
        self.readiness.set_draining();
        // The config in force now, not the one at start: shutdown is
        // reloadable.
        let shutdown = self.shared.snapshot.load().config.shutdown;
        if drain && !shutdown.drain_delay.is_zero() {
            tracing::info!(delay = ?shutdown.drain_delay, "draining: readiness is failing");
            std::thread::sleep(shutdown.drain_delay);
        }
        self.stop_workers();
    }

    fn stop_workers(&mut self) {
        let _ = self.stop.send(true);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        if let Some(control) = self.control.take() {
            // Admin connections hold nothing worth waiting for.
            control.shutdown_background();
        }
        if !self.state_writer.flush(STATE_FLUSH_TIMEOUT) {
            tracing::warn!("the state file was not written within {STATE_FLUSH_TIMEOUT:?}");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// The first lookups of the discovered versions, before anything serves:
/// each bounded by its backend's `connect_timeout`; a version whose lookup
/// fails starts empty and fills in at its next interval. Runs on the
/// control runtime from a thread of its own (the caller may be inside
/// another runtime, as the tests are).
fn discover_first(
    control: &Runtime,
    config: &Config,
    metrics: &Metrics,
) -> Result<(Discovery, Vec<Change>), StartError> {
    let first = || {
        control.block_on(async {
            let mut discovery = Discovery::default();
            let lookups = discovery.reconcile(config, metrics).await;
            let found = discovery::settle_all(&mut discovery, lookups, metrics).await;
            (discovery, found)
        })
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("switchyard-discover".into())
            .spawn_scoped(scope, first)
            .map_err(StartError::Runtime)?
            .join()
            .map_err(|_| StartError::Runtime(std::io::Error::other("the first DNS lookups failed")))
    })
}
