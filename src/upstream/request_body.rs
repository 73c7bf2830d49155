//! [`RequestBody`]: the client's body on its way upstream, streamed frame
//! by frame and cut off with an error past `max_body_bytes`; it tells the
//! client connection's state when the body has been read to its end.

use std::pin::Pin;
use std::sync::atomic::Ordering;
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
