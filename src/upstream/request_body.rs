//! [`RequestBody`]: the client's body on its way upstream, streamed frame
//! by frame and cut off with an error past `max_body_bytes`; it tells the
//! client connection's state when the body has been read to its end.
//!
//! Whose failure a broken upload is depends on which side stopped: an error
//! from the client's body becomes a [`ClientBodyError`] (the exchange's
//! error chain then names the client, not the upstream), and
//! [`BodyProgress`] says whether the upload was waiting on the client when a
//! timeout came.
//!
//! When asked to (h2 upstreams, gRPC calls), the body keeps a copy of what it
//! forwards, up to [`REPLAY_LIMIT`], so that a request the upstream refused
//! unprocessed (h2 `REFUSED_STREAM`, GOAWAY) or a failed gRPC unary call can
//! be sent again, whole, once the client's body has ended.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::server::conn::ConnState;

/// An error of a body or an exchange, whatever its source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The length a message head declares in `Content-Length`, if it declares
/// one that parses.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The error a [`RequestBody`] yields when the client sends too much.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The error a [`RequestBody`] yields when the client's body breaks off
/// (connection closed mid-body, stream reset): the client's failure.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body broke off: {0}")]
pub struct ClientBodyError(pub hyper::Error);

/// The most of a request body kept for sending it again, in bytes.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// Where an upload stands, shared between the body (moved into the upstream
/// connection) and the attempt that sent it.
#[derive(Debug, Default)]
pub struct BodyProgress {
    /// The upstream asked for more and the client had not sent it yet.
    waiting_on_client: AtomicBool,
    done: AtomicBool,
    /// Keep a copy of what is forwarded (set before the body is sent).
    replayable: AtomicBool,
    kept: Mutex<Kept>,
    /// Why the body broke off, for an h2 exchange that only sees the reset
    /// it caused.
    failure: Mutex<Option<BoxError>>,
}

/// What a replayable body forwarded so far.
#[derive(Debug, Default)]
struct Kept {
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
    /// More than [`REPLAY_LIMIT`] was forwarded: the copy is incomplete.
    overflow: bool,
}

impl BodyProgress {
    /// The upload is unfinished and waiting on the client (not on the
    /// upstream, which would then not be reading it).
    pub fn stalled_on_client(&self) -> bool {
        !self.done.load(Ordering::Relaxed) && self.waiting_on_client.load(Ordering::Relaxed)
    }

    /// The whole body again, when it was kept: asked for, ended, and within
    /// [`REPLAY_LIMIT`].
    pub fn replay(&self) -> Option<RequestBody> {
        if !self.replayable.load(Ordering::Relaxed) || !self.done.load(Ordering::Relaxed) {
            return None;
        }
        let copy = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if copy.overflow {
            return None;
        }
        let mut frames: VecDeque<Frame<Bytes>> =
            copy.data.iter().cloned().map(Frame::data).collect();
        if let Some(trailers) = &copy.trailers {
            frames.push_back(Frame::trailers(trailers.clone()));
        }
        Some(RequestBody {
            inner: None,
            replaying: Some(frames),
            remaining: u64::MAX,
            limit: u64::MAX,
            conn: None,
            progress: None,
        })
    }

    /// Leaves the error the body broke off with (see `failure`).
    pub fn set_failure(&self, error: BoxError) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// The error the body broke off with, if it did.
    pub fn take_failure(&self) -> Option<BoxError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Keeps a copy of what is forwarded from now on (before it is sent).
    pub fn keep_for_replay_now(&self) {
        self.replayable.store(true, Ordering::Relaxed);
    }

    fn keep(&self, frame: &Frame<Bytes>) {
        let mut copy = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(data) = frame.data_ref() {
            if copy.size + data.len() > REPLAY_LIMIT {
                copy.overflow = true;
                copy.data.clear();
            } else if !copy.overflow {
                copy.size += data.len();
                copy.data.push(data.clone());
            }
        } else if let Some(trailers) = frame.trailers_ref() {
            copy.trailers = Some(trailers.clone());
        }
    }
}

/// The client's request body, forwarded upstream as it arrives.
pub struct RequestBody {
    inner: Option<Incoming>,
    /// A body sent again: the frames kept from the first time.
    replaying: Option<VecDeque<Frame<Bytes>>>,
    remaining: u64,
    limit: u64,
    /// Its `body_done` is set once the client's body has been read to its
    /// end; read when the response ends to know whether the connection can
    /// carry another request.
    conn: Option<Arc<ConnState>>,
    /// Only for a request that has a body.
    progress: Option<Arc<BodyProgress>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64, conn: Arc<ConnState>) -> Self {
        let bodiless = inner.is_end_stream();
        if bodiless {
            conn.body_done.store(true, Ordering::Relaxed);
        }
        RequestBody {
            inner: Some(inner),
            replaying: None,
            remaining: limit,
            limit,
            conn: Some(conn),
            progress: (!bodiless).then(Arc::default),
        }
    }

    /// Where the upload stands; `None` for a request without a body.
    pub fn progress(&self) -> Option<Arc<BodyProgress>> {
        self.progress.clone()
    }

    /// Keeps a copy of what is forwarded, for [`BodyProgress::replay`].
    pub fn keep_for_replay(&self) {
        if let Some(progress) = &self.progress {
            progress.replayable.store(true, Ordering::Relaxed);
        }
    }

    /// A body of the gateway's own (a probe's message).
    pub fn full(bytes: Bytes) -> Self {
        let mut body = RequestBody::empty();
        body.replaying = Some(VecDeque::from([Frame::data(bytes)]));
        body
    }

    /// An empty body (mirrored or retried requests, bodiless methods).
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            replaying: None,
            remaining: 0,
            limit: 0,
            conn: None,
            progress: None,
        }
    }

    fn mark_done(&self) {
        if let Some(conn) = &self.conn {
            conn.body_done.store(true, Ordering::Relaxed);
        }
        if let Some(progress) = &self.progress {
            progress.done.store(true, Ordering::Relaxed);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            let next = this.replaying.as_mut().and_then(VecDeque::pop_front);
            return Poll::Ready(next.map(Ok));
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            progress
                .waiting_on_client
                .store(polled.is_pending(), Ordering::Relaxed);
        }
        match polled {
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
                if let Some(progress) = &this.progress {
                    if progress.replayable.load(Ordering::Relaxed) {
                        progress.keep(&frame);
                    }
                }
                // A sized body is often not polled past its last bytes.
                if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                    this.mark_done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                Poll::Ready(Some(Err(Box::new(ClientBodyError(e)))))
            }
            Poll::Ready(None) => {
                this.mark_done();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match (&self.inner, &self.replaying) {
            (Some(inner), _) => inner.is_end_stream(),
            (None, Some(frames)) => frames.is_empty(),
            (None, None) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.replaying) {
            (Some(inner), _) => inner.size_hint(),
            (None, Some(frames)) => {
                let size = frames
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64);
                SizeHint::with_exact(size.sum())
            }
            (None, None) => SizeHint::with_exact(0),
        }
    }
}
