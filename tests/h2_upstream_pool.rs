//! The multiplexed h2 upstream pool (SPEC §9): concurrent requests share a
//! connection up to the peer's `MAX_CONCURRENT_STREAMS`, a full connection
//! makes the next request open another, and a burst on a cold pool opens one
//! connection, not one per request. The upstream is the `h2` crate's server,
//! holding every answer until the test releases it, so what is open at once
//! is decided by the test, not by timing.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::sync::watch;

/// What the holding server saw: connections made, and the streams open on
/// each connection now and at most.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Per connection: (open now, most open at once).
    open: Mutex<Vec<(usize, usize)>>,
}

impl Seen {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn open_now(&self) -> Vec<usize> {
        self.lock().iter().map(|&(now, _)| now).collect()
    }

    fn most_open(&self) -> usize {
        self.lock().iter().map(|&(_, most)| most).max().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, usize)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An h2 server allowing `max_streams` streams per connection; every answer
/// (200 "ok") waits until `release` turns true.
async fn holding_h2_server(
    max_streams: u32,
    release: watch::Receiver<bool>,
) -> (SocketAddr, Arc<Seen>) {
    holding_server(max_streams, release, None).await
}

/// [`holding_h2_server`] over TLS with `leaf` (ALPN h2).
async fn holding_h2_tls_server(
    max_streams: u32,
    release: watch::Receiver<bool>,
    leaf: &Leaf,
) -> (SocketAddr, Arc<Seen>) {
    holding_server(max_streams, release, Some(leaf.acceptor(b"h2"))).await
}

/// An HTTP/1.1 server over TLS with `leaf` (ALPN http/1.1) holding every
/// answer (200 "ok") until `release` turns true; counts its connections
/// and the requests held now.
async fn holding_h1_tls_server(
    release: watch::Receiver<bool>,
    leaf: &Leaf,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let tls = leaf.acceptor(b"http/1.1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (connections, held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, holding) = (Arc::clone(&connections), Arc::clone(&held));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (tls, release, holding) = (tls.clone(), release.clone(), Arc::clone(&holding));
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(socket).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_request| {
                    let (mut release, holding) = (release.clone(), Arc::clone(&holding));
                    async move {
                        holding.fetch_add(1, Ordering::SeqCst);
                        let _ = release.wait_for(|released| *released).await;
                        holding.fetch_sub(1, Ordering::SeqCst);
                        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"ok"));
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections, held)
}

/// A certificate for `upstream.test` and the file of the CA that signed it.
struct UpstreamTls {
    leaf: Leaf,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl UpstreamTls {
    fn new() -> Self {
        let ca = Ca::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        UpstreamTls {
            leaf: ca.leaf(&["upstream.test"]),
            ca_file,
            _dir: dir,
        }
    }
}

/// `protocol: auto` over TLS to `upstream`, trusting the CA in `ca_file`.
fn auto_tls_config(upstream: SocketAddr, ca_file: &std::path::Path) -> String {
    let tls = format!(
        "protocol: auto, tls: {{ ca_file: \"{}\", server_name: upstream.test }} }}\n",
        ca_file.display()
    );
    let yaml = config(upstream).replace("protocol: h2 }\n", &tls);
    assert!(yaml.contains("protocol: auto"), "{yaml}");
    yaml
}

async fn holding_server(
    max_streams: u32,
    release: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = Arc::clone(&shared);
            let release = release.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve(socket, max_streams, seen, release).await,
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(socket).await {
                            serve(stream, max_streams, seen, release).await;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// One connection of the holding server.
async fn serve<T>(io: T, max_streams: u32, seen: Arc<Seen>, release: watch::Receiver<bool>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .handshake::<_, bytes::Bytes>(io);
    let Ok(mut connection) = handshake.await else {
        return;
    };
    seen.connections.fetch_add(1, Ordering::SeqCst);
    let index = {
        let mut open = seen.lock();
        open.push((0, 0));
        open.len() - 1
    };
    while let Some(Ok((_request, mut respond))) = connection.accept().await {
        {
            let mut open = seen.lock();
            let (now, most) = &mut open[index];
            *now += 1;
            *most = (*most).max(*now);
        }
        let seen = Arc::clone(&seen);
        let mut release = release.clone();
        tokio::spawn(async move {
            let _ = release.wait_for(|released| *released).await;
            if let Ok(mut body) = respond.send_response(http::Response::new(()), false) {
                let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
            }
            seen.lock()[index].0 -= 1;
        });
    }
}

/// One worker (one pool) in front of `upstream`, spoken to in h2.
fn config(upstream: SocketAddr) -> String {
    format!(
        "{}routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{upstream}\"], protocol: h2 }}\n",
        head(1)
    )
}

fn gateway_to(upstream: SocketAddr) -> TestGateway {
    TestGateway::start(&config(upstream))
}

/// Sends a GET in a task of its own; its status and body when done.
fn spawn_get(client: &Client, url: String) -> tokio::task::JoinHandle<(u16, String)> {
    let client = client.clone();
    tokio::spawn(async move {
        let answer = client.get(&url).await;
        (answer.status.as_u16(), answer.text())
    })
}

async fn all_ok(requests: Vec<tokio::task::JoinHandle<(u16, String)>>) {
    for request in requests {
        let answer = request.await.expect("request task");
        assert_eq!(answer, (200, "ok".to_string()));
    }
}

#[tokio::test]
async fn a_burst_on_a_cold_pool_opens_one_connection() {
    let (release, held) = watch::channel(false);
    let (upstream, seen) = holding_h2_server(100, held).await;
    let gw = gateway_to(upstream);
    let client = Client::new();
    let requests: Vec<_> = (0..8).map(|_| spawn_get(&client, gw.url("/"))).collect();
    let all_open = poll_until(Duration::from_secs(10), || async {
        seen.open_now().iter().sum::<usize>() == 8
    })
    .await;
    assert!(all_open, "open streams: {:?}", seen.open_now());
    assert_eq!(
        seen.connections(),
        1,
        "eight requests at once on a cold pool, room for 100 streams: one connection"
    );
    let _ = release.send(true);
    all_ok(requests).await;
}

/// `auto` over TLS learns the wire from ALPN on its first connection; the
/// requests that come before it is made wait for it, and share it.
#[tokio::test]
async fn a_burst_on_an_auto_endpoint_before_alpn_has_told_opens_one_connection() {
    let tls = UpstreamTls::new();
    let (release, held) = watch::channel(false);
    let (upstream, seen) = holding_h2_tls_server(100, held, &tls.leaf).await;
    let gw = TestGateway::start(&auto_tls_config(upstream, &tls.ca_file));
    let client = Client::new();
    let requests: Vec<_> = (0..8).map(|_| spawn_get(&client, gw.url("/"))).collect();
    let all_open = poll_until(Duration::from_secs(10), || async {
        seen.open_now().iter().sum::<usize>() == 8
    })
    .await;
    assert!(all_open, "open streams: {:?}", seen.open_now());
    assert_eq!(seen.connections(), 1, "one TLS connection, h2 by ALPN");
    let _ = release.send(true);
    all_ok(requests).await;
}

/// When ALPN tells HTTP/1.1 instead, the requests that waited for the first
/// connection each open their own, as HTTP/1.1 needs.
#[tokio::test]
async fn a_burst_on_an_auto_endpoint_that_picks_http1_gets_a_connection_each() {
    let tls = UpstreamTls::new();
    let (release, held) = watch::channel(false);
    let (upstream, connections, holding) = holding_h1_tls_server(held, &tls.leaf).await;
    let gw = TestGateway::start(&auto_tls_config(upstream, &tls.ca_file));
    let client = Client::new();
    let requests: Vec<_> = (0..8).map(|_| spawn_get(&client, gw.url("/"))).collect();
    let all_held = poll_until(Duration::from_secs(10), || async {
        holding.load(Ordering::SeqCst) == 8
    })
    .await;
    assert!(all_held, "held: {}", holding.load(Ordering::SeqCst));
    assert_eq!(connections.load(Ordering::SeqCst), 8);
    let _ = release.send(true);
    all_ok(requests).await;
}

#[tokio::test]
async fn a_full_connection_makes_the_next_request_open_another() {
    let (release, held) = watch::channel(false);
    let (upstream, seen) = holding_h2_server(2, held).await;
    let gw = gateway_to(upstream);
    let client = Client::new();
    // A first exchange: the connection is up and its SETTINGS (two streams)
    // are known.
    let _ = release.send(true);
    assert_eq!(client.get(&gw.url("/")).await.status, 200);
    let _ = release.send(false);
    let mut requests = Vec::new();
    for open in 1..=2 {
        requests.push(spawn_get(&client, gw.url("/")));
        let reached = poll_until(Duration::from_secs(10), || async {
            seen.open_now() == [open]
        })
        .await;
        assert!(reached, "open streams: {:?}", seen.open_now());
    }
    // The connection is full: the third goes on a second one.
    requests.push(spawn_get(&client, gw.url("/")));
    let reached = poll_until(Duration::from_secs(10), || async {
        seen.open_now() == [2, 1]
    })
    .await;
    assert!(reached, "open streams: {:?}", seen.open_now());
    assert_eq!(seen.connections(), 2);
    let _ = release.send(true);
    all_ok(requests).await;
    assert_eq!(seen.most_open(), 2, "never over the peer's limit");
}

#[tokio::test]
async fn a_burst_to_an_endpoint_refusing_connections_fails_every_request_promptly() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    // Never ejected here: every answer is the connect failure's own.
    let yaml = config(dead).replace(
        "protocol: h2 }\n",
        "protocol: h2 }\n    outlier: { consecutive_failures: 100 }\n",
    );
    assert!(yaml.contains("outlier"), "{yaml}");
    let gw = TestGateway::start(&yaml);
    let client = Client::new().with_timeout(Duration::from_secs(10));
    let requests: Vec<_> = (0..8).map(|_| spawn_get(&client, gw.url("/"))).collect();
    for request in requests {
        let (status, text) = request.await.expect("request task");
        // The requests that waited for the one connecting get its failure.
        assert_eq!(status, 502, "{text}");
        assert!(text.contains("upstream connection failed"), "{text}");
    }
}
