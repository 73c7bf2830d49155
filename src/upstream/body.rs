//! The bodies of one upstream exchange. Both stream frame by frame; nothing
//! here ever holds a whole body.
//!
//! - [`RequestBody`]: the client's body on its way upstream, cut off with an
//!   error past `max_body_bytes`; it tells the client connection's state when
//!   the body has been read to its end.
//! - [`UpstreamBody`]: the upstream's response body; when it has been read to
//!   its end, its connection goes back to the worker's pool (any other
//!   connection is closed by dropping it).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::{self, Pooled};
use crate::server::conn::ConnState;

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

    fn mark_done(&self) {
        if let Some(conn) = &self.conn {
            conn.body_done.store(true, Ordering::Relaxed);
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
                    this.mark_done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
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

/// An upstream response body. Its pooled connection, if any, goes back to
/// the worker's pool once the body has been read to its end.
pub struct UpstreamBody {
    inner: Incoming,
    /// The connection this body comes from.
    pooled: Option<Pooled>,
    ended: bool,
}

impl UpstreamBody {
    pub(super) fn new(inner: Incoming, pooled: Option<Pooled>) -> Self {
        UpstreamBody {
            inner,
            pooled,
            ended: false,
        }
    }

    /// The connection carries something else from now on (a 101 upgrade):
    /// it never goes back to the pool.
    pub fn forget_connection(&mut self) {
        self.pooled = None;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take() {
            // Only a connection whose response was read to its end can carry
            // the next request.
            if self.ended || self.inner.is_end_stream() {
                pool::checkin(pooled);
            }
        }
    }
}
