//! [`UpstreamBody`]: an upstream response body, streamed frame by frame;
//! when it has been read to its end, its connection goes back to the
//! worker's pool (any other connection is closed by dropping it).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::{self, Pooled};

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
