//! HTTP/2 to upstreams on the `h2` crate directly: the handshake, a task per
//! connection that drives it and pings it, one exchange in the request's own
//! task, and the response body.
//!
//! hyper's HTTP/2 client hands every request to the connection's task over a
//! channel and spawns a task per request to wait for the answer and send it
//! back over a second channel; here the request's task opens the stream and
//! waits on it itself. A request body is piped by a task of its own only when
//! it is not already all there (a bodiless request, a probe's message or a
//! small upload that has arrived go out inline). A body that fails on the
//! client's side resets the stream and leaves its error in the request's
//! [`BodyProgress`], so the exchange names the client, as an HTTP/1 one does.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::request_body::{content_length, BodyProgress, BoxError, RequestBody};
use crate::error::ProxyError;

/// HTTP/2 flow-control windows: what an upstream may send ahead of the
/// client reading it, per stream and per connection (h2's 64 KiB default
/// would make a 4 MiB gRPC message take 64 round trips).
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// The largest response head (or trailers) taken, as for HTTP/1 upstreams.
const MAX_HEADER_LIST: u32 = 32 * 1024;
/// The streams a new connection is taken to allow before the peer's
/// SETTINGS arrive.
const INITIAL_MAX_STREAMS: usize = 100;
/// What one connection buffers of request bodies waiting for the window.
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Pings keep an idle connection known to be alive; one not answered in
/// time closes the connection (and its pool entry).
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/2 connection's sending side: clonable, one clone per stream.
#[derive(Clone)]
pub struct H2Sender {
    send: SendRequest<Bytes>,
    /// The connection ended or refuses new streams (GOAWAY).
    closed: Arc<AtomicBool>,
}

impl H2Sender {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// A failed send.
pub enum SendError {
    /// Nothing of it left the gateway: the connection takes no new streams.
    Unsent(Box<Request<RequestBody>>),
    Failed(BoxError),
}

/// The HTTP/2 handshake on `io`, and a task of this worker driving the
/// connection. Gives the sending side and the peer's
/// `MAX_CONCURRENT_STREAMS`, kept current by the task.
pub async fn handshake<T>(io: T) -> Result<(H2Sender, Arc<AtomicUsize>), ProxyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        // Until the peer's SETTINGS say: RFC 9113 §6.5.2's recommended
        // least (the crate would assume no limit).
        .initial_max_send_streams(INITIAL_MAX_STREAMS)
        .enable_push(false)
        .handshake::<T, Bytes>(io)
        .await
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    let max_streams = Arc::new(AtomicUsize::new(connection.max_concurrent_send_streams()));
    let closed = Arc::new(AtomicBool::new(false));
    let driver = Driver {
        ping: connection.ping_pong(),
        connection,
        tick: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        awaiting_pong: false,
        closed: Arc::clone(&closed),
        max_streams: Arc::clone(&max_streams),
    };
    tokio::spawn(driver);
    Ok((H2Sender { send, closed }, max_streams))
}

/// Drives a connection until it ends, pinging it every [`KEEP_ALIVE`].
struct Driver<T> {
    connection: Connection<T, Bytes>,
    ping: Option<PingPong>,
    tick: Pin<Box<Sleep>>,
    awaiting_pong: bool,
    closed: Arc<AtomicBool>,
    max_streams: Arc<AtomicUsize>,
}

impl<T> Future for Driver<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Poll::Ready(ended) = Pin::new(&mut this.connection).poll(cx) {
            if let Err(e) = ended {
                tracing::trace!(error = %e, "upstream h2 connection ended with an error");
            }
            this.closed.store(true, Ordering::Relaxed);
            return Poll::Ready(());
        }
        // SETTINGS from the peer may have changed it.
        let max = this.connection.max_concurrent_send_streams();
        this.max_streams.store(max, Ordering::Relaxed);
        let Some(ping) = this.ping.as_mut() else {
            return Poll::Pending;
        };
        if this.awaiting_pong {
            if let Poll::Ready(answered) = ping.poll_pong(cx) {
                this.awaiting_pong = false;
                if answered.is_ok() {
                    this.tick.as_mut().reset(Instant::now() + KEEP_ALIVE);
                }
            }
        }
        if this.tick.as_mut().poll(cx).is_ready() {
            if this.awaiting_pong {
                tracing::debug!("upstream h2 connection missed its keep-alive ping: closed");
                this.closed.store(true, Ordering::Relaxed);
                return Poll::Ready(());
            }
            if ping.send_ping(Ping::opaque()).is_ok() {
                this.awaiting_pong = true;
            }
            this.tick
                .as_mut()
                .reset(Instant::now() + KEEP_ALIVE_TIMEOUT);
            // Registers the new deadline (and, through the connection, sends
            // the ping).
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// Sends `req` (in h2 form) on `sender`'s connection and waits for the
/// response head. A body not yet all there is piped by a task of its own.
pub async fn send(
    sender: &mut H2Sender,
    req: Request<RequestBody>,
) -> Result<Response<H2Body>, SendError> {
    if poll_fn(|cx| sender.send.poll_ready(cx)).await.is_err() {
        // GOAWAY received, or the connection failed: no new stream on it.
        sender.closed.store(true, Ordering::Relaxed);
        return Err(SendError::Unsent(Box::new(req)));
    }
    let (head, body) = req.into_parts();
    let end = body.is_end_stream();
    let progress = body.progress();
    let (response, stream) = sender
        .send
        .send_request(Request::from_parts(head, ()), end)
        .map_err(|e| SendError::Failed(e.into()))?;
    let cancel = match end {
        true => None,
        false => pipe(body, stream),
    };
    match response.await {
        Ok(response) => {
            let (head, recv) = response.into_parts();
            let length = content_length(&head.headers);
            Ok(Response::from_parts(
                head,
                H2Body::new(recv, length, cancel),
            ))
        }
        // The client's body broke off: its error, not the reset it caused.
        Err(e) => Err(SendError::Failed(
            progress
                .and_then(|p| p.take_failure())
                .unwrap_or_else(|| e.into()),
        )),
    }
}

/// Starts sending `body` on `stream`: inline while it is all there, else in
/// a task. The task stops (and resets the stream) when the sender it gives
/// back is dropped with the exchange or its response body.
fn pipe(body: RequestBody, stream: SendStream<Bytes>) -> Option<oneshot::Sender<()>> {
    let (cancel, cancelled) = oneshot::channel();
    let mut pipe = Pipe {
        progress: body.progress(),
        body,
        stream,
        held: None,
        cancelled,
    };
    let waker = std::task::Waker::noop();
    match Pin::new(&mut pipe).poll(&mut Context::from_waker(waker)) {
        Poll::Ready(()) => None,
        Poll::Pending => {
            tokio::spawn(pipe);
            Some(cancel)
        }
    }
}

/// A request body going out on its stream, within the peer's window.
struct Pipe {
    body: RequestBody,
    stream: SendStream<Bytes>,
    /// A chunk waiting for send capacity, and whether it ends the body.
    held: Option<(Bytes, bool)>,
    cancelled: oneshot::Receiver<()>,
    progress: Option<Arc<BodyProgress>>,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if Pin::new(&mut this.cancelled).poll(cx).is_ready() {
                this.stream.send_reset(Reason::CANCEL);
                return Poll::Ready(());
            }
            // The upstream reset the stream: nothing more to send.
            if this.stream.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some((data, end)) = this.held.take() {
                while this.stream.capacity() == 0 {
                    match this.stream.poll_capacity(cx) {
                        Poll::Pending => {
                            this.held = Some((data, end));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    }
                }
                if this.stream.send_data(data, end).is_err() || end {
                    return Poll::Ready(());
                }
                continue;
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = this.body.is_end_stream();
                        if data.is_empty() {
                            if this.stream.send_data(data, end).is_err() || end {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        // A minimal claim on the window (h2 raises it to the
                        // chunk inside `send_data`): claiming the whole chunk
                        // up front pins connection window a stalled stream
                        // may never use (hyper #4003).
                        this.stream.reserve_capacity(1);
                        this.held = Some((data, end));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.stream.reserve_capacity(0);
                            let _ = this.stream.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Some(Err(e)) => {
                    // Left for the exchange before the reset wakes it.
                    if let Some(progress) = &this.progress {
                        progress.set_failure(e);
                    }
                    this.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
                None => {
                    let _ = this.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// An h2 response body: its data as it arrives (giving the window back as
/// it is read), then its trailers.
pub struct H2Body {
    recv: RecvStream,
    /// What `content-length` says is left, when it says.
    remaining: Option<u64>,
    data_done: bool,
    done: bool,
    /// Keeps the request body's pipe going while the response is read.
    _pipe: Option<oneshot::Sender<()>>,
}

impl H2Body {
    fn new(recv: RecvStream, length: Option<u64>, pipe: Option<oneshot::Sender<()>>) -> Self {
        H2Body {
            recv,
            remaining: length,
            data_done: false,
            done: false,
            _pipe: pipe,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = this.remaining.as_mut() {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(this.failed(e)),
                None => this.data_done = true,
            }
        }
        this.done = true;
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(this.failed(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None if self.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

impl H2Body {
    /// A reset with NO_ERROR after the answer (RFC 9113 §8.1: the upstream
    /// answered early and needs no more of the request) ends the body; any
    /// other error fails it.
    fn failed(&mut self, e: h2::Error) -> Option<Result<Frame<Bytes>, BoxError>> {
        self.done = true;
        match e.reason() {
            Some(Reason::NO_ERROR) => None,
            _ => Some(Err(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (in paused time) until `sender`'s connection is closed, at most
    /// `limit`.
    async fn closed_within(sender: &H2Sender, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if sender.is_closed() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        sender.is_closed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_pings_go_unanswered_is_closed() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let connection = h2::server::handshake(server_io).await;
            // Holds the connection without ever reading from it again.
            std::future::pending::<()>().await;
            drop(connection);
        });
        let Ok((sender, _)) = handshake(client_io).await else {
            panic!("the client handshake failed");
        };
        assert!(
            !closed_within(&sender, KEEP_ALIVE).await,
            "closed before any ping"
        );
        let limit = KEEP_ALIVE_TIMEOUT + Duration::from_secs(2);
        assert!(
            closed_within(&sender, limit).await,
            "still open after the ping timeout"
        );
        server.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_answers_its_pings_stays_open() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let Ok(mut connection) = h2::server::handshake(server_io).await else {
                return;
            };
            // Accepting drives the connection, pongs included.
            while let Some(Ok(_)) = connection.accept().await {}
        });
        let Ok((sender, _)) = handshake(client_io).await else {
            panic!("the client handshake failed");
        };
        let five_pings = (KEEP_ALIVE + KEEP_ALIVE_TIMEOUT) * 5;
        assert!(
            !closed_within(&sender, five_pings).await,
            "closed while answering"
        );
        server.abort();
    }
}
