//! Judging the canary against stable (`analysis.baseline: stable`, SPEC §4)
//! through the real gateway: a shared broken dependency fails both versions
//! alike and the release holds — no step, no rollback, the reason in
//! `/status` — and resumes once the versions recover; a canary failing alone
//! is rolled back with both versions' figures in its reason and its
//! `last_verdict`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A canary at 50 % judged against stable, with fast analysis.
fn against_stable(v1: &Backend, v2: &Backend, baseline: &str, extra: &str) -> String {
    canary(
        v1.addr(),
        v2.addr(),
        50.0,
        &format!("analysis: {{ interval: 100ms, window: 2s, min_requests: 5, max_error_rate: 0.05, max_p99_latency: 2s, baseline: {baseline} }}\n{extra}"),
    )
}

async fn status(gw: &TestGateway) -> Value {
    let body = Client::new().get(&gw.admin_url("/status")).await.body;
    serde_json::from_slice(&body).expect("status JSON")
}

/// Requests in a loop until dropped.
struct Load {
    stop: Arc<AtomicBool>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::clone(&stop);
        tokio::spawn(async move {
            let client = Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !running.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _ = client.try_get(&url).await;
            }
        });
        Load { stop }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn both_versions_failing_alike_hold_the_release_until_they_recover() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v1.set_mode(Mode::Status(503));
    v2.set_mode(Mode::Status(503));
    let steps = "steps: [50, 100]\nstep_interval: 300ms";
    let gw = TestGateway::start(&against_stable(&v1, &v2, "stable", steps));
    let _load = Load::start(gw.url("/"));
    let holding = poll_until(Duration::from_secs(5), || async {
        status(&gw).await["backends"]["app"]["last_verdict"]["decision"] == "hold"
    })
    .await;
    assert!(holding, "{}", status(&gw).await["backends"]["app"]);
    // Held: several intervals pass, neither a step nor a rollback.
    let moved = poll_until(Duration::from_secs(1), || async {
        status(&gw).await["backends"]["app"]["phase"] != "progressing"
    })
    .await;
    let app = status(&gw).await["backends"]["app"].clone();
    assert!(!moved, "the release moved while holding: {app}");
    assert_eq!(app["weights"]["v2"], 50.0);
    let reason = app["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("holding: v1 and v2 both breach"),
        "{reason}"
    );
    assert!(reason.contains(" of "), "counts missing: {reason}");
    let events = status(&gw).await["events"].clone();
    assert!(
        events
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "hold")),
        "no hold event: {events}"
    );
    // The dependency comes back: the evidence clears, the release resumes.
    v1.set_mode(Mode::Normal);
    v2.set_mode(Mode::Normal);
    let promoted = poll_until(Duration::from_secs(10), || async {
        status(&gw).await["backends"]["app"]["phase"] == "promoted"
    })
    .await;
    assert!(promoted, "{}", status(&gw).await["backends"]["app"]);
    let metrics = Client::new().get(&gw.admin_url("/metrics")).await.text();
    assert_eq!(
        sample(&samples(&metrics), "switchyard_rollbacks_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_canary_failing_alone_is_rolled_back_against_stable_with_both_figures() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Status(503));
    let gw = TestGateway::start(&against_stable(&v1, &v2, "stable", ""));
    let _load = Load::start(gw.url("/"));
    let rolled_back = poll_until(Duration::from_secs(5), || async {
        status(&gw).await["backends"]["app"]["phase"] == "rolled_back"
    })
    .await;
    let app = status(&gw).await["backends"]["app"].clone();
    assert!(rolled_back, "{app}");
    let reason = app["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("v2 error rate 100.00% > 5.00% ("),
        "{reason}"
    );
    assert!(reason.contains("v1 0.00% ("), "{reason}");
    assert!(
        reason.contains("worse by more than 1.00 points"),
        "{reason}"
    );
    let verdict = &app["last_verdict"];
    assert_eq!(verdict["decision"], "rollback", "{verdict}");
    for version in ["v1", "v2"] {
        let figures = &verdict["versions"][version];
        assert!(figures["requests"].as_u64().unwrap_or(0) >= 1, "{verdict}");
        assert!(figures["error_rate"].is_number(), "{verdict}");
    }
    assert_eq!(verdict["versions"]["v2"]["error_rate"], 1.0);
}

/// How long from the first failing canary request to the rollback, judged
/// absolutely and against stable (printed for the record, not asserted:
/// timings never decide a test here).
#[tokio::test]
async fn a_failing_canary_is_rolled_back_in_both_modes() {
    for baseline in ["none", "stable"] {
        let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
        let gw = TestGateway::start(&against_stable(&v1, &v2, baseline, ""));
        let _load = Load::start(gw.url("/"));
        let warmed = poll_until(Duration::from_secs(5), || async {
            status(&gw).await["backends"]["app"]["last_verdict"]["decision"] == "wait"
        })
        .await;
        assert!(warmed);
        let failing_since = Instant::now();
        v2.set_mode(Mode::Status(503));
        let rolled_back = poll_until(Duration::from_secs(5), || async {
            status(&gw).await["backends"]["app"]["phase"] == "rolled_back"
        })
        .await;
        assert!(rolled_back, "baseline {baseline}: not rolled back");
        eprintln!(
            "baseline {baseline}: rolled back {:?} after the canary began failing",
            failing_since.elapsed()
        );
    }
}
