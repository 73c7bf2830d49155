//! `switchyard ctl` against three real gateways on loopback: fan-out of
//! the actions, partial failure and timeouts reported (exit 1), token
//! errors, disagreement flagged (exit 3), JSON output, and `dns:NAME:PORT`
//! against a real DNS server.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const TOKEN: &str = "s3cret-token";

/// A canary gateway whose admin listens on `admin` and wants `TOKEN`.
fn replica(
    v1: &Backend,
    v2: &Backend,
    admin: SocketAddr,
    token_file: &std::path::Path,
) -> TestGateway {
    let yaml = format!(
        "workers: 1\naccess_log: false\nlisteners:\n  - name: http\n    bind: \"127.0.0.1:0\"\nadmin:\n  bind: \"{admin}\"\n  token_file: {}\nshutdown: {{ drain_delay: 0s, timeout: 2s }}\nroutes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n      v2: {{ endpoints: [\"{}\"] }}\n    release:\n      strategy: canary\n      stable: v1\n      canary: v2\n      weight: 10\n      steps: [10, 50]\n      step_interval: 1h\n",
        token_file.display(),
        v1.addr(),
        v2.addr()
    );
    TestGateway::start(&yaml)
}

struct Fleet {
    replicas: Vec<TestGateway>,
    token_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _backends: (Backend, Backend),
}

impl Fleet {
    /// Three replicas, admin on `127.0.0.1:0` each, or on `admins` if given.
    async fn start(admins: Option<Vec<SocketAddr>>) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
        let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
        let admins = admins.unwrap_or_else(|| vec!["127.0.0.1:0".parse().expect("addr"); 3]);
        let replicas = admins
            .into_iter()
            .map(|a| replica(&v1, &v2, a, &token_file))
            .collect();
        Fleet {
            replicas,
            token_file,
            _dir: dir,
            _backends: (v1, v2),
        }
    }

    fn admin_args(&self) -> Vec<String> {
        self.replicas
            .iter()
            .flat_map(|r| ["--admin".to_string(), r.gateway.admin_addr().to_string()])
            .collect()
    }

    async fn phases(&self) -> Vec<String> {
        let client = Client::new();
        let mut phases = Vec::new();
        for r in &self.replicas {
            let doc: Value =
                serde_json::from_slice(&client.get(&r.admin_url("/status")).await.body)
                    .expect("status");
            phases.push(
                doc["backends"]["app"]["phase"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        phases
    }
}

/// Runs `switchyard ctl ARGS` (off the runtime); (exit code, stdout, stderr).
async fn ctl(args: Vec<String>, env: Vec<(&'static str, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .arg("ctl")
            .args(&args)
            .env_remove("SWITCHYARD_ADMIN")
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .envs(env)
            .output()
            .expect("run switchyard ctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_reaches_every_replica_and_status_agrees() {
    let fleet = Fleet::start(None).await;
    let token = fleet.token_file.display().to_string();
    let mut a = fleet.admin_args();
    a.extend(args(&["--token-file", &token, "pause", "app"]));
    let (code, out, err) = ctl(a, vec![]).await;
    println!("{out}");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("  ok: ")).count(),
        3,
        "{out}"
    );
    assert_eq!(fleet.phases().await, ["paused"; 3]);

    // status: one line per replica, in agreement; the environment form.
    let list: Vec<String> = fleet
        .replicas
        .iter()
        .map(|r| format!("http://{}", r.gateway.admin_addr()))
        .collect();
    let (code, out, err) = ctl(
        args(&["status"]),
        vec![("SWITCHYARD_ADMIN", list.join(","))],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("  app  ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("paused") && l.contains("v2 10%")),
        "{out}"
    );
    assert!(!out.contains("DISAGREES"), "{out}");

    // reload, with the token from the environment.
    let mut a = fleet.admin_args();
    a.push("reload".into());
    let (code, out, err) = ctl(a, vec![("SWITCHYARD_ADMIN_TOKEN", TOKEN.to_string())]).await;
    // Started without a file: every replica refuses, and says why.
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("nothing to reload").count(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_or_silent_is_reported_and_the_others_act() {
    let fleet = Fleet::start(None).await;
    let down = Backend::closed_port();
    let (silent, _server) = Backend::silent().await;
    let token = fleet.token_file.display().to_string();
    let mut a = fleet.admin_args();
    a.extend(args(&[
        "--admin",
        &down.to_string(),
        "--admin",
        &silent.to_string(),
    ]));
    a.extend(args(&[
        "--token-file",
        &token,
        "--timeout",
        "500ms",
        "abort",
        "app",
    ]));
    let started = Instant::now();
    let (code, out, err) = ctl(a, vec![]).await;
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        took < Duration::from_secs(4),
        "the silent replica was waited for: {took:?}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("  ok: ")).count(),
        3,
        "{out}"
    );
    let down_line = out
        .lines()
        .find(|l| l.starts_with(&format!("http://{down}")))
        .unwrap_or("");
    assert!(
        down_line.contains("FAILED") && down_line.contains("refused"),
        "{out}"
    );
    let silent_line = out
        .lines()
        .find(|l| l.starts_with(&format!("http://{silent}")))
        .unwrap_or("");
    assert!(
        silent_line.contains("FAILED: no answer within 500ms"),
        "{out}"
    );
    assert!(out.contains("2 of 5 replica(s) failed"), "{out}");
    assert_eq!(fleet.phases().await, ["rolled_back"; 3]);

    // JSON: the same facts, machine-readable.
    let mut a = fleet.admin_args();
    a.extend(args(&[
        "--admin",
        &down.to_string(),
        "--output",
        "json",
        "status",
        "app",
    ]));
    let (code, out, _) = ctl(a, vec![]).await;
    assert_eq!(code, 1);
    let doc: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["failed"], 1);
    let replicas = doc["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 4);
    assert_eq!(replicas[0]["backends"]["app"]["phase"], "rolled_back");
    assert_eq!(replicas[3]["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_errors_are_reported_per_replica_or_before_sending() {
    let fleet = Fleet::start(None).await;
    // No token: every replica answers 401.
    let mut a = fleet.admin_args();
    a.extend(args(&["promote", "app"]));
    let (code, out, _) = ctl(a, vec![]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.matches("FAILED: HTTP 401: missing bearer token")
            .count(),
        3,
        "{out}"
    );
    // A wrong one: 403.
    let mut a = fleet.admin_args();
    a.extend(args(&["promote", "app"]));
    let (code, out, _) = ctl(a, vec![("SWITCHYARD_ADMIN_TOKEN", "nope".into())]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.matches("FAILED: HTTP 403: wrong token").count(),
        3,
        "{out}"
    );
    // An unreadable token file: nothing is sent, exit 2.
    let mut a = fleet.admin_args();
    a.extend(args(&[
        "--token-file",
        "/nonexistent/token",
        "promote",
        "app",
    ]));
    let (code, out, err) = ctl(a, vec![]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("cannot read token file /nonexistent/token"),
        "{err}"
    );
    assert_eq!(fleet.phases().await, ["progressing"; 3], "nothing happened");
    // No replicas at all: exit 2.
    let (code, _, err) = ctl(args(&["status"]), vec![]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no replicas"), "{err}");
    // An unknown backend: 404 on each.
    let mut a = fleet.admin_args();
    a.extend(args(&[
        "--token-file",
        &fleet.token_file.display().to_string(),
        "pause",
        "nope",
    ]));
    let (code, out, _) = ctl(a, vec![]).await;
    assert_eq!(code, 1);
    assert_eq!(out.matches("FAILED: HTTP 404").count(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_disagree_are_flagged() {
    let fleet = Fleet::start(None).await;
    // One replica only is rolled back (an action through one pod).
    let client = Client::new();
    let one = fleet.replicas[1].admin_url("/admin/backends/app/abort");
    let resp = client
        .request(
            http::Request::post(one)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status, 200);
    let mut a = fleet.admin_args();
    a.extend(args(&["status"]));
    let (code, out, _) = ctl(a, vec![]).await;
    println!("{out}");
    assert_eq!(code, 3, "{out}");
    let flagged: Vec<&str> = out.lines().filter(|l| l.contains("<- DISAGREES")).collect();
    assert_eq!(flagged.len(), 1, "{out}");
    assert!(flagged[0].starts_with(&format!(
        "http://{}",
        fleet.replicas[1].gateway.admin_addr()
    )));
    assert!(
        out.contains("app: replicas disagree: progressing at v1 90%/v2 10% on 2, rolled_back at v1 100%/v2 0% on 1"),
        "{out}"
    );
    // Acting on all of them brings them together again.
    let mut a = fleet.admin_args();
    a.extend(args(&[
        "--token-file",
        &fleet.token_file.display().to_string(),
        "abort",
        "app",
    ]));
    let (code, out, _) = ctl(a, vec![]).await;
    // Aborting an already rolled-back release is a conflict on that one.
    assert_eq!(code, 1, "{out}");
    let mut a = fleet.admin_args();
    a.extend(args(&["status"]));
    let (code, out, _) = ctl(a, vec![]).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_names_every_replica() {
    let dns = Dns::start();
    // Three replicas on 127.0.0.2-4, one admin port, as pods behind a
    // headless Service.
    let (port, pods) = pods(3).await;
    let ips: Vec<std::net::IpAddr> = pods.iter().map(|p| p.addr().ip()).collect();
    let admins: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    drop(pods);
    // The pods' port is released for the admin listeners.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fleet = Fleet::start(Some(admins.clone())).await;
    dns.set("gw.fleet.test", &ips);
    let token = fleet.token_file.display().to_string();
    let a = args(&[
        "--admin",
        &format!("dns:gw.fleet.test:{port}"),
        "--resolver",
        &dns.addr().to_string(),
        "--token-file",
        &token,
        "promote",
        "app",
    ]);
    let (code, out, err) = ctl(a, vec![]).await;
    assert_eq!(code, 0, "{out}{err}");
    for admin in &admins {
        assert!(
            out.contains(&format!("http://{admin}  ok: ")),
            "{admin} missing: {out}"
        );
    }
    assert_eq!(fleet.phases().await, ["promoted"; 3]);
    // A name with no addresses: nothing is sent, exit 2.
    let a = args(&[
        "--admin",
        "dns:none.fleet.test:9901",
        "--resolver",
        &dns.addr().to_string(),
        "status",
    ]);
    let (code, _, err) = ctl(a, vec![]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("dns:none.fleet.test"), "{err}");
}
