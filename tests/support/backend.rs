//! [`Backend`]: a real HTTP/1.1 upstream for the proxy to talk to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::client::BoxError;
use super::ws::websocket_accept;
use super::{spawn_guarded, start_guarded, StopGuard};

/// Response body type used by the backend (boxed so routes can differ).
type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Header added to every backend response, valued with the backend's name.
pub const SERVED_BY: &str = "x-served-by";

/// Size of each generated chunk of `/bytes/{n}`.
const BYTES_CHUNK: usize = 64 * 1024;
static CHUNK: [u8; BYTES_CHUNK] = [b'x'; BYTES_CHUNK];

/// Failure mode of a [`Backend`], switchable at any time with [`Backend::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Route requests normally.
    #[default]
    Normal,
    /// Answer every request (any path, `/ws` included) with this status and
    /// the backend's name as body (no body for 1xx/204/304). The request body
    /// is drained first. Invalid codes (outside 100..=999) answer 500.
    Status(u16),
    /// Sleep this long, then route the request normally.
    Delay(Duration),
}

/// One request as the backend saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// e.g. `/echo?x=1`; `/` if the request target had none.
    pub path_and_query: String,
    pub version: Version,
    pub headers: HeaderMap,
    /// Body bytes received so far (counted while streaming, never buffered).
    /// Final once the backend's response has been fully sent.
    pub body_len: usize,
}

/// A request in the log; `body_len` is shared with the task reading its body.
struct Entry {
    method: String,
    path_and_query: String,
    version: Version,
    headers: HeaderMap,
    body_len: Arc<AtomicUsize>,
}

/// State shared between the [`Backend`] handle and its connection tasks.
struct Shared {
    name: String,
    hits: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    requests: Mutex<Vec<Entry>>,
    mode: Mutex<Mode>,
}

/// A real HTTP/1.1 backend (hyper `server::conn::http1`, upgrades enabled,
/// keep-alive on) listening on an ephemeral `127.0.0.1` port. Stops when dropped.
///
/// Every response carries `x-served-by: <name>`. Routes (query strings are
/// ignored except where noted; request bodies are drained and counted before
/// answering unless noted):
///
/// | path            | answer                                                        |
/// |-----------------|---------------------------------------------------------------|
/// | `/` and unknown | 200, body = name                                              |
/// | `/echo`         | 200, streams the request body back frame by frame (not drained first); copies `content-length`/`content-type` |
/// | `/headers`      | 200, the request headers as `name: value\n` lines             |
/// | `/status/{code}`| that status, body = name (none for 1xx/204/304)               |
/// | `/delay/{ms}`   | sleeps `ms`, then 200 with body = name                        |
/// | `/head-bytes/{n}` | 200 with an `x-fill` header of `n` bytes (a long response head) |
/// | `/bytes/{n}`    | 200, `n` bytes of `b'x'` generated in 64 KiB chunks, `content-length: n`; with `?chunked` in the query, no length (chunked encoding) |
/// | `/upload`       | 200, the request body's byte count as decimal text            |
/// | `/ws`           | with `Upgrade: websocket`: 101 + RFC 6455 accept, then echoes raw bytes on the upgraded connection; otherwise 426 |
///
/// A malformed `{code}`/`{ms}`/`{n}` answers 400.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _guard: StopGuard,
}

impl Backend {
    /// Starts a backend named `name` on `127.0.0.1:0`.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend listener on 127.0.0.1:0");
        Self::serve(name, listener)
    }

    /// Starts a backend on a specific address, typically the `addr()` of a
    /// backend the test dropped earlier (to simulate an upstream coming back).
    /// Retries the bind for up to 5 s while the old listener is shutting down.
    pub async fn start_at(name: &str, addr: SocketAddr) -> Backend {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Self::serve(name, listener),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("bind backend listener on {addr}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn serve(name: &str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().expect("backend listener local_addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Normal),
        });
        let accept_shared = Arc::clone(&shared);
        let guard = start_guarded(move |stop| accept_loop(listener, accept_shared, stop));
        Backend {
            addr,
            shared,
            _guard: guard,
        }
    }

    /// The address the backend listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}{path}`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The backend's name (also its `x-served-by` value and default body).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Number of requests received since start or the last [`reset_hits`]
    /// (counted when a request's head arrives, before it is answered).
    ///
    /// [`reset_hits`]: Backend::reset_hits
    /// TCP connections this backend accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Sets the hit counter back to 0 (the request log is kept; see
    /// [`clear_requests`](Backend::clear_requests)).
    pub fn reset_hits(&self) {
        self.shared.hits.store(0, Ordering::SeqCst);
    }

    /// Every request received since start or the last
    /// [`clear_requests`](Backend::clear_requests), oldest first. A request is
    /// logged before it is counted in [`hits`](Backend::hits), so after
    /// observing `hits() == n` the log holds at least `n` entries.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .expect("backend request log poisoned")
            .iter()
            .map(|e| Recorded {
                method: e.method.clone(),
                path_and_query: e.path_and_query.clone(),
                version: e.version,
                headers: e.headers.clone(),
                body_len: e.body_len.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .expect("backend request log poisoned")
            .clear();
    }

    /// Switches the failure mode; applies to requests whose head arrives afterwards.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("backend mode poisoned") = mode;
    }

    /// The current failure mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.lock().expect("backend mode poisoned")
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: watch::Receiver<()>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                stream
            }
            // E.g. EMFILE under a load test: back off briefly and keep serving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        spawn_guarded(
            &stop,
            serve_connection(stream, Arc::clone(&shared), stop.clone()),
        );
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, stop: watch::Receiver<()>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(Arc::clone(&shared), stop.clone(), req));
    // HTTP/1.1, or h2c by prior knowledge (for `protocol: h2` versions).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    // Errors here are the peer misbehaving or going away; nothing to report.
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    shared: Arc<Shared>,
    stop: watch::Receiver<()>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let body_len = shared.record(&req);
    shared.hits.fetch_add(1, Ordering::SeqCst);

    let mode = *shared.mode.lock().expect("backend mode poisoned");
    let mut resp = match mode {
        Mode::Normal => route(&shared, &stop, req, body_len).await,
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            route(&shared, &stop, req, body_len).await
        }
        Mode::Status(code) => {
            drain(req.into_body(), &body_len).await;
            match StatusCode::from_u16(code) {
                Ok(status) => shared.status_response(status),
                Err(_) => shared.status_response(StatusCode::INTERNAL_SERVER_ERROR),
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut()
            .insert(HeaderName::from_static(SERVED_BY), v);
    }
    Ok(resp)
}

async fn route(
    shared: &Shared,
    stop: &watch::Receiver<()>,
    mut req: Request<Incoming>,
    body_len: Arc<AtomicUsize>,
) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();

    if path == "/echo" {
        return echo(req, body_len);
    }
    if path == "/ws" {
        return upgrade(shared, stop, &mut req);
    }

    // Every other route answers after the whole request body was read.
    let received = drain(req.body_mut(), &body_len).await;
    match path.as_str() {
        "/headers" => {
            let mut text = String::new();
            for (name, value) in req.headers() {
                text.push_str(name.as_str());
                text.push_str(": ");
                text.push_str(&String::from_utf8_lossy(value.as_bytes()));
                text.push('\n');
            }
            text_response(StatusCode::OK, text)
        }
        "/upload" => text_response(StatusCode::OK, received.to_string()),
        _ => {
            if let Some(code) = path.strip_prefix("/status/") {
                match code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                {
                    Some(status) => shared.status_response(status),
                    None => bad_param(&path),
                }
            } else if let Some(ms) = path.strip_prefix("/delay/") {
                match ms.parse::<u64>() {
                    Ok(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        shared.status_response(StatusCode::OK)
                    }
                    Err(_) => bad_param(&path),
                }
            } else if let Some(n) = path.strip_prefix("/head-bytes/") {
                // A response head of about N bytes: one long header.
                match n.parse::<usize>() {
                    Ok(n) => {
                        let mut resp = shared.status_response(StatusCode::OK);
                        let fill = HeaderValue::from_str(&"f".repeat(n));
                        if let Ok(fill) = fill {
                            resp.headers_mut().insert("x-fill", fill);
                        }
                        resp
                    }
                    Err(_) => bad_param(&path),
                }
            } else if let Some(n) = path.strip_prefix("/bytes/") {
                match n.parse::<u64>() {
                    Ok(n) => {
                        let chunked = query
                            .split('&')
                            .any(|kv| kv.split('=').next() == Some("chunked"));
                        let body = RepeatBody {
                            remaining: n,
                            exact_len: !chunked,
                        };
                        Response::new(body.boxed_unsync())
                    }
                    Err(_) => bad_param(&path),
                }
            } else {
                shared.status_response(StatusCode::OK)
            }
        }
    }
}

/// `/echo`: the response body *is* the request body, frame by frame, counted
/// as it passes through.
fn echo(req: Request<Incoming>, body_len: Arc<AtomicUsize>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                body_len.fetch_add(data.len(), Ordering::SeqCst);
            }
            frame
        })
        .map_err(BoxError::from)
        .boxed_unsync();
    let mut resp = Response::new(body);
    // `map_frame` hides the size hint, so carry the framing over explicitly.
    for name in [header::CONTENT_LENGTH, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    resp
}

/// `/ws`: WebSocket-style HTTP/1.1 upgrade, then a raw byte echo.
fn upgrade(
    shared: &Shared,
    stop: &watch::Receiver<()>,
    req: &mut Request<Incoming>,
) -> Response<RespBody> {
    let wants_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if !wants_ws {
        let mut resp = shared.status_response(StatusCode::UPGRADE_REQUIRED);
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    }

    let accept = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| websocket_accept(key.as_bytes()));
    let on_upgrade = hyper::upgrade::on(req);
    spawn_guarded(stop, async move {
        // Fails if the client went away before the 101 was delivered.
        if let Ok(upgraded) = on_upgrade.await {
            let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            let _ = wr.shutdown().await;
        }
    });

    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(accept) = accept.and_then(|a| HeaderValue::from_str(&a).ok()) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

impl Shared {
    /// Appends `req` to the log; returns the counter its body bytes go to.
    fn record(&self, req: &Request<Incoming>) -> Arc<AtomicUsize> {
        let body_len = Arc::new(AtomicUsize::new(0));
        let entry = Entry {
            method: req.method().to_string(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
            version: req.version(),
            headers: req.headers().clone(),
            body_len: Arc::clone(&body_len),
        };
        self.requests
            .lock()
            .expect("backend request log poisoned")
            .push(entry);
        body_len
    }

    /// `status` with the backend's name as body (empty where HTTP forbids a body).
    fn status_response(&self, status: StatusCode) -> Response<RespBody> {
        let no_body = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let body = if no_body {
            empty()
        } else {
            full(self.name.clone())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp
    }
}

/// Reads `body` to the end (or to its first error), counting data bytes into
/// `counter` as they arrive. Returns the total.
async fn drain<B>(mut body: B, counter: &AtomicUsize) -> usize
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut total = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            total += data.len();
            counter.fetch_add(data.len(), Ordering::SeqCst);
        }
    }
    total
}

fn bad_param(path: &str) -> Response<RespBody> {
    text_response(
        StatusCode::BAD_REQUEST,
        format!("bad path parameter in {path}\n"),
    )
}

fn text_response(status: StatusCode, text: String) -> Response<RespBody> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn full(data: impl Into<Bytes>) -> RespBody {
    Full::new(data.into())
        .map_err(BoxError::from)
        .boxed_unsync()
}

fn empty() -> RespBody {
    full(Bytes::new())
}

/// `/bytes/{n}` body: `remaining` bytes of `b'x'`, yielded as zero-copy slices
/// of a static 64 KiB chunk. Never holds more than one chunk reference.
struct RepeatBody {
    remaining: u64,
    /// Report an exact size hint (hyper then sends `content-length`);
    /// otherwise the length is unknown and HTTP/1.1 uses chunked encoding.
    exact_len: bool,
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(BYTES_CHUNK, |r| r.min(BYTES_CHUNK));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_len {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}
