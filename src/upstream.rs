//! Upstream HTTP/1.1 clients: one pooled keep-alive client per endpoint and
//! worker thread, so a worker's upstream connections live on its own runtime;
//! plain or TLS (rustls, per version).
//!
//! [`exchange`] sends one request and turns every failure into the
//! [`ProxyError`] that decides the client's status.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::{BodyTooLarge, RequestBody};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::pool;

/// Idle upstream connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept per endpoint and worker.
const POOL_MAX_IDLE_PER_ENDPOINT: usize = pool::MAX_IDLE_PER_ENDPOINT;

/// TLS to an upstream: the client config and the name to verify.
#[derive(Clone)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
    /// Identifies the material (CA content, server name) for carry-over.
    pub fingerprint: u64,
}

/// A pooled client, plain or TLS.
#[derive(Clone)]
pub enum HttpClient {
    Plain(Client<HttpConnector, RequestBody>),
    Tls(Client<HttpsConnector<HttpConnector>, RequestBody>),
}

impl HttpClient {
    /// Sends `req`; the caller bounds the wait.
    pub fn request(&self, req: Request<RequestBody>) -> ResponseFuture {
        match self {
            HttpClient::Plain(client) => client.request(req),
            HttpClient::Tls(client) => client.request(req),
        }
    }
}

pub struct Upstream {
    /// hyper-rustls clients, one per worker, for a TLS endpoint; empty for
    /// plain HTTP, which goes through the workers' own pools (`pool`).
    tls_clients: Vec<HttpClient>,
    workers: usize,
    pub connect_timeout: Duration,
    /// The TLS material's fingerprint, `None` for plain HTTP.
    pub tls: Option<u64>,
}

impl Upstream {
    pub fn new(workers: usize, connect_timeout: Duration, tls: Option<&UpstreamTls>) -> Self {
        let workers = workers.max(1);
        let tls_clients = match tls {
            Some(tls) => (0..workers)
                .map(|_| client(connect_timeout, Some(tls)))
                .collect(),
            None => Vec::new(),
        };
        Upstream {
            tls_clients,
            workers,
            connect_timeout,
            tls: tls.map(|t| t.fingerprint),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The TLS client of worker `worker` (the first one for other threads);
    /// `None` for a plain endpoint.
    fn tls_client(&self, worker: usize) -> Option<&HttpClient> {
        self.tls_clients.get(worker).or(self.tls_clients.first())
    }
}

/// A pooled hyper-util client, plain or TLS (health probes; TLS endpoints).
pub fn client(connect_timeout: Duration, tls: Option<&UpstreamTls>) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_ENDPOINT);
    match tls {
        None => {
            connector.enforce_http(true);
            HttpClient::Plain(builder.build(connector))
        }
        Some(tls) => {
            connector.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls.config).clone())
                .https_only();
            let https = match &tls.server_name {
                Some(name) => {
                    https.with_server_name_resolver(FixedServerNameResolver::new(name.clone()))
                }
                None => https,
            };
            HttpClient::Tls(builder.build(https.enable_http1().wrap_connector(connector)))
        }
    }
}

/// A pooled connection lent to one exchange; goes back to the worker's pool
/// when the response body has been read to its end.
pub struct Pooled {
    pub id: u64,
    pub sender: pool::Sender,
}

/// A failed exchange. `unsent` gives the request back when nothing of it
/// left the gateway (the connection could not be made), so it can go to
/// another endpoint.
pub struct Failed {
    pub error: ProxyError,
    pub unsent: Option<Request<RequestBody>>,
}

impl From<ProxyError> for Failed {
    fn from(error: ProxyError) -> Self {
        Failed {
            error,
            unsent: None,
        }
    }
}

/// The timer bounding the wait for a response head, kept from one request
/// to the next of a client connection: re-arming a registered tokio `Sleep`
/// for a later deadline only moves its expiry, where a new `timeout` per
/// request inserts into and removes from the timer wheel each time.
#[derive(Default)]
pub struct HeadTimer(Option<Pin<Box<Sleep>>>);

impl HeadTimer {
    /// Runs `fut` for at most `limit`; `None` when the time ran out.
    pub async fn run<F: Future>(&mut self, limit: Duration, fut: F) -> Option<F::Output> {
        let deadline = Instant::now() + limit;
        let sleep = match &mut self.0 {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

/// Sends `req` to `endpoint` and waits for the response head, at most
/// `timeout` (timed by `timer`). Plain HTTP goes through the worker's own
/// connection pool; TLS through the endpoint's hyper-rustls client.
pub async fn exchange(
    endpoint: &Endpoint,
    worker: usize,
    req: Request<RequestBody>,
    timer: &mut HeadTimer,
    timeout: Duration,
    body_limit: u64,
) -> Result<(Response<Incoming>, Option<Pooled>), Failed> {
    if let Some(client) = endpoint.upstream.tls_client(worker) {
        return match timer.run(timeout, client.request(req)).await {
            Some(Ok(response)) => Ok((response, None)),
            Some(Err(e)) => Err(classify(&e, body_limit).into()),
            None => Err(ProxyError::Timeout.into()),
        };
    }
    match timer
        .run(timeout, send_pooled(endpoint, req, body_limit))
        .await
    {
        Some(result) => result,
        None => Err(ProxyError::Timeout.into()),
    }
}

async fn send_pooled(
    endpoint: &Endpoint,
    mut req: Request<RequestBody>,
    body_limit: u64,
) -> Result<(Response<Incoming>, Option<Pooled>), Failed> {
    loop {
        let (mut sender, reused) = match pool::checkout(endpoint.id) {
            Some(sender) => (sender, true),
            None => match connect(endpoint).await {
                Ok(sender) => (sender, false),
                Err(error) => {
                    return Err(Failed {
                        error,
                        unsent: Some(req),
                    })
                }
            },
        };
        // An idle connection may have been closed by the upstream meanwhile.
        if reused && sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(response) => {
                return Ok((
                    response,
                    Some(Pooled {
                        id: endpoint.id,
                        sender,
                    }),
                ))
            }
            Err(mut failed) => match failed.take_message() {
                // Never written to a reused connection that turned out dead:
                // safe to send on another one.
                Some(unsent) if reused => req = unsent,
                _ => return Err(classify_chain(failed.error(), false, body_limit).into()),
            },
        }
    }
}

/// The most an upstream connection reads ahead of the client, in bytes.
const UPSTREAM_MAX_BUF: usize = 64 * 1024;

/// A new HTTP/1.1 connection to `endpoint`, driven by a task of this worker.
async fn connect(endpoint: &Endpoint) -> Result<pool::Sender, ProxyError> {
    let connecting = TcpStream::connect(endpoint.address.as_str());
    let stream = match tokio::time::timeout(endpoint.upstream.connect_timeout, connecting).await {
        Err(_) => return Err(ProxyError::Timeout),
        Ok(Err(e)) => return Err(ProxyError::Connect(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        // Bounds what one connection buffers from a fast upstream for a slow
        // client (hyper's default grows to ~400 KiB); a response head must
        // fit in it.
        .max_buf_size(UPSTREAM_MAX_BUF)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::trace!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Maps a client error to the failure it stands for.
fn classify(err: &hyper_util::client::legacy::Error, body_limit: u64) -> ProxyError {
    classify_chain(err, err.is_connect(), body_limit)
}

/// Walks an error's sources to the failure they stand for.
fn classify_chain(err: &(dyn StdError + 'static), connect: bool, body_limit: u64) -> ProxyError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    let mut detail = err.to_string();
    while let Some(e) = source {
        if e.downcast_ref::<BodyTooLarge>().is_some() {
            return ProxyError::BodyTooLarge(body_limit);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            detail = io.to_string();
            if io.kind() == io::ErrorKind::TimedOut {
                return ProxyError::Timeout;
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            detail = h.to_string();
            if h.is_parse() || h.is_parse_status() {
                return ProxyError::Protocol(detail);
            }
        }
        source = e.source();
    }
    if connect {
        ProxyError::Connect(detail)
    } else {
        ProxyError::Reset(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each run is bounded by its own limit, whether the reused timer fired
    /// before, is re-armed earlier (re-registered) or later (only extended).
    #[tokio::test]
    async fn a_reused_head_timer_bounds_each_run_by_its_own_limit() {
        let ms = Duration::from_millis;
        let mut timer = HeadTimer::default();
        let never = std::future::pending::<u8>;
        let after = |d: Duration, v: u8| async move {
            tokio::time::sleep(d).await;
            v
        };

        let started = Instant::now();
        assert_eq!(timer.run(ms(50), never()).await, None);
        assert!(started.elapsed() >= ms(50));
        // After firing: re-armed for longer, the work finishes first.
        assert_eq!(timer.run(ms(2000), after(ms(100), 1)).await, Some(1));
        // Armed for 2 s and still registered: an earlier deadline is kept.
        let started = Instant::now();
        assert_eq!(timer.run(ms(50), never()).await, None);
        assert!(started.elapsed() < ms(1500), "{:?}", started.elapsed());
        // Re-armed later while registered (the extension path): fires at
        // the new deadline, not the old one.
        assert_eq!(timer.run(ms(300), after(ms(10), 2)).await, Some(2));
        let started = Instant::now();
        assert_eq!(timer.run(ms(600), after(ms(450), 3)).await, Some(3));
        assert!(started.elapsed() >= ms(450));
        let started = Instant::now();
        assert_eq!(timer.run(ms(400), never()).await, None);
        let took = started.elapsed();
        assert!(took >= ms(400) && took < ms(1500), "{took:?}");
    }
}
