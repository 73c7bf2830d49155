//! Whose failure (SPEC §3): every way a request can end, through the real
//! gateway, against a healthy canary at weight 50 with analysis on. What
//! the client abandons — uploads cut short (HTTP/1.1 close, h2 RST_STREAM),
//! uploads that stall past the route timeout, connections closed before or
//! during the answer — is counted in `switchyard_client_aborts_total` and
//! nowhere against a version: no upstream error, no outlier step, nothing in
//! the analysis window, no retry on stable, no rollback. What the upstream
//! does (a reset mid-upload) still counts and still rolls the canary back.
//! The table in `docs/attribution.md` names the test of each row.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use support::*;
use switchyard::release::progress::Phase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A canary at 50 % with fast analysis, outlier ejection after 3 failures,
/// retry on stable, and a 1 s route timeout.
fn config(v1: &Backend, v2: std::net::SocketAddr) -> String {
    canary(
        v1.addr(),
        v2,
        50.0,
        "retry_on_stable: true\nanalysis: { interval: 100ms, window: 10s, min_requests: 5, max_error_rate: 0.05, max_p99_latency: 2s }",
    )
    .replace(
        "    backend: app\n",
        "    backend: app\n    timeout: 1s\n",
    )
    .replace(
        "    release:\n",
        "    outlier: { consecutive_failures: 3, ejection_time: 30s }\n    release:\n",
    )
}

/// What the gateway counted: client aborts, upstream errors per version,
/// and the two versions' window errors and requests, from `/status` and
/// `/metrics`.
struct Counted {
    aborts: f64,
    upstream_errors: f64,
    window_errors: u64,
    window_requests: u64,
    ejected: bool,
    phase: String,
}

async fn counted(gw: &TestGateway) -> Counted {
    let client = Client::new();
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    let status: serde_json::Value =
        serde_json::from_slice(&client.get(&gw.admin_url("/status")).await.body)
            .expect("status JSON");
    let app = &status["backends"]["app"];
    let versions = app["versions"].as_object().expect("versions");
    let window = |key: &str| {
        versions
            .values()
            .map(|v| v["window"][key].as_u64().unwrap_or(0))
            .sum()
    };
    let ejected = versions.values().any(|v| {
        v["endpoints"]
            .as_array()
            .is_some_and(|eps| eps.iter().any(|e| e["ejected"] == true))
    });
    Counted {
        aborts: sample(
            &all,
            "switchyard_client_aborts_total",
            &[("backend", "app")],
        ),
        upstream_errors: sample(
            &all,
            "switchyard_upstream_errors_total",
            &[("backend", "app")],
        ),
        window_errors: window("errors"),
        window_requests: window("requests"),
        ejected,
        phase: app["phase"].as_str().unwrap_or("").to_string(),
    }
}

/// Polls until `n` client aborts are counted; returns what was counted.
async fn aborts_reach(gw: &TestGateway, n: f64) -> Counted {
    let reached = poll_until(Duration::from_secs(5), || async {
        counted(gw).await.aborts >= n
    })
    .await;
    let now = counted(gw).await;
    assert!(reached, "client aborts: {} of {n}", now.aborts);
    now
}

/// Nothing against either version: the healthy canary keeps its release.
fn assert_nothing_against_the_versions(c: &Counted) {
    assert_eq!(c.upstream_errors, 0.0, "upstream errors counted");
    assert_eq!(c.window_errors, 0, "errors in an analysis window");
    assert!(!c.ejected, "an endpoint was ejected");
    assert_eq!(c.phase, "progressing", "the release moved");
}

/// Sends a POST head announcing 1,000 bytes and the first 100 of them.
async fn start_upload(gw: &TestGateway) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let head = "POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&[b'x'; 100]).await.expect("body");
    stream
}

/// Over h2, a POST announcing 1,000 bytes sends 100 of them; once the
/// backends together have seen `seen` requests, the client resets the stream.
async fn reset_upload(gw: &TestGateway, client: &Client, v1: &Backend, v2: &Backend, seen: usize) {
    let (tx, body) = body_channel();
    let request = Request::post(gw.url("/upload"))
        .header("content-length", "1000")
        .body(body)
        .expect("request");
    let sending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(request).await })
    };
    tx.send(Bytes::from(vec![b'x'; 100])).await.expect("chunk");
    backends_saw(v1, v2, seen).await;
    // Dropping the request's future and body resets the stream.
    sending.abort();
    drop(tx);
}

/// Polls until the backends together have seen `n` requests.
async fn backends_saw(v1: &Backend, v2: &Backend, n: usize) {
    let seen = poll_until(Duration::from_secs(5), || async {
        v1.hits() + v2.hits() >= n
    })
    .await;
    assert!(seen, "backends saw {} of {n}", v1.hits() + v2.hits());
}

#[tokio::test]
async fn uploads_cut_short_by_the_client_count_as_aborts_and_nothing_else() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&config(&v1, v2.addr()));
    for i in 0..20 {
        let stream = start_upload(&gw).await;
        // The upload reached an upstream before the client gave up.
        backends_saw(&v1, &v2, i + 1).await;
        drop(stream);
    }
    let c = aborts_reach(&gw, 20.0).await;
    assert_eq!(c.aborts, 20.0);
    assert_nothing_against_the_versions(&c);
    assert_eq!(v1.hits() + v2.hits(), 20, "an abandoned upload was retried");
    assert_eq!(c.window_requests, 0, "aborts in an analysis window");
}

#[tokio::test]
async fn h2_streams_reset_mid_upload_count_as_aborts_and_nothing_else() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&config(&v1, v2.addr()));
    let client = Client::h2c();
    for i in 0..10 {
        reset_upload(&gw, &client, &v1, &v2, i + 1).await;
    }
    let c = aborts_reach(&gw, 10.0).await;
    assert_eq!(c.aborts, 10.0);
    assert_nothing_against_the_versions(&c);
    assert_eq!(c.window_requests, 0);
}

/// The same through h2 upstreams: the gateway resets the upstream stream and
/// the exchange still names the client (an HTTP/1.1 client closing mid-body,
/// an h2 client resetting its stream).
#[tokio::test]
async fn uploads_cut_short_through_h2_upstreams_count_as_aborts_and_nothing_else() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let h2 = config(&v1, v2.addr()).replace("\"] }", "\"], protocol: h2 }");
    assert_eq!(h2.matches("protocol: h2").count(), 2, "{h2}");
    let gw = TestGateway::start(&h2);
    for i in 0..5 {
        let stream = start_upload(&gw).await;
        backends_saw(&v1, &v2, i + 1).await;
        drop(stream);
    }
    let client = Client::h2c();
    for i in 5..10 {
        reset_upload(&gw, &client, &v1, &v2, i + 1).await;
    }
    let c = aborts_reach(&gw, 10.0).await;
    assert_eq!(c.aborts, 10.0);
    assert_nothing_against_the_versions(&c);
    assert_eq!(v1.hits() + v2.hits(), 10, "an abandoned upload was retried");
    assert_eq!(c.window_requests, 0, "aborts in an analysis window");
}

#[tokio::test]
async fn an_upload_stalled_past_the_route_timeout_is_the_clients_408() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&config(&v1, v2.addr()));
    let mut stream = start_upload(&gw).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let c = aborts_reach(&gw, 1.0).await;
    assert_nothing_against_the_versions(&c);
    assert_eq!(c.window_requests, 0);
}

#[tokio::test]
async fn a_client_gone_before_the_answer_is_an_abort() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v1.set_mode(Mode::Delay(Duration::from_millis(1500)));
    v2.set_mode(Mode::Delay(Duration::from_millis(1500)));
    let gw = TestGateway::start(&config(&v1, v2.addr()));
    for i in 0..4 {
        let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .expect("request");
        backends_saw(&v1, &v2, i + 1).await;
        drop(stream);
    }
    let c = aborts_reach(&gw, 4.0).await;
    assert_nothing_against_the_versions(&c);
    assert_eq!(c.window_requests, 0, "an abandoned request was judged");
}

#[tokio::test]
async fn a_client_gone_during_the_answer_is_an_abort() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&config(&v1, v2.addr()));
    for _ in 0..4 {
        let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
        stream
            .write_all(b"GET /bytes/50000000 HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .expect("request");
        let mut buf = vec![0u8; 64 * 1024];
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0);
        drop(stream);
    }
    let c = aborts_reach(&gw, 4.0).await;
    assert_eq!(c.aborts, 4.0);
    // The answers began: each was an upstream success, nothing else.
    assert_eq!(c.upstream_errors, 0.0);
    assert_eq!(c.window_errors, 0);
    assert_eq!(c.window_requests, 4);
    assert!(!c.ejected);
}

#[tokio::test]
async fn a_canary_that_resets_uploads_is_still_rolled_back() {
    let v1 = Backend::start("v1").await;
    let (v2, _raw) = Backend::reset_after_request().await;
    // No ejection, so the canary keeps getting its share to be judged on.
    let yaml = config(&v1, v2).replace("consecutive_failures: 3", "consecutive_failures: 1000");
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    let body = vec![b'x'; 1000];
    for _ in 0..40 {
        let request = Request::post(gw.url("/upload"))
            .body(http_body_util::Full::new(Bytes::from(body.clone())))
            .expect("request");
        let _ = client.send(request).await;
    }
    let rolled_back = poll_until(Duration::from_secs(5), || async {
        counted(&gw).await.phase == "rolled_back"
    })
    .await;
    assert!(rolled_back, "phase {}", counted(&gw).await.phase);
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    let resets = sample(
        &all,
        "switchyard_upstream_errors_total",
        &[("version", "v2"), ("kind", "reset")],
    );
    assert!(resets >= 5.0, "resets counted: {resets}");
    assert_eq!(
        sample(&all, "switchyard_client_aborts_total", &[]),
        0.0,
        "an upstream reset is no client abort"
    );
    let state = gw.gateway.releases().await;
    assert_eq!(state[0].1.phase(), Phase::RolledBack);
}

#[tokio::test]
async fn a_request_moved_to_stable_after_a_refused_connect_is_a_fallback() {
    let v1 = Backend::start("v1").await;
    // No ejection: every canary pick meets the refused connect.
    let yaml = config(&v1, Backend::closed_port())
        .replace("consecutive_failures: 3", "consecutive_failures: 1000");
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    let refused = sample(
        &all,
        "switchyard_upstream_errors_total",
        &[("version", "v2"), ("kind", "connect")],
    );
    let fallbacks = sample(
        &all,
        "switchyard_version_fallbacks_total",
        &[("from", "v2"), ("to", "v1")],
    );
    assert!(refused > 0.0, "the canary was never tried");
    assert_eq!(fallbacks, refused, "every moved request is a fallback");
}

/// What the upstream does counts against its version, as before: each kind
/// of failure answered with its status, counted in
/// `switchyard_upstream_errors_total{kind}` and in the version's window
/// (5xx answers in the window only), never as a client abort.
#[tokio::test]
async fn every_upstream_failure_counts_against_its_version() {
    let (refused, reset, garbage, silent) = (
        Backend::closed_port(),
        Backend::reset_after_request().await,
        Backend::garbage().await,
        Backend::silent().await,
    );
    let failing = Backend::start("v1").await;
    failing.set_mode(Mode::Status(500));
    let cases = [
        (refused, 502, Some("connect")),
        (reset.0, 502, Some("reset")),
        (garbage.0, 502, Some("protocol")),
        (silent.0, 504, Some("timeout")),
        (failing.addr(), 500, None),
    ];
    let client = Client::new();
    for (addr, status, kind) in cases {
        let yaml = single(&[addr], "", "").replace(
            "    backend: app\n",
            "    backend: app\n    timeout: 500ms\n",
        );
        let gw = TestGateway::start(&yaml);
        for _ in 0..3 {
            assert_eq!(client.get(&gw.url("/")).await.status, status, "{kind:?}");
        }
        let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
        if let Some(kind) = kind {
            let counted = sample(&all, "switchyard_upstream_errors_total", &[("kind", kind)]);
            assert_eq!(counted, 3.0, "{kind}");
        }
        assert_eq!(sample(&all, "switchyard_client_aborts_total", &[]), 0.0);
        let status: serde_json::Value =
            serde_json::from_slice(&client.get(&gw.admin_url("/status")).await.body)
                .expect("status");
        let window = &status["backends"]["app"]["versions"]["v1"]["window"];
        assert_eq!(window["errors"], 3, "{kind:?}: {window}");
    }
}
