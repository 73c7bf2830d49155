//! Body types of the request path. Both stream frame by frame; nothing here
//! ever holds a whole body.
//!
//! - [`RequestBody`]: the client's body on its way upstream, cut off with an
//!   error past `max_body_bytes`.
//! - [`ResponseBody`]: what the client receives — the upstream's body or a
//!   small error text — carrying the per-request guards whose `Drop` marks the
//!   exchange finished (connection guard, endpoint in-flight count, access log).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::endpoint::InFlight;
use crate::server::guard::ConnState;
use crate::upstream::Pooled;

/// The error a [`RequestBody`] yields when the client sends too much.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The client's request body, forwarded upstream as it arrives.
pub struct RequestBody {
    inner: Option<Incoming>,
    remaining: u64,
    limit: u64,
    /// Its `body_done` is set once the client's body has been read to its
    /// end; read when the response ends to know whether the connection can
    /// carry another request.
    conn: Option<Arc<ConnState>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64, conn: Arc<ConnState>) -> Self {
        if inner.is_end_stream() {
            conn.body_done.store(true, Ordering::Relaxed);
        }
        RequestBody {
            inner: Some(inner),
            remaining: limit,
            limit,
            conn: Some(conn),
        }
    }

    /// An empty body (mirrored or retried requests, bodiless methods).
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            remaining: 0,
            limit: 0,
            conn: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                    this.remaining -= len;
                }
                // A sized body is often not polled past its last bytes.
                if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                    if let Some(conn) = &this.conn {
                        conn.body_done.store(true, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => {
                if let Some(conn) = &this.conn {
                    conn.body_done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// Runs when the exchange is over: the response body was sent or dropped.
pub trait OnFinish: Send + Sync {
    fn finish(&mut self, bytes_out: u64, complete: bool);
}

enum Content {
    Stream(Incoming),
    Full(Option<Bytes>),
}

/// What the client receives.
pub struct ResponseBody {
    content: Content,
    bytes_out: u64,
    complete: bool,
    conn: Option<Arc<ConnState>>,
    finish: Option<Box<dyn OnFinish>>,
    in_flight: Option<InFlight>,
    /// The upstream connection this body comes from, pooled again at its end.
    pooled: Option<Pooled>,
    stall: Option<StallWatch>,
}

impl ResponseBody {
    pub fn stream(body: Incoming) -> Self {
        Self::new(Content::Stream(body))
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::new(Content::Full(Some(bytes.into())))
    }

    pub fn empty() -> Self {
        Self::new(Content::Full(None))
    }

    fn new(content: Content) -> Self {
        ResponseBody {
            content,
            bytes_out: 0,
            complete: false,
            conn: None,
            finish: None,
            in_flight: None,
            pooled: None,
            stall: None,
        }
    }

    /// Marks the connection's request finished when this body is dropped.
    pub fn set_conn(&mut self, conn: Arc<ConnState>) {
        self.conn = Some(conn);
    }

    pub fn set_finish(&mut self, finish: Box<dyn OnFinish>) {
        self.finish = Some(finish);
    }

    /// Cuts the body (an error to the client) when the upstream sends nothing
    /// for `limit` once it has started.
    pub fn set_stall_timeout(&mut self, limit: Duration) {
        self.stall = Some(StallWatch {
            limit,
            timer: None,
            frames: 0,
            frames_at_arm: 0,
        });
    }

    /// Returns `pooled` to the worker's pool once the body has ended.
    pub fn set_pooled(&mut self, pooled: Option<Pooled>) {
        self.pooled = pooled;
    }

    /// Keeps the endpoint's in-flight count until the body is done.
    pub fn set_in_flight(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(mut finish) = self.finish.take() {
            let complete = self.complete || self.is_end_stream();
            finish.finish(self.bytes_out, complete);
        }
        self.in_flight.take();
        if let Some(pooled) = self.pooled.take() {
            // Only a connection whose response was read to its end can carry
            // the next request; any other is closed by dropping it.
            if self.complete || self.is_end_stream() {
                crate::pool::checkin(pooled.id, pooled.sender);
            }
        }
        if let Some(conn) = &self.conn {
            if !conn.body_done.load(Ordering::Relaxed) {
                // The answer ended before the request body did: the guard
                // can no longer tell where the next request head starts.
                conn.passthrough.store(true, Ordering::Relaxed);
            } else if !conn.passthrough.load(Ordering::Relaxed) {
                // Idle from now on, as far as evicting at max_connections goes.
                conn.idle_since.store(
                    crate::server::evict::idle_stamp(std::time::Instant::now()),
                    Ordering::Relaxed,
                );
            }
            conn.completed.fetch_add(1, Ordering::Release);
            if conn.wake_when_done.load(Ordering::Relaxed) {
                conn.waker.wake();
            }
        }
    }
}

/// The error a response body ends with: the upstream's, or a stall.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream body that made no progress for its stall timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no body data for {0:?}")]
pub struct Stalled(pub Duration);

/// Cuts an upstream body that stops making progress. Armed only when the
/// body first has to wait, and re-armed only when its timer fires after
/// progress, so a body that arrives with its head costs nothing.
struct StallWatch {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    frames: u64,
    frames_at_arm: u64,
}

impl StallWatch {
    /// True when the body has been waiting, without a frame, for `limit`.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.limit)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.frames == self.frames_at_arm {
                return true;
            }
            self.frames_at_arm = self.frames;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + self.limit);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.content {
            Content::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Content::Stream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    if let Some(watch) = this.stall.as_mut() {
                        watch.frames += 1;
                    }
                    Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
                }
                Poll::Pending => {
                    if let Some(watch) = this.stall.as_mut() {
                        if watch.stalled(cx) {
                            tracing::debug!(limit = ?watch.limit, "upstream body stalled: response cut");
                            return Poll::Ready(Some(Err(Box::new(Stalled(watch.limit)))));
                        }
                    }
                    Poll::Pending
                }
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Full(bytes) => bytes.is_none(),
            Content::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Content::Full(None) => SizeHint::with_exact(0),
            Content::Stream(body) => body.size_hint(),
        }
    }
}
