//! New upstream connections for the workers' own pools: TCP (and, for a TLS
//! version, the rustls handshake with ALPN) within the endpoint's connect
//! timeout, then hyper's HTTP/1 handshake or the `h2` crate's; the connection is
//! driven by a task of the worker that made it.
//!
//! What the connection speaks follows the version's `protocol`: HTTP/1.1;
//! h2c by prior knowledge in the clear; h2 by ALPN over TLS (an upstream
//! that does not agree to h2 is refused); `auto` over TLS takes what ALPN
//! picks and remembers it for the endpoint.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use hyper::client::conn::http1;
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::h2_client::{self, H2Sender};
use super::pool::Sender;
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
        return match endpoint.wire().unwrap_or(Wire::H1) {
            Wire::H1 => h1(TokioIo::new(tcp)).await,
            Wire::H2 => h2(tcp).await,
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
    match wire {
        Wire::H1 => h1(TokioIo::new(stream)).await,
        Wire::H2 => h2(stream).await,
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

async fn h2<T>(io: T) -> Result<Connected, ProxyError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, max_streams) = h2_client::handshake(io).await?;
    Ok(Connected::H2(sender, max_streams))
}
