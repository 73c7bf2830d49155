//! Hot reload and graceful shutdown: every trigger (in-place write,
//! rename-save, ConfigMap symlink swap, SIGHUP, explicit request), refusal of
//! invalid configs, carry-over of live state, no failed request under load
//! across reloads, and draining on SIGTERM.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use switchyard::control::ReloadOutcome;
use switchyard::Gateway;

/// How long a file change may take to be served (the bound).
const RELOAD_BOUND: Duration = Duration::from_secs(2);

fn config(v1: SocketAddr, v2: SocketAddr, weight: f64) -> String {
    canary(v1, v2, weight, "")
}

/// A gateway started from a file in a temp dir.
struct FileGateway {
    gateway: Gateway,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FileGateway {
    fn start(yaml: &str) -> FileGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, yaml).expect("write");
        let gateway = Gateway::start_from_file(&path).expect("start");
        FileGateway {
            gateway,
            path,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.gateway.addr())
    }

    fn generation(&self) -> u64 {
        self.gateway.generation()
    }
}

/// Polls until every one of 20 requests is served by `name`.
async fn served_only_by(client: &Client, url: &str, name: &str, within: Duration) -> bool {
    poll_until(within, || async {
        for _ in 0..20 {
            if client.get(url).await.header(SERVED_BY) != Some(name) {
                return false;
            }
        }
        true
    })
    .await
}

#[tokio::test]
async fn an_in_place_write_changes_the_weight_within_2s() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = FileGateway::start(&config(v1.addr(), v2.addr(), 0.0));
    let client = Client::new();
    assert!(served_only_by(&client, &gw.url(), "v1", RELOAD_BOUND).await);
    std::fs::write(&gw.path, config(v1.addr(), v2.addr(), 100.0)).expect("write in place");
    assert!(
        served_only_by(&client, &gw.url(), "v2", RELOAD_BOUND).await,
        "weight 100 not applied"
    );
    assert_eq!(gw.generation(), 2);
}

#[tokio::test]
async fn an_editor_rename_save_is_seen() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = FileGateway::start(&config(v1.addr(), v2.addr(), 0.0));
    let client = Client::new();
    let tmp = gw.path.with_extension("yaml.swp");
    std::fs::write(&tmp, config(v1.addr(), v2.addr(), 100.0)).expect("write temp");
    std::fs::rename(&tmp, &gw.path).expect("rename over");
    assert!(
        served_only_by(&client, &gw.url(), "v2", RELOAD_BOUND).await,
        "rename-save not applied"
    );
}

/// Lays out a ConfigMap volume: `dir/switchyard.yaml -> ..data/switchyard.yaml`,
/// `..data -> ..<stamp>/`; returns the path the gateway reads.
fn configmap_write(dir: &Path, stamp: &str, yaml: &str) -> PathBuf {
    let versioned = dir.join(format!("..{stamp}"));
    std::fs::create_dir(&versioned).expect("timestamped dir");
    std::fs::write(versioned.join("switchyard.yaml"), yaml).expect("write");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).expect("..data_tmp");
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("remove old dir");
    }
    let link = dir.join("switchyard.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/switchyard.yaml", &link).expect("file link");
    }
    link
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_seen() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = configmap_write(
        dir.path(),
        "2026_11_28_10_00_00.1",
        &config(v1.addr(), v2.addr(), 0.0),
    );
    let gateway = Gateway::start_from_file(&path).expect("start");
    let url = format!("http://{}/", gateway.addr());
    let client = Client::new();
    assert!(served_only_by(&client, &url, "v1", RELOAD_BOUND).await);
    configmap_write(
        dir.path(),
        "2026_11_28_10_01_00.2",
        &config(v1.addr(), v2.addr(), 100.0),
    );
    assert!(
        served_only_by(&client, &url, "v2", RELOAD_BOUND).await,
        "first swap not applied"
    );
    // A watch on the file itself would miss the second swap: check it too.
    configmap_write(
        dir.path(),
        "2026_11_28_10_02_00.3",
        &config(v1.addr(), v2.addr(), 0.0),
    );
    assert!(
        served_only_by(&client, &url, "v1", RELOAD_BOUND).await,
        "second swap not applied"
    );
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_old_config_serving_and_is_reported() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = FileGateway::start(&config(v1.addr(), v2.addr(), 100.0));
    let client = Client::new();
    let broken = config(v1.addr(), v2.addr(), 100.0).replace("canary: v2", "canary: v7");
    std::fs::write(&gw.path, broken).expect("write");
    let shared = Arc::clone(gw.gateway.shared());
    let refused = poll_until(RELOAD_BOUND, || {
        let shared = Arc::clone(&shared);
        async move { shared.metrics.reloads(false) == 1 }
    })
    .await;
    assert!(refused, "invalid config not refused");
    let last = shared.events.last_reload().expect("a reload was recorded");
    assert!(!last.success);
    let error = last.error.expect("error text");
    assert!(error.contains(":22:15: canary version \"v7\""), "{error}");
    for _ in 0..20 {
        assert_eq!(client.get(&gw.url()).await.header(SERVED_BY), Some("v2"));
    }
    assert_eq!(gw.generation(), 1);
    // An explicit reload of the same bad file is refused again, not skipped.
    assert!(matches!(
        gw.gateway.reload().await,
        ReloadOutcome::Failed(_)
    ));
}

#[tokio::test]
async fn an_unchanged_file_is_not_reloaded_but_an_explicit_request_is() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let yaml = config(v1.addr(), v2.addr(), 0.0);
    let gw = FileGateway::start(&yaml);
    std::fs::write(&gw.path, &yaml).expect("rewrite the same content");
    tokio::time::sleep(Duration::from_millis(600)).await; // past the debounce: nothing should happen
    assert_eq!(gw.generation(), 1, "same content must not reload");
    assert_eq!(
        gw.gateway.reload().await,
        ReloadOutcome::Applied { generation: 2 }
    );
}

#[tokio::test]
async fn live_endpoint_state_carries_over_and_new_endpoints_start_healthy() {
    let (v1, v2, v3) = (
        Backend::start("v1").await,
        Backend::start("v2").await,
        Backend::start("v3").await,
    );
    let gw = FileGateway::start(&config(v1.addr(), v2.addr(), 0.0));
    let endpoint = |gw: &FileGateway, version: &str| {
        let snapshot = gw.gateway.shared().snapshot.load_full();
        let backend = snapshot.backend("app").expect("app").clone();
        let v = backend
            .versions
            .iter()
            .find(|v| v.name == version)
            .expect("version");
        v.endpoints[0].clone()
    };
    let before = endpoint(&gw, "v1");
    before.ejections.store(3, Ordering::Relaxed);
    // Change the weight and v2's endpoint.
    std::fs::write(&gw.path, config(v1.addr(), v3.addr(), 50.0)).expect("write");
    assert_eq!(
        gw.gateway.reload().await,
        ReloadOutcome::Applied { generation: 2 }
    );
    let after = endpoint(&gw, "v1");
    assert!(
        Arc::ptr_eq(&before, &after),
        "unchanged endpoint must be the same object"
    );
    assert_eq!(
        after.ejections.load(Ordering::Relaxed),
        3,
        "its outlier history carried over"
    );
    let fresh = endpoint(&gw, "v2");
    assert_eq!(fresh.address, v3.addr().to_string());
    assert!(
        fresh.healthy.load(Ordering::Relaxed),
        "a new endpoint starts healthy"
    );
}

/// A reload that removes a backend's health check puts the endpoints its
/// probes had taken out back into rotation.
#[tokio::test]
async fn removing_the_health_check_brings_probed_out_endpoints_back() {
    let backend = Backend::start("b").await;
    backend.set_mode(Mode::Status(500));
    let check = "health_check: { path: /health, interval: 100ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }";
    let gw = FileGateway::start(&single(&[backend.addr()], check, ""));
    let client = Client::new();
    let probed_out = poll_until(Duration::from_secs(3), || async {
        client.get(&gw.url()).await.status == 503
    })
    .await;
    assert!(probed_out, "the failing endpoint was never taken out");
    std::fs::write(&gw.path, single(&[backend.addr()], "", "")).expect("write");
    assert_eq!(
        gw.gateway.reload().await,
        ReloadOutcome::Applied { generation: 2 }
    );
    // Back in rotation: the backend's own 500 comes through, not our 503.
    assert_eq!(client.get(&gw.url()).await.status, 500);
}

#[tokio::test]
async fn a_slow_request_in_flight_finishes_across_a_reload_that_removes_its_endpoint() {
    let (v1, v2, other) = (
        Backend::start("v1").await,
        Backend::start("v2").await,
        Backend::start("other").await,
    );
    let gw = FileGateway::start(&config(v1.addr(), v2.addr(), 0.0));
    let url = format!("http://{}/delay/800", gw.gateway.addr());
    let slow = tokio::spawn(async move { Client::new().get(&url).await });
    assert!(poll_until(Duration::from_secs(2), || async { v1.hits() == 1 }).await);
    std::fs::write(&gw.path, config(other.addr(), v2.addr(), 0.0)).expect("write");
    assert_eq!(
        gw.gateway.reload().await,
        ReloadOutcome::Applied { generation: 2 }
    );
    let resp = slow.await.expect("join");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header(SERVED_BY), Some("v1"));
    assert_eq!(
        Client::new().get(&gw.url()).await.header(SERVED_BY),
        Some("other")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_under_load_across_30_reloads() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let two = |v1: &[SocketAddr], v2: &[SocketAddr], weight: u32| {
        let list = |eps: &[SocketAddr]| {
            eps.iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{}routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [{}] }}\n      v2: {{ endpoints: [{}] }}\n    release: {{ strategy: canary, stable: v1, canary: v2, weight: {weight} }}\n",
            head(2),
            list(v1),
            list(v2)
        )
    };
    let configs = [
        two(&[a.addr()], &[b.addr()], 10),
        two(&[a.addr(), c.addr()], &[b.addr()], 50),
        two(&[c.addr()], &[a.addr(), b.addr()], 90),
        two(&[b.addr()], &[c.addr()], 0),
    ];
    let gw = FileGateway::start(&configs[0]);
    let url = gw.url();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, ok, failed) = (url.clone(), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let client = Client::new();
                while Instant::now() < deadline {
                    match client
                        .try_request(
                            http::Request::get(&url)
                                .body(Default::default())
                                .expect("req"),
                        )
                        .await
                    {
                        Ok(resp) if resp.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(resp) => {
                            eprintln!("failed: {} {}", resp.status, resp.text());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let mut reloads = 0;
    for i in 1..=30 {
        std::fs::write(&gw.path, &configs[i % configs.len()]).expect("write");
        let applied = poll_until(RELOAD_BOUND, || async { gw.generation() == i as u64 + 1 }).await;
        assert!(applied, "reload {i} not applied");
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(150)).await; // let traffic flow on this generation
    }
    for client in clients {
        client.await.expect("client task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("load across reloads: {ok} ok, {failed} failed, {reloads} reloads");
    assert_eq!(
        failed, 0,
        "{failed} requests failed across {reloads} reloads ({ok} ok)"
    );
    assert!(ok > 1000, "too little traffic to mean anything: {ok}");
    assert_eq!(reloads, 30);
}

#[tokio::test]
async fn sighup_forces_a_reload() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let process = Process::start(&config(v1.addr(), v2.addr(), 0.0));
    process.addr_of("listening");
    process.signal("HUP");
    let generation =
        process.wait_for(|v| (v["message"] == "config reloaded").then(|| v["generation"].as_u64()));
    assert_eq!(generation, Some(2));
}

#[tokio::test]
async fn sigterm_drains_finishes_requests_in_flight_and_exits_0() {
    let backend = Backend::start("b").await;
    let yaml = single(&[backend.addr()], "", "")
        .replace("drain_delay: 0s", "drain_delay: 500ms")
        .replace("timeout: 2s", "timeout: 3s");
    let process = Process::start(&yaml);
    let addr = process.addr_of("listening");
    let admin = process.addr_of("admin listening");
    let client = Client::new();
    assert_eq!(
        client.get(&format!("http://{admin}/readyz")).await.status,
        200
    );
    let url = format!("http://{addr}/delay/1500");
    let slow = tokio::spawn(async move { Client::new().get(&url).await });
    assert!(poll_until(Duration::from_secs(2), || async { backend.hits() == 1 }).await);
    let signalled = Instant::now();
    process.signal("TERM");
    // Readiness fails at once, while the listener still serves.
    let not_ready = poll_until(Duration::from_millis(400), || async {
        Client::without_pool()
            .get(&format!("http://{admin}/readyz"))
            .await
            .status
            == 503
    })
    .await;
    assert!(not_ready, "/readyz still 200 while draining");
    let resp = slow.await.expect("join");
    assert_eq!(resp.status, 200, "the request in flight finished");
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "keep-alive ends with the drain"
    );
    let status = process.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_millis(500 + 3000 + 1000),
        "exit took {took:?}"
    );
}
