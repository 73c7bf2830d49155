//! Fleet-wide analysis: gateway replicas judge their canary from a real
//! Prometheus server that scrapes them all, and all roll back — also when
//! the canary's endpoints are discovered by DNS (three replicas, one
//! config). An unreachable Prometheus decides nothing.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A Prometheus server on loopback, stopped (by PID) when dropped.
struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on `addr`, scraping the admin listeners `targets`.
    fn start(addr: SocketAddr, targets: &[SocketAddr]) -> Prometheus {
        let binary = require("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, _dir: dir }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address nothing listens on, released for the next bind.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn replica(v1: &Backend, v2: &Backend, prometheus: SocketAddr) -> String {
    let analysis = format!(
        "analysis:\n  interval: 500ms\n  window: 10s\n  min_requests: 20\n  max_error_rate: 0.1\n  max_p99_latency: 500ms\n  source:\n    prometheus: {{ url: \"http://{prometheus}\" }}"
    );
    canary(v1.addr(), v2.addr(), 50.0, &analysis)
}

async fn phase(client: &Client, gw: &TestGateway) -> String {
    let status: serde_json::Value =
        serde_json::from_slice(&client.get(&gw.admin_url("/status")).await.body)
            .expect("status JSON");
    status["backends"]["app"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Sends traffic through every replica until all of them report
/// `rolled_back` (60 s at most); (requests sent, client-visible failures).
async fn until_all_rolled_back(client: &Client, replicas: &[&TestGateway]) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0u64;
    let mut failed = 0u64;
    loop {
        for gw in replicas {
            for _ in 0..10 {
                sent += 1;
                if client.get(&gw.url("/")).await.status != 200 {
                    failed += 1;
                }
            }
        }
        let mut phases = Vec::new();
        for gw in replicas {
            phases.push(phase(client, gw).await);
        }
        if phases.iter().all(|p| p == "rolled_back") {
            return (sent, failed);
        }
        assert!(
            Instant::now() < deadline,
            "not rolled back on every replica within 60 s: {phases:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_rolled_back_for_errors(client: &Client, replicas: &[&TestGateway]) {
    for gw in replicas {
        let status: serde_json::Value =
            serde_json::from_slice(&client.get(&gw.admin_url("/status")).await.body).expect("JSON");
        let reason = status["backends"]["app"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(reason.starts_with("v2 error rate"), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_behind_two_replicas_is_rolled_back_on_both() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Status(500));
    // The replicas need Prometheus's address before it knows theirs.
    let prom_addr = free_port();
    let a = TestGateway::start(&replica(&v1, &v2, prom_addr));
    let b = TestGateway::start(&replica(&v1, &v2, prom_addr));
    let _prometheus =
        Prometheus::start(prom_addr, &[a.gateway.admin_addr(), b.gateway.admin_addr()]);

    let client = Client::new();
    let (sent, failed) = until_all_rolled_back(&client, &[&a, &b]).await;
    println!("fleet rollback: {sent} requests, {failed} client-visible failures");
    assert_rolled_back_for_errors(&client, &[&a, &b]).await;
    assert_eq!(failed, 0, "retry_on_stable kept clients whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_roll_back_a_failing_discovered_canary_together() {
    let dns = Dns::start();
    let v1 = Backend::start("v1").await;
    let (port, pods) = pods(3).await;
    for pod in &pods {
        pod.set_mode(Mode::Status(500));
    }
    let ips: Vec<std::net::IpAddr> = pods.iter().map(|p| p.addr().ip()).collect();
    dns.set("app-v2.fleet.test", &ips);
    let prom_addr = free_port();
    // One config for the three.
    let config = format!(
        "{}routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n      v2:\n        discover: {{ dns: app-v2.fleet.test, port: {port}, interval: 500ms, resolver: \"{}\" }}\n    release:\n      strategy: canary\n      stable: v1\n      canary: v2\n      weight: 50\n      analysis:\n        interval: 500ms\n        window: 10s\n        min_requests: 20\n        max_error_rate: 0.1\n        max_p99_latency: 500ms\n        source:\n          prometheus: {{ url: \"http://{prom_addr}\" }}\n",
        head(1),
        v1.addr(),
        dns.addr()
    );
    let replicas: Vec<TestGateway> = (0..3).map(|_| TestGateway::start(&config)).collect();
    let admins: Vec<SocketAddr> = replicas.iter().map(|r| r.gateway.admin_addr()).collect();
    let _prometheus = Prometheus::start(prom_addr, &admins);

    let client = Client::new();
    let all: Vec<&TestGateway> = replicas.iter().collect();
    for gw in &all {
        let status: serde_json::Value =
            serde_json::from_slice(&client.get(&gw.admin_url("/status")).await.body).expect("JSON");
        let endpoints = status["backends"]["app"]["versions"]["v2"]["endpoints"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(endpoints, 3, "each replica sees every pod");
    }
    let (sent, failed) = until_all_rolled_back(&client, &all).await;
    println!(
        "fleet rollback of a discovered canary: {sent} requests, {failed} client-visible failures"
    );
    assert_rolled_back_for_errors(&client, &all).await;
    assert!(
        pods.iter().all(|p| p.hits() > 0),
        "every pod of the canary took traffic"
    );
}

#[tokio::test]
async fn an_unreachable_prometheus_decides_nothing() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Status(500));
    let gw = TestGateway::start(&replica(&v1, &v2, Backend::closed_port()));
    let client = Client::new();
    for _ in 0..100 {
        client.get(&gw.url("/")).await;
    }
    // Several analysis intervals pass with a canary failing every request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(phase(&client, &gw).await, "progressing");
}
