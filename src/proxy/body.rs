//! [`ResponseBody`]: what the client receives — the upstream's body, streamed
//! frame by frame, or a small error text — carrying the per-request guards
//! whose `Drop` marks the exchange finished (connection guard, endpoint
//! in-flight count, access log). The upstream connection's hand-back to the
//! pool is the upstream body's own business (`upstream::UpstreamBody`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;
use tokio::time::Sleep;

use super::grpc::{self, CallWatch};
use crate::endpoint::InFlight;
use crate::server::conn::ConnState;
use crate::upstream::{BoxError, UpstreamBody};

/// Runs when the exchange is over: the response body was sent or dropped.
pub trait OnFinish: Send + Sync {
    /// `aborted`: the client went away before the end (not an upstream
    /// failure).
    fn finish(&mut self, bytes_out: u64, complete: bool, aborted: bool);
}

enum Content {
    Stream(UpstreamBody),
    Full(Option<Bytes>),
}

/// What the client receives.
pub struct ResponseBody {
    content: Content,
    bytes_out: u64,
    complete: bool,
    conn: Option<Arc<ConnState>>,
    /// HTTP/1: wait while the client's socket is full (`pace_to_client`).
    paced: bool,
    finish: Option<Box<dyn OnFinish>>,
    in_flight: Option<InFlight>,
    stall: Option<StallWatch>,
    /// Counts the client going away before the end; set for upstream
    /// answers only.
    aborts: Option<IntCounter>,
    /// The upstream body failed (reset, stall): an incomplete end is then
    /// not the client's doing.
    upstream_failed: bool,
    /// A gRPC call judged when its trailers pass.
    call: Option<CallWatch>,
}

impl ResponseBody {
    pub fn stream(body: UpstreamBody) -> Self {
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
            paced: false,
            finish: None,
            in_flight: None,
            stall: None,
            aborts: None,
            upstream_failed: false,
            call: None,
        }
    }

    /// Judges the gRPC call `call` on the status in its trailers.
    pub fn watch_call(&mut self, call: CallWatch) {
        self.call = Some(call);
    }

    /// Counts in `aborts` a client that goes away before the end.
    pub fn set_aborts(&mut self, aborts: IntCounter) {
        self.aborts = Some(aborts);
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

    /// Reads no more from the upstream while the HTTP/1 client's socket
    /// takes no more bytes: what a slow reader holds in the gateway is then
    /// what was already queued, not the whole response (a slow-read attack
    /// costs a bounded amount of memory per connection).
    pub fn pace_to_client(&mut self) {
        self.paced = true;
    }

    /// Whether the client is not taking bytes now (then wakes `cx` when it
    /// does).
    fn client_blocked(&self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_ref().filter(|_| self.paced) else {
            return false;
        };
        if !conn.write_blocked.load(Ordering::Acquire) {
            return false;
        }
        conn.write_waker.register(cx.waker());
        // Cleared between the two loads: go on (the wake may be lost).
        conn.write_blocked.load(Ordering::Acquire)
    }

    /// Keeps the endpoint's in-flight count until the body is done.
    pub fn set_in_flight(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = self.complete || self.is_end_stream();
        let aborted = !complete && !self.upstream_failed && self.aborts.is_some();
        if let Some(call) = self.call.take() {
            // No trailers came: a reset is no status; an end without one is
            // UNKNOWN; a client that left decides nothing.
            if self.upstream_failed {
                call.ended(None);
            } else if complete {
                call.ended(Some(grpc::UNKNOWN));
            }
        }
        if aborted {
            if let Some(aborts) = &self.aborts {
                aborts.inc();
            }
        }
        if let Some(mut finish) = self.finish.take() {
            finish.finish(self.bytes_out, complete, aborted);
        }
        self.in_flight.take();
        if let Some(conn) = &self.conn {
            conn.response_ended();
        }
    }
}

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
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.client_blocked(cx) {
            return Poll::Pending;
        }
        let polled = match &mut this.content {
            Content::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Content::Stream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    if let Some(watch) = this.stall.as_mut() {
                        watch.frames += 1;
                    }
                    Poll::Ready(frame)
                }
                Poll::Pending => {
                    if let Some(watch) = this.stall.as_mut() {
                        if watch.stalled(cx) {
                            tracing::debug!(limit = ?watch.limit, "upstream body stalled: response cut");
                            this.upstream_failed = true;
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
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = this.call.take() {
                        call.ended(Some(grpc::status(trailers).unwrap_or(grpc::UNKNOWN)));
                    }
                }
            }
            Poll::Ready(None) => this.complete = true,
            Poll::Ready(Some(Err(_))) => this.upstream_failed = true,
            Poll::Pending => {}
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
