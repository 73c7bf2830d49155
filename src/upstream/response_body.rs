//! [`UpstreamBody`]: an upstream response body, streamed frame by frame.
//! An HTTP/1 connection goes back to the worker's pool once the body has been
//! read to its end (any other is closed by dropping it); an h2 stream frees
//! its place on its connection when the body is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h2_client::H2Body;
use super::h2_pool::StreamSlot;
use super::pool::{self, Pooled};
use super::request_body::BoxError;

/// What an upstream body holds of its connection.
pub enum Hold {
    /// Nothing to give back (an upgraded connection).
    Nothing,
    /// An HTTP/1 connection, pooled again when the body ends.
    H1(Pooled),
    /// A stream's place on an h2 connection, freed when dropped.
    H2 { _slot: StreamSlot },
}

enum Inner {
    H1(Incoming),
    H2(H2Body),
}

/// An upstream response body. Its pooled connection, if any, goes back to
/// the worker's pool once the body has been read to its end.
pub struct UpstreamBody {
    inner: Inner,
    /// The connection this body comes from.
    hold: Hold,
    ended: bool,
}

impl UpstreamBody {
    pub(super) fn h1(inner: Incoming, hold: Hold) -> Self {
        UpstreamBody {
            inner: Inner::H1(inner),
            hold,
            ended: false,
        }
    }

    pub(super) fn h2(inner: H2Body, slot: StreamSlot) -> Self {
        UpstreamBody {
            inner: Inner::H2(inner),
            hold: Hold::H2 { _slot: slot },
            ended: false,
        }
    }

    /// The connection carries something else from now on (a 101 upgrade):
    /// it never goes back to the pool.
    pub fn forget_connection(&mut self) {
        self.hold = Hold::Nothing;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = match &mut self.inner {
            Inner::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::H2(body) => Pin::new(body).poll_frame(cx),
        };
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(body) => body.is_end_stream(),
            Inner::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(body) => body.size_hint(),
            Inner::H2(body) => body.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Hold::H1(pooled) = std::mem::replace(&mut self.hold, Hold::Nothing) {
            // Only a connection whose response was read to its end can carry
            // the next request.
            if self.ended || self.is_end_stream() {
                pool::checkin(pooled);
            }
        }
    }
}
