//! The response-head path: what an upstream's answer costs from the bytes on
//! the upstream connection to the head the client side sends on.
//!
//! - `upstream_exchange`: one `GET` on a kept-alive hyper HTTP/1.1 client
//!   connection (the gateway's upstream client) over an in-memory pipe, to a
//!   peer answering NGINX's exact 100-byte response: writing the request,
//!   parsing the five-header head, the hand-off between the connection's task
//!   and the request's, reading the body. No sockets, so no kernel: the part
//!   an in-task upstream codec would replace.
//! - `gateway_head_work`: what the gateway does to that head on its way back
//!   (hop-by-hop check, `x-switchyard-version` and `X-Request-Id` inserts).
//!
//! Run with `cargo bench --bench response_head`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use switchyard::proxy::headers::strip_hop_by_hop;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// NGINX 1.22's answer to the load harness's `GET /` (`return 200` with a
/// 100-byte body), byte for byte but the date.
const NGINX_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 01:40:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n";
const BODY: [u8; 100] = [b'x'; 100];

/// The peer: answers every request head it reads with NGINX's response.
async fn peer(mut io: DuplexStream) {
    let mut answer = NGINX_HEAD.to_vec();
    answer.extend_from_slice(&BODY);
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    loop {
        let n = match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        seen.extend_from_slice(&buf[..n]);
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            seen.drain(..end + 4);
            if io.write_all(&answer).await.is_err() {
                return;
            }
        }
    }
}

fn upstream_exchange(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a current-thread runtime: {e}"),
    };
    let mut sender = rt.block_on(async {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(peer(theirs));
        let (sender, conn) = match http1::handshake(TokioIo::new(ours)).await {
            Ok(pair) => pair,
            Err(e) => panic!("handshake on a pipe: {e}"),
        };
        tokio::spawn(conn);
        sender
    });
    c.bench_function("upstream_exchange/get_100_bytes_nginx_head", |b| {
        b.iter(|| {
            rt.block_on(async {
                if sender.ready().await.is_err() {
                    panic!("the pipe closed");
                }
                let req = Request::get("/")
                    .header("host", "app")
                    .header("x-forwarded-for", "127.0.0.1")
                    .header("x-request-id", "5a22530de4865ed0")
                    .body(Empty::<Bytes>::new());
                let Ok(req) = req else {
                    panic!("a valid request")
                };
                let response = match sender.send_request(req).await {
                    Ok(response) => response,
                    Err(e) => panic!("exchange on a pipe: {e}"),
                };
                let body = response.into_body().collect().await;
                black_box(body.map(|b| b.to_bytes().len()).unwrap_or(0))
            })
        })
    });
}

/// [`NGINX_HEAD`]'s header fields as a map.
fn nginx_headers() -> HeaderMap {
    let fields = NGINX_HEAD
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| line.trim_ascii())
        .take_while(|line| !line.is_empty());
    let mut headers = HeaderMap::new();
    for line in fields {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.insert(name, value);
    }
    headers
}

fn gateway_head_work(c: &mut Criterion) {
    assert_eq!(
        nginx_headers().len(),
        5,
        "NGINX_HEAD's fields did not all parse"
    );
    let version = HeaderName::from_static("x-switchyard-version");
    let request_id = HeaderName::from_static("x-request-id");
    let v1 = HeaderValue::from_static("v1");
    let id = HeaderValue::from_static("5a22530de4865ed0");
    c.bench_function("gateway_head_work/nginx_head", |b| {
        b.iter_batched(
            nginx_headers,
            |mut headers| {
                strip_hop_by_hop(&mut headers, false);
                headers.insert(version.clone(), v1.clone());
                headers.insert(request_id.clone(), id.clone());
                headers
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = upstream_exchange, gateway_head_work
);
criterion_main!(benches);
