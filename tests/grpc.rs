//! gRPC and HTTP/2 upstreams (SPEC §9) with a real gRPC stack on both sides
//! of the gateway (tonic client, tonic server): every call kind through h2c
//! and h2/TLS listeners to h2c and h2/TLS upstreams, statuses and trailing
//! metadata intact, large messages, deadlines, the gateway's own errors as
//! gRPC answers, a failing gRPC canary rolled back, gRPC health probes,
//! GOAWAY under load, and plain HTTP/1.1 clients to an h2 upstream.

mod grpc_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use grpc_support::{EchoClient, GrpcServer, Msg, Reply};
use support::*;
use tonic::Code;

/// One h2 backend `app` (TLS to it with `ca_file` when given), the
/// listeners `extra_listener` adds, analysis as given.
fn single_h2(upstream: SocketAddr, upstream_tls: Option<&str>, top: &str) -> String {
    let tls = upstream_tls.map_or(String::new(), |ca| {
        format!(", tls: {{ ca_file: \"{ca}\", server_name: upstream.test }}")
    });
    format!(
        "{}{top}routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{upstream}\"], protocol: h2{tls} }}\n",
        head(1)
    )
}

/// A gRPC canary release at `weight` between two h2c servers.
fn canary_h2(v1: SocketAddr, v2: SocketAddr, weight: f64, release_extra: &str) -> String {
    canary(v1, v2, weight, release_extra)
        .replace(
            &format!("[\"{v1}\"] }}"),
            &format!("[\"{v1}\"], protocol: h2 }}"),
        )
        .replace(
            &format!("[\"{v2}\"] }}"),
            &format!("[\"{v2}\"], protocol: h2 }}"),
        )
}

/// Every call kind on `client`, answered by `name`.
async fn every_call_kind(client: &mut EchoClient, name: &str) {
    let unary = client.unary(Msg::text("hi")).await.expect("unary");
    assert_eq!(unary.get_ref().text, format!("{name}: hi"));
    assert_eq!(
        unary
            .metadata()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok()),
        Some(name)
    );
    let msg = Msg {
        count: 3,
        ..Msg::text("s")
    };
    let streamed = client.server_stream(msg).await.expect("server streaming");
    let texts: Vec<String> = streamed.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, [0, 1, 2].map(|i| format!("{name}: s #{i}")));
    let sent = vec![Msg::text("a"), Msg::text("b"), Msg::text("c")];
    let summed = client
        .client_stream(sent.clone())
        .await
        .expect("client streaming");
    assert_eq!(summed.text, format!("{name}: a,b,c (0 bytes)"));
    let echoed = client.bidi(sent).await.expect("bidi");
    let texts: Vec<String> = echoed.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["a", "b", "c"].map(|t| format!("{name}: {t}")));
}

#[tokio::test]
async fn every_call_kind_passes_h2c_to_h2c() {
    let server = GrpcServer::start("up").await;
    let gw = TestGateway::start(&single_h2(server.addr(), None, ""));
    let mut client = EchoClient::connect(gw.addr()).await;
    every_call_kind(&mut client, "up").await;
}

#[tokio::test]
async fn every_call_kind_passes_between_tls_and_cleartext_both_ways() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let upstream_leaf = ca.leaf(&["upstream.test"]);
    let (cert, key) = ca.leaf(&["gateway.test"]).write(dir.path(), "gateway");
    let tls_listener = format!(
        "listeners:\n  - name: https\n    bind: \"127.0.0.1:0\"\n    tls:\n      certs:\n        - cert: {}\n          key: {}\n",
        cert.display(),
        key.display()
    );
    let tls_up = GrpcServer::start_tls("tls-up", &upstream_leaf).await;
    let clear_up = GrpcServer::start("clear-up").await;
    let ca_path = ca_file.display().to_string();
    // h2c client -> h2/TLS upstream.
    let gw = TestGateway::start(&single_h2(tls_up.addr(), Some(&ca_path), ""));
    every_call_kind(&mut EchoClient::connect(gw.addr()).await, "tls-up").await;
    // h2/TLS client -> h2c upstream, and -> h2/TLS upstream.
    for (upstream, tls, name) in [
        (clear_up.addr(), None, "clear-up"),
        (tls_up.addr(), Some(ca_path.as_str()), "tls-up"),
    ] {
        let yaml = single_h2(upstream, tls, "").replacen(
            "listeners:\n  - name: http\n    bind: \"127.0.0.1:0\"\n",
            &tls_listener,
            1,
        );
        let gw = TestGateway::start(&yaml);
        let addr = gw.gateway.listener_addr("https").expect("https listener");
        let mut client = EchoClient::connect_tls(addr, &ca.pem(), "gateway.test").await;
        every_call_kind(&mut client, name).await;
    }
}

/// `protocol: auto` takes what ALPN picks over TLS — h2 from a gRPC server
/// (gRPC cannot pass over HTTP/1.1, so every call passing shows it) — and
/// HTTP/1.1 in the clear.
#[tokio::test]
async fn auto_speaks_h2_when_alpn_picks_it_and_http1_in_the_clear() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let tls_up = GrpcServer::start_tls("tls-up", &ca.leaf(&["upstream.test"])).await;
    let yaml = single_h2(tls_up.addr(), Some(&ca_file.display().to_string()), "")
        .replace("protocol: h2", "protocol: auto");
    assert!(yaml.contains("protocol: auto"), "{yaml}");
    let gw = TestGateway::start(&yaml);
    every_call_kind(&mut EchoClient::connect(gw.addr()).await, "tls-up").await;

    let plain = Backend::start("plain").await;
    let yaml = single_h2(plain.addr(), None, "").replace("protocol: h2", "protocol: auto");
    let gw = TestGateway::start(&yaml);
    let response = Client::new().get(&gw.url("/")).await;
    assert_eq!(response.status, 200);
    let seen = plain.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, http::Version::HTTP_11);
}

#[tokio::test]
async fn a_failing_status_and_its_trailing_metadata_arrive_intact() {
    let server = GrpcServer::start("up").await;
    server.set_reply(Reply::Status(Code::FailedPrecondition));
    let gw = TestGateway::start(&single_h2(server.addr(), None, ""));
    let mut client = EchoClient::connect(gw.addr()).await;
    let status = client
        .unary(Msg::text("x"))
        .await
        .expect_err("a failed call");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "up says FailedPrecondition");
    assert_eq!(
        status
            .metadata()
            .get("x-detail")
            .and_then(|v| v.to_str().ok()),
        Some("up")
    );
}

#[tokio::test]
async fn a_4_mib_message_goes_both_ways() {
    let server = GrpcServer::start("up").await;
    let gw = TestGateway::start(&single_h2(server.addr(), None, ""));
    let mut client = EchoClient::connect(gw.addr()).await;
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let msg = Msg {
        payload: payload.clone(),
        ..Msg::text("big")
    };
    let echoed = client.unary(msg).await.expect("4 MiB unary").into_inner();
    assert_eq!(echoed.payload.len(), payload.len());
    assert!(echoed.payload == payload, "the payload changed on the way");
}

#[tokio::test]
async fn grpc_timeout_bounds_the_upstream_wait_as_deadline_exceeded() {
    let server = GrpcServer::start("up").await;
    server.set_reply(Reply::Delay(Duration::from_secs(3)));
    let gw = TestGateway::start(&single_h2(server.addr(), None, ""));
    // A raw h2 request carrying grpc-timeout, with no deadline of the
    // client's own: the answer can only come from the gateway.
    let client = Client::h2c();
    let body = http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]));
    let request = http::Request::post(gw.url("/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "200m")
        .body(body)
        .expect("request");
    let started = std::time::Instant::now();
    let response = client.send(request).await.expect("answer");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(response.headers()["content-type"], "application/grpc");
}

#[tokio::test]
async fn no_route_is_unimplemented_and_no_endpoint_unavailable() {
    let yaml = format!(
        "{}routes:\n  - name: only\n    match: {{ path_prefix: /other }}\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\"], protocol: h2 }}\n",
        head(1),
        Backend::closed_port()
    );
    let gw = TestGateway::start(&yaml);
    let mut client = EchoClient::connect(gw.addr()).await;
    let status = client.unary(Msg::text("x")).await.expect_err("no route");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let refused = single_h2(Backend::closed_port(), None, "");
    let gw = TestGateway::start(&refused);
    let mut client = EchoClient::connect(gw.addr()).await;
    let status = client.unary(Msg::text("x")).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

async fn phase(gw: &TestGateway) -> String {
    let status = Client::new().get(&gw.admin_url("/status")).await.text();
    let value: serde_json::Value = serde_json::from_str(&status).expect("status");
    value["backends"]["app"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn a_canary_answering_unavailable_is_rolled_back_and_not_found_is_not() {
    let analysis = "analysis: { interval: 100ms, window: 10s, min_requests: 10, max_error_rate: 0.1, max_p99_latency: 2s }";
    for (code, rolled_back) in [(Code::Unavailable, true), (Code::NotFound, false)] {
        let (v1, v2) = (GrpcServer::start("v1").await, GrpcServer::start("v2").await);
        v2.set_reply(Reply::Status(code));
        let gw = TestGateway::start(&canary_h2(v1.addr(), v2.addr(), 50.0, analysis));
        let mut client = EchoClient::connect(gw.addr()).await;
        let started = std::time::Instant::now();
        for _ in 0..100 {
            let _ = client.unary(Msg::text("x")).await;
            if rolled_back && phase(&gw).await == "rolled_back" {
                break;
            }
        }
        let now = phase(&gw).await;
        if rolled_back {
            assert_eq!(now, "rolled_back", "{code:?}");
            eprintln!(
                "{code:?}: rolled back {:?} after the first call",
                started.elapsed()
            );
        } else {
            assert_eq!(now, "progressing", "{code:?} must not roll back");
            assert!(
                v2.calls() >= 20,
                "the canary took its share: {}",
                v2.calls()
            );
        }
        let metrics = Client::new().get(&gw.admin_url("/metrics")).await.text();
        let counted = sample(
            &samples(&metrics),
            "switchyard_grpc_responses_total",
            &[
                ("version", "v2"),
                (
                    "grpc_code",
                    &format!("{code:?}")
                        .to_uppercase()
                        .replace("NOTFOUND", "NOT_FOUND"),
                ),
            ],
        );
        assert!(counted >= 1.0, "{code:?} not counted:\n{metrics}");
    }
}

#[tokio::test]
async fn a_failed_unary_canary_call_is_answered_by_stable() {
    let (v1, v2) = (GrpcServer::start("v1").await, GrpcServer::start("v2").await);
    v2.set_reply(Reply::Status(Code::Unavailable));
    let yaml = canary_h2(v1.addr(), v2.addr(), 50.0, "retry_on_stable: true");
    let gw = TestGateway::start(&yaml);
    let mut client = EchoClient::connect(gw.addr()).await;
    for _ in 0..20 {
        let answer = client
            .unary(Msg::text("x"))
            .await
            .expect("answered by stable");
        assert_eq!(answer.get_ref().text, "v1: x");
    }
    assert!(v2.calls() > 0, "the canary was never tried");
}

#[tokio::test]
async fn grpc_health_probes_take_an_endpoint_out_and_bring_it_back() {
    let (a, b) = (GrpcServer::start("a").await, GrpcServer::start("b").await);
    let yaml = format!(
        "{}routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\", \"{}\"], protocol: h2 }}\n    health_check: {{ grpc: {{ service: \"\" }}, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 2 }}\n",
        head(1),
        a.addr(),
        b.addr()
    );
    let gw = TestGateway::start(&yaml);
    let healthy = |address: SocketAddr| {
        let url = gw.admin_url("/status");
        async move {
            let text = Client::new().get(&url).await.text();
            let status: serde_json::Value = serde_json::from_str(&text).expect("status");
            status["backends"]["app"]["versions"]["v1"]["endpoints"]
                .as_array()
                .and_then(|eps| {
                    eps.iter()
                        .find(|e| e["address"] == address.to_string())
                        .cloned()
                })
                .map(|e| e["healthy"] == true)
        }
    };
    b.set_serving(false).await;
    assert!(
        poll_until(Duration::from_secs(5), || async {
            healthy(b.addr()).await == Some(false)
        })
        .await,
        "NOT_SERVING did not take b out"
    );
    assert_eq!(healthy(a.addr()).await, Some(true));
    let mut client = EchoClient::connect(gw.addr()).await;
    for _ in 0..10 {
        let answer = client.unary(Msg::text("x")).await.expect("served");
        assert_eq!(
            answer.get_ref().text,
            "a: x",
            "an unhealthy endpoint served"
        );
    }
    b.set_serving(true).await;
    assert!(
        poll_until(Duration::from_secs(5), || async {
            healthy(b.addr()).await == Some(true)
        })
        .await,
        "SERVING did not bring b back"
    );
}

#[tokio::test]
async fn an_upstream_sending_goaway_mid_load_loses_no_call() {
    let server = GrpcServer::start("up").await;
    let gw = TestGateway::start(&single_h2(server.addr(), None, ""));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = gw.addr();
        tasks.push(tokio::spawn(async move {
            let mut client = EchoClient::connect(addr).await;
            let mut failed = Vec::new();
            for i in 0..150 {
                if let Err(status) = client.unary(Msg::text(&i.to_string())).await {
                    failed.push(status);
                }
            }
            failed
        }));
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        server.goaway();
    }
    let mut lost = Vec::new();
    for task in tasks {
        lost.extend(task.await.expect("client task"));
    }
    assert!(
        lost.is_empty(),
        "{} of 1200 calls lost: {:?}",
        lost.len(),
        lost.first()
    );
    assert!(server.calls() >= 1200);
    // The gateway moved to new connections after each GOAWAY.
    assert!(
        server.connections() >= 3,
        "{} connections",
        server.connections()
    );
}

#[tokio::test]
async fn plain_http_1_1_requests_reach_an_h2_upstream() {
    let server = GrpcServer::start("up").await;
    let gw = TestGateway::start(&single_h2(server.addr(), None, ""));
    // The test server answers any non-gRPC request with UNIMPLEMENTED over
    // h2: seeing it proves the HTTP/1.1 request was carried over h2.
    let response = Client::new().get(&gw.url("/anything")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("grpc-status"), Some("12"));
    assert_eq!(response.version, http::Version::HTTP_11);
}

/// An h2 server (the h2 crate, no gRPC) that refuses every other stream
/// with REFUSED_STREAM and answers the others 200 "ok"; counts streams.
/// An h2 server that refuses (REFUSED_STREAM) every `every`-th stream,
/// starting with the first, and answers `ok` to the others; with the count
/// of streams it saw.
async fn refusing_h2_server(
    every: usize,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let streams = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&streams);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counted = std::sync::Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    if counted.fetch_add(1, Ordering::SeqCst) % every == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let response = http::Response::new(());
                    if let Ok(mut body) = respond.send_response(response, false) {
                        let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
                    }
                }
            });
        }
    });
    (addr, streams)
}

#[tokio::test]
async fn a_stream_refused_unprocessed_goes_again_and_is_no_failure() {
    let (upstream, streams) = refusing_h2_server(2).await;
    let gw = TestGateway::start(&single_h2(upstream, None, ""));
    let client = Client::new();
    for _ in 0..10 {
        let answer = client.get(&gw.url("/")).await;
        assert_eq!(
            (answer.status.as_u16(), answer.text()),
            (200, "ok".to_string())
        );
    }
    // A POST with a body goes again too: the body is replayed.
    for _ in 0..10 {
        let request = http::Request::post(gw.url("/"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"payload",
            )))
            .expect("request");
        let answer = client.request(request).await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(
        streams.load(std::sync::atomic::Ordering::SeqCst),
        40,
        "each request refused once"
    );
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    assert_eq!(sample(&all, "switchyard_upstream_errors_total", &[]), 0.0);
    assert_eq!(
        sample(&all, "switchyard_requests_total", &[("code", "5xx")]),
        0.0
    );
}

/// A refused upload too large to keep (over the 64 KiB replay limit) cannot
/// go again: 503 (the upstream did nothing with it, the client may retry),
/// and nothing against the version — no upstream error, no outlier step.
#[tokio::test]
async fn a_refused_upload_too_large_to_send_again_is_503_and_no_failure() {
    let (upstream, streams) = refusing_h2_server(1).await;
    let yaml = single_h2(upstream, None, "").replace(
        "protocol: h2 }\n",
        "protocol: h2 }\n    outlier: { consecutive_failures: 2, ejection_time: 30s }\n",
    );
    assert!(yaml.contains("outlier"), "{yaml}");
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    for _ in 0..4 {
        let request = http::Request::post(gw.url("/upload"))
            .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                b'x';
                100 * 1024
            ])))
            .expect("request");
        let answer = client.request(request).await;
        assert_eq!(answer.status, 503, "{}", answer.text());
    }
    // Each reached the upstream: the endpoint was never ejected.
    assert_eq!(streams.load(std::sync::atomic::Ordering::SeqCst), 4);
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    assert_eq!(sample(&all, "switchyard_upstream_errors_total", &[]), 0.0);
    // A bodiless request refused on every fresh connection is the
    // upstream's failure.
    let answer = client.get(&gw.url("/")).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let all = samples(&client.get(&gw.admin_url("/metrics")).await.text());
    assert_eq!(sample(&all, "switchyard_upstream_errors_total", &[]), 1.0);
}
