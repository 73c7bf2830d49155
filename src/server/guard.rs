//! The connection guard: an I/O wrapper between the socket and hyper that
//! enforces what hyper's HTTP/1 server does not do the way a gateway must.
//!
//! It owns, per connection:
//! - `idle_timeout`: a keep-alive connection with no request for that long is
//!   closed, and so is one whose client reads nothing of a response for that
//!   long (a slow-read client: writes that make no progress);
//! - a new connection must start its first request within
//!   `header_read_timeout` (a flood of connections that send nothing frees
//!   its `max_connections` slots that soon, not after `idle_timeout`);
//! - `header_read_timeout`: a request head not complete in that time gets
//!   `408` and the connection is closed (hyper would close silently);
//! - `max_header_bytes`: a longer head gets `431`;
//! - request framing that hyper would "repair": both `Content-Length` and
//!   `Transfer-Encoding`, or differing `Content-Length` values, get `400`
//!   (hyper would drop Content-Length and go on, a smuggling hazard upstream).
//!
//! It only looks at bytes while a request head is being read. Once a head is
//! complete it waits, without inspecting, until the proxy reports the
//! response finished (`ConnState::completed`). HTTP/2 (prior knowledge or
//! ALPN) and upgraded connections are passed through untouched apart from the
//! idle timeout, which h2 then leaves to hyper. Timers are coarse: one sleep
//! per connection that ticks every quarter timeout, so a request costs two
//! clock reads and no timer-wheel operation.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::conn::ConnState;
use super::head_scan::{HeadScan, Scan};
use crate::error::error_body;
use crate::request_id::new_request_id;

#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of the next request.
    Idle,
    /// Reading a request head.
    Head,
    /// A request is being served; the guard does not look at the bytes.
    Busy,
    /// Writing the guard's own error answer before closing.
    Reply,
    /// Closed by the guard: reads return end of file.
    Done,
    /// Not HTTP/1 heads any more (h2, upgrade): bytes pass untouched.
    Passthrough,
}

/// Where a guard leaves its socket when it parks the connection.
pub type ParkSlot<T> = Mutex<Option<T>>;

/// A keep-alive connection idle this long is parked: hyper's connection (its
/// buffers and state, ~30 KiB) is ended and the bare socket waits for the next
/// request (as NGINX frees a keep-alive connection's buffers). A connection
/// whose requests come further apart than this (or after its first request)
/// is parked as soon as it has nothing to read. Busy connections never wait
/// this long between requests, so they pay nothing.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

pub struct Guarded<T> {
    /// The socket; `None` only once it was handed to the park slot.
    inner: Option<T>,
    /// Set when the connection may be parked between requests.
    park: Option<Arc<ParkSlot<T>>>,
    /// The idle deadline ahead is for parking, not for closing.
    park_due: bool,
    /// Park as soon as the socket has nothing to read: the connection's
    /// requests have come sparsely (or this was its first).
    park_now: bool,
    /// hyper may hold bytes the guard did not scan (a body, and whatever
    /// followed it): a request could be in hyper's buffer unseen, so this
    /// connection is never parked.
    unseen: bool,
    /// Parking: reads end, shutdown is skipped, the socket goes to the slot.
    parking: bool,
    state: Arc<ConnState>,
    limits: GuardLimits,
    phase: Phase,
    /// Request heads seen complete on this connection.
    heads: u64,
    deadline: Option<Instant>,
    /// Since when the socket has refused every write (the client reads
    /// nothing); cleared by any progress.
    write_stalled: Option<Instant>,
    tick: Pin<Box<Sleep>>,
    granularity: Duration,
    scan: HeadScan,
    reply: Vec<u8>,
    reply_written: usize,
    /// A pipelined request refused while earlier ones are still being
    /// answered: sent once they are.
    pending: Option<(StatusCode, &'static str)>,
}

/// Polls the socket, or fails if it was already handed over (returning
/// `$gone`, by default the `NotConnected` error).
macro_rules! io {
    ($this:expr) => {
        io!($this, Poll::Ready(Err(io::ErrorKind::NotConnected.into())))
    };
    ($this:expr, $gone:expr) => {
        match $this.inner.as_mut() {
            Some(inner) => Pin::new(inner),
            None => return $gone,
        }
    };
}

/// What one phase of [`Guarded::poll_read`] decided.
enum Step {
    /// The phase changed: look again.
    Again,
    /// The answer to hyper's read.
    Answer(Poll<io::Result<()>>),
}

/// The socket is gone (handed to the park slot).
fn gone() -> Step {
    Step::Answer(Poll::Ready(Err(io::ErrorKind::NotConnected.into())))
}

impl<T> Guarded<T> {
    /// Wraps a new connection. `h2` is true when ALPN already chose HTTP/2.
    /// With `park`, the connection is parked there once idle for
    /// [`PARK_AFTER`] between requests.
    pub fn new(
        inner: T,
        state: Arc<ConnState>,
        limits: GuardLimits,
        h2: bool,
        park: Option<Arc<ParkSlot<T>>>,
    ) -> Self {
        // At most a second, so an idle connection parks within a second or
        // so of PARK_AFTER.
        let granularity = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let now = Instant::now();
        // The first request must begin within the head timeout.
        let deadline = now + limits.header_read_timeout.min(limits.idle_timeout);
        if h2 {
            state.passthrough.store(true, Ordering::Relaxed);
        } else {
            state
                .idle_since
                .store(state.clock.ms_at(now), Ordering::Relaxed);
        }
        Guarded {
            inner: Some(inner),
            park: if h2 { None } else { park },
            park_due: false,
            park_now: false,
            unseen: false,
            parking: false,
            state,
            limits,
            phase: if h2 { Phase::Passthrough } else { Phase::Idle },
            heads: 0,
            deadline: Some(deadline),
            write_stalled: None,
            tick: Box::pin(tokio::time::sleep_until(now + granularity)),
            granularity,
            scan: HeadScan::new(true),
            reply: Vec::new(),
            reply_written: 0,
            pending: None,
        }
    }

    /// True once the current deadline has passed; re-arms the coarse tick.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        loop {
            if self.tick.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            self.tick
                .as_mut()
                .reset(deadline.min(now + self.granularity));
        }
    }

    /// After a complete head ending at `offset` in `buf`: the bytes that
    /// follow a bodiless head are the next pipelined head, so they are
    /// scanned too. A refused one is cut from what hyper gets and answered
    /// after the requests before it.
    fn after_head(&mut self, buf: &mut ReadBuf<'_>, mut offset: usize) {
        self.phase = Phase::Busy;
        self.deadline = None;
        while offset < buf.filled().len() && self.scan.bodiless() {
            self.scan.reset(false);
            match self
                .scan
                .feed(&buf.filled()[offset..], self.limits.max_header_bytes)
            {
                Scan::Complete(consumed) => {
                    self.heads += 1;
                    offset += consumed;
                }
                Scan::More => {
                    // The rest of that head comes in later reads.
                    self.phase = Phase::Head;
                    return;
                }
                Scan::Http2 => return,
                Scan::Reject(status, detail) => {
                    buf.set_filled(offset);
                    self.pending = Some((status, detail));
                    return;
                }
            }
        }
        if offset < buf.filled().len() {
            // A body, maybe followed by more requests.
            self.unseen = true;
        }
    }

    /// True when the coarse tick fired (and re-arms it).
    fn tick_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.tick.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.tick.as_mut().reset(Instant::now() + self.granularity);
        true
    }

    fn start_reply(&mut self, status: StatusCode, detail: &str) {
        let id = new_request_id();
        let id = std::str::from_utf8(&id).unwrap_or("-");
        let body = error_body(status, detail, id);
        self.reply = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {id}\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        self.reply_written = 0;
        self.phase = Phase::Reply;
        tracing::debug!(
            status = status.as_u16(),
            detail,
            request_id = id,
            "request rejected by the connection guard"
        );
    }
}

impl<T> Guarded<T> {
    /// Bookkeeping after a write attempt: progress clears the stall clock; a
    /// write refused for `idle_timeout` fails with `TimedOut`, which ends the
    /// connection.
    fn track_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Pending => {
                self.state.write_blocked.store(true, Ordering::Release);
                let since = *self.write_stalled.get_or_insert_with(Instant::now);
                // Wakes this task again within a tick, whichever side of the
                // connection polls the tick first.
                self.tick_fired(cx);
                if since.elapsed() >= self.limits.idle_timeout {
                    tracing::debug!("client read nothing for idle_timeout: connection closed");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client read nothing for idle_timeout",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.write_stalled = None;
                if self.state.write_blocked.swap(false, Ordering::AcqRel) {
                    self.state.write_waker.wake();
                }
                ready
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Guarded<T> {
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.reply_written < self.reply.len() {
            let n = ready!(io!(self).poll_write(cx, &self.reply[self.reply_written..]))?;
            if n == 0 {
                break;
            }
            self.reply_written += n;
        }
        ready!(io!(self).poll_flush(cx))?;
        self.phase = Phase::Done;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let step = match this.phase {
                Phase::Passthrough => return io!(this).poll_read(cx, buf),
                Phase::Done => return Poll::Ready(Ok(())),
                Phase::Reply => {
                    // Errors writing our own answer end the connection all the same.
                    let _ = ready!(this.poll_reply(cx));
                    this.phase = Phase::Done;
                    Step::Again
                }
                Phase::Busy => this.poll_busy(cx, buf),
                Phase::Idle | Phase::Head => this.poll_head(cx, buf),
            };
            if let Step::Answer(answer) = step {
                return answer;
            }
        }
    }
}

/// The phases of `poll_read`.
impl<T: AsyncRead + AsyncWrite + Unpin> Guarded<T> {
    /// A request is being served: bytes pass unseen until its response has
    /// ended, then the connection is idle.
    fn poll_busy(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Step {
        if self.state.passthrough.load(Ordering::Relaxed) {
            self.phase = Phase::Passthrough;
            return Step::Again;
        }
        let completed = self.state.completed.load(Ordering::Acquire);
        if completed > self.heads {
            // hyper served a request whose head we did not see (pipelined in
            // an earlier read): stop following.
            self.phase = Phase::Passthrough;
            return Step::Again;
        }
        if self.pending.is_some() {
            return self.poll_refused(cx, completed);
        }
        if completed < self.heads {
            return self.read_unseen(cx, buf);
        }
        self.become_idle();
        Step::Again
    }

    /// A pipelined request was refused: once the requests before it are
    /// answered, refuse it and close.
    fn poll_refused(&mut self, cx: &mut Context<'_>, completed: u64) -> Step {
        if completed == self.heads {
            if let Some((status, detail)) = self.pending.take() {
                self.start_reply(status, detail);
            }
            return Step::Again;
        }
        // Nothing more goes to hyper: it belongs to the refused request.
        // Look back on every tick.
        if self.tick_fired(cx) {
            return Step::Again;
        }
        Step::Answer(Poll::Pending)
    }

    /// Reads for hyper while a request is served (its body, or what follows).
    fn read_unseen(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Step {
        let before = buf.filled().len();
        let read = io!(self, gone()).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.unseen = true;
        }
        if read.is_pending() {
            if self.tick_fired(cx) {
                // The response may end without hyper polling a read again:
                // look back on every tick.
                return Step::Again;
            }
            // Or when asked to close once the response ended.
            self.state.waker.register(cx.waker());
        }
        Step::Answer(read)
    }

    /// The response ended: wait for the next request (or park, or close at
    /// `idle_timeout`).
    fn become_idle(&mut self) {
        self.phase = Phase::Idle;
        let now = Instant::now();
        self.park_due =
            self.park.is_some() && !self.unseen && PARK_AFTER < self.limits.idle_timeout;
        let wait = if self.park_due {
            PARK_AFTER
        } else {
            self.limits.idle_timeout
        };
        self.deadline = Some(now + wait);
        let stamp = self.state.clock.ms_at(now);
        self.state.idle_since.store(stamp, Ordering::Relaxed);
        self.state.idle_signal.went_idle();
    }

    /// Idle or reading a head: every byte goes through the scanner.
    fn poll_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Step {
        let before = buf.filled().len();
        match io!(self, gone()).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => self.scan_read(buf, before),
            Poll::Ready(Err(e)) => Step::Answer(Poll::Ready(Err(e))),
            Poll::Pending => self.nothing_to_read(cx),
        }
    }

    /// Bytes arrived at `before` in `buf`: the first ones start a head.
    fn scan_read(&mut self, buf: &mut ReadBuf<'_>, before: usize) -> Step {
        if buf.filled().len() == before {
            return Step::Answer(Poll::Ready(Ok(())));
        }
        if self.phase == Phase::Idle {
            self.begin_head();
        }
        match self
            .scan
            .feed(&buf.filled()[before..], self.limits.max_header_bytes)
        {
            Scan::More => {}
            Scan::Complete(consumed) => {
                self.heads += 1;
                self.after_head(buf, before + consumed);
            }
            Scan::Http2 => {
                self.phase = Phase::Passthrough;
                self.state.passthrough.store(true, Ordering::Relaxed);
                self.deadline = None;
            }
            Scan::Reject(status, detail) => {
                buf.set_filled(before);
                self.start_reply(status, detail);
                return Step::Again;
            }
        }
        Step::Answer(Poll::Ready(Ok(())))
    }

    /// The first byte of a request head: its timeout starts, and whether the
    /// connection parks right after this request is decided.
    fn begin_head(&mut self) {
        self.phase = Phase::Head;
        self.state.idle_since.store(0, Ordering::Relaxed);
        let now = Instant::now();
        // A first request, or one long after the one before: most likely
        // nothing follows soon.
        let stamp = self.state.clock.ms_at(now);
        let last = self.state.last_head.swap(stamp, Ordering::Relaxed);
        self.park_now = self.park.is_some()
            && (last == 0 || stamp.saturating_sub(last) >= PARK_AFTER.as_millis() as u64);
        self.state
            .wake_when_done
            .store(self.park_now, Ordering::Relaxed);
        self.park_due = false;
        self.deadline = Some(now + self.limits.header_read_timeout);
        self.scan.reset(self.heads == 0);
    }

    /// The socket has nothing to read: park, close when evicted, or wait
    /// until the deadline (then 408 for a head, close when idle).
    fn nothing_to_read(&mut self, cx: &mut Context<'_>) -> Step {
        if self.phase == Phase::Idle && self.park_now && !self.unseen {
            // Nothing to read yet: free hyper's state now.
            self.parking = true;
            self.phase = Phase::Done;
            return Step::Again;
        }
        if self.phase == Phase::Idle {
            // Registered before looking, so a request to close that comes in
            // between still wakes us.
            self.state.waker.register(cx.waker());
            if self.state.evict.load(Ordering::Relaxed) {
                tracing::debug!("idle connection closed to admit a new one");
                self.phase = Phase::Done;
                return Step::Again;
            }
        }
        if self.deadline.is_none() {
            // A pipelined head, read while earlier requests are served: its
            // clock starts when they are done.
            if self.state.completed.load(Ordering::Acquire) >= self.heads {
                self.deadline = Some(Instant::now() + self.limits.header_read_timeout);
            } else if self.tick_fired(cx) {
                return Step::Again;
            } else {
                return Step::Answer(Poll::Pending);
            }
        }
        if !self.timed_out(cx) {
            return Step::Answer(Poll::Pending);
        }
        if self.phase == Phase::Head {
            self.start_reply(
                StatusCode::REQUEST_TIMEOUT,
                "request head not received in time",
            );
        } else {
            // Idle: hyper sees the end of the stream and ends its connection;
            // parked, the socket lives on without it.
            self.parking = self.park_due && !self.unseen;
            self.phase = Phase::Done;
        }
        Step::Again
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = io!(this).poll_write(cx, buf);
        this.track_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = io!(this).poll_write_vectored(cx, bufs);
        this.track_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parking {
            // The socket stays open for the next request.
            return Poll::Ready(Ok(()));
        }
        io!(this).poll_shutdown(cx)
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        if !self.parking {
            return;
        }
        if let (Some(slot), Some(inner)) = (&self.park, self.inner.take()) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        }
    }
}
