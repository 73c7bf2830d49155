//! Failing backends (issue 9, point 4): an upstream that dies mid-response,
//! stalls mid-body, or restarts under load. The client must get a truncated
//! response or a reset within a bounded time, never a hang, and the pool must
//! recover after a restart with no lasting errors.
//!
//! Covered elsewhere, not repeated here: an upstream that accepts and never
//! answers (504 at the route timeout) and one answering garbage (502) in
//! `tests/errors.rs`; reset on connect (502 and outlier ejection) in
//! `tests/errors.rs` and `tests/release.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the scripted upstream ends the connection after its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// FIN after the bytes.
    Close,
    /// RST after the bytes (SO_LINGER 0).
    Reset,
    /// Keeps the connection open and silent until the server is dropped.
    Stall,
}

/// A raw upstream that reads a request head, writes `reply` and ends the
/// connection as `end` says. Stops (dropping every connection) when dropped.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Scripted {
    async fn start(reply: &'static [u8], end: End) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (count, held) = (Arc::clone(&accepted), Arc::clone(&conns));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let conn = tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                    })
                    .await;
                    let _ = stream.write_all(reply).await;
                    let _ = stream.flush().await;
                    match end {
                        End::Close => {
                            let _ = stream.shutdown().await;
                        }
                        End::Reset => {
                            let _ = stream.set_zero_linger();
                        }
                        End::Stall => std::future::pending::<()>().await,
                    }
                    drop(stream);
                });
                held.lock().expect("conns").push(conn);
            }
        });
        Scripted {
            addr,
            accepted,
            task,
            conns,
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
        for conn in self.conns.lock().expect("conns").drain(..) {
            conn.abort();
        }
    }
}

/// What a raw client read, and whether the gateway ended the connection.
struct Read {
    bytes: Vec<u8>,
    ended: bool,
    took: Duration,
}

/// Sends one GET and reads until the gateway closes/resets or `limit`.
async fn raw_get(addr: SocketAddr, limit: Duration) -> Read {
    let started = Instant::now();
    let deadline = started + limit;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Err(_) => break false,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    Read {
        bytes,
        ended,
        took: started.elapsed(),
    }
}

const HEAD_1000: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789";
const CHUNKED_CUT: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n0123456789";

fn gateway(endpoint: SocketAddr) -> TestGateway {
    TestGateway::start(&single(&[endpoint], "", ""))
}

/// The gateway gave the head and the 10 bytes it had, then ended the
/// connection (FIN or reset) quickly; never the full length, never a hang.
fn assert_truncated(read: &Read, what: &str) {
    let text = String::from_utf8_lossy(&read.bytes);
    assert!(
        read.ended,
        "{what}: connection not ended after {:?}: {text:?}",
        read.took
    );
    assert!(
        read.took < Duration::from_secs(3),
        "{what}: took {:?}",
        read.took
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{what}: {text:?}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.contains("0123456789"), "{what}: {text:?}");
    assert!(
        !body.ends_with("0\r\n\r\n"),
        "{what}: a cut body must not look complete to the client: {text:?}"
    );
    if text.to_ascii_lowercase().contains("content-length: 1000") {
        assert!(body.len() < 1000, "{what}: {}", body.len());
    }
}

#[tokio::test]
async fn an_upstream_dying_mid_response_gives_a_truncated_answer_not_a_hang() {
    for (what, reply, end) in [
        ("content-length, FIN", HEAD_1000, End::Close),
        ("content-length, RST", HEAD_1000, End::Reset),
        ("chunked, FIN", CHUNKED_CUT, End::Close),
        ("chunked, RST", CHUNKED_CUT, End::Reset),
    ] {
        let upstream = Scripted::start(reply, end).await;
        let gw = gateway(upstream.addr);
        let read = raw_get(gw.addr(), Duration::from_secs(10)).await;
        assert_truncated(&read, what);
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1, "{what}");

        // A real client sees an error, not a complete body, and in time.
        let started = Instant::now();
        let result = Client::new()
            .with_timeout(Duration::from_secs(5))
            .try_request(
                http::Request::get(gw.url("/again"))
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            )
            .await;
        assert!(
            result.is_err(),
            "{what}: {:?}",
            result.map(|r| r.body.len())
        );
        let err = format!("{:?}", result.err());
        assert!(!err.contains("timed out"), "{what}: {err}");
        assert!(started.elapsed() < Duration::from_secs(3), "{what}");
    }
}

#[tokio::test]
async fn an_upstream_stalling_mid_body_is_cut_in_bounded_time() {
    let upstream = Scripted::start(HEAD_1000, End::Stall).await;
    let yaml = format!(
        "{}routes:\n  - name: all\n    backend: app\n    timeout: 500ms\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n",
        head(1),
        upstream.addr
    );
    let gw = TestGateway::start(&yaml);
    let read = raw_get(gw.addr(), Duration::from_secs(5)).await;
    assert_truncated(&read, "stalled body");
}

/// 4 clients loop on the gateway for 5 s; at 1.5 s the only backend goes
/// away, at 2.5 s a new one starts on the same address. Every error must fall
/// in the outage (from the drop until shortly after the restart), every
/// request in the last 2 s must succeed, and none may hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_restarting_under_load_recovers_with_no_lasting_errors() {
    const CLIENTS: usize = 4;
    const RUN: Duration = Duration::from_secs(5);
    const DROP_AT: Duration = Duration::from_millis(1500);
    const RESTART_AT: Duration = Duration::from_millis(2500);
    /// Errors are allowed up to this long after the restart completed.
    const GRACE: Duration = Duration::from_millis(500);

    let backend = Backend::start("first").await;
    let addr = backend.addr();
    let gw = TestGateway::start(&single(&[addr], "", ""));
    let url = gw.url("/");
    let t0 = Instant::now();

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let client = Client::new().with_timeout(Duration::from_secs(3));
            // (offset from t0, ok, served-by)
            let mut log: Vec<(Duration, bool, String)> = Vec::new();
            while t0.elapsed() < RUN && log.len() < 20_000 {
                let req = http::Request::get(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let result = client.try_request(req).await;
                let at = t0.elapsed();
                match result {
                    Ok(resp) if resp.status == 200 => {
                        log.push((at, true, resp.header(SERVED_BY).unwrap_or("").to_owned()))
                    }
                    Ok(resp) => log.push((at, false, resp.status.to_string())),
                    Err(e) => log.push((at, false, e.to_string())),
                }
                if !log.last().is_some_and(|l| l.1) {
                    // Failing fast (refused upstream): do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            log
        }));
    }

    tokio::time::sleep_until(t0 + DROP_AT).await;
    drop(backend);
    tokio::time::sleep_until(t0 + RESTART_AT).await;
    let second = Backend::start_at("second", addr).await;
    let restarted = t0.elapsed();

    let mut total = 0;
    let mut errors = Vec::new();
    let mut late_ok = 0;
    for client in clients {
        let log = tokio::time::timeout(Duration::from_secs(15), client)
            .await
            .expect("client loop ends: no hang")
            .expect("client task");
        assert!(log.len() >= 20, "too few requests: {}", log.len());
        // The last 20 requests of every client succeed, on the new backend.
        for (at, ok, detail) in &log[log.len() - 20..] {
            assert!(ok, "late failure at {at:?}: {detail}");
            assert_eq!(
                detail, "second",
                "late answer at {at:?} not from the new backend"
            );
        }
        late_ok += log
            .iter()
            .filter(|(at, ok, _)| *ok && *at > restarted + GRACE)
            .count();
        total += log.len();
        errors.extend(log.into_iter().filter(|l| !l.1));
    }
    // Errors only during the outage: from the drop until the grace after the
    // restart; none before it, none lasting after.
    for (at, _, detail) in &errors {
        assert!(
            *at >= DROP_AT && *at <= restarted + GRACE,
            "error outside the outage at {at:?} (restart done at {restarted:?}): {detail}"
        );
    }
    assert!(late_ok > 0, "no request succeeded after the restart");
    assert!(
        errors.len() < total,
        "{} errors of {total} requests",
        errors.len()
    );
    assert!(
        second.hits() >= late_ok,
        "the new backend served {} < {late_ok}",
        second.hits()
    );
    eprintln!(
        "restart under load: {total} requests, {} errors, all within [{DROP_AT:?}, {:?}]",
        errors.len(),
        restarted + GRACE
    );
}

#[tokio::test]
async fn a_refused_connection_is_tried_again_on_another_endpoint() {
    let live = Backend::start("live").await;
    // A port nobody listens on: every connect is refused.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    // Outlier ejection off (a huge threshold), so the dead endpoint keeps
    // being picked and every request that lands on it needs the retry.
    let gw = TestGateway::start(&single(
        &[dead, live.addr()],
        "outlier: { consecutive_failures: 1000, ejection_time: 1s }",
        "",
    ));
    let client = Client::new();
    for i in 0..20 {
        let resp = client.get(&gw.url(&format!("/n{i}"))).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    assert_eq!(live.hits(), 20);
    // Round robin sent half of them to the dead endpoint first.
    let metrics = Client::new().get(&gw.admin_url("/metrics")).await.text();
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_upstream_errors_total{") && l.contains("connect"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(refused >= 8.0, "connect errors recorded: {refused}");
}
