//! Broken upstreams built on raw TCP: refused, reset, garbage, silent.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::backend::Backend;
use super::{spawn_guarded, start_guarded, StopGuard};

/// What [`Backend::garbage`] answers with.
pub const GARBAGE: &[u8] = b"this is not http\r\n\r\n";

/// Handle of a raw TCP test server. Stops (closing the listener and every
/// connection it holds) when dropped.
pub struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _guard: StopGuard,
}

impl RawServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Backend {
    /// An address on 127.0.0.1 where nothing listens: connecting to it is
    /// refused. The port stays reserved for the rest of the test process (a
    /// bound but never-listening socket is deliberately leaked), so no later
    /// ephemeral bind in the same process can land on it by chance.
    pub fn closed_port() -> SocketAddr {
        let socket = TcpSocket::new_v4().expect("create TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("bound socket local_addr");
        // Bound, never listening: SYNs to it are answered with RST.
        std::mem::forget(socket);
        addr
    }

    /// Accepts each connection and immediately drops it with `SO_LINGER` 0,
    /// so the peer sees a TCP reset (connect succeeds; the first read or
    /// write fails with ECONNRESET, or reads EOF if the reset races the
    /// peer's write).
    pub async fn reset_on_connect() -> (SocketAddr, RawServer) {
        raw_server(|stream| async move {
            let _ = stream.set_zero_linger();
            drop(stream);
        })
        .await
    }

    /// Accepts each connection, reads until the end of a request head
    /// (`\r\n\r\n`, at most 1 s or 64 KiB), then resets it (`SO_LINGER` 0)
    /// without answering: "the upstream died mid-request".
    pub async fn reset_after_request() -> (SocketAddr, RawServer) {
        raw_server(|mut stream| async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while seen.len() < 64 * 1024 && !contains(&seen, b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            let _ = stream.set_zero_linger();
            drop(stream);
        })
        .await
    }

    /// Accepts each connection, reads once (waiting at most 500 ms), writes
    /// [`GARBAGE`] (`"this is not http\r\n\r\n"`) and closes. The close is
    /// graceful (FIN after the garbage, then the rest of the request is read
    /// and discarded for up to 2 s) so the garbage is not lost to a reset.
    pub async fn garbage() -> (SocketAddr, RawServer) {
        raw_server(|mut stream| async move {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
            let _ = stream.write_all(GARBAGE).await;
            let _ = stream.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        })
        .await
    }

    /// Accepts each connection and never answers: reads and discards what
    /// arrives (so the peer's writes never block) and holds the socket open,
    /// even after the peer's EOF, until the server is dropped.
    pub async fn silent() -> (SocketAddr, RawServer) {
        raw_server(|mut stream| async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            // Keep `stream` alive until the server's stop signal drops this task.
            std::future::pending::<()>().await;
            drop(stream);
        })
        .await
    }
}

/// Starts a raw TCP server on 127.0.0.1:0 that runs `per_conn` on each
/// accepted connection (as its own task, cancelled when the server stops).
async fn raw_server<F, Fut>(per_conn: F) -> (SocketAddr, RawServer)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw listener on 127.0.0.1:0");
    let addr = listener.local_addr().expect("raw listener local_addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let guard = start_guarded(move |stop| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                    spawn_guarded(&stop, per_conn(stream));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    let server = RawServer {
        addr,
        accepted,
        _guard: guard,
    };
    (addr, server)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
