//! Every error answer the gateway gives, and the limits that cause them: each
//! is a short body carrying the request id, and none disturbs other clients.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RAW_TIMEOUT: Duration = Duration::from_secs(5);

fn status_of(raw: &str) -> &str {
    raw.split(' ').nth(1).unwrap_or("")
}

/// Asserts a raw answer has the status and a body naming its request id.
fn assert_error_answer(raw: &str, status: &str) {
    assert_eq!(status_of(raw), status, "{raw}");
    let lower = raw.to_lowercase();
    let id = lower
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no request id in {raw}"));
    let body = lower.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(
        body.contains(&id),
        "body does not carry the request id: {raw}"
    );
}

async fn gateway_to(
    endpoint: std::net::SocketAddr,
    backend_extra: &str,
    top_extra: &str,
) -> TestGateway {
    TestGateway::start(&single(&[endpoint], backend_extra, top_extra))
}

#[tokio::test]
async fn no_matching_route_is_404() {
    let backend = Backend::start("b").await;
    let yaml = format!(
        "{}routes:\n  - name: users\n    match: {{ host: api.example.com, path_prefix: /users }}\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n",
        head(1),
        backend.addr()
    );
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    let ok = client
        .get_with(&gw.url("/users/7"), &[("host", "API.example.com:8080")])
        .await;
    assert_eq!(ok.status, 200);
    for (host, path) in [
        ("api.example.com", "/usersx"),
        ("other.com", "/users"),
        ("api.example.com", "/"),
    ] {
        let resp = client.get_with(&gw.url(path), &[("host", host)]).await;
        assert_eq!(resp.status, 404, "{host}{path}");
        let id = resp.header("x-request-id").expect("id");
        assert!(resp.text().contains(id));
    }
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn refused_reset_and_garbage_upstreams_are_502() {
    let (reset, _r) = Backend::reset_on_connect().await;
    let (garbage, _g) = Backend::garbage().await;
    let client = Client::new();
    for (what, addr) in [
        ("refused", Backend::closed_port()),
        ("reset", reset),
        ("garbage", garbage),
    ] {
        let gw = gateway_to(addr, "", "").await;
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 502, "{what}: {}", resp.text());
        assert!(
            resp.text()
                .contains(resp.header("x-request-id").expect("id")),
            "{what}"
        );
    }
}

/// An endpoint that dies with a request in flight (it read the request and
/// reset the connection) costs a bodiless idempotent request nothing: it goes
/// to another endpoint of the version, and the reset still counts against
/// the endpoint. A request with a body, which may have been acted on, is not
/// sent twice: the client gets the 502.
#[tokio::test]
async fn a_get_reset_by_its_endpoint_goes_to_another_a_post_does_not() {
    let (dying, raw) = Backend::reset_after_request().await;
    let healthy = Backend::start("v1").await;
    let yaml = single(
        &[dying, healthy.addr()],
        "load_balancing: round_robin\noutlier: { consecutive_failures: 1000 }",
        "",
    );
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(client.post(&gw.url("/"), "an order").await.status);
    }
    assert_eq!(
        posts.iter().filter(|s| **s == 502).count(),
        2,
        "round robin sends every other POST to the dying endpoint: {posts:?}"
    );
    for _ in 0..10 {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert!(
        raw.accepted() >= 7,
        "the dying endpoint saw {} connections",
        raw.accepted()
    );
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    let resets = sample(
        &all,
        "switchyard_upstream_errors_total",
        &[("kind", "reset")],
    );
    assert_eq!(resets, 7.0, "2 POSTs and 5 GETs reset, each counted");
}

/// An upstream response head is taken up to 32 KiB (the upstream read
/// buffer); a longer one is the upstream breaking the protocol: 502, counted
/// as `kind="protocol"`.
#[tokio::test]
async fn an_upstream_response_head_over_32_kib_is_502() {
    let backend = Backend::start("v1").await;
    let gw = gateway_to(backend.addr(), "", "").await;
    head_limit_holds(&gw).await;
}

/// The same limit on an h2 upstream's header block (SETTINGS_MAX_HEADER_LIST_SIZE).
#[tokio::test]
async fn an_h2_upstream_response_head_over_32_kib_is_502() {
    let backend = Backend::start("v1").await;
    let yaml = single(&[backend.addr()], "", "").replace("\"] }", "\"], protocol: h2 }");
    assert!(yaml.contains("protocol: h2"), "{yaml}");
    let gw = TestGateway::start(&yaml);
    head_limit_holds(&gw).await;
    let seen = backend.requests();
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_2));
}

/// A 30,000-byte header passes; a 40,000-byte one is a 502 counted as a
/// protocol error.
async fn head_limit_holds(gw: &TestGateway) {
    let client = Client::new();
    let fits = client.get(&gw.url("/head-bytes/30000")).await;
    assert_eq!(fits.status, 200, "{}", fits.text());
    assert_eq!(fits.header("x-fill").map(str::len), Some(30000));
    let over = client.get(&gw.url("/head-bytes/40000")).await;
    assert_eq!(over.status, 502, "{}", over.text());
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    let protocol = sample(
        &all,
        "switchyard_upstream_errors_total",
        &[("kind", "protocol")],
    );
    assert_eq!(protocol, 1.0);
}

#[tokio::test]
async fn an_upstream_slower_than_the_route_timeout_is_504() {
    let (silent, _s) = Backend::silent().await;
    let yaml = format!(
        "{}routes:\n  - name: all\n    backend: app\n    timeout: 300ms\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{silent}\"] }}\n",
        head(1)
    );
    let gw = TestGateway::start(&yaml);
    let started = Instant::now();
    let resp = Client::new().get(&gw.url("/")).await;
    assert_eq!(resp.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(resp
        .text()
        .contains(resp.header("x-request-id").expect("id")));
}

/// The timer for the response head is kept from one request of a connection
/// to the next: each request still gets its own route's timeout, shorter or
/// longer than the one before, after it fired or not.
#[tokio::test]
async fn requests_on_one_connection_each_get_their_route_timeout() {
    let (silent, _s) = Backend::silent().await;
    let slow = Backend::start("slow").await;
    slow.set_mode(Mode::Delay(Duration::from_millis(600)));
    let yaml = format!(
        "{}routes:\n  - name: short\n    match: {{ path_prefix: /short }}\n    backend: silent\n    timeout: 300ms\n  - name: long\n    backend: slow\n    timeout: 3s\nbackends:\n  silent:\n    versions:\n      v1: {{ endpoints: [\"{silent}\"] }}\n  slow:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n",
        head(1),
        slow.addr()
    );
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    for round in 0..2 {
        let started = Instant::now();
        let resp = client.get(&gw.url("/short")).await;
        assert_eq!(resp.status, 504, "round {round}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
            "round {round}: the short route timed out after {took:?}"
        );
        let resp = client.get(&gw.url("/long")).await;
        assert_eq!(resp.status, 200, "round {round}: {}", resp.text());
    }
    assert_eq!(slow.hits(), 2);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_without_reaching_the_upstream() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "limits:\n  max_body_bytes: 1000\n").await;
    let raw = raw_request(
        gw.addr(),
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
        RAW_TIMEOUT,
    )
    .await;
    assert_error_answer(&raw, "413");
    assert!(
        raw.to_lowercase().contains("connection: close"),
        "unread body ends the connection: {raw}"
    );
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_chunked_body_growing_over_the_limit_is_413() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "limits:\n  max_body_bytes: 1000\n").await;
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"190\r\n");
        req.extend_from_slice(&[b'a'; 0x190]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_request(gw.addr(), &req, RAW_TIMEOUT).await;
    assert_error_answer(&raw, "413");
}

#[tokio::test]
async fn an_oversized_request_head_is_431() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "limits:\n  max_header_bytes: 4096\n").await;
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    req.extend_from_slice(format!("x-big: {}\r\n\r\n", "y".repeat(5000)).as_bytes());
    let raw = raw_request(gw.addr(), &req, RAW_TIMEOUT).await;
    assert_error_answer(&raw, "431");
    // Just under the limit passes.
    let mut ok = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    ok.extend_from_slice(format!("x-big: {}\r\n\r\n", "y".repeat(3900)).as_bytes());
    assert_eq!(
        status_of(&raw_request(gw.addr(), &ok, RAW_TIMEOUT).await),
        "200"
    );
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn ambiguous_framing_is_400_and_never_reaches_the_upstream() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "").await;
    let cases: [&[u8]; 3] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ];
    for case in cases {
        let raw = raw_request(gw.addr(), case, RAW_TIMEOUT).await;
        assert_error_answer(&raw, "400");
    }
    assert_eq!(backend.hits(), 0, "{:?}", backend.requests());
}

#[tokio::test]
async fn a_malformed_request_line_is_400() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "").await;
    let raw = raw_request(
        gw.addr(),
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        RAW_TIMEOUT,
    )
    .await;
    assert_eq!(status_of(&raw), "400", "{raw}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_slow_request_head_gets_408_while_other_clients_are_served() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(
        backend.addr(),
        "",
        "limits:\n  header_read_timeout: 500ms\n",
    )
    .await;
    let mut slow = TcpStream::connect(gw.addr()).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    // Meanwhile another client is served normally.
    let client = Client::new();
    for _ in 0..10 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut got))
        .await
        .expect("slow connection is cut in time")
        .expect("read");
    let raw = String::from_utf8_lossy(&got).to_string();
    assert_error_answer(&raw, "408");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "cut after {waited:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "limits:\n  idle_timeout: 400ms\n").await;
    let mut conn = TcpStream::connect(gw.addr()).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let got = read_until_closed(&mut conn, Duration::from_secs(5))
        .await
        .expect("idle connection not closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_new_connection_that_sends_nothing_is_closed_after_header_read_timeout() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(
        backend.addr(),
        "",
        "limits:\n  header_read_timeout: 400ms\n  idle_timeout: 60s\n",
    )
    .await;
    let mut conn = TcpStream::connect(gw.addr()).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("a silent connection is closed well before idle_timeout");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "closed too early: {waited:?}"
    );
}

#[tokio::test]
async fn a_client_that_reads_nothing_of_a_response_is_cut_after_idle_timeout() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "limits:\n  idle_timeout: 500ms\n").await;
    let mut conn = TcpStream::connect(gw.addr()).await.expect("connect");
    // 64 MiB: far more than the socket buffers on both sides hold.
    let size = 64 << 20;
    conn.write_all(format!("GET /bytes/{size} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // Read nothing for well over idle_timeout...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...then everything: a cut connection ends short of the body; one left
    // open would deliver the whole response and stay open (keep-alive).
    let total = read_until_closed(&mut conn, Duration::from_secs(10))
        .await
        .expect("the stalled connection was never closed")
        .len();
    assert!(
        total < size,
        "read {total} bytes: the whole response came through"
    );
}

#[tokio::test]
async fn connections_over_max_connections_wait_until_a_slot_frees() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(backend.addr(), "", "limits:\n  max_connections: 2\n").await;
    // Two connections busy with a request head (not idle, so not evictable).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(gw.addr()).await.expect("connect");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        held.push(conn);
    }
    // A third connection is accepted by the kernel but not served.
    let url = gw.url("/");
    let third = tokio::spawn(async move { Client::without_pool().get(&url).await.status });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served beyond max_connections");
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot frees");
    assert_eq!(status.expect("task"), 200);
}

#[tokio::test]
async fn a_waiting_connection_gets_the_first_slot_that_goes_idle() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(
        backend.addr(),
        "",
        "limits:\n  max_connections: 2\n  idle_timeout: 60s\n",
    )
    .await;
    // Two requests in flight on two keep-alive connections.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(gw.addr()).await.expect("connect");
        conn.write_all(b"GET /delay/600 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        busy.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third waits for a slot: every connection is busy, none evictable.
    let url = gw.url("/");
    let started = Instant::now();
    let third = tokio::spawn(async move { Client::without_pool().get(&url).await.status });
    // The two finish and stay open, idle on keep-alive (60 s idle_timeout).
    let mut buf = [0u8; 1024];
    for conn in &mut busy {
        let n = conn.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let status = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("the waiting connection is served once a slot goes idle, not at idle_timeout");
    assert_eq!(status.expect("task"), 200);
    let waited = started.elapsed();
    eprintln!("served {waited:?} after it arrived (the busy ones took 600 ms)");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn at_max_connections_idle_connections_are_closed_to_admit_new_ones() {
    let backend = Backend::start("b").await;
    let gw = gateway_to(
        backend.addr(),
        "",
        "limits:\n  max_connections: 3\n  header_read_timeout: 60s\n  idle_timeout: 60s\n",
    )
    .await;
    // One keep-alive connection between requests, then two that sent nothing:
    // every slot is taken, by idle connections only.
    let mut keep_alive = TcpStream::connect(gw.addr()).await.expect("connect");
    keep_alive
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = keep_alive.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(gw.addr()).await.expect("connect"));
    }
    // Let the gateway accept both before the next one arrives.
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend_connections_open(&gw).await < 3 {
        assert!(
            Instant::now() < deadline,
            "the idle connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new client is served at once (well before any timeout)...
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        Client::without_pool().get(&gw.url("/")),
    )
    .await
    .expect("a new client is admitted by closing idle connections")
    .status;
    assert_eq!(status, 200);
    // ...and the idle connections were closed, without an answer.
    let mut closed = 0;
    for conn in silent.iter_mut().chain(std::iter::once(&mut keep_alive)) {
        match tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(n)) => panic!("an idle connection got {n} bytes"),
            Err(_) => {}
        }
    }
    assert_eq!(closed, 3, "every idle connection was closed (one batch)");
}

/// The gateway's open client connections, from its metrics.
async fn backend_connections_open(gw: &TestGateway) -> u64 {
    let metrics = Client::without_pool()
        .get(&gw.admin_url("/metrics"))
        .await
        .text();
    metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_active_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn an_upstream_that_never_completes_the_connect_is_cut_at_connect_timeout() {
    // A listener that never accepts, with its accept queue filled: the
    // kernel drops further SYNs, so a connect hangs until our timeout.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let attempt =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await;
        match attempt {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break, // the queue is full: connects now hang
        }
    }
    let gw = gateway_to(addr, "connect_timeout: 300ms", "").await;
    let started = Instant::now();
    let resp = Client::new().get(&gw.url("/")).await;
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn a_keep_alive_connection_parked_between_requests_serves_the_next_ones() {
    let backend = Backend::start("b").await;
    // A 1 s head timeout makes the guard look every 250 ms.
    let gw = gateway_to(
        backend.addr(),
        "",
        "limits:\n  idle_timeout: 10s\n  header_read_timeout: 1s\n",
    )
    .await;
    let mut conn = TcpStream::connect(gw.addr()).await.expect("connect");
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..3 {
        // Idle well past the park delay (250 ms, seen within a tick) before
        // each request but the first: the socket waits without its hyper
        // connection, and the next request wakes a new one on the same socket.
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        // A head split across two writes, to cross the first-byte hand-over.
        conn.write_all(b"G").await.expect("write");
        conn.write_all(b"ET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("answered")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(text.starts_with("HTTP/1.1 200"), "request {i}: {text}");
        assert!(text.ends_with("\r\n\r\nxxxxx"), "request {i}: {text}");
    }
    // One TCP connection carried all three, parked in between.
    assert_eq!(backend.requests().len(), 3);
    assert!(gw.gateway.parks() >= 2);
}

#[tokio::test]
async fn a_connection_whose_request_had_a_body_is_not_parked() {
    // hyper may hold bytes after a body the guard did not scan (a pipelined
    // request): such a connection keeps its hyper connection.
    let backend = Backend::start("b").await;
    let gw = gateway_to(
        backend.addr(),
        "",
        "limits:\n  idle_timeout: 10s\n  header_read_timeout: 1s\n",
    )
    .await;
    let mut conn = TcpStream::connect(gw.addr()).await.expect("connect");
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    conn.write_all(b"GET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let n = conn.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(gw.gateway.parks(), 0);
}
