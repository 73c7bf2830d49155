//! hyper-util's pooled client (`client::legacy`), plain or TLS: what TLS
//! endpoints, health probes and the Prometheus source use (plain endpoints
//! go through the workers' own pools, `pool`). One builder for all of them.
//!
//! A TLS endpoint's clients are per worker thread, made on first use and
//! kept in a thread-local map by endpoint id, so a worker's TLS connections
//! live on its own runtime like its plain ones; the pool sweep forgets the
//! clients of endpoints a reload removed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use http::Request;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::pool::{self, IdMap};
use super::request_body::RequestBody;
use crate::endpoint::Endpoint;
use crate::tls::UpstreamTls;

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

thread_local! {
    /// This worker's clients for TLS endpoints, by endpoint id.
    static TLS_CLIENTS: RefCell<IdMap<HttpClient>> = RefCell::new(HashMap::default());
}

/// Sends `req` through this thread's client for `endpoint`, whose TLS is
/// `tls`.
pub(super) fn send_tls(
    endpoint: &Endpoint,
    tls: &UpstreamTls,
    req: Request<RequestBody>,
) -> ResponseFuture {
    TLS_CLIENTS.with(|clients| {
        clients
            .borrow_mut()
            .entry(endpoint.id)
            .or_insert_with(|| build(endpoint.connect_timeout, Some(tls)))
            .request(req)
    })
}

/// Forgets the clients of endpoints `alive` rejects.
pub(super) fn sweep(alive: &dyn Fn(u64) -> bool) {
    TLS_CLIENTS.with(|clients| clients.borrow_mut().retain(|id, _| alive(*id)));
}

/// A pooled client, plain or TLS (with the version's roots and name).
pub fn build(connect_timeout: Duration, tls: Option<&UpstreamTls>) -> HttpClient {
    match tls {
        None => {
            let mut connector = connector(connect_timeout);
            connector.enforce_http(true);
            HttpClient::Plain(builder().build(connector))
        }
        Some(tls) => HttpClient::Tls(https(connect_timeout, tls, Scheme::HttpsOnly)),
    }
}

/// Which URL schemes an [`https`] client takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    HttpsOnly,
    HttpOrHttps,
}

/// The one hyper-util client builder for TLS: `tls`'s config and name,
/// HTTP/1.1, pooled like the upstream pools.
pub fn https<B>(
    connect_timeout: Duration,
    tls: &UpstreamTls,
    scheme: Scheme,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = connector(connect_timeout);
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*tls.config).clone());
    let https = match scheme {
        Scheme::HttpsOnly => https.https_only(),
        Scheme::HttpOrHttps => https.https_or_http(),
    };
    let https = match &tls.server_name {
        Some(name) => https.with_server_name_resolver(FixedServerNameResolver::new(name.clone())),
        None => https,
    };
    builder().build(https.enable_http1().wrap_connector(connector))
}

fn connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(pool::MAX_IDLE_PER_ENDPOINT);
    builder
}
