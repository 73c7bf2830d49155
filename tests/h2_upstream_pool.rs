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
            tokio::spawn(async move {
                let handshake = h2::server::Builder::new()
                    .max_concurrent_streams(max_streams)
                    .handshake::<_, bytes::Bytes>(socket);
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
                        if let Ok(mut body) = respond.send_response(http::Response::new(()), false)
                        {
                            let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
                        }
                        seen.lock()[index].0 -= 1;
                    });
                }
            });
        }
    });
    (addr, seen)
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
