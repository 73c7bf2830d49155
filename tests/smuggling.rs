//! Request smuggling and parsing (issue 9, point 3): a table of malformed and
//! ambiguous HTTP/1.1 requests written raw to the gateway, each declared with
//! its expected outcome. For every case the test checks the statuses the
//! client gets (or that the connection is closed) and counts what the
//! backends received: the backend must never see two requests where the
//! client sent one, nor any request the client hid in a body.
//!
//! Observed and asserted behaviour (hyper 1.x behind the connection guard):
//! - Content-Length with Transfer-Encoding (either order, duplicated TE, TE
//!   hidden behind a bare LF), differing Content-Length lines: 400 from the
//!   guard, connection closed.
//! - `Content-Length: 5, 6` (and `5, 5`, `+5`), a TE whose last coding is not
//!   `chunked`, TE on HTTP/1.0, obs-fold, bare CR, invalid header names, a NUL
//!   in a value: 400 from hyper's parser, connection closed.
//! - Bare LF line endings: accepted (RFC 9112 §2.2 allows it), one request.
//! - Absolute-form target: routed by its authority, sent upstream in
//!   origin-form.
//! - CONNECT: 400.
//! - A request line longer than `limits.max_header_bytes`: 431 (the guard
//!   counts the request line in the head; hyper's own 414 only applies to a
//!   target over 64 KiB, which the guard never lets through).
//!
//! Four gateway bugs found by this table are `#[ignore]`d tests at the end
//! of the file, each written as the gateway should behave: `gzip, chunked`
//! forwarded without its gzip coding, differing duplicate Host headers
//! accepted, an absolute-form target forwarded with the client's other Host,
//! and the guard's CL+TE check skipped for a request pipelined in the same
//! read as the one before it.

mod support;

use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bound on one raw exchange (connect, write, read to close).
const CASE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bounded negative check: how long we keep watching for a late extra request
/// at the backend after the client's exchange is over.
const SETTLE: Duration = Duration::from_millis(150);
const MAX_HEADER_BYTES: usize = 4096;

/// What one raw exchange returned.
struct Exchange {
    text: String,
    /// The gateway closed (or reset) the connection before the deadline.
    closed: bool,
}

impl Exchange {
    /// The status of every response on the wire, in order: each head is
    /// parsed and its body skipped by its Content-Length or chunks.
    fn statuses(&self) -> Vec<u16> {
        let mut out = Vec::new();
        let mut rest = self.text.as_str();
        while rest.starts_with("HTTP/1.") {
            let Some(end) = rest.find("\r\n\r\n") else {
                break;
            };
            let head = &rest[..end];
            rest = &rest[end + 4..];
            match head.split(' ').nth(1).and_then(|s| s.parse().ok()) {
                Some(status) => out.push(status),
                None => break,
            }
            let lower = head.to_ascii_lowercase();
            let length = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = length {
                rest = rest.get(len..).unwrap_or("");
            } else if lower.contains("transfer-encoding: chunked") {
                // Chunks until the zero-size one; trailers are not expected.
                loop {
                    let Some(line_end) = rest.find("\r\n") else {
                        return out;
                    };
                    let size = usize::from_str_radix(rest[..line_end].trim(), 16).unwrap_or(0);
                    rest = rest.get(line_end + 2 + size + 2..).unwrap_or("");
                    if size == 0 {
                        break;
                    }
                }
            } else {
                break;
            }
        }
        out
    }
}

/// Writes `bytes` in one go and reads until the gateway closes or `timeout`.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], timeout: Duration) -> Exchange {
    let deadline = Instant::now() + timeout;
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let _ = stream.set_nodelay(true);
    let _ = tokio::time::timeout_at(deadline, stream.write_all(bytes)).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Err(_) => break false,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// A raw upstream that records each request head exactly as it arrived on
/// the wire, answers `200 captured` and closes. Stops when dropped.
struct Capture {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Capture {
    async fn start() -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&heads);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while seen.len() < 65536 && !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                    })
                    .await;
                    log.lock()
                        .expect("capture log")
                        .push(String::from_utf8_lossy(&seen).into_owned());
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\ncaptured",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Capture { addr, heads, task }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("capture log").clone()
    }

    fn clear(&self) {
        self.heads.lock().expect("capture log").clear();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gateway under test: host `other.host` goes to the capturing upstream,
/// everything else to the recording [`Backend`].
fn config(app: std::net::SocketAddr, capture: std::net::SocketAddr) -> String {
    format!(
        "{}limits:\n  max_header_bytes: {MAX_HEADER_BYTES}\n  header_read_timeout: 2s\nroutes:\n  - name: other\n    match: {{ host: other.host }}\n    backend: other\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{app}\"] }}\n  other:\n    versions:\n      v1: {{ endpoints: [\"{capture}\"] }}\n",
        head(1)
    )
}

#[derive(Clone, Copy, Debug)]
enum Want {
    /// Exactly these statuses, in order.
    Statuses(&'static [u16]),
    /// These statuses first; after them at most one more answer, or a close.
    StartsWith(&'static [u16]),
    /// Refused: no 2xx, and the connection ends (an error answer then close,
    /// or a close/reset without one); at most one answer.
    Refused,
}

type Check = fn(&[Recorded], &[String]) -> Result<(), String>;

struct Case {
    name: &'static str,
    request: Vec<u8>,
    want: Want,
    /// Requests the recording backend may receive for this case.
    app: RangeInclusive<usize>,
    /// Requests the capturing upstream (host `other.host`) must receive.
    captured: usize,
    check: Option<Check>,
}

fn case(name: &'static str, request: &[u8], want: Want, app: RangeInclusive<usize>) -> Case {
    Case {
        name,
        request: request.to_vec(),
        want,
        app,
        captured: 0,
        check: None,
    }
}

fn refused(name: &'static str, request: &[u8]) -> Case {
    case(name, request, Want::Refused, 0..=0)
}

fn cases() -> Vec<Case> {
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES + 100)
    );
    // A body that looks like a request: it must stay a body.
    let hidden = "GET /smuggled-in-body HTTP/1.1\r\nHost: x\r\n\r\n";
    let body_looks_like_request = format!(
        "POST /body-like-request HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{hidden}",
        hidden.len()
    );
    vec![
        // --- Content-Length and Transfer-Encoding together ---------------
        refused(
            "cl-then-te",
            b"POST /cl-then-te HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        refused(
            "te-then-cl",
            b"POST /te-then-cl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        refused(
            "cl-with-duplicated-te",
            b"POST /cl-with-duplicated-te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        refused(
            "cl-te-behind-bare-lf",
            b"POST /cl-te-behind-bare-lf HTTP/1.1\r\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        refused(
            "cl-te-mixed-case",
            b"POST /cl-te-mixed-case HTTP/1.1\r\nHost: x\r\ncOnTeNt-LeNgTh: 5\r\ntRaNsFeR-eNcOdInG: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        // Duplicated `chunked` alone is one chunked body: hyper decodes it
        // once, the upstream gets it re-framed, one request.
        Case {
            check: Some(|app, _| {
                (app[0].body_len == 5)
                    .then_some(())
                    .ok_or(format!("body_len {}", app[0].body_len))
            }),
            ..case(
                "duplicated-te-chunked",
                b"POST /duplicated-te-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                Want::Statuses(&[200]),
                1..=1,
            )
        },
        refused(
            "te-chunked-then-identity",
            b"POST /te-chunked-then-identity HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        refused(
            "te-not-chunked",
            b"POST /te-not-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        refused(
            "http10-with-te",
            b"POST /http10-with-te HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        // --- Content-Length values ---------------------------------------
        refused(
            "cl-duplicate-differing",
            b"POST /cl-duplicate-differing HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        refused(
            "cl-list-5-6",
            b"POST /cl-list-5-6 HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        refused(
            "cl-list-5-5",
            b"POST /cl-list-5-5 HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
        ),
        refused(
            "cl-plus-sign",
            b"POST /cl-plus-sign HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        ),
        refused(
            "cl-space-before-colon",
            b"POST /cl-space-before-colon HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        ),
        // --- line syntax ---------------------------------------------------
        refused(
            "obs-fold",
            b"GET /obs-fold HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\nConnection: close\r\n\r\n",
        ),
        refused(
            "obs-fold-hiding-te",
            b"POST /obs-fold-hiding-te HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        Case {
            check: Some(|app, _| {
                (app[0].path_and_query == "/bare-lf")
                    .then_some(())
                    .ok_or(format!("{:?}", app[0].path_and_query))
            }),
            ..case(
                "bare-lf",
                b"GET /bare-lf HTTP/1.1\nHost: x\nConnection: close\n\n",
                Want::Statuses(&[200]),
                1..=1,
            )
        },
        refused(
            "bare-cr",
            b"GET /bare-cr HTTP/1.1\r\nHost: x\rX-Injected: 1\r\nConnection: close\r\n\r\n",
        ),
        refused(
            "header-name-with-space",
            b"GET /header-name-with-space HTTP/1.1\r\nHost: x\r\nBad Name: v\r\nConnection: close\r\n\r\n",
        ),
        refused(
            "header-name-colon-first",
            b"GET /header-name-colon-first HTTP/1.1\r\nHost: x\r\n: v\r\nConnection: close\r\n\r\n",
        ),
        refused(
            "nul-in-value",
            b"GET /nul-in-value HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\nConnection: close\r\n\r\n",
        ),
        refused(
            "double-space-request-line",
            b"GET  /double-space HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
        refused(
            "missing-host",
            b"GET /missing-host HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        // --- targets -------------------------------------------------------
        Case {
            captured: 1,
            check: Some(|_, heads| {
                let line = heads[0].lines().next().unwrap_or("");
                if line != "GET /x?q=1 HTTP/1.1" {
                    return Err(format!("upstream request line {line:?} is not origin-form"));
                }
                let xfh = heads[0]
                    .lines()
                    .find_map(|l| l.strip_prefix("x-forwarded-host: "))
                    .unwrap_or("");
                (xfh == "other.host")
                    .then_some(())
                    .ok_or(format!("x-forwarded-host {xfh:?}"))
            }),
            ..case(
                "absolute-form",
                b"GET http://other.host/x?q=1 HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
                Want::Statuses(&[200]),
                0..=0,
            )
        },
        case(
            "connect",
            b"CONNECT other.host:443 HTTP/1.1\r\nHost: other.host:443\r\nConnection: close\r\n\r\n",
            Want::Statuses(&[400]),
            0..=0,
        ),
        case(
            "oversized-request-line",
            long_target.as_bytes(),
            Want::Statuses(&[431]),
            0..=0,
        ),
        // --- bodies and pipelining -----------------------------------------
        Case {
            check: Some(|app, _| {
                let seen: Vec<(&str, usize)> = app
                    .iter()
                    .map(|r| (r.path_and_query.as_str(), r.body_len))
                    .collect();
                (seen == [("/pipelined-a", 5), ("/pipelined-b", 0)])
                    .then_some(())
                    .ok_or(format!("{seen:?}"))
            }),
            ..case(
                "pipelined-after-body",
                b"POST /pipelined-a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /pipelined-b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                Want::Statuses(&[200, 200]),
                2..=2,
            )
        },
        Case {
            check: Some(|app, _| {
                let expected = "GET /smuggled-in-body HTTP/1.1\r\nHost: x\r\n\r\n".len();
                (app[0].path_and_query == "/body-like-request" && app[0].body_len == expected)
                    .then_some(())
                    .ok_or(format!("{:?} {}", app[0].path_and_query, app[0].body_len))
            }),
            ..case(
                "body-looks-like-request",
                body_looks_like_request.as_bytes(),
                Want::Statuses(&[200]),
                1..=1,
            )
        },
        // The head may reach the backend before the body is found invalid;
        // the request is then aborted upstream. Never a second request.
        // A request with CL+TE pipelined behind a benign one in the same
        // write is not seen by the guard (see the ignored test below), but
        // hyper still frames it by TE, drops CL and closes the connection
        // after it: nothing hidden in it reaches the backend.
        case(
            "pipelined-cl-te-never-smuggles",
            b"GET /benign HTTP/1.1\r\nHost: x\r\n\r\nPOST /pipelined-cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            Want::StartsWith(&[200]),
            1..=2,
        ),
        case(
            "chunked-invalid-size",
            b"POST /chunked-invalid-size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            Want::Refused,
            0..=1,
        ),
        case(
            "chunked-size-overflow",
            b"POST /chunked-size-overflow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            Want::Refused,
            0..=1,
        ),
    ]
}

/// The gateway and its two upstreams, for running cases.
struct Rig {
    app: Backend,
    capture: Capture,
    gw: TestGateway,
}

impl Rig {
    async fn start() -> Rig {
        let app = Backend::start("app").await;
        let capture = Capture::start().await;
        let gw = TestGateway::start(&config(app.addr(), capture.addr));
        Rig { app, capture, gw }
    }

    /// Runs one case; returns its problems (empty when it behaved).
    async fn run(&self, case: &Case) -> Result<(), String> {
        let (app, capture) = (&self.app, &self.capture);
        app.clear_requests();
        capture.clear();
        let ex = exchange(self.gw.addr(), &case.request, CASE_TIMEOUT).await;
        let statuses = ex.statuses();
        let mut problems = Vec::new();
        match case.want {
            Want::Statuses(want) => {
                if statuses != want {
                    problems.push(format!("statuses {statuses:?}, want {want:?}"));
                }
            }
            Want::StartsWith(want) => {
                if !statuses.starts_with(want) || statuses.len() > want.len() + 1 {
                    problems.push(format!(
                        "statuses {statuses:?}, want {want:?} then at most one"
                    ));
                }
            }
            Want::Refused => {
                if statuses.len() > 1 || statuses.iter().any(|s| *s < 400) {
                    problems.push(format!("statuses {statuses:?}, want one 4xx/5xx or none"));
                }
                if !ex.closed {
                    problems.push("connection left open".into());
                }
            }
        }
        // Let requests the gateway may still be forwarding arrive, then
        // watch a little longer for an extra one (bounded negative check).
        let _ = poll_until(Duration::from_secs(2), || async {
            app.requests().len() >= *case.app.start() && capture.heads().len() >= case.captured
        })
        .await;
        tokio::time::sleep(SETTLE).await;
        let seen = app.requests();
        let heads = capture.heads();
        if !case.app.contains(&seen.len()) {
            let paths: Vec<&str> = seen.iter().map(|r| r.path_and_query.as_str()).collect();
            problems.push(format!(
                "backend saw {} request(s) {paths:?}, want {:?}",
                seen.len(),
                case.app
            ));
        }
        if heads.len() != case.captured {
            problems.push(format!(
                "capturing upstream saw {} request(s), want {}",
                heads.len(),
                case.captured
            ));
        }
        if let Some(bad) = seen.iter().find(|r| r.path_and_query.contains("smuggled")) {
            problems.push(format!("smuggled request reached the backend: {bad:?}"));
        }
        if problems.is_empty() {
            if let Some(check) = case.check {
                if let Err(e) = check(&seen, &heads) {
                    problems.push(e);
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{}: {}\n  answer: {:?}",
            case.name,
            problems.join("; "),
            ex.text.chars().take(300).collect::<String>()
        ))
    }
}

#[tokio::test]
async fn malformed_and_ambiguous_requests_are_refused_or_normalised() {
    let rig = Rig::start().await;
    let table = cases();
    let mut failures = Vec::new();
    for case in &table {
        if let Err(e) = rig.run(case).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    // The gateway still serves normally after the whole table.
    let resp = Client::new().get(&rig.gw.url("/after")).await;
    assert_eq!(resp.status, 200);
}

// ---------------------------------------------------------------------------
// Gateway bugs this table found. Each runs the case as it should behave.
// ---------------------------------------------------------------------------

async fn run_alone(case: Case) {
    let rig = Rig::start().await;
    if let Err(e) = rig.run(&case).await {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    run_alone(case(
        "te-gzip-chunked",
        b"POST /te-gzip-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Want::Refused,
        0..=0,
    ))
    .await;
}

#[tokio::test]
async fn differing_host_headers_are_refused() {
    run_alone(refused(
        "duplicate-host-differing",
        b"GET /duplicate-host HTTP/1.1\r\nHost: x\r\nHost: other.host\r\nConnection: close\r\n\r\n",
    ))
    .await;
}

#[tokio::test]
async fn an_absolute_form_target_replaces_the_host_header_upstream() {
    run_alone(Case {
        check: Some(|_, heads| {
            let hosts: Vec<&str> = heads[0]
                .lines()
                .filter_map(|l| l.strip_prefix("host: "))
                .collect();
            (hosts == ["other.host"]).then_some(()).ok_or(format!(
                "upstream Host {hosts:?}, want the target's authority"
            ))
        }),
        captured: 1,
        ..case(
            "absolute-form-host-rewritten",
            b"GET http://other.host/y HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
            Want::Statuses(&[200]),
            0..=0,
        )
    })
    .await;
}

#[tokio::test]
async fn a_pipelined_request_with_both_lengths_is_refused() {
    run_alone(case(
        "pipelined-cl-te-after-benign",
        b"GET /benign HTTP/1.1\r\nHost: x\r\n\r\nPOST /pipelined-cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        Want::Statuses(&[200, 400]),
        1..=1,
    ))
    .await;
}
