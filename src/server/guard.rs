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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use atomic_waker::AtomicWaker;

use super::evict;
use crate::error::error_body;
use crate::request_id::new_request_id;

/// State shared between a connection's guard and the requests served on it.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Responses finished on this connection. Written by the response body
    /// when it is dropped; read by the guard to know the next head may start.
    pub completed: AtomicU64,
    /// Set by the proxy when the connection stops carrying HTTP/1 messages
    /// the guard can follow (a 101 upgrade, or a response sent before the
    /// request body was read). The guard then stops inspecting.
    pub passthrough: AtomicBool,
    /// Whether the current request's body has been read to its end. Set by
    /// the request path (HTTP/1 carries one request at a time).
    pub body_done: AtomicBool,
    /// While the connection waits for a request: since when, in
    /// [`evict::idle_stamp`] milliseconds; 0 otherwise. Written by the guard
    /// and by the response body when it ends; read by
    /// [`evict::Registry::evict_idle`].
    pub idle_since: AtomicU64,
    /// Set to ask an idle connection to close (to admit a new one).
    pub evict: AtomicBool,
    /// Wakes the connection's task when it is asked to close, and when its
    /// response ends if `wake_when_done`.
    pub waker: AtomicWaker,
    /// The guard parks the connection as soon as this response ends, so it
    /// wants to hear of it at once.
    pub wake_when_done: AtomicBool,
    /// When the connection's last request head began, in
    /// [`evict::idle_stamp`] milliseconds (0: none yet). Kept across parks.
    pub last_head: AtomicU64,
}

impl ConnState {
    /// Ready for a new hyper connection on the same socket (after parking).
    pub fn reset(&self) {
        self.completed.store(0, Ordering::Relaxed);
        self.passthrough.store(false, Ordering::Relaxed);
        self.body_done.store(false, Ordering::Relaxed);
    }
}

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

/// Polls the socket, or fails if it was already handed over.
macro_rules! io {
    ($this:expr) => {
        match $this.inner.as_mut() {
            Some(inner) => Pin::new(inner),
            None => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    };
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
                .store(evict::idle_stamp(now.into_std()), Ordering::Relaxed);
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
            match this.phase {
                Phase::Passthrough => return io!(this).poll_read(cx, buf),
                Phase::Done => return Poll::Ready(Ok(())),
                Phase::Reply => {
                    // Errors writing our own answer end the connection all the same.
                    let _ = ready!(this.poll_reply(cx));
                    this.phase = Phase::Done;
                }
                Phase::Busy => {
                    if this.state.passthrough.load(Ordering::Relaxed) {
                        this.phase = Phase::Passthrough;
                        continue;
                    }
                    let completed = this.state.completed.load(Ordering::Acquire);
                    if completed > this.heads {
                        // hyper served a request whose head we did not see
                        // (pipelined in an earlier read): stop following.
                        this.phase = Phase::Passthrough;
                        continue;
                    }
                    if this.pending.is_some() {
                        if completed == this.heads {
                            // The requests before the refused one are answered:
                            // now refuse it, and close.
                            if let Some((status, detail)) = this.pending.take() {
                                this.start_reply(status, detail);
                            }
                            continue;
                        }
                        // Nothing more goes to hyper: it belongs to the refused
                        // request. Look back on every tick.
                        if this.tick_fired(cx) {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    if completed < this.heads {
                        let before = buf.filled().len();
                        let read = io!(this).poll_read(cx, buf);
                        if buf.filled().len() > before {
                            this.unseen = true;
                        }
                        if read.is_pending() {
                            if this.tick_fired(cx) {
                                // The response may end without hyper polling a
                                // read again: look back on every tick.
                                continue;
                            }
                            // Or when asked to close once the response ended.
                            this.state.waker.register(cx.waker());
                        }
                        return read;
                    }
                    this.phase = Phase::Idle;
                    let now = Instant::now();
                    this.park_due = this.park.is_some()
                        && !this.unseen
                        && PARK_AFTER < this.limits.idle_timeout;
                    let wait = if this.park_due {
                        PARK_AFTER
                    } else {
                        this.limits.idle_timeout
                    };
                    this.deadline = Some(now + wait);
                    this.state
                        .idle_since
                        .store(evict::idle_stamp(now.into_std()), Ordering::Relaxed);
                }
                Phase::Idle | Phase::Head => {
                    let before = buf.filled().len();
                    match io!(this).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let n = buf.filled().len() - before;
                            if n == 0 {
                                return Poll::Ready(Ok(()));
                            }
                            if this.phase == Phase::Idle {
                                this.phase = Phase::Head;
                                this.state.idle_since.store(0, Ordering::Relaxed);
                                let now = Instant::now();
                                // A first request, or one long after the one
                                // before: most likely nothing follows soon.
                                let stamp = evict::idle_stamp(now.into_std());
                                let last = this.state.last_head.swap(stamp, Ordering::Relaxed);
                                this.park_now = this.park.is_some()
                                    && (last == 0
                                        || stamp.saturating_sub(last)
                                            >= PARK_AFTER.as_millis() as u64);
                                this.state
                                    .wake_when_done
                                    .store(this.park_now, Ordering::Relaxed);
                                this.park_due = false;
                                this.deadline = Some(now + this.limits.header_read_timeout);
                                this.scan.reset(this.heads == 0);
                            }
                            match this
                                .scan
                                .feed(&buf.filled()[before..], this.limits.max_header_bytes)
                            {
                                Scan::More => return Poll::Ready(Ok(())),
                                Scan::Complete(consumed) => {
                                    this.heads += 1;
                                    this.after_head(buf, before + consumed);
                                    return Poll::Ready(Ok(()));
                                }
                                Scan::Http2 => {
                                    this.phase = Phase::Passthrough;
                                    this.state.passthrough.store(true, Ordering::Relaxed);
                                    this.deadline = None;
                                    return Poll::Ready(Ok(()));
                                }
                                Scan::Reject(status, detail) => {
                                    buf.set_filled(before);
                                    this.start_reply(status, detail);
                                }
                            }
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if this.phase == Phase::Idle && this.park_now && !this.unseen {
                                // Nothing to read yet: free hyper's state now.
                                this.parking = true;
                                this.phase = Phase::Done;
                                continue;
                            }
                            if this.phase == Phase::Idle {
                                // Registered before looking, so a request to
                                // close that comes in between still wakes us.
                                this.state.waker.register(cx.waker());
                                if this.state.evict.load(Ordering::Relaxed) {
                                    tracing::debug!("idle connection closed to admit a new one");
                                    this.phase = Phase::Done;
                                    continue;
                                }
                            }
                            if this.deadline.is_none() {
                                // A pipelined head, read while earlier requests
                                // are served: its clock starts when they are done.
                                if this.state.completed.load(Ordering::Acquire) >= this.heads {
                                    this.deadline =
                                        Some(Instant::now() + this.limits.header_read_timeout);
                                } else if this.tick_fired(cx) {
                                    continue;
                                } else {
                                    return Poll::Pending;
                                }
                            }
                            if !this.timed_out(cx) {
                                return Poll::Pending;
                            }
                            if this.phase == Phase::Head {
                                this.start_reply(
                                    StatusCode::REQUEST_TIMEOUT,
                                    "request head not received in time",
                                );
                            } else {
                                // Idle: hyper sees the end of the stream and
                                // ends its connection; parked, the socket
                                // lives on without it.
                                this.parking = this.park_due && !this.unseen;
                                this.phase = Phase::Done;
                            }
                        }
                    }
                }
            }
        }
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

/// What one chunk of head bytes revealed.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    More,
    /// The head ended after this many bytes of the chunk.
    Complete(usize),
    Http2,
    Reject(StatusCode, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// In the request line (leading empty lines are skipped).
    RequestLine { empty: bool },
    /// At the start of a header line.
    LineStart,
    /// After a `\r` at the start of a line: the head ends at `\n`.
    LineStartCr,
    /// Reading a header name.
    Name,
    /// Reading a Content-Length value.
    LengthValue,
    /// Skipping the rest of a line.
    Skip,
}

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// An incremental scanner over one request head: finds its end, its size and
/// the framing headers, whatever way the bytes are split across reads.
#[derive(Debug)]
struct HeadScan {
    state: LineState,
    bytes: usize,
    /// On the connection's first head: how much of the h2 preface matched.
    preface: Option<usize>,
    name: [u8; 17],
    name_len: usize,
    name_overflow: bool,
    lengths: u32,
    encodings: u32,
    value: Option<u64>,
    value_invalid: bool,
    first_length: Option<u64>,
    conflict: bool,
}

impl HeadScan {
    fn new(first: bool) -> Self {
        HeadScan {
            state: LineState::RequestLine { empty: true },
            bytes: 0,
            preface: first.then_some(0),
            name: [0; 17],
            name_len: 0,
            name_overflow: false,
            lengths: 0,
            encodings: 0,
            value: None,
            value_invalid: false,
            first_length: None,
            conflict: false,
        }
    }

    fn reset(&mut self, first: bool) {
        *self = HeadScan::new(first);
    }

    fn feed(&mut self, chunk: &[u8], max: usize) -> Scan {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            i += 1;
            match self.state {
                LineState::RequestLine { empty } => {
                    if let Some(matched) = self.preface {
                        if matched < H2_PREFACE.len() && b == H2_PREFACE[matched] {
                            self.preface = Some(matched + 1);
                            if matched + 1 == H2_PREFACE.len() {
                                return Scan::Http2;
                            }
                        } else {
                            self.preface = None;
                        }
                    }
                    match b {
                        b'\n' if empty => {}
                        b'\n' => self.state = LineState::LineStart,
                        b'\r' => {}
                        // Not a preface: nothing more to learn from this
                        // line, so straight to its end.
                        _ if self.preface.is_none() => {
                            match chunk[i..].iter().position(|&c| c == b'\n') {
                                Some(at) => {
                                    i += at + 1;
                                    self.state = LineState::LineStart;
                                }
                                None => {
                                    i = chunk.len();
                                    self.state = LineState::RequestLine { empty: false };
                                }
                            }
                        }
                        _ => self.state = LineState::RequestLine { empty: false },
                    }
                }
                LineState::LineStart => match b {
                    b'\r' => self.state = LineState::LineStartCr,
                    b'\n' => {
                        self.bytes += i;
                        return self.complete(max, i);
                    }
                    _ => {
                        self.name_len = 0;
                        self.name_overflow = false;
                        self.state = LineState::Name;
                        self.push_name(b);
                    }
                },
                LineState::LineStartCr => {
                    if b == b'\n' {
                        self.bytes += i;
                        return self.complete(max, i);
                    }
                    // A bare CR: hyper's parser rejects the head itself.
                    self.state = LineState::Skip;
                }
                LineState::Name => match b {
                    b':' => self.end_name(),
                    b'\n' => self.state = LineState::LineStart,
                    _ => self.push_name(b),
                },
                LineState::LengthValue => match b {
                    b'0'..=b'9' => {
                        let digit = u64::from(b - b'0');
                        self.value = match self
                            .value
                            .unwrap_or(0)
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(digit))
                        {
                            Some(v) => Some(v),
                            None => {
                                self.value_invalid = true;
                                None
                            }
                        };
                    }
                    b' ' | b'\t' | b'\r' => {}
                    b'\n' => {
                        self.end_length();
                        self.state = LineState::LineStart;
                    }
                    _ => self.value_invalid = true,
                },
                LineState::Skip => match chunk[i - 1..].iter().position(|&c| c == b'\n') {
                    Some(at) => {
                        i += at;
                        self.state = LineState::LineStart;
                    }
                    None => i = chunk.len(),
                },
            }
        }
        self.bytes += chunk.len();
        if self.bytes > max {
            return Scan::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            );
        }
        Scan::More
    }

    fn push_name(&mut self, b: u8) {
        if self.name_len < self.name.len() {
            self.name[self.name_len] = b.to_ascii_lowercase();
            self.name_len += 1;
        } else {
            self.name_overflow = true;
        }
    }

    fn end_name(&mut self) {
        let name = &self.name[..self.name_len];
        self.state = LineState::Skip;
        if self.name_overflow {
            return;
        }
        if name == CONTENT_LENGTH {
            self.lengths += 1;
            self.value = None;
            self.value_invalid = false;
            self.state = LineState::LengthValue;
        } else if name == TRANSFER_ENCODING {
            self.encodings += 1;
        }
    }

    fn end_length(&mut self) {
        // Lists ("5, 5") and junk are left to hyper's own parser.
        let (Some(value), false) = (self.value, self.value_invalid) else {
            return;
        };
        match self.first_length {
            None => self.first_length = Some(value),
            Some(first) if first != value => self.conflict = true,
            Some(_) => {}
        }
    }

    /// Whether the head announced no body (no Transfer-Encoding, no or a
    /// zero Content-Length): the next bytes are the next request's head.
    fn bodiless(&self) -> bool {
        self.encodings == 0
            && (self.lengths == 0 || (self.first_length == Some(0) && !self.conflict))
    }

    fn complete(&self, max: usize, consumed: usize) -> Scan {
        if self.bytes > max {
            Scan::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            )
        } else if self.lengths > 0 && self.encodings > 0 {
            Scan::Reject(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            )
        } else if self.conflict {
            Scan::Reject(StatusCode::BAD_REQUEST, "conflicting Content-Length values")
        } else {
            Scan::Complete(consumed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_whole(head: &[u8]) -> Scan {
        HeadScan::new(true).feed(head, 65536)
    }

    /// Feeds the head one byte at a time, as a slow client would send it.
    fn scan_bytewise(head: &[u8]) -> Scan {
        let mut scan = HeadScan::new(true);
        for b in head {
            match scan.feed(std::slice::from_ref(b), 65536) {
                Scan::More => {}
                other => return other,
            }
        }
        Scan::More
    }

    #[test]
    fn a_plain_head_completes_at_the_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_whole(head), Scan::Complete(head.len()));
        assert_eq!(scan_bytewise(head), Scan::Complete(1));
        assert_eq!(
            scan_whole(b"GET / HTTP/1.1\nHost: a\n\n"),
            Scan::Complete(24)
        );
    }

    #[test]
    fn a_head_split_anywhere_in_two_completes_at_the_same_byte() {
        let heads: [&[u8]; 3] = [
            b"GET /a/long/path?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"PRI /not-a-preface HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for head in heads {
            for first in [true, false] {
                for at in 0..=head.len() {
                    let (a, b) = head.split_at(at);
                    let mut scan = HeadScan::new(first);
                    let got = match scan.feed(a, 65536) {
                        Scan::More => match scan.feed(b, 65536) {
                            Scan::Complete(n) => Scan::Complete(a.len() + n),
                            other => other,
                        },
                        other => other,
                    };
                    assert_eq!(
                        got,
                        Scan::Complete(head.len()),
                        "split at {at}, first={first}"
                    );
                    assert!(scan.bodiless());
                }
            }
        }
    }

    #[test]
    fn an_unfinished_head_asks_for_more() {
        assert_eq!(scan_whole(b"GET / HTTP/1.1\r\nHost: a\r\n"), Scan::More);
    }

    #[test]
    fn both_length_and_chunked_are_rejected_in_any_case_and_split() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\ncOnTeNt-LeNgTh: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let want = Scan::Reject(
            StatusCode::BAD_REQUEST,
            "both Content-Length and Transfer-Encoding",
        );
        assert_eq!(scan_whole(head), want);
        assert_eq!(scan_bytewise(head), want);
    }

    #[test]
    fn differing_lengths_are_rejected_and_equal_ones_pass() {
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(
            scan_bytewise(bad),
            Scan::Reject(StatusCode::BAD_REQUEST, "conflicting Content-Length values")
        );
        let same = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(scan_whole(same), Scan::Complete(same.len()));
    }

    #[test]
    fn a_head_over_the_limit_is_rejected() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b"x-pad: 0123456789\r\n".as_slice(), 100).flatten());
        assert_eq!(
            HeadScan::new(false).feed(&head, 1024),
            Scan::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large"
            )
        );
    }

    #[test]
    fn the_h2_preface_switches_to_passthrough_on_the_first_head_only() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(scan_bytewise(preface), Scan::Http2);
        assert_eq!(
            HeadScan::new(false).feed(preface, 65536),
            Scan::Complete(18)
        );
    }

    #[test]
    fn only_bodiless_heads_let_the_next_head_be_scanned() {
        let mut scan = HeadScan::new(true);
        assert!(matches!(
            scan.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 65536),
            Scan::Complete(_)
        ));
        assert!(scan.bodiless());
        let mut scan = HeadScan::new(true);
        scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 65536);
        assert!(scan.bodiless());
        let mut scan = HeadScan::new(true);
        scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 65536);
        assert!(!scan.bodiless());
        let mut scan = HeadScan::new(true);
        scan.feed(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            65536,
        );
        assert!(!scan.bodiless());
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        assert_eq!(
            scan_whole(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Scan::Complete(31)
        );
    }
}
