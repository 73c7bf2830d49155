//! [`RequestBody`]: the client's body on its way upstream, streamed frame
//! by frame and cut off with an error past `max_body_bytes`; it tells the
//! client connection's state when the body has been read to its end.
//!
//! Whose failure a broken upload is depends on which side stopped: an error
//! from the client's body becomes a [`ClientBodyError`] (the exchange's
//! error chain then names the client, not the upstream), and
//! [`BodyProgress`] says whether the upload was waiting on the client when a
//! timeout came.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::server::conn::ConnState;

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

/// Where an upload stands, shared between the body (moved into the upstream
/// connection) and the attempt that sent it.
#[derive(Debug, Default)]
pub struct BodyProgress {
    /// The upstream asked for more and the client had not sent it yet.
    waiting_on_client: AtomicBool,
    done: AtomicBool,
}

impl BodyProgress {
    /// The upload is unfinished and waiting on the client (not on the
    /// upstream, which would then not be reading it).
    pub fn stalled_on_client(&self) -> bool {
        !self.done.load(Ordering::Relaxed) && self.waiting_on_client.load(Ordering::Relaxed)
    }
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

    /// An empty body (mirrored or retried requests, bodiless methods).
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
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
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
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
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
