//! hyper-util's pooled client (`client::legacy`) over TLS or plain HTTP, for
//! what is not an endpoint: the Prometheus source. (Endpoints and their
//! health probes go through the workers' own pools.)

use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::pool;
use crate::tls::UpstreamTls;

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs, TLS with
/// `tls`'s config (and name, when it has one).
pub fn https<B>(
    connect_timeout: Duration,
    tls: &UpstreamTls,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut connector = connector(connect_timeout);
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*tls.config).clone());
    let https = https.https_or_http();
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
