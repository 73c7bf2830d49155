//! The release engine through the real gateway: rollback on errors and on
//! latency, the minimum-requests rule, steps, operator actions, the state
//! file, health probes, outlier ejection, retry on stable and mirroring.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use switchyard::control::engine::{ActError, ReleaseState};
use switchyard::control::ReloadOutcome;
use switchyard::release::progress::{Action, Phase};
use switchyard::Gateway;

/// A canary release with fast analysis; `extra` adds release keys.
fn release(v1: &Backend, v2: &Backend, weight: f64, analysis: &str, extra: &str) -> String {
    let analysis = if analysis.is_empty() {
        "{ interval: 200ms, window: 10s, min_requests: 20, max_error_rate: 0.1, max_p99_latency: 500ms }"
    } else {
        analysis
    };
    canary(
        v1.addr(),
        v2.addr(),
        weight,
        &format!("analysis: {analysis}\n{extra}"),
    )
}

async fn state(gateway: &Gateway) -> ReleaseState {
    gateway
        .releases()
        .await
        .into_iter()
        .find(|(b, _)| b == "app")
        .map(|(_, s)| s)
        .expect("release state")
}

async fn canary_state(gateway: &Gateway) -> switchyard::release::progress::Canary {
    match state(gateway).await {
        ReleaseState::Canary(c) => c,
        other => panic!("not a canary: {other:?}"),
    }
}

async fn wait_phase(gateway: &Gateway, phase: Phase, within: Duration) -> bool {
    poll_until(within, || async { state(gateway).await.phase() == phase }).await
}

/// Sends requests in a loop until stopped; counts answers and failures.
struct Traffic {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(url: String) -> Traffic {
        let (ok, failed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (o, f, s) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let client = Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if client.get(&url).await.status == 200 {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Traffic {
            ok,
            failed,
            stop,
            task,
        }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("traffic task");
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test]
async fn a_failing_canary_is_rolled_back_within_about_one_interval() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Status(500));
    let gw = TestGateway::start(&release(&v1, &v2, 50.0, "", ""));
    assert_eq!(canary_state(&gw.gateway).await.phase, Phase::Progressing);
    let started = Instant::now();
    let traffic = Traffic::start(gw.url("/"));
    assert!(
        wait_phase(&gw.gateway, Phase::RolledBack, Duration::from_secs(5)).await,
        "no rollback"
    );
    let took = started.elapsed();
    let canary_hits = v2.hits();
    let (ok, failed) = traffic.stop().await;
    let c = canary_state(&gw.gateway).await;
    assert_eq!(c.weight, 0.0);
    let reason = c.reason.expect("a reason");
    assert!(
        reason.starts_with("v2 error rate 100.00% > 10.00% ("),
        "{reason}"
    );
    println!(
        "rollback: {took:?} from the first failing canary request; {canary_hits} canary attempts; client saw {failed} errors of {} requests",
        ok + failed
    );
    // min_requests (20) canary requests arrive within a few ms; then at most
    // one analysis interval (200 ms) passes. Allow for a slow machine.
    assert!(took < Duration::from_secs(2), "rollback took {took:?}");
    assert_eq!(failed, 0, "retry_on_stable shielded every client");
    // After the rollback nothing more goes to the canary.
    v2.reset_hits();
    let client = Client::new();
    for _ in 0..50 {
        assert_eq!(client.get(&gw.url("/")).await.header(SERVED_BY), Some("v1"));
    }
    assert_eq!(v2.hits(), 0);
    let events = gw.gateway.shared().events.recent();
    assert!(events
        .iter()
        .any(|e| e.kind.as_str() == "rollback" && e.backend.as_deref() == Some("app")));
}

#[tokio::test]
async fn a_slow_canary_is_rolled_back_on_p99() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Delay(Duration::from_millis(150)));
    let analysis = "{ interval: 200ms, window: 10s, min_requests: 10, max_error_rate: 0.1, max_p99_latency: 100ms }";
    let gw = TestGateway::start(&release(&v1, &v2, 50.0, analysis, ""));
    let traffic = Traffic::start(gw.url("/"));
    assert!(
        wait_phase(&gw.gateway, Phase::RolledBack, Duration::from_secs(10)).await,
        "no rollback on latency"
    );
    traffic.stop().await;
    let reason = canary_state(&gw.gateway).await.reason.expect("reason");
    assert!(
        reason.contains("p99 latency") && reason.contains("> 100ms"),
        "{reason}"
    );
}

#[tokio::test]
async fn nothing_is_decided_below_min_requests() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Status(500));
    let analysis = "{ interval: 100ms, window: 30s, min_requests: 1000, max_error_rate: 0.1, max_p99_latency: 500ms }";
    let gw = TestGateway::start(&release(&v1, &v2, 50.0, analysis, "retry_on_stable: false"));
    let client = Client::new();
    for _ in 0..60 {
        client.get(&gw.url("/")).await;
    }
    assert!(
        v2.hits() >= 10,
        "the canary took failing traffic: {}",
        v2.hits()
    );
    // Several analysis intervals pass with every canary request failing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(canary_state(&gw.gateway).await.phase, Phase::Progressing);
}

#[tokio::test]
async fn steps_advance_while_healthy_until_promoted() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let extra = "steps: [10, 25, 50, 100]\nstep_interval: 300ms";
    let analysis = "{ interval: 100ms, window: 10s, min_requests: 5, max_error_rate: 0.1, max_p99_latency: 500ms }";
    let gw = TestGateway::start(&release(&v1, &v2, 10.0, analysis, extra));
    assert_eq!(canary_state(&gw.gateway).await.weight, 10.0);
    let traffic = Traffic::start(gw.url("/"));
    assert!(
        wait_phase(&gw.gateway, Phase::Promoted, Duration::from_secs(10)).await,
        "not promoted"
    );
    traffic.stop().await;
    let c = canary_state(&gw.gateway).await;
    assert_eq!((c.weight, c.step), (100.0, Some(3)));
    let steps: Vec<String> = gw
        .gateway
        .shared()
        .events
        .recent()
        .into_iter()
        .filter(|e| matches!(e.kind.as_str(), "step" | "promote"))
        .map(|e| e.message)
        .collect();
    // Each step carries the figures it was taken on.
    let decided: Vec<&str> = steps
        .iter()
        .map(|m| m.split(" [").next().unwrap_or(m))
        .collect();
    assert_eq!(
        decided,
        [
            "release started: v2 at 10%",
            "step 1: canary at 25%",
            "step 2: canary at 50%",
            "step 3: canary promoted to 100%"
        ]
    );
    assert!(
        steps[1..]
            .iter()
            .all(|m| m.contains("[v1 ") && m.contains("; v2 ")),
        "{steps:?}"
    );
    v1.reset_hits();
    let client = Client::new();
    for _ in 0..30 {
        assert_eq!(client.get(&gw.url("/")).await.header(SERVED_BY), Some("v2"));
    }
}

#[tokio::test]
async fn pause_holds_and_resume_continues_and_bad_actions_are_refused() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let extra = "steps: [10, 50, 100]\nstep_interval: 200ms";
    let analysis = "{ interval: 100ms, window: 10s, min_requests: 5, max_error_rate: 0.1, max_p99_latency: 500ms }";
    let gw = TestGateway::start(&release(&v1, &v2, 10.0, analysis, extra));
    assert!(gw.gateway.act("app", Action::Pause).await.is_ok());
    let traffic = Traffic::start(gw.url("/"));
    tokio::time::sleep(Duration::from_millis(700)).await; // several step intervals
    let held = canary_state(&gw.gateway).await;
    assert_eq!((held.phase, held.weight), (Phase::Paused, 10.0));
    assert!(matches!(
        gw.gateway.act("app", Action::Pause).await,
        Err(ActError::Conflict(_))
    ));
    gw.gateway.act("app", Action::Resume).await.expect("resume");
    assert!(wait_phase(&gw.gateway, Phase::Promoted, Duration::from_secs(10)).await);
    traffic.stop().await;
    assert!(matches!(
        gw.gateway.act("nope", Action::Abort).await,
        Err(ActError::UnknownBackend(_))
    ));
    assert!(matches!(
        gw.gateway.act("app", Action::Retry).await,
        Err(ActError::Conflict(_))
    ));
    gw.gateway.act("app", Action::Abort).await.expect("abort");
    let c = canary_state(&gw.gateway).await;
    assert_eq!(
        (c.phase, c.reason.as_deref()),
        (Phase::RolledBack, Some("aborted by operator"))
    );
    gw.gateway.act("app", Action::Retry).await.expect("retry");
    assert_eq!(canary_state(&gw.gateway).await.weight, 10.0);
    gw.gateway
        .act("app", Action::Promote)
        .await
        .expect("promote");
    assert_eq!(canary_state(&gw.gateway).await.weight, 100.0);
}

#[tokio::test]
async fn a_rolled_back_release_survives_restart_and_threshold_edits_but_not_new_endpoints() {
    let (v1, v2, v3) = (
        Backend::start("v1").await,
        Backend::start("v2").await,
        Backend::start("v3").await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("state.json");
    let path = dir.path().join("switchyard.yaml");
    let with_state = |yaml: String| format!("state_file: {}\n{yaml}", state_file.display());
    std::fs::write(&path, with_state(release(&v1, &v2, 50.0, "", ""))).expect("write");
    {
        let gateway = Gateway::start_from_file(&path).expect("start");
        gateway.act("app", Action::Abort).await.expect("abort");
        // Written by the state writer's thread, off the runtime.
        let written = poll_until(Duration::from_secs(2), || async {
            std::fs::read_to_string(&state_file).is_ok_and(|t| t.contains("rolled_back"))
        })
        .await;
        assert!(written, "state written on change");
    }
    // A restart restores the rollback: no traffic to the canary.
    let gateway = Gateway::start_from_file(&path).expect("restart");
    let c = canary_state(&gateway).await;
    assert_eq!((c.phase, c.weight), (Phase::RolledBack, 0.0));
    let url = format!("http://{}/", gateway.addr());
    let client = Client::new();
    for _ in 0..40 {
        assert_eq!(client.get(&url).await.header(SERVED_BY), Some("v1"));
    }
    // An edit of a threshold keeps the rolled-back release.
    let edited = release(&v1, &v2, 50.0, "{ interval: 200ms, window: 10s, min_requests: 20, max_error_rate: 0.2, max_p99_latency: 500ms }", "");
    std::fs::write(&path, with_state(edited)).expect("write");
    assert!(matches!(
        gateway.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(canary_state(&gateway).await.phase, Phase::RolledBack);
    // A new canary endpoint list is a new release.
    std::fs::write(&path, with_state(release(&v1, &v3, 50.0, "", ""))).expect("write");
    assert!(matches!(
        gateway.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    let c = canary_state(&gateway).await;
    assert_eq!((c.phase, c.weight), (Phase::Progressing, 50.0));
}

#[tokio::test]
async fn a_corrupt_state_file_is_reported_and_the_config_wins() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("state.json");
    std::fs::write(&state_file, "{ not json").expect("write");
    let yaml = format!(
        "state_file: {}\n{}",
        state_file.display(),
        release(&v1, &v2, 30.0, "", "")
    );
    let gw = TestGateway::start(&yaml);
    assert_eq!(canary_state(&gw.gateway).await.weight, 30.0);
}

fn probed(endpoints: &[std::net::SocketAddr], extra: &str) -> String {
    single(endpoints, &format!("health_check: {{ path: /health, interval: 100ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 2 }}\n{extra}"), "")
}

#[tokio::test]
async fn health_probes_take_an_endpoint_out_and_bring_it_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = TestGateway::start(&probed(&[a.addr(), b.addr()], ""));
    let client = Client::new();
    let url = gw.url("/");
    let only_b = || async {
        for _ in 0..10 {
            if client.get(&url).await.header(SERVED_BY) != Some("b") {
                return false;
            }
        }
        true
    };
    a.set_mode(Mode::Status(503));
    assert!(
        poll_until(Duration::from_secs(3), only_b).await,
        "a not taken out"
    );
    assert!(
        a.requests().iter().any(|r| r.path_and_query == "/health"),
        "probes hit the health path"
    );
    a.set_mode(Mode::Normal);
    let a_back = poll_until(Duration::from_secs(3), || async {
        client.get(&url).await.header(SERVED_BY) == Some("a")
    })
    .await;
    assert!(a_back, "a not brought back");
    let kinds: Vec<&str> = gw
        .gateway
        .shared()
        .events
        .recent()
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert!(
        kinds.iter().filter(|k| **k == "health").count() >= 2,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_version_with_every_endpoint_down_falls_back_and_both_down_is_503() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let check = "health_check: { path: /health, interval: 100ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 2 }";
    let yaml = release(&v1, &v2, 100.0, "", "").replacen(
        "    release:\n",
        &format!("    {check}\n    release:\n"),
        1,
    );
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    let url = gw.url("/");
    assert_eq!(client.get(&url).await.header(SERVED_BY), Some("v2"));
    v2.set_mode(Mode::Status(500));
    let fell_back = poll_until(Duration::from_secs(3), || async {
        client.get(&url).await.header(SERVED_BY) == Some("v1")
    })
    .await;
    assert!(fell_back, "no fallback to v1");
    v1.set_mode(Mode::Status(500));
    let unavailable = poll_until(Duration::from_secs(3), || async {
        client.get(&url).await.status == 503
    })
    .await;
    assert!(unavailable, "both down must be 503");
}

#[tokio::test]
async fn resetting_endpoints_are_ejected_but_never_the_last_one() {
    let good = Backend::start("good").await;
    let (bad, _server) = Backend::reset_on_connect().await;
    let yaml = single(
        &[good.addr(), bad],
        "outlier: { consecutive_failures: 3, ejection_time: 30s }",
        "",
    );
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    let mut failures = 0;
    for _ in 0..10 {
        if client.get(&gw.url("/")).await.status != 200 {
            failures += 1;
        }
    }
    // Three failures eject the resetting endpoint; the clients see at most
    // those three (fewer when a reset comes during the connect, which is
    // tried again on the good endpoint).
    assert!(failures <= 3, "{failures} failures seen by clients");
    for _ in 0..50 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    let events = gw.gateway.shared().events.recent();
    assert!(events
        .iter()
        .any(|e| e.kind.as_str() == "ejection" && e.message.contains(&bad.to_string())));

    // Alone, the same endpoint is never ejected: 502s, not 503s.
    let lonely = TestGateway::start(&single(
        &[bad],
        "outlier: { consecutive_failures: 2, ejection_time: 30s }",
        "",
    ));
    for _ in 0..6 {
        assert_eq!(client.get(&lonely.url("/")).await.status, 502);
    }
}

#[tokio::test]
async fn retry_on_stable_hides_a_failing_canary_from_clients() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Status(500));
    // Analysis that never decides, so the canary keeps its 50 %.
    let analysis = "{ interval: 1s, window: 30s, min_requests: 1000000, max_error_rate: 0.1, max_p99_latency: 500ms }";
    let gw = TestGateway::start(&release(&v1, &v2, 50.0, analysis, ""));
    let client = Client::new();
    let mut failed = 0;
    for _ in 0..1000 {
        if client.get(&gw.url("/")).await.status != 200 {
            failed += 1;
        }
    }
    assert!(failed < 10, "{failed} of 1000 GETs failed");
    assert!(v2.hits() > 350, "the canary took its share: {}", v2.hits());
    // Every canary failure still counts in its window.
    let snapshot = gw.gateway.shared().snapshot.load_full();
    let window = &snapshot
        .backend("app")
        .expect("app")
        .version_named("v2")
        .expect("v2")
        .window;
    let figures = window.figures(gw.gateway.shared().clock.now_ms(), Duration::from_secs(30));
    assert_eq!(figures.errors, figures.requests);
    assert_eq!(figures.requests, v2.hits() as u64);
}

#[tokio::test]
async fn mirrored_copies_reach_the_canary_without_slowing_clients() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Delay(Duration::from_millis(400)));
    let gw = TestGateway::start(&release(&v1, &v2, 0.0, "", "mirror_percent: 100"));
    let client = Client::new();
    let started = Instant::now();
    for _ in 0..20 {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.header(SERVED_BY), Some("v1"));
    }
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "mirroring slowed clients: {:?}",
        started.elapsed()
    );
    assert!(
        poll_until(Duration::from_secs(3), || async { v2.hits() == 20 }).await,
        "mirrors: {}",
        v2.hits()
    );
    assert!(v2
        .requests()
        .iter()
        .all(|r| r.headers.get("x-switchyard-mirror").is_some()));
    let snapshot = gw.gateway.shared().snapshot.load_full();
    let window = &snapshot
        .backend("app")
        .expect("app")
        .version_named("v2")
        .expect("v2")
        .window;
    let counted = poll_until(Duration::from_secs(3), || async {
        window
            .figures(gw.gateway.shared().clock.now_ms(), Duration::from_secs(30))
            .requests
            == 20
    })
    .await;
    assert!(counted, "mirrored answers count in the canary's analysis");
}

/// A canary slower than the traffic mirrored to it: at most 64 copies are in
/// flight at once; the others are dropped and counted, never queued.
#[tokio::test]
async fn mirrored_copies_in_flight_are_capped_and_the_dropped_ones_counted() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Delay(Duration::from_secs(5)));
    let gw = TestGateway::start(&release(&v1, &v2, 0.0, "", "mirror_percent: 100"));
    let client = Client::new();
    for _ in 0..10 {
        let batch: Vec<_> = (0..10)
            .map(|_| {
                let (client, url) = (client.clone(), gw.url("/"));
                tokio::spawn(async move { client.get(&url).await.status })
            })
            .collect();
        for sent in batch {
            assert_eq!(sent.await.expect("request task"), 200);
        }
    }
    let dropped = || async {
        let metrics = client.get(&gw.admin_url("/metrics")).await.text();
        metrics
            .lines()
            .find(|l| l.starts_with("switchyard_mirror_dropped_total{backend=\"app\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    // Every copy either reached the canary or was dropped.
    let settled = poll_until(Duration::from_secs(3), || async {
        v2.hits() + dropped().await == 100
    })
    .await;
    assert!(
        settled,
        "hits {} + dropped {} != 100",
        v2.hits(),
        dropped().await
    );
    assert!(v2.hits() <= 64, "{} mirrors in flight at once", v2.hits());
    assert!(dropped().await >= 36, "dropped: {}", dropped().await);
}

#[tokio::test]
async fn blue_green_goes_back_to_the_previous_active_when_the_new_one_fails() {
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let yaml = |active: &str| {
        format!(
            "{}routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      blue: {{ endpoints: [\"{}\"] }}\n      green: {{ endpoints: [\"{}\"] }}\n    release: {{ strategy: blue_green, active: {active}, analysis: {{ interval: 100ms, window: 5s, min_requests: 5, max_error_rate: 0.1, max_p99_latency: 500ms }} }}\n",
            head(1),
            blue.addr(),
            green.addr()
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml("blue")).expect("write");
    let gateway = Gateway::start_from_file(&path).expect("start");
    let url = format!("http://{}/", gateway.addr());
    green.set_mode(Mode::Status(500));
    std::fs::write(&path, yaml("green")).expect("switch");
    assert!(matches!(
        gateway.reload().await,
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(state(&gateway).await.phase(), Phase::Progressing);
    let client = Client::new();
    let back = poll_until(Duration::from_secs(5), || async {
        client.get(&url).await.header(SERVED_BY) == Some("blue")
    })
    .await;
    assert!(back, "traffic did not go back to blue");
    assert_eq!(state(&gateway).await.phase(), Phase::RolledBack);
}

/// A state-file write that never completes (its temp file is a FIFO no one
/// reads) stalls the state writer only: `/readyz` answers, health probes go
/// on, and operator actions are answered. Once the FIFO is read, the latest
/// state reaches the file.
#[tokio::test]
async fn a_stalled_state_file_write_delays_neither_readiness_nor_probes() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("state.json");
    let probe = "    health_check: { path: /health, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 3 }\n";
    let yaml = format!(
        "state_file: {}\n{}",
        state_file.display(),
        release(&v1, &v2, 10.0, "", "").replace("  app:\n", &format!("  app:\n{probe}"))
    );
    let gw = TestGateway::start(&yaml);
    assert!(
        poll_until(Duration::from_secs(5), || async { state_file.exists() }).await,
        "the first state was not written"
    );
    let fifo = dir.path().join(".state.json.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(made.success(), "mkfifo failed");

    // A release change: its write blocks opening the FIFO.
    let bound = Duration::from_secs(2);
    let paused = tokio::time::timeout(bound, gw.gateway.act("app", Action::Pause)).await;
    assert!(
        matches!(paused, Ok(Ok(_))),
        "pause not answered: {paused:?}"
    );
    let client = Client::new();
    let probes = || {
        v1.requests()
            .iter()
            .filter(|r| r.path_and_query == "/health")
            .count()
    };
    let before = probes();
    for _ in 0..5 {
        let ready = tokio::time::timeout(bound, client.get(&gw.admin_url("/readyz"))).await;
        assert_eq!(ready.map(|r| r.status.as_u16()).ok(), Some(200), "/readyz");
    }
    assert!(
        poll_until(bound, || async { probes() >= before + 3 }).await,
        "probes stopped: {} then {}",
        before,
        probes()
    );
    let resumed = tokio::time::timeout(bound, gw.gateway.act("app", Action::Resume)).await;
    assert!(
        matches!(resumed, Ok(Ok(_))),
        "resume not answered: {resumed:?}"
    );
    let on_disk = std::fs::read_to_string(&state_file).expect("state file");
    assert!(!on_disk.contains("paused"), "the write was not stalled");

    // A reader on the FIFO (held open read-write, so no open blocks on it
    // again) lets the stalled write go on: it carried a release state.
    let sink = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open the FIFO");
    let reader = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let n = std::io::Read::read(&mut &sink, &mut buf)?;
        Ok::<_, std::io::Error>((String::from_utf8_lossy(&buf[..n]).into_owned(), sink))
    });
    let (stalled, sink) = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the writer wrote into the FIFO")
        .expect("reader task")
        .expect("read the FIFO");
    assert!(stalled.contains("\"phase\""), "{stalled}");
    // Stopped while the sink is open: the shutdown flush cannot stall.
    drop(gw);
    drop(sink);
}
