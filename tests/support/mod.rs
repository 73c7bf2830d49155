//! Shared helpers for Switchyard's integration tests.
//!
//! Include it from a test file with `mod support;` and `use support::*;`.
//!
//! What is here:
//!
//! * [`Backend`]: a real HTTP/1.1 upstream (hyper `server::conn::http1`, upgrades
//!   enabled) that names itself in `x-served-by`, counts and records requests,
//!   and has special paths (`/echo`, `/headers`, `/status/{code}`, `/delay/{ms}`,
//!   `/bytes/{n}`, `/upload`, `/ws`) and a switchable failure [`Mode`].
//! * Broken upstreams: [`Backend::closed_port`] (nothing listens),
//!   [`Backend::reset_on_connect`], [`Backend::reset_after_request`],
//!   [`Backend::garbage`] and [`Backend::silent`], each a [`RawServer`].
//! * [`Client`]: a hyper-util legacy client (HTTP/1.1, or h2c with
//!   [`Client::h2c`]) whose helpers return a fully collected [`Resp`].
//! * [`raw_request`]: write raw bytes to a socket and read what comes back.
//! * [`Dns`]: dnsmasq on 127.0.0.1 answering `*.fleet.test` from a hosts
//!   file the test rewrites, for endpoint discovery.
//! * [`poll_until`]: poll a condition every 20 ms instead of sleeping blindly.
//!
//! Every server binds `127.0.0.1:0`, runs as tokio tasks on the current
//! runtime, and stops when its handle is dropped: the listener closes and
//! every connection it accepted (including upgraded ones) is dropped. The stop
//! is asynchronous (tasks are woken, not joined), so a test that drops a server
//! and then expects "connection refused" should poll with [`poll_until`].

#![allow(dead_code)]

mod backend;
mod client;
mod dns;
mod gateway;
mod metrics;
mod process;
mod raw;
mod tls;
mod tools;
mod ws;

// Re-exports for `use support::*;`. A test file that leaves some unused must
// not warn, hence the allow (dead_code alone does not cover imports).
#[allow(unused_imports)]
pub use backend::{Backend, Mode, Recorded, SERVED_BY};
#[allow(unused_imports)]
pub use client::{body_channel, BoxError, ChannelBody, Client, Resp};
#[allow(unused_imports)]
pub use dns::{pods, Dns};
#[allow(unused_imports)]
pub use gateway::{canary, head, single, TestGateway};
#[allow(unused_imports)]
pub use metrics::{metric, sample, samples};
#[allow(unused_imports)]
pub use process::{start_demo_fast, Process, BIN};
#[allow(unused_imports)]
pub use raw::{RawServer, GARBAGE};
#[allow(unused_imports)]
pub use tls::{tls_connect, Ca, Leaf};
#[allow(unused_imports)]
pub use tools::require;
#[allow(unused_imports)]
pub use ws::websocket_accept;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often [`poll_until`] re-evaluates its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` every [`POLL_INTERVAL`] until it returns `true` (then
/// returns `true`) or `timeout` has passed (then returns `false`). The
/// condition is always evaluated at least once, and once more at the deadline.
///
/// ```ignore
/// assert!(poll_until(Duration::from_secs(5), || async { backend.hits() >= 3 }).await);
/// ```
pub async fn poll_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Opens a TCP connection to `addr`, writes `bytes`, then reads until the
/// peer closes, the connection errors (e.g. a reset), or `timeout` (counted
/// from the call, covering connect + write + read) expires. Returns what was
/// read as lossy UTF-8.
///
/// The write side is never shut down, so a keep-alive server answering a valid
/// request will not close: send `Connection: close` if you want the read to
/// end before the timeout. Panics only if the connection cannot be opened.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .expect("raw_request: connect timed out")
        .expect("raw_request: connect failed");
    let _ = stream.set_nodelay(true);
    // A server may legitimately answer (and close) before reading everything,
    // so a failed or timed-out write is not an error here: read what came back.
    let _ = tokio::time::timeout_at(deadline, stream.write_all(bytes)).await;

    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `stream` until the peer closes it (end of stream or an error), at
/// most `limit`. Returns what was read, or `None` if it was still open then.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

// ---------------------------------------------------------------------------
// Task lifetime plumbing shared by the servers in this module.
// ---------------------------------------------------------------------------

/// Owned by a server handle. Dropping it (a) drops the watch sender, which
/// wakes every task spawned with [`spawn_guarded`] for this server so it
/// returns, dropping its socket, and (b) aborts the accept task outright.
pub struct StopGuard {
    _tx: watch::Sender<()>,
    accept_task: JoinHandle<()>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Starts a server: creates the stop channel, spawns the accept loop that
/// `make_accept_loop` builds from the stop receiver, and returns the guard.
pub fn start_guarded<F, Fut>(make_accept_loop: F) -> StopGuard
where
    F: FnOnce(watch::Receiver<()>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = watch::channel(());
    let accept_task = spawn_guarded(&rx, make_accept_loop(rx.clone()));
    StopGuard {
        _tx: tx,
        accept_task,
    }
}

/// Spawns `fut` on the current runtime; it is cancelled (dropped) as soon as
/// the server owning `stop` is dropped. No value is ever sent on the channel,
/// so `changed()` only completes (with `Err`) once the sender is gone.
fn spawn_guarded<F>(stop: &watch::Receiver<()>, fut: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = fut => {}
            _ = stop.changed() => {}
        }
    })
}
