//! Property tests of the admin API's request handling (issue 9, point 5):
//! arbitrary methods, paths, queries, tokens and bodies, sent raw to a real
//! admin listener guarding a canary release with a token. Every request gets
//! a well-formed answer in bounded time and never a server error; nothing
//! changes the release without the right token; the listener and the proxy
//! keep serving. 256 cases by default; `PROPTEST_CASES=N` for more.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-token";

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("POST".to_string()),
        3 => Just("GET".to_string()),
        1 => Just("HEAD".to_string()),
        1 => prop::sample::select(vec!["PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"])
            .prop_map(str::to_string),
        1 => "[A-Z]{1,10}",
        1 => "[!-~]{1,8}",
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "admin", "backends", "app", "single", "nope", "promote", "abort", "pause",
            "resume", "retry", "reload", "status", "metrics", "healthz", "readyz", "",
            "..", ".", "%2e%2e", "%00", "%61pp", "APP", "Abort", "app%2Fabort",
        ])
        .prop_map(str::to_string),
        1 => "[!-~]{0,12}",
        1 => "[a-z0-9%._~-]{1,16}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => random_path(),
        1 => action_path(),
    ]
}

/// `/admin/backends/{backend}/{action}` with real and wrong names.
fn action_path() -> impl Strategy<Value = String> {
    let backend = prop_oneof![
        3 => Just("app".to_string()),
        1 => Just("single".to_string()),
        1 => Just("nope".to_string()),
        1 => "[!-~&&[^/?#]]{0,10}",
    ];
    let action = prop_oneof![
        5 => prop::sample::select(vec!["promote", "abort", "pause", "resume", "retry"])
            .prop_map(str::to_string),
        1 => "[!-~&&[^/?#]]{0,10}",
    ];
    (backend, action).prop_map(|(b, a)| format!("/admin/backends/{b}/{a}"))
}

fn random_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(segment(), 0..6),
        prop::option::of("[!-~]{0,16}"),
        any::<bool>(),
    )
        .prop_map(|(segments, query, trailing)| {
            let mut path = format!("/{}", segments.join("/"));
            if trailing {
                path.push('/');
            }
            if let Some(q) = query {
                path.push('?');
                path.push_str(&q);
            }
            path
        })
}

fn authorization() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        4 => Just(Some(format!("Bearer {TOKEN}"))),
        1 => Just(Some(format!("Bearer {TOKEN}x"))),
        1 => Just(Some(format!("bearer {TOKEN}"))),
        1 => Just(Some(format!("Basic {TOKEN}"))),
        1 => "[ -~]{0,40}".prop_map(Some),
    ]
}

/// Writes one raw request and reads the answer's status code (None: the
/// connection closed without a status line).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.expect("connect admin");
    stream.write_all(raw).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer within 5 s to {:?}",
        String::from_utf8_lossy(raw)
    );
    let text = String::from_utf8_lossy(&got);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some(status)
}

async fn phase(admin: SocketAddr) -> String {
    let status = Client::new()
        .get(&format!("http://{admin}/status"))
        .await
        .text();
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    status["backends"]["app"]["phase"]
        .as_str()
        .expect("phase")
        .to_string()
}

#[test]
fn arbitrary_admin_requests_get_a_bounded_answer_and_never_a_server_error() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let (v1, v2) = rt.block_on(async { (Backend::start("v1").await, Backend::start("v2").await) });
    let yaml = format!(
        "access_log: false\nlisteners:\n  - name: http\n    bind: \"127.0.0.1:0\"\nadmin:\n  bind: \"127.0.0.1:0\"\n  token_file: \"{}\"\nroutes:\n  - name: all\n    backend: app\n  - name: single\n    match: {{ path_prefix: /single }}\n    backend: single\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n      v2: {{ endpoints: [\"{}\"] }}\n    release:\n      strategy: canary\n      stable: v1\n      canary: v2\n      weight: 10\n  single:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n",
        token_file.display(),
        v1.addr(),
        v2.addr(),
        v1.addr()
    );
    let gw = TestGateway::start(&yaml);
    let admin = gw.gateway.admin_addr();
    let phases = ["stable", "progressing", "paused", "promoted", "rolled_back"];

    let mut runner = proptest::test_runner::TestRunner::new(cases());
    let acted = std::cell::Cell::new(0u32);
    let strategy = (
        method(),
        path(),
        authorization(),
        prop::collection::vec(any::<u8>(), 0..128),
    );
    let outcome = runner.run(&strategy, |(method, path, auth, body)| {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n");
        if let Some(auth) = &auth {
            raw.push_str(&format!("Authorization: {auth}\r\n"));
        }
        raw.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&body);
        let authorized = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
        rt.block_on(async {
            let before = phase(admin).await;
            let status = exchange(admin, &raw).await;
            let after = phase(admin).await;
            // hyper may close on a request line it cannot parse; otherwise a
            // status below 500.
            if let Some(status) = status {
                prop_assert!(
                    (200..500).contains(&status),
                    "{status} for {method} {path} ({auth:?})"
                );
                if method == "POST" && path.starts_with("/admin/") && status < 300 {
                    prop_assert!(authorized, "{status} for an unauthorized {method} {path}");
                }
                // Past the token check, to the release engine (done or refused).
                if authorized
                    && path.starts_with("/admin/backends/app/")
                    && (status == 200 || status == 409)
                {
                    acted.set(acted.get() + 1);
                }
            }
            if !authorized {
                prop_assert_eq!(
                    &before,
                    &after,
                    "{} {} changed the release without the token",
                    method,
                    path
                );
            }
            prop_assert!(phases.contains(&after.as_str()), "phase {}", after);
            Ok(())
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // The generator reaches the actions, not only the refusals.
    assert!(acted.get() > 0, "no authorized action was carried out");

    // Both listeners still serve.
    rt.block_on(async {
        let client = Client::new();
        assert_eq!(
            client.get(&format!("http://{admin}/healthz")).await.status,
            200
        );
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    });
}
