//! Listeners and connection serving.
//!
//! Each worker thread runs its own single-threaded runtime with its own
//! `SO_REUSEPORT` socket per listener, so the kernel spreads connections over
//! the workers and a connection, its requests and its upstream connections
//! stay on one thread. Connections pass through the [`guard`] and are served
//! by hyper-util's `auto` builder (HTTP/1.1 and h2c prior knowledge), with
//! upgrades, and are drained on graceful shutdown.
//!
//! An HTTP/1 connection holds hyper's state (buffers, connection future; about
//! 30 KiB) only while it has a request to serve: a new connection waits for
//! its first byte on the bare socket, and one idle for [`guard::PARK_AFTER`]
//! between requests is *parked* — its hyper connection ends and the socket
//! waits alone for the next request, when a new hyper connection takes over.

pub mod evict;
pub mod guard;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{self, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{watch, Semaphore, TryAcquireError};
use tokio_rustls::TlsAcceptor;

use prometheus::IntGaugeVec;

use crate::config::{Config, Limits};
use crate::proxy::{self, Conn, Worker};
use guard::{ConnState, GuardLimits, Guarded, ParkSlot, PARK_AFTER};

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
        // A free connection slot first. With every slot taken, the next
        // connection is accepted and the connections idle longest are asked
        // to close to make room for it; without idle ones it waits for a slot
        // (and those after it in the kernel's accept queue).
        let (permit, accepted) = match Arc::clone(&serving.slots).try_acquire_owned() {
            Ok(permit) => {
                let Some(accepted) = accept(&bound, &mut stop).await else {
                    return;
                };
                (permit, accepted)
            }
            Err(TryAcquireError::Closed) => return,
            Err(TryAcquireError::NoPermits) => {
                let Some(accepted) = accept(&bound, &mut stop).await else {
                    return;
                };
                let evicted = serving.conns.evict_idle(evict::EVICT_BATCH);
                if evicted > 0 {
                    tracing::debug!(listener = %bound.name, evicted, "max_connections reached: closing idle connections");
                }
                let permit = tokio::select! {
                    permit = Arc::clone(&serving.slots).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    _ = crate::app::stopped(&mut stop) => return,
                };
                (permit, accepted)
            }
        };
        let Ok((stream, peer)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Limits and certificates are read per connection, so a reload
        // applies them to new connections.
        let snapshot = serving.worker.snapshot.load();
        let limits = snapshot.config.limits;
        let tls = if bound.tls {
            match snapshot.tls.listeners.get(&bound.name) {
                Some(config) => Some(TlsAcceptor::from(Arc::clone(config))),
                None => {
                    tracing::warn!(listener = %bound.name, "no TLS config for a TLS listener: connection refused");
                    continue;
                }
            }
        } else {
            None
        };
        drop(snapshot);
        let task = Connection {
            worker: Arc::clone(&serving.worker),
            conns: Arc::clone(&serving.conns),
            builder: Arc::clone(&serving.builder),
            drain: serving.drain.subscribe(),
            limits,
            peer,
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
                    // A stalled handshake is bounded like a slow request head.
                    let limit = task.limits.header_read_timeout;
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            task.serve(stream, true, h2).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %task.peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %task.peer, "TLS handshake timed out"),
                    }
                    open.dec();
                    drop(permit);
                });
            }
        }
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
        _ = crate::app::stopped(stop) => None,
    }
}

/// One accepted connection, ready to be served.
struct Connection {
    worker: Arc<Worker>,
    conns: Arc<evict::Registry>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: watch::Receiver<bool>,
    limits: Limits,
    peer: std::net::SocketAddr,
}

impl Connection {
    /// Serves HTTP on `io` until the connection ends. `h2` is true when ALPN
    /// already chose HTTP/2 (never parked).
    async fn serve<I>(mut self, io: I, tls: bool, h2: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let state = Arc::new(ConnState::default());
        let conns = Arc::clone(&self.conns);
        let _registered = conns.register(Arc::clone(&state));
        let conn = Arc::new(Conn::new(self.peer, tls, Arc::clone(&state)));
        let guard = GuardLimits {
            header_read_timeout: self.limits.header_read_timeout,
            idle_timeout: self.limits.idle_timeout,
            max_header_bytes: self.limits.max_header_bytes,
        };
        let parks = !h2 && PARK_AFTER < guard.idle_timeout;
        let mut io = Woken::new(io);
        if parks {
            // Idle (and evictable) until its first byte, which must come
            // within the head timeout.
            state.idle_since.store(
                evict::idle_stamp(std::time::Instant::now()),
                Ordering::Relaxed,
            );
            let limit = guard.header_read_timeout.min(guard.idle_timeout);
            if !wait_for_request(&mut self.drain, &mut io, &state, limit).await {
                return;
            }
        }
        loop {
            let slot: Option<Arc<ParkSlot<Woken<I>>>> = parks.then(Arc::default);
            let guarded = Guarded::new(io, Arc::clone(&state), guard, h2, slot.clone());
            let (worker, served) = (Arc::clone(&self.worker), Arc::clone(&conn));
            let service = service_fn(move |req| {
                let worker = Arc::clone(&worker);
                let conn = Arc::clone(&served);
                async move { proxy::handle(&worker, &conn, req).await }
            });
            // Boxed: the task keeps only a pointer while the socket is parked.
            let mut connection = Box::pin(
                self.builder
                    .serve_connection_with_upgrades(TokioIo::new(guarded), service)
                    .into_owned(),
            );
            let ended = {
                // Waiting on the drain signal registers this task once; after
                // that a version check per poll tells whether it came (a
                // `changed()` polled every time takes Notify's lock and a coop
                // budget unit on every wake, about 1 % of a request).
                let mut signal = self.drain.clone();
                let mut signalled = std::pin::pin!(signal.changed());
                let (mut registered, mut shutting) = (false, false);
                let drain = &self.drain;
                std::future::poll_fn(|cx| {
                    if !shutting {
                        let draining = if registered {
                            drain.has_changed().unwrap_or(true)
                        } else {
                            registered = true;
                            signalled.as_mut().poll(cx).is_ready()
                        };
                        if draining {
                            connection.as_mut().graceful_shutdown();
                            shutting = true;
                        }
                    }
                    connection.as_mut().poll(cx)
                })
                .await
            };
            // Dropping hyper's connection drops the guard, which hands a
            // parked socket to the slot.
            drop(connection);
            if let Err(e) = ended {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            let parked =
                slot.and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).take());
            let Some(parked) = parked else {
                return;
            };
            io = parked;
            conns.parked();
            state.reset();
            conn.release_timer();
            // What is left of idle_timeout since the last response ended.
            let since = state.idle_since.load(Ordering::Relaxed);
            let now = evict::idle_stamp(std::time::Instant::now());
            let idle_for = Duration::from_millis(now.saturating_sub(since));
            let limit = guard.idle_timeout.saturating_sub(idle_for);
            if !wait_for_request(&mut self.drain, &mut io, &state, limit).await {
                return;
            }
        }
    }
}

/// Waits, holding only the socket, for the first byte of the next request, at
/// most `limit`. False when the connection should close instead: the client
/// closed it, the time ran out, it was evicted to admit another connection
/// (`max_connections`), or the server is shutting down.
async fn wait_for_request<I: AsyncRead + Unpin>(
    drain: &mut watch::Receiver<bool>,
    io: &mut Woken<I>,
    state: &ConnState,
    limit: Duration,
) -> bool {
    if *drain.borrow() {
        return false;
    }
    let evicted = std::future::poll_fn(|cx| {
        state.waker.register(cx.waker());
        if state.evict.load(Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    tokio::select! {
        woke = io.first_byte() => woke,
        () = evicted => false,
        () = tokio::time::sleep(limit) => false,
        _ = drain.changed() => false,
    }
}

/// A connection's socket between hyper connections: the byte that woke it
/// is read again first.
struct Woken<I> {
    first: Option<u8>,
    io: I,
}

impl<I: AsyncRead + Unpin> Woken<I> {
    fn new(io: I) -> Self {
        Woken { first: None, io }
    }

    /// Reads the first byte of what comes next; false at end of stream or
    /// on an error.
    async fn first_byte(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.io.read(&mut byte).await {
            Ok(1) => {
                self.first = Some(byte[0]);
                true
            }
            _ => false,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Woken<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(byte) = this.first {
            if buf.remaining() > 0 {
                buf.put_slice(&[byte]);
                this.first = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Woken<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
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
