//! HTTP/2 abuse (issue 9, point 2), over h2c with prior knowledge and raw
//! frames written by hand: the limits the gateway configures explicitly on
//! hyper's h2 server (`src/server/mod.rs`: 256 concurrent streams, 20
//! pending-accept resets, the header list size from `limits.max_header_bytes`,
//! keep-alive pings) answer each abuse, and other clients keep being served.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const MAX_HEADER_BYTES: usize = 8192;
/// The gateway's configured limit (`H2_MAX_STREAMS` in src/server/mod.rs).
const MAX_STREAMS: u32 = 256;

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK block of `GET|POST / http` with `:authority x`, from the static
/// table (no dynamic table, no Huffman).
fn request_block(post: bool) -> Vec<u8> {
    let method = if post { 0x83 } else { 0x82 };
    // :method, :scheme http, :path /, then :authority as a literal without
    // indexing (name index 1), value "x".
    vec![method, 0x86, 0x84, 0x01, 0x01, b'x']
}

/// Reads one frame, or `None` on EOF, error or deadline.
async fn read_frame(rd: &mut OwnedReadHalf, deadline: Instant) -> Option<Frame> {
    let mut head = [0u8; 9];
    tokio::time::timeout_at(deadline, rd.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tokio::time::timeout_at(deadline, rd.read_exact(&mut payload))
        .await
        .ok()?
        .ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// An h2c connection past the handshake: our preface and SETTINGS sent, the
/// server's SETTINGS read (and returned as id/value pairs) and acknowledged.
struct H2 {
    rd: OwnedReadHalf,
    wr: tokio::net::tcp::OwnedWriteHalf,
    settings: Vec<(u16, u32)>,
}

impl H2 {
    async fn connect(addr: SocketAddr) -> H2 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        wr.write_all(&hello).await.expect("write preface");
        let deadline = Instant::now() + Duration::from_secs(5);
        let settings = loop {
            let f = read_frame(&mut rd, deadline)
                .await
                .expect("server SETTINGS in time");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                break f
                    .payload
                    .chunks_exact(6)
                    .map(|c| {
                        (
                            u16::from_be_bytes([c[0], c[1]]),
                            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                        )
                    })
                    .collect();
            }
        };
        // Acknowledge: from here on the server's own limits are in force.
        wr.write_all(&frame(SETTINGS, ACK, 0, &[]))
            .await
            .expect("write SETTINGS ack");
        H2 { rd, wr, settings }
    }

    fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }
}

async fn start() -> (Backend, TestGateway) {
    let backend = Backend::start("b").await;
    let gw = TestGateway::start(&single(
        &[backend.addr()],
        "",
        &format!("limits:\n  max_header_bytes: {MAX_HEADER_BYTES}\n"),
    ));
    (backend, gw)
}

/// Other clients, HTTP/1.1 and h2c, are served by the gateway.
async fn assert_others_served(gw: &TestGateway, what: &str) {
    for client in [Client::new(), Client::h2c()] {
        let resp = client
            .with_timeout(Duration::from_secs(5))
            .get(&gw.url("/"))
            .await;
        assert_eq!(resp.status, 200, "{what}: another client not served");
    }
}

#[tokio::test]
async fn the_server_settings_advertise_the_configured_limits() {
    let (_backend, gw) = start().await;
    let h2 = H2::connect(gw.addr()).await;
    assert_eq!(
        h2.setting(SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(MAX_STREAMS),
        "{:?}",
        h2.settings
    );
    assert_eq!(
        h2.setting(SETTINGS_MAX_HEADER_LIST_SIZE),
        Some(MAX_HEADER_BYTES as u32),
        "{:?}",
        h2.settings
    );
}

#[tokio::test]
async fn the_stream_over_max_concurrent_streams_is_refused() {
    let (backend, gw) = start().await;
    let mut h2 = H2::connect(gw.addr()).await;
    // 257 POSTs whose bodies never end: every stream stays open.
    let mut burst = Vec::new();
    for i in 0..=MAX_STREAMS {
        burst.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &request_block(true)));
    }
    h2.wr.write_all(&burst).await.expect("write streams");
    let last = 2 * MAX_STREAMS + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = None;
    let mut other_resets = Vec::new();
    while let Some(f) = read_frame(&mut h2.rd, deadline).await {
        if f.kind == RST_STREAM {
            let code = u32::from_be_bytes(f.payload[..4].try_into().expect("4 bytes"));
            if f.stream == last {
                refused = Some(code);
                break;
            }
            other_resets.push((f.stream, code));
        }
        assert_ne!(f.kind, GOAWAY, "the connection itself was refused");
    }
    assert_eq!(refused, Some(REFUSED_STREAM), "stream {last} not refused");
    assert!(other_resets.is_empty(), "{other_resets:?}");
    // The 256 admitted streams are being served: their heads reach the backend.
    assert!(
        poll_until(Duration::from_secs(10), || async {
            backend.hits() >= MAX_STREAMS as usize
        })
        .await,
        "only {} of {MAX_STREAMS} admitted streams reached the backend",
        backend.hits()
    );
    assert_eq!(backend.hits(), MAX_STREAMS as usize);
    // Ending one stream's body lets it be answered, which frees a slot; a
    // new stream is then admitted.
    h2.wr
        .write_all(&frame(DATA, END_STREAM, 1, &[]))
        .await
        .expect("end stream 1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while let Some(f) = read_frame(&mut h2.rd, deadline).await {
        if f.stream == 1 && f.flags & END_STREAM != 0 && (f.kind == HEADERS || f.kind == DATA) {
            closed = true;
            break;
        }
    }
    assert!(closed, "stream 1 not answered to its end");
    let next = last + 2;
    h2.wr
        .write_all(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            next,
            &request_block(false),
        ))
        .await
        .expect("write next");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answered = false;
    while let Some(f) = read_frame(&mut h2.rd, deadline).await {
        assert!(
            !(f.kind == RST_STREAM && f.stream == next),
            "stream {next} refused after a slot freed"
        );
        if f.kind == HEADERS && f.stream == next {
            answered = true;
            break;
        }
    }
    assert!(answered, "stream {next} not answered");
    drop(h2);
    assert_others_served(&gw, "after 257 streams").await;
}

#[tokio::test]
async fn rapid_reset_gets_goaway_and_others_are_served() {
    let (backend, gw) = start().await;
    let H2 { mut rd, mut wr, .. } = H2::connect(gw.addr()).await;
    const STREAMS: u32 = 1000;
    let mut burst = Vec::new();
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &request_block(false),
        ));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    // The server may close before reading it all: a failed write is fine.
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), wr.write_all(&burst)).await;
        wr
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut goaway = None;
    let mut frames = 0usize;
    loop {
        match read_frame(&mut rd, deadline).await {
            Some(f) if f.kind == GOAWAY => {
                let code = u32::from_be_bytes(f.payload[4..8].try_into().expect("code"));
                goaway = Some(code);
                break;
            }
            Some(_) => frames += 1,
            None => break,
        }
    }
    assert!(
        Instant::now() < deadline,
        "connection neither closed nor sent GOAWAY within 10 s ({frames} frames)"
    );
    // ENHANCE_YOUR_CALM (0xb) is h2's answer to too many pending resets.
    assert_eq!(goaway, Some(0xb), "GOAWAY code (or none: closed silently)");
    let _ = writer.await;
    // Far fewer than the 1000 streams reached the upstream.
    let reached = backend.hits();
    assert!(
        reached < STREAMS as usize,
        "{reached} streams reached the backend"
    );
    eprintln!("rapid reset: GOAWAY {goaway:?} after {frames} frames; {reached} of {STREAMS} streams reached the backend");
    assert_others_served(&gw, "after rapid reset").await;
}

#[tokio::test]
async fn an_oversized_header_block_is_431_and_never_forwarded() {
    let (backend, gw) = start().await;
    let big = "y".repeat(MAX_HEADER_BYTES + 1000);
    let client = Client::h2c().with_timeout(Duration::from_secs(5));
    let resp = client.get_with(&gw.url("/big"), &[("x-big", &big)]).await;
    assert_eq!(resp.status, 431);
    assert_eq!(backend.hits(), 0, "{:?}", backend.requests());
    // The same connection (pooled) and others go on being served.
    let ok = client.get(&gw.url("/small")).await;
    assert_eq!(ok.status, 200);
    assert_others_served(&gw, "after an oversized header block").await;
}

/// Floods one connection with `count` copies of `one`, followed by a GET on
/// stream 1; returns (acks of the flood seen, stream 1 answered, GOAWAY or
/// close seen, elapsed).
async fn flood(gw: &TestGateway, one: Vec<u8>, count: usize, ack_kind: u8) -> (usize, bool, bool) {
    let H2 { mut rd, mut wr, .. } = H2::connect(gw.addr()).await;
    let mut burst = Vec::with_capacity(one.len() * count + 64);
    for _ in 0..count {
        burst.extend_from_slice(&one);
    }
    burst.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block(false),
    ));
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), wr.write_all(&burst)).await;
        wr
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut acks, mut answered, mut ended) = (0, false, false);
    loop {
        match read_frame(&mut rd, deadline).await {
            Some(f) if f.kind == ack_kind && f.flags & ACK != 0 => acks += 1,
            Some(f) if f.kind == HEADERS && f.stream == 1 => {
                answered = true;
                break;
            }
            Some(f) if f.kind == GOAWAY => {
                ended = true;
                break;
            }
            Some(_) => {}
            None => {
                ended = Instant::now() < deadline;
                break;
            }
        }
    }
    let _ = writer.await;
    (acks, answered, ended)
}

#[tokio::test]
async fn a_ping_flood_is_served_or_cut_and_others_are_served() {
    let (_backend, gw) = start().await;
    const PINGS: usize = 10_000;
    let ping = frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let (acks, answered, ended) = flood(&gw, ping, PINGS, PING).await;
    eprintln!(
        "ping flood: {PINGS} PINGs -> {acks} acks, request answered: {answered}, closed: {ended}"
    );
    assert!(
        answered || ended,
        "the flooded connection neither served its request nor ended in time ({acks} acks)"
    );
    assert!(acks <= PINGS);
    assert_others_served(&gw, "after a PING flood").await;
}

#[tokio::test]
async fn a_settings_flood_is_served_or_cut_and_others_are_served() {
    let (_backend, gw) = start().await;
    const FLOOD: usize = 10_000;
    // SETTINGS_INITIAL_WINDOW_SIZE = 65535, the default: harmless, but each
    // one must be applied and acknowledged.
    let settings = frame(SETTINGS, 0, 0, &[0x00, 0x04, 0x00, 0x00, 0xff, 0xff]);
    let (acks, answered, ended) = flood(&gw, settings, FLOOD, SETTINGS).await;
    eprintln!("settings flood: {FLOOD} SETTINGS -> {acks} acks, request answered: {answered}, closed: {ended}");
    assert!(
        answered || ended,
        "the flooded connection neither served its request nor ended in time ({acks} acks)"
    );
    assert_others_served(&gw, "after a SETTINGS flood").await;
}
