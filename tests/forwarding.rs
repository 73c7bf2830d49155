//! What the gateway does to requests and responses on the way through:
//! forwarding headers, request ids, hop-by-hop stripping, HTTP/2 cleartext,
//! WebSocket upgrades, streaming in both directions, load balancing.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn forwarding_headers_are_added_and_hop_by_hop_headers_removed() {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start(&single(&[backend.addr()], "", ""));
    let resp = Client::new()
        .get_with(
            &gw.url("/headers?q=1"),
            &[
                ("host", "api.example.com"),
                ("connection", "x-private"),
                ("x-private", "secret"),
                ("keep-alive", "timeout=5"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200);
    let seen = backend.requests().pop().expect("backend saw the request");
    let h = |name: &str| {
        seen.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(seen.path_and_query, "/headers?q=1");
    assert_eq!(h("host").as_deref(), Some("api.example.com"));
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(h("x-forwarded-host").as_deref(), Some("api.example.com"));
    assert_eq!(h("x-custom").as_deref(), Some("kept"));
    assert_eq!(
        h("x-private"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(h("keep-alive"), None);
    let id = h("x-request-id").expect("a request id is generated");
    assert_eq!(id.len(), 16);
    assert_eq!(
        resp.header("x-request-id"),
        Some(id.as_str()),
        "and passed back to the client"
    );
    assert_eq!(resp.header("x-switchyard-version"), Some("v1"));
    assert_eq!(resp.header(SERVED_BY), Some("b"));
}

#[tokio::test]
async fn a_client_request_id_is_kept_and_echoed() {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start(&single(&[backend.addr()], "", ""));
    let resp = Client::new()
        .get_with(&gw.url("/"), &[("x-request-id", "abc-123")])
        .await;
    assert_eq!(resp.header("x-request-id"), Some("abc-123"));
    let seen = backend.requests().pop().expect("request");
    assert_eq!(
        seen.headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"abc-123"[..])
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_to_an_http1_upstream() {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start(&single(&[backend.addr()], "", ""));
    let client = Client::h2c();
    for _ in 0..20 {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.version, http::Version::HTTP_2);
        assert_eq!(resp.text(), "b");
        assert_eq!(resp.header("x-switchyard-version"), Some("v1"));
    }
    let echoed = client.post(&gw.url("/echo"), "over h2").await;
    assert_eq!(echoed.text(), "over h2");
    let seen = backend.requests().pop().expect("request");
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert!(
        seen.headers.contains_key("host"),
        "h2 :authority becomes Host upstream"
    );
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_end_to_end() {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start(&single(&[backend.addr()], "", ""));
    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the 101 head");
            got.extend_from_slice(&buf[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
        }
    })
    .await
    .expect("101 in time");
    let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains(&format!(
        "sec-websocket-accept: {}",
        websocket_accept(key.as_bytes()).to_lowercase()
    )));
    for message in [&b"hello"[..], b"through the tunnel", &[0u8, 1, 2, 255]] {
        stream.write_all(message).await.expect("write");
        let mut echo = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(echo, message);
    }
}

/// [`single`] with the version spoken to in h2 (h2c: the test backends
/// take both).
fn single_h2(endpoints: &[std::net::SocketAddr], backend_extra: &str, top_extra: &str) -> String {
    let yaml = single(endpoints, backend_extra, top_extra).replace("] }\n", "], protocol: h2 }\n");
    assert!(yaml.contains("protocol: h2"), "{yaml}");
    yaml
}

#[tokio::test]
async fn a_50_mb_download_streams_through() {
    let backend = Backend::start("b").await;
    download_50_mb(&single(&[backend.addr()], "", "")).await;
}

#[tokio::test]
async fn a_50_mb_download_streams_through_an_h2_upstream() {
    let backend = Backend::start("b").await;
    download_50_mb(&single_h2(&[backend.addr()], "", "")).await;
}

async fn download_50_mb(yaml: &str) {
    let gw = TestGateway::start(yaml);
    let n: u64 = 50 * 1024 * 1024;
    let resp = Client::new()
        .send(
            Request::get(gw.url(&format!("/bytes/{n}?chunked")))
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            assert!(data.iter().all(|&b| b == b'x'));
            total += data.len() as u64;
        }
    }
    assert_eq!(total, n);
}

const LIMITS_32_MB: &str = "limits:\n  max_body_bytes: 33554432\n";

#[tokio::test]
async fn a_20_mb_upload_streams_through() {
    let backend = Backend::start("b").await;
    upload_20_mb(&single(&[backend.addr()], "", LIMITS_32_MB)).await;
}

#[tokio::test]
async fn a_20_mb_upload_streams_through_an_h2_upstream() {
    let backend = Backend::start("b").await;
    upload_20_mb(&single_h2(&[backend.addr()], "", LIMITS_32_MB)).await;
}

async fn upload_20_mb(yaml: &str) {
    let gw = TestGateway::start(yaml);
    let (tx, body) = body_channel();
    let url = gw.url("/upload");
    let sender = tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        for _ in 0..320 {
            tx.send(chunk.clone()).await.expect("send chunk");
        }
    });
    let resp = Client::new()
        .send(Request::post(url).body(body).expect("req"))
        .await
        .expect("response");
    sender.await.expect("sender");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        std::str::from_utf8(&text).expect("utf8").trim(),
        (20 * 1024 * 1024).to_string()
    );
}

#[tokio::test]
async fn request_and_response_bodies_stream_without_buffering() {
    let backend = Backend::start("b").await;
    echo_while_uploading(&single(&[backend.addr()], "", "")).await;
}

#[tokio::test]
async fn request_and_response_bodies_stream_without_buffering_through_an_h2_upstream() {
    let backend = Backend::start("b").await;
    echo_while_uploading(&single_h2(&[backend.addr()], "", "")).await;
}

/// The echo backend answers each chunk as it arrives: the client reads the
/// first echoed chunk while the rest of its upload is not even sent yet,
/// which only works if neither direction is buffered whole.
async fn echo_while_uploading(yaml: &str) {
    let gw = TestGateway::start(yaml);
    let (tx, body) = body_channel();
    tx.send(Bytes::from_static(b"first")).await.expect("send");
    let req = Request::builder()
        .method(Method::POST)
        .uri(gw.url("/echo"))
        .body(body)
        .expect("req");
    let resp = Client::new()
        .send(req)
        .await
        .expect("response head before the upload ends");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk echoed while the upload is still open")
        .expect("frame")
        .expect("ok");
    assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"first"[..]));
    tx.send(Bytes::from_static(b"second")).await.expect("send");
    drop(tx);
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"second");
}

#[tokio::test]
async fn round_robin_alternates_between_endpoints() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = TestGateway::start(&single(
        &[a.addr(), b.addr()],
        "load_balancing: round_robin",
        "",
    ));
    let client = Client::new();
    for _ in 0..100 {
        client.get(&gw.url("/")).await;
    }
    assert_eq!((a.hits(), b.hits()), (50, 50));
}

#[tokio::test]
async fn least_request_avoids_the_busy_endpoint() {
    let (slow, fast) = (Backend::start("slow").await, Backend::start("fast").await);
    slow.set_mode(Mode::Delay(Duration::from_millis(300)));
    let gw = TestGateway::start(&single(
        &[slow.addr(), fast.addr()],
        "load_balancing: least_request",
        "",
    ));
    let client = Client::new();
    let url = gw.url("/");
    // 8 concurrent clients, 15 requests each: once the slow endpoint holds
    // requests in flight, two-choice picks send new ones to the fast one.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..15 {
                    assert_eq!(client.get(&url).await.status, 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(slow.hits() + fast.hits(), 120);
    assert!(slow.hits() < 30, "slow endpoint got {} of 120", slow.hits());
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start(&single(&[backend.addr()], "", ""));
    let client = Client::new();
    for _ in 0..200 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    // One client connection, sequential requests: one upstream connection
    // carries them all.
    assert_eq!(backend.hits(), 200);
    assert_eq!(
        backend.connections(),
        1,
        "upstream connections were not reused"
    );
    // A response not read to its end does not return a broken connection:
    // the next requests still succeed.
    let big = client.get(&gw.url("/bytes/1000000")).await;
    assert_eq!(big.body.len(), 1_000_000);
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
}
