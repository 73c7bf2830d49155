//! [`Client`]: an HTTP client for tests (hyper-util legacy client over
//! `HttpConnector`), plus [`body_channel`] for streaming request bodies.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc;

/// Boxed error used by bodies and fallible helpers here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request body type of the underlying hyper client.
type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// Default per-request timeout (panicking helpers panic when it expires, so a
/// wedged proxy fails the test instead of hanging it).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A fully collected response.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// HTTP client for tests. Cheap to clone (clones share the connection pool).
///
/// The panicking helpers (`get`, `get_with`, `post`, `request`) panic, with
/// the URL in the message, on connection errors or after the timeout; use
/// [`try_request`](Client::try_request) or [`send`](Client::send) when the
/// test expects a failure.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, ReqBody>,
    timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// HTTP/1.1 client with a keep-alive connection pool.
    pub fn new() -> Self {
        Self::build(|_| {})
    }

    /// HTTP/2 with prior knowledge (h2c) on plain TCP.
    pub fn h2c() -> Self {
        Self::build(|b| {
            b.http2_only(true);
        })
    }

    /// HTTP/1.1 client that never reuses a connection (no idle pool): every
    /// request opens a new TCP connection.
    pub fn without_pool() -> Self {
        Self::build(|b| {
            b.pool_max_idle_per_host(0);
        })
    }

    /// Sets the per-request timeout (default 30 s). For the collecting
    /// helpers it covers the whole exchange including the body; for
    /// [`send`](Client::send) only until the response head arrives.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn build(configure: impl FnOnce(&mut hyper_util::client::legacy::Builder)) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new());
        configure(&mut builder);
        Client {
            inner: builder.build(connector),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `GET url`. Panics on failure.
    pub async fn get(&self, url: &str) -> Resp {
        self.get_with(url, &[]).await
    }

    /// `GET url`, with its failure as an error.
    #[allow(dead_code)]
    pub async fn try_get(&self, url: &str) -> Result<Resp, BoxError> {
        let req = Request::get(url).body(Full::new(Bytes::new()))?;
        self.try_request(req).await
    }

    /// `GET url` with extra request headers. Panics on failure.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::get(url)
            .body(Full::new(Bytes::new()))
            .expect("build GET request (bad url?)");
        for (name, value) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
                HeaderValue::from_str(value).expect("valid header value"),
            );
        }
        self.request(req).await
    }

    /// `POST url` with `body` (sent with a `content-length`). Panics on failure.
    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> Resp {
        let req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .body(Full::new(body.into()))
            .expect("build POST request (bad url?)");
        self.request(req).await
    }

    /// Sends `req` and collects the response. Panics on failure.
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Resp {
        let what = format!("{} {}", req.method(), req.uri());
        match self.try_request(req).await {
            Ok(resp) => resp,
            Err(e) => panic!("{what} failed: {e:?}"),
        }
    }

    /// Sends `req` and collects the response; errors (connect, protocol,
    /// body, timeout) are returned instead of panicking.
    pub async fn try_request(&self, req: Request<Full<Bytes>>) -> Result<Resp, BoxError> {
        let exchange = async {
            let resp = self.send(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Resp {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {:?}", self.timeout).into()),
        }
    }

    /// Sends a request with any body type (e.g. a [`ChannelBody`] for
    /// streaming uploads) and returns the response with its body unread, for
    /// tests that inspect streaming. Times out until the response head only.
    pub async fn send<B>(&self, req: Request<B>) -> Result<Response<Incoming>, BoxError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let req = req.map(|body| body.map_err(Into::into).boxed_unsync());
        match tokio::time::timeout(self.timeout, self.inner.request(req)).await {
            Ok(result) => result.map_err(BoxError::from),
            Err(_) => Err(format!("timed out after {:?}", self.timeout).into()),
        }
    }
}

/// A request body fed from a channel: each `Bytes` sent becomes one data
/// frame; the body ends when every sender is dropped. Has no length, so
/// HTTP/1.1 sends it chunked.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

/// Creates a streaming request body and the sender that feeds it (bounded, 16 chunks).
pub fn body_channel() -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody { rx })
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
