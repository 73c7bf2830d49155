//! Listeners and accepting connections.
//!
//! Each worker thread runs its own single-threaded runtime with its own
//! `SO_REUSEPORT` socket per listener, so the kernel spreads connections over
//! the workers and a connection, its requests and its upstream connections
//! stay on one thread. A connection takes one of the `max_connections` slots
//! (idle ones are evicted to make room, `evict`), passes the TLS handshake on
//! a TLS listener, and is served (`connection`) through the guard (`guard`,
//! `head_scan`, sharing `conn` with the request path) by hyper-util's `auto`
//! builder; on shutdown the open connections are drained.

pub mod conn;
mod connection;
pub mod evict;
pub mod guard;
pub mod head_scan;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGaugeVec;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Limits};
use crate::proxy::Worker;
use crate::shared::stopped;
use connection::Connection;

/// Pending connections the kernel queues per socket.
const BACKLOG: u32 = 4096;

/// Connections one accept loop takes before the worker's other tasks run
/// (NGINX takes one per event-loop turn unless `multi_accept`).
const ACCEPT_BATCH: u32 = 16;
/// Concurrent HTTP/2 streams per connection.
const H2_MAX_STREAMS: u32 = 256;
/// Streams reset by the client before we accepted them, per connection.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams we had to reset for protocol errors, per connection.
const H2_MAX_LOCAL_RESETS: usize = 256;

pub struct BoundListener {
    pub name: String,
    pub listener: TcpListener,
    pub tls: bool,
}

/// The sockets of each worker, and the bound address of each listener.
pub type Bound = (Vec<Vec<BoundListener>>, Vec<(String, SocketAddr)>);

/// Binds every listener once per worker runtime. The first bind fixes the
/// address (resolving port 0); the other workers share it by `SO_REUSEPORT`.
/// Returns the sockets per worker and the bound address per listener.
pub fn bind(config: &Config, runtimes: &[Runtime]) -> io::Result<Bound> {
    let mut per_worker: Vec<Vec<BoundListener>> = runtimes.iter().map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let shared = runtimes.len() > 1;
    for listener in &config.listeners {
        let mut addr = listener.bind;
        for (i, rt) in runtimes.iter().enumerate() {
            let _entered = rt.enter();
            let socket = bind_one(addr, shared).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {} on {addr}: {e}", listener.name),
                )
            })?;
            if i == 0 {
                addr = socket.local_addr()?;
                bound.push((listener.name.clone(), addr));
            }
            per_worker[i].push(BoundListener {
                name: listener.name.clone(),
                listener: socket,
                tls: listener.tls.is_some(),
            });
        }
    }
    Ok((per_worker, bound))
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// What a worker serves with, handed over by the application shell.
pub struct Context {
    pub worker: Arc<Worker>,
    /// Every open client connection of the process (all workers).
    pub conns: Arc<evict::Registry>,
    /// `switchyard_active_connections`, by listener.
    pub connections: IntGaugeVec,
    pub limits: Limits,
    /// `max_connections` permits, shared by every worker.
    pub slots: Arc<Semaphore>,
}

/// Everything a worker's accept loops share.
struct Serving {
    worker: Arc<Worker>,
    conns: Arc<evict::Registry>,
    connections: IntGaugeVec,
    builder: Arc<auto::Builder<TokioExecutor>>,
    slots: Arc<Semaphore>,
    /// Turned true at shutdown; every connection holds a receiver, so the
    /// sender sees when the last one has ended.
    drain: watch::Sender<bool>,
}

/// Serves a worker's listeners until `stop` turns true, then waits up to
/// `shutdown.timeout` for its open connections to finish.
pub async fn serve(context: Context, listeners: Vec<BoundListener>, stop: watch::Receiver<bool>) {
    let serving = Arc::new(Serving {
        worker: context.worker,
        conns: context.conns,
        connections: context.connections,
        builder: Arc::new(builder(&context.limits)),
        slots: context.slots,
        drain: watch::Sender::new(false),
    });
    let sweeper = tokio::spawn(sweep_pool(Arc::clone(&serving.worker)));
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(accept_loop(Arc::clone(&serving), l, stop.clone())))
        .collect();
    for handle in loops {
        let _ = handle.await;
    }
    sweeper.abort();
    let Ok(serving) = Arc::try_unwrap(serving) else {
        return;
    };
    let open = serving.drain.receiver_count();
    if open > 0 {
        tracing::debug!(
            worker = serving.worker.id,
            open,
            "waiting for open connections"
        );
    }
    // The shutdown timeout in force now (it is reloadable).
    let drain = serving.worker.snapshot.load().config.shutdown.timeout;
    // Requests in flight are finished, idle connections closed.
    serving.drain.send_replace(true);
    if tokio::time::timeout(drain, serving.drain.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = serving.worker.id,
            "shutdown timeout: closing connections still open"
        );
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The guard enforces the header timeout itself, with a 408 answer.
        .header_read_timeout(None)
        .max_buf_size((limits.max_header_bytes + 16 * 1024).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        // Rapid-reset (CVE-2023-44487) and error-reset floods: a client that
        // opens and cancels streams faster than we accept them, or makes us
        // reset many, gets GOAWAY.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

async fn accept_loop(serving: Arc<Serving>, bound: BoundListener, mut stop: watch::Receiver<bool>) {
    let open = serving.connections.with_label_values(&[&bound.name]);
    let mut in_a_row = 0u32;
    loop {
        in_a_row += 1;
        if in_a_row > ACCEPT_BATCH {
            // Let the connections already taken make progress before more:
            // in a burst, the ones waiting stay in the kernel's accept queue
            // instead of all holding a request's state here at once.
            in_a_row = 0;
            tokio::task::yield_now().await;
        }
        let Some((permit, accepted)) = admit(&serving, &bound, &mut stop).await else {
            return;
        };
        let Ok((stream, peer)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Some((task, tls)) = serving.connection(&bound, peer) else {
            continue;
        };
        open.inc();
        let open = open.clone();
        // Plain and TLS connections are separate tasks: a plain one's task
        // does not carry the room for a TLS session and its handshake.
        match tls {
            None => {
                tokio::spawn(async move {
                    task.serve(stream, false, false).await;
                    open.dec();
                    drop(permit);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    serve_tls(task, acceptor, stream).await;
                    open.dec();
                    drop(permit);
                });
            }
        }
    }
}

/// A connection slot and the next connection; `None` once stopping.
///
/// A free slot first. With every slot taken, the next connection is accepted
/// and the connections idle longest are asked to close to make room for it;
/// without idle ones it waits for a slot (and those after it in the kernel's
/// accept queue).
async fn admit(
    serving: &Serving,
    bound: &BoundListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, io::Result<(TcpStream, SocketAddr)>)> {
    match Arc::clone(&serving.slots).try_acquire_owned() {
        Ok(permit) => Some((permit, accept(bound, stop).await?)),
        Err(TryAcquireError::Closed) => None,
        Err(TryAcquireError::NoPermits) => {
            let accepted = accept(bound, stop).await?;
            // Evict now, and again whenever a connection goes idle while
            // this one waits (a busy connection finishing its request).
            let waiting = serving.conns.wait_for_idle();
            // One acquire for the whole wait: the semaphore serves waiters in
            // order, and one made again on every idle signal would go to the
            // back each time (the other workers' waiters taking every slot).
            let acquire = Arc::clone(&serving.slots).acquire_owned();
            tokio::pin!(acquire);
            loop {
                let next_idle = waiting.next_idle();
                let evicted = serving.conns.evict_idle(evict::EVICT_BATCH);
                if evicted > 0 {
                    tracing::debug!(listener = %bound.name, evicted, "max_connections reached: closing idle connections");
                }
                tokio::select! {
                    permit = &mut acquire => return Some((permit.ok()?, accepted)),
                    _ = next_idle => continue,
                    _ = stopped(stop) => return None,
                }
            }
        }
    }
}

impl Serving {
    /// The connection `peer` on `bound` will be served as, with its TLS
    /// acceptor on a TLS listener. Limits and certificates are read per
    /// connection, so a reload applies them to new connections.
    fn connection(
        &self,
        bound: &BoundListener,
        peer: SocketAddr,
    ) -> Option<(Connection, Option<TlsAcceptor>)> {
        let snapshot = self.worker.snapshot.load();
        let tls = if bound.tls {
            let Some(config) = snapshot.tls.listeners.get(&bound.name) else {
                tracing::warn!(listener = %bound.name, "no TLS config for a TLS listener: connection refused");
                return None;
            };
            Some(TlsAcceptor::from(Arc::clone(config)))
        } else {
            None
        };
        let task = Connection {
            worker: Arc::clone(&self.worker),
            conns: Arc::clone(&self.conns),
            builder: Arc::clone(&self.builder),
            drain: self.drain.subscribe(),
            limits: snapshot.config.limits,
            peer,
        };
        Some((task, tls))
    }
}

/// The TLS handshake, then HTTP over it (h2 when ALPN chose it).
async fn serve_tls(task: Connection, acceptor: TlsAcceptor, stream: TcpStream) {
    // A stalled handshake is bounded like a slow request head.
    let limit = task.limits.header_read_timeout;
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            task.serve(stream, true, h2).await;
        }
        Ok(Err(e)) => tracing::debug!(peer = %task.peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(peer = %task.peer, "TLS handshake timed out"),
    }
}

/// The next connection on `bound`, or `None` once `stop` turns true.
async fn accept(
    bound: &BoundListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<io::Result<(TcpStream, SocketAddr)>> {
    tokio::select! {
        accepted = bound.listener.accept() => {
            if let Err(e) = &accepted {
                tracing::warn!(listener = %bound.name, error = %e, "accept failed");
            }
            Some(accepted)
        }
        _ = stopped(stop) => None,
    }
}

/// Evicts this worker's idle upstream connections that expired, closed, or
/// belong to endpoints no longer in the config.
async fn sweep_pool(worker: Arc<Worker>) {
    let mut tick = tokio::time::interval(crate::upstream::pool::SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let snapshot = worker.snapshot.load();
        let alive: std::collections::HashSet<u64> = snapshot
            .backends
            .iter()
            .flat_map(|b| b.versions.iter())
            .flat_map(|v| v.endpoints.iter().map(|e| e.id))
            .collect();
        crate::upstream::sweep(&|id| alive.contains(&id));
    }
}
