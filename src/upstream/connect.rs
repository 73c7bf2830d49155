//! New upstream connections for the workers' own pools: TCP (and, for a TLS
//! version, the rustls handshake with ALPN) within the endpoint's connect
//! timeout, then hyper's HTTP/1 or HTTP/2 handshake; the connection is
//! driven by a task of the worker that made it.
//!
//! What the connection speaks follows the version's `protocol`: HTTP/1.1;
//! h2c by prior knowledge in the clear; h2 by ALPN over TLS (an upstream
//! that does not agree to h2 is refused); `auto` over TLS takes what ALPN
//! picks and remembers it for the endpoint.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::pool::Sender;
use super::request_body::RequestBody;
use crate::config::Protocol;
use crate::endpoint::{Endpoint, Wire};
use crate::error::ProxyError;
use crate::tls::UpstreamTls;

/// An upstream HTTP/1 connection's read buffer at most, in bytes: the most
/// it reads ahead of the client in one go, and the longest response head it
/// takes. Every body chunk pins the buffer it was read into while it waits
/// for a slow client, so this is most of what a slow reader costs, and a
/// response that fits costs one read (docs/benchmarks.md, slow readers: 64
/// KiB cost 249 KiB per slow reader, 32 KiB 149, 16 KiB 99; but 16 KiB made
/// 16 KiB responses ~20 % dearer in CPU, two reads each).
const UPSTREAM_MAX_BUF: usize = 32 * 1024;
/// HTTP/2 flow-control windows: what an upstream may send ahead of the
/// client reading it, per stream and per connection (h2's 64 KiB default
/// would make a 4 MiB gRPC message take 64 round trips).
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// Pings keep an idle h2 connection known to be alive; one not answered in
/// time closes the connection (and its pool entry).
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 side of a connection: clonable, one clone per stream.
pub type H2Sender = http2::SendRequest<RequestBody>;

/// A new connection, in what it speaks.
pub enum Connected {
    H1(Sender),
    /// With the peer's `MAX_CONCURRENT_STREAMS` as the connection knows it,
    /// kept current by the connection's task.
    H2(H2Sender, Arc<AtomicUsize>),
}

/// A new connection to `endpoint`, driven by a task of this worker.
pub async fn connect(endpoint: &Endpoint) -> Result<Connected, ProxyError> {
    let limit = endpoint.connect_timeout;
    let tcp = match tokio::time::timeout(limit, TcpStream::connect(endpoint.address.as_str())).await
    {
        Err(_) => return Err(ProxyError::Timeout),
        Ok(Err(e)) => return Err(ProxyError::Connect(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &endpoint.tls else {
        let io = TokioIo::new(tcp);
        return match endpoint.wire().unwrap_or(Wire::H1) {
            Wire::H1 => h1(io).await,
            Wire::H2 => h2(io).await,
        };
    };
    let name = server_name(endpoint, tls)?;
    let connector = TlsConnector::from(Arc::clone(&tls.config));
    let stream = match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Err(_) => return Err(ProxyError::Timeout),
        Ok(Err(e)) => return Err(ProxyError::Connect(format!("TLS: {e}"))),
        Ok(Ok(stream)) => stream,
    };
    let wire = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Wire::H2,
        _ => Wire::H1,
    };
    match endpoint.protocol {
        Protocol::H2 if wire != Wire::H2 => {
            return Err(ProxyError::Connect(
                "the upstream did not agree to h2 (ALPN)".into(),
            ))
        }
        Protocol::Auto => endpoint.negotiated(wire),
        Protocol::H2 | Protocol::Http1 => {}
    }
    let io = TokioIo::new(stream);
    match wire {
        Wire::H1 => h1(io).await,
        Wire::H2 => h2(io).await,
    }
}

/// The name the upstream's certificate must carry: `server_name`, else the
/// endpoint's host.
fn server_name(endpoint: &Endpoint, tls: &UpstreamTls) -> Result<ServerName<'static>, ProxyError> {
    if let Some(name) = &tls.server_name {
        return Ok(name.clone());
    }
    let host = endpoint.authority.host();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| ProxyError::Connect(format!("no TLS name for {host:?}: {e}")))
}

async fn h1<I>(io: I) -> Result<Connected, ProxyError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        // Bounds what one connection buffers from a fast upstream for a slow
        // client (hyper's default grows to ~400 KiB); a response head must
        // fit in it.
        .max_buf_size(UPSTREAM_MAX_BUF)
        .handshake(io)
        .await
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::trace!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Connected::H1(sender))
}

async fn h2<I>(io: I) -> Result<Connected, ProxyError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(io)
        .await
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    let max_streams = Arc::new(AtomicUsize::new(connection.current_max_send_streams()));
    let published = Arc::clone(&max_streams);
    tokio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let ended = std::future::poll_fn(|cx| {
            let polled = connection.as_mut().poll(cx);
            // SETTINGS from the peer may have changed it.
            published.store(connection.current_max_send_streams(), Ordering::Relaxed);
            polled
        })
        .await;
        if let Err(e) = ended {
            tracing::trace!(error = %e, "upstream h2 connection ended with an error");
        }
    });
    Ok(Connected::H2(sender, max_streams))
}
