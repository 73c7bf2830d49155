//! The upstream subsystem: connecting, pooling, one exchange, and the bodies
//! that hand a connection back to the pool.
//!
//! Plain HTTP/1.1 endpoints go through each worker's own pool of
//! `http1::SendRequest` handles (`pool`, `connect`), so a worker's upstream
//! connections live on its own runtime; TLS endpoints through this worker's
//! hyper-rustls client for the endpoint (`client`). [`exchange`] sends one
//! request and turns every failure into the [`ProxyError`] that decides the
//! client's status.
//!
//! Below it: the snapshot's endpoints, the TLS material and the error type.
//! It knows nothing of routes, versions or releases.

pub mod client;
mod connect;
pub mod pool;
mod request_body;
mod response_body;
mod timer;

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::{Request, Response};

pub use client::HttpClient;
use pool::Pooled;
pub use request_body::{BodyProgress, BodyTooLarge, ClientBodyError, RequestBody};
pub use response_body::UpstreamBody;
pub use timer::HeadTimer;

use crate::endpoint::Endpoint;
use crate::error::ProxyError;

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

/// Sends `req` to `endpoint` and waits for the response head, at most
/// `timeout` (timed by `timer`). Plain HTTP goes through the worker's own
/// connection pool; TLS through the endpoint's hyper-rustls client.
pub async fn exchange(
    endpoint: &Endpoint,
    req: Request<RequestBody>,
    timer: &mut HeadTimer,
    timeout: Duration,
    body_limit: u64,
) -> Result<Response<UpstreamBody>, Failed> {
    if let Some(tls) = &endpoint.tls {
        let sent = client::send_tls(endpoint, tls, req);
        return match timer.run(timeout, sent).await {
            Some(Ok(response)) => Ok(response.map(|body| UpstreamBody::new(body, None))),
            Some(Err(e)) => Err(classify_chain(&e, e.is_connect(), body_limit).into()),
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

/// Forgets this worker's idle connections that expired or closed, and
/// everything of endpoints `alive` rejects.
pub fn sweep(alive: &dyn Fn(u64) -> bool) {
    pool::sweep(alive);
    client::sweep(alive);
}

async fn send_pooled(
    endpoint: &Endpoint,
    mut req: Request<RequestBody>,
    body_limit: u64,
) -> Result<Response<UpstreamBody>, Failed> {
    loop {
        let (mut sender, reused) = match pool::checkout(endpoint.id) {
            Some(sender) => (sender, true),
            None => match connect::connect(endpoint).await {
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
                let pooled = Pooled {
                    id: endpoint.id,
                    sender,
                };
                return Ok(response.map(|body| UpstreamBody::new(body, Some(pooled))));
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

/// Walks an error's sources to the failure they stand for; `connect` says
/// the error came from making the connection.
fn classify_chain(err: &(dyn StdError + 'static), connect: bool, body_limit: u64) -> ProxyError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    let mut detail = err.to_string();
    while let Some(e) = source {
        if e.downcast_ref::<BodyTooLarge>().is_some() {
            return ProxyError::BodyTooLarge(body_limit);
        }
        if let Some(client) = e.downcast_ref::<ClientBodyError>() {
            return ProxyError::ClientAborted(client.0.to_string());
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
