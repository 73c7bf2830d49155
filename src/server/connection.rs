//! Serving one accepted connection: the guard around its socket, hyper's
//! connection over it (HTTP/1.1, h2c or h2, upgrades on), drained on
//! graceful shutdown, and parking between requests.
//!
//! An HTTP/1 connection holds hyper's state (buffers, connection future;
//! about 30 KiB) only while it has a request to serve: a new connection waits
//! for its first byte on the bare socket, and one idle for [`PARK_AFTER`]
//! between requests is *parked* — its hyper connection ends and the socket
//! waits alone for the next request, when a new hyper connection takes over.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::conn::ConnState;
use super::evict::Registry;
use super::guard::{GuardLimits, Guarded, ParkSlot, PARK_AFTER};
use crate::config::Limits;
use crate::proxy::{self, Conn, Worker};

/// One accepted connection, ready to be served.
pub struct Connection {
    pub worker: Arc<Worker>,
    pub conns: Arc<Registry>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub drain: watch::Receiver<bool>,
    pub limits: Limits,
    pub peer: SocketAddr,
}

impl Connection {
    /// Serves HTTP on `io` until the connection ends. `h2` is true when ALPN
    /// already chose HTTP/2 (never parked).
    pub async fn serve<I>(mut self, io: I, tls: bool, h2: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conns = Arc::clone(&self.conns);
        let state = Arc::new(ConnState::with_signal(
            self.worker.clock,
            conns.idle_signal(),
        ));
        let _registered = conns.register(Arc::clone(&state));
        let conn = Arc::new(Conn::new(self.peer, tls, Arc::clone(&state)));
        let parks = !h2 && PARK_AFTER < self.limits.idle_timeout;
        let mut io = Woken::new(io);
        if parks {
            // Idle (and evictable) until its first byte, which must come
            // within the head timeout.
            state.mark_idle();
            let limit = self
                .limits
                .header_read_timeout
                .min(self.limits.idle_timeout);
            if !wait_for_request(&mut self.drain, &mut io, &state, limit).await {
                return;
            }
        }
        loop {
            let Some(parked) = self.serve_http(io, &state, &conn, h2, parks).await else {
                return;
            };
            io = parked;
            conns.parked();
            state.reset();
            conn.release_timer();
            // What is left of idle_timeout since the last response ended.
            let since = state.idle_since.load(Ordering::Relaxed);
            let now = state.clock.now_ms();
            let idle_for = Duration::from_millis(now.saturating_sub(since));
            let limit = self.limits.idle_timeout.saturating_sub(idle_for);
            if !wait_for_request(&mut self.drain, &mut io, &state, limit).await {
                return;
            }
        }
    }

    /// Serves HTTP with hyper on `io` until hyper's connection ends; returns
    /// the socket when the guard parked it.
    async fn serve_http<I>(
        &self,
        io: Woken<I>,
        state: &Arc<ConnState>,
        conn: &Arc<Conn>,
        h2: bool,
        parks: bool,
    ) -> Option<Woken<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = GuardLimits {
            header_read_timeout: self.limits.header_read_timeout,
            idle_timeout: self.limits.idle_timeout,
            max_header_bytes: self.limits.max_header_bytes,
        };
        let slot: Option<Arc<ParkSlot<Woken<I>>>> = parks.then(Arc::default);
        let guarded = Guarded::new(io, Arc::clone(state), limits, h2, slot.clone());
        let (worker, served) = (Arc::clone(&self.worker), Arc::clone(conn));
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
        if let Err(e) = until_done(connection.as_mut(), &self.drain).await {
            tracing::trace!(error = %e, "connection ended with an error");
        }
        // Dropping hyper's connection drops the guard, which hands a parked
        // socket to the slot.
        drop(connection);
        slot.and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).take())
    }
}

/// Drives hyper's connection to its end, shutting it down gracefully when
/// the drain signal comes. Waiting on the signal registers this task once;
/// after that a version check per poll tells whether it came (a `changed()`
/// polled every time takes Notify's lock and a coop budget unit on every
/// wake, about 1 % of a request).
async fn until_done<C: GracefulConnection>(
    mut connection: Pin<&mut C>,
    drain: &watch::Receiver<bool>,
) -> Result<(), C::Error> {
    let mut signal = drain.clone();
    let mut signalled = std::pin::pin!(signal.changed());
    let (mut registered, mut shutting) = (false, false);
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
        // A byte already waiting wins over a request to close: the
        // eviction may have been asked before this task first looked (a
        // new connection whose request sat in the accept queue), and
        // closing then would reset a client that did nothing wrong.
        biased;
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
        cx: &mut Context<'_>,
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
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
