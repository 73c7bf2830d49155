//! New upstream HTTP/1.1 connections for the workers' own pools: TCP within
//! the endpoint's connect timeout, then hyper's HTTP/1 handshake; the
//! connection is driven by a task of the worker that made it.

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pool::Sender;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;

/// The most an upstream connection reads ahead of the client, in bytes.
const UPSTREAM_MAX_BUF: usize = 64 * 1024;

/// A new HTTP/1.1 connection to `endpoint`, driven by a task of this worker.
pub async fn connect(endpoint: &Endpoint) -> Result<Sender, ProxyError> {
    let connecting = TcpStream::connect(endpoint.address.as_str());
    let stream = match tokio::time::timeout(endpoint.connect_timeout, connecting).await {
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
