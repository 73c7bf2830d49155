//! The upstream subsystem: connecting, pooling, one exchange, and the bodies
//! that hand a connection back to the pool.
//!
//! Every endpoint goes through this worker's own connections, so a worker's
//! upstream connections live on its own runtime: a pool of idle HTTP/1.1
//! connections (`pool`) and a pool of multiplexed h2 connections
//! (`h2_pool`), plain or TLS (`connect`). [`exchange`] sends one request in
//! what the endpoint speaks and turns every failure into the [`ProxyError`]
//! that decides the client's status. A request an h2 upstream refused
//! unprocessed (REFUSED_STREAM, GOAWAY) is sent again on another connection
//! when its body can be replayed, without counting as a failure.
//!
//! Below it: the snapshot's endpoints, the TLS material and the error type.
//! It knows nothing of routes, versions or releases.

pub mod client;
mod connect;
mod h2_client;
mod h2_pool;
pub mod pool;
mod request_body;
mod response_body;
mod timer;

use std::error::Error as StdError;
use std::io;
use std::pin::pin;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, Version};

use connect::Connected;
use h2_client::SendError;
use h2_pool::Checkout;
use pool::Pooled;
pub use request_body::{
    content_length, BodyProgress, BodyTooLarge, BoxError, ClientBodyError, RequestBody,
};
use response_body::Hold;
pub use response_body::UpstreamBody;
pub use timer::HeadTimer;

use crate::endpoint::{Endpoint, Wire};
use crate::error::ProxyError;

/// Tries of one request on fresh h2 connections after refusals.
const H2_TRIES: usize = 3;

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

/// Sends `req` (origin-form, with its `Host`) to `endpoint` and waits for
/// the response head, at most `timeout` (timed by `timer`), in HTTP/1.1 or
/// h2 as the endpoint speaks.
pub async fn exchange(
    endpoint: &Endpoint,
    req: Request<RequestBody>,
    timer: &mut HeadTimer,
    timeout: Duration,
    body_limit: u64,
) -> Result<Response<UpstreamBody>, Failed> {
    let sent = match endpoint.wire() {
        Some(Wire::H2) => {
            let send = pin!(send_h2(endpoint, req, body_limit, None));
            timer.run(timeout, send).await
        }
        // HTTP/1.1, or `auto` before ALPN has picked (the first connection
        // tells).
        _ => {
            timer
                .run(timeout, pin!(send_h1(endpoint, req, body_limit)))
                .await
        }
    };
    match sent {
        Some(result) => result,
        None => Err(ProxyError::Timeout.into()),
    }
}

/// Forgets this worker's idle connections that expired or closed, and
/// everything of endpoints `alive` rejects.
pub fn sweep(alive: &dyn Fn(u64) -> bool) {
    pool::sweep(alive);
    h2_pool::sweep(alive);
}

async fn send_h1(
    endpoint: &Endpoint,
    mut req: Request<RequestBody>,
    body_limit: u64,
) -> Result<Response<UpstreamBody>, Failed> {
    loop {
        let (mut sender, reused) = match pool::checkout(endpoint.id) {
            Some(sender) => (sender, true),
            // Boxed: a connect (TLS handshake included) is a future of
            // kilobytes, and the hot path would move it on every request.
            None => match Box::pin(connect_h1(endpoint)).await {
                Ok(ForH1::H1(sender)) => (sender, false),
                // `auto`: ALPN picked h2 on this connection, or on the one
                // this request waited for.
                Ok(ForH1::H2(first)) => {
                    return Box::pin(send_h2(endpoint, req, body_limit, first)).await;
                }
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
                return Ok(response.map(|body| UpstreamBody::h1(body, Hold::H1(pooled))));
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

/// What a request that found no idle HTTP/1.1 connection goes on.
enum ForH1 {
    H1(pool::Sender),
    /// The endpoint (`auto`) speaks h2: a stream on the connection just
    /// made, or none yet when another request made it.
    H2(Option<(h2_client::H2Sender, h2_pool::StreamSlot)>),
}

/// A new connection for an HTTP/1.1 exchange. While the first connection of
/// an `auto` endpoint over TLS is being made (before ALPN has told what it
/// speaks), the requests that come meanwhile wait for it instead of each
/// making their own: if it speaks h2 they share that connection.
async fn connect_h1(endpoint: &Endpoint) -> Result<ForH1, ProxyError> {
    loop {
        match endpoint.wire() {
            Some(Wire::H2) => return Ok(ForH1::H2(None)),
            Some(Wire::H1) => return connected(endpoint, connect::connect(endpoint).await?),
            None => {}
        }
        match h2_pool::checkout(endpoint.id) {
            Checkout::Ready(sender, slot) => return Ok(ForH1::H2(Some((sender, slot)))),
            Checkout::Connect(connecting) => {
                let made = connect::connect(endpoint).await;
                let made = made.and_then(|c| connected(endpoint, c));
                connecting.done(&made);
                return made;
            }
            Checkout::Wait(made) => h2_pool::wait(made).await?,
        }
    }
}

/// A new connection as [`ForH1`]: an h2 one is pooled first.
fn connected(endpoint: &Endpoint, connection: Connected) -> Result<ForH1, ProxyError> {
    Ok(match connection {
        Connected::H1(sender) => ForH1::H1(sender),
        Connected::H2(sender, max) => ForH1::H2(Some(h2_pool::add(endpoint.id, sender, max))),
    })
}

/// Sends `req` on a pooled h2 connection with room for it (`first`, when
/// given), opening one when all are full. A request the upstream refused
/// unprocessed goes again on a fresh connection while its body can be
/// replayed.
async fn send_h2(
    endpoint: &Endpoint,
    req: Request<RequestBody>,
    body_limit: u64,
    mut first: Option<(h2_client::H2Sender, h2_pool::StreamSlot)>,
) -> Result<Response<UpstreamBody>, Failed> {
    let progress = req.body().progress();
    if let Some(progress) = &progress {
        progress.keep_for_replay_now();
    }
    let mut req = to_h2_form(endpoint, req);
    // Kept to send the request again after a refusal.
    let head = KeptHead::of(&req);
    // After a refusal, the next try goes on a fresh connection.
    let mut fresh = false;
    for _ in 0..H2_TRIES {
        let stream = match (first.take(), fresh) {
            (Some(pair), _) => Ok(pair),
            (None, false) => match h2_pool::checkout(endpoint.id) {
                Checkout::Ready(sender, slot) => Ok((sender, slot)),
                // Boxed, off the hot future: waiting for a connection, or
                // making one (a TLS handshake included).
                other => Box::pin(h2_stream(endpoint, other)).await,
            },
            (None, true) => Box::pin(connect_h2(endpoint)).await,
        };
        let (mut sender, slot) = match stream {
            Ok(pair) => pair,
            Err(error) => {
                let unsent = Some(from_h2_form(req));
                return Err(Failed { error, unsent });
            }
        };
        match h2_client::send(&mut sender, req).await {
            Ok(response) => {
                return Ok(response.map(|body| UpstreamBody::h2(body, slot)));
            }
            // Never left the gateway (the connection takes no new streams).
            Err(SendError::Unsent(unsent)) => {
                drop(slot);
                req = *unsent;
            }
            Err(SendError::Failed(error)) => {
                drop(slot);
                let replay = match &progress {
                    None => Some(RequestBody::empty()),
                    Some(progress) => progress.replay(),
                };
                match (refused(&*error), replay) {
                    (true, Some(body)) => {
                        tracing::debug!(endpoint = %endpoint.address, "h2 stream refused unprocessed: sending it again");
                        req = head.request(body);
                        fresh = true;
                    }
                    (true, None) => return Err(ProxyError::Refused(error.to_string()).into()),
                    (false, _) => return Err(classify_chain(&*error, false, body_limit).into()),
                }
            }
        }
    }
    Err(ProxyError::Reset("the upstream refused the request on every connection".into()).into())
}

/// A stream to `endpoint` after `checkout` found no room: on the
/// connection another request is making (waited for), or on one made here.
async fn h2_stream(
    endpoint: &Endpoint,
    mut checkout: Checkout,
) -> Result<(h2_client::H2Sender, h2_pool::StreamSlot), ProxyError> {
    loop {
        match checkout {
            Checkout::Ready(sender, slot) => return Ok((sender, slot)),
            Checkout::Connect(connecting) => {
                let made = connect_h2(endpoint).await;
                connecting.done(&made);
                return made;
            }
            Checkout::Wait(made) => h2_pool::wait(made).await?,
        }
        checkout = h2_pool::checkout(endpoint.id);
    }
}

/// A new h2 connection to `endpoint`, pooled, and a stream on it.
async fn connect_h2(
    endpoint: &Endpoint,
) -> Result<(h2_client::H2Sender, h2_pool::StreamSlot), ProxyError> {
    match connect::connect(endpoint).await? {
        Connected::H2(sender, max) => Ok(h2_pool::add(endpoint.id, sender, max)),
        Connected::H1(_) => Err(ProxyError::Protocol(
            "ALPN picked HTTP/1.1 for an h2 endpoint".into(),
        )),
    }
}

/// Whether an h2 error says the request was not processed: the stream was
/// refused, or fell under a GOAWAY.
fn refused(err: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = e.source();
    }
    false
}

/// An origin-form request with `Host` as h2 wants it: absolute URI (scheme,
/// the Host as `:authority`), no `Host` header.
fn to_h2_form(endpoint: &Endpoint, req: Request<RequestBody>) -> Request<RequestBody> {
    let (mut parts, body) = req.into_parts();
    // HTTP/2 has no connection-specific headers (an upgrade's are left by
    // the proxy for HTTP/1 upstreams); `h2` refuses a request with them.
    if parts.headers.contains_key(header::CONNECTION) {
        parts.headers.remove(header::CONNECTION);
        parts.headers.remove(header::UPGRADE);
    }
    let authority = parts
        .headers
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| endpoint.authority.clone());
    let scheme = if endpoint.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Scheme, authority and path: always a valid absolute URI.
    if let Ok(absolute) = Uri::from_parts(uri) {
        parts.uri = absolute;
    }
    parts.version = Version::HTTP_2;
    Request::from_parts(parts, body)
}

/// Back to origin-form with `Host` (a request given back unsent, for another
/// endpoint).
fn from_h2_form(req: Request<RequestBody>) -> Request<RequestBody> {
    let (mut parts, body) = req.into_parts();
    if let Some(authority) = parts.uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    if let Some(path) = parts.uri.path_and_query().cloned() {
        if let Ok(origin) = Uri::builder().path_and_query(path).build() {
            parts.uri = origin;
        }
    }
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// A request head kept to send it again. Its header fields in a list: most
/// requests are never sent again, and a list costs one allocation to make
/// and to drop where a `HeaderMap` costs its hash table.
struct KeptHead {
    method: http::Method,
    uri: Uri,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl KeptHead {
    fn of(req: &Request<RequestBody>) -> Self {
        let headers = req.headers();
        let mut fields = Vec::with_capacity(headers.len());
        fields.extend(headers.iter().map(|(n, v)| (n.clone(), v.clone())));
        KeptHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: fields,
        }
    }

    fn request(&self, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_2;
        let headers = req.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        req
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
        // An h2 stream or connection that broke the protocol (a header
        // block over the limit, a bad frame), on either side's word.
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let protocol = [
                h2::Reason::PROTOCOL_ERROR,
                h2::Reason::COMPRESSION_ERROR,
                h2::Reason::FRAME_SIZE_ERROR,
            ];
            if h2.reason().is_some_and(|r| protocol.contains(&r)) {
                return ProxyError::Protocol(h2.to_string());
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
    use crate::config::Protocol;

    /// The exchange future lives in the attempt's state, which is moved
    /// when the request's future is; a connect with its TLS handshake
    /// inlined into it once made it several kilobytes and a third of all
    /// instructions per request were `memcpy`. Cold paths stay boxed; the
    /// bound leaves room for the request and its head (kept for a replay).
    #[test]
    fn the_exchange_future_stays_small() {
        let endpoint = Endpoint::new("127.0.0.1:1", Duration::from_secs(1), None, Protocol::H2);
        let Some(endpoint) = endpoint else {
            panic!("a literal address is an endpoint");
        };
        let mut timer = HeadTimer::default();
        let sent = exchange(
            &endpoint,
            Request::new(RequestBody::empty()),
            &mut timer,
            Duration::from_secs(1),
            0,
        );
        let size = std::mem::size_of_val(&sent);
        assert!(size <= 2560, "the exchange future is {size} bytes");
    }
}
