//! The live dashboard in a real browser: headless Chromium loads the page
//! from a running gateway, runs its script against `/status`, and the
//! rendered DOM must show the live figures.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

/// Renders `url` in headless Chromium and returns the DOM after the page's
/// scripts ran for `budget` of virtual time.
fn rendered_dom(url: &str, budget: Duration) -> String {
    let chromium = require("chromium", "chromium");
    let home = tempfile::tempdir().expect("chromium home");
    let profile = home.path().join("profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("XDG_CACHE_HOME", home.path())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_live_figures_and_a_rollback() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    v2.set_mode(Mode::Status(500));
    let analysis = "analysis: { interval: 200ms, window: 30s, min_requests: 10, max_error_rate: 0.1, max_p99_latency: 500ms }";
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 30.0, analysis));
    let client = Client::new();
    for _ in 0..100 {
        client.get(&gw.url("/")).await;
    }
    let rolled_back = poll_until(Duration::from_secs(5), || async {
        client
            .get(&gw.admin_url("/status"))
            .await
            .text()
            .contains("\"phase\":\"rolled_back\"")
    })
    .await;
    assert!(rolled_back);

    let url = gw.admin_url("/");
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&url, Duration::from_secs(3)))
        .await
        .expect("join");
    // The script ran and filled the page from /status.
    assert!(
        dom.contains("data-backend=\"app\""),
        "backend card missing:\n{dom}"
    );
    assert!(dom.contains("data-phase=\"rolled_back\""), "phase missing");
    assert!(
        dom.contains("v2 error rate 100.00% &gt; 10.00% ("),
        "rollback reason (with its counts) missing"
    );
    assert!(
        dom.contains("data-version=\"v1\"") && dom.contains("data-version=\"v2\""),
        "version rows missing"
    );
    assert!(
        dom.contains("v1 100%"),
        "split bar must show all traffic on v1"
    );
    assert!(
        dom.contains(&v1.addr().to_string()) && dom.contains(&v2.addr().to_string()),
        "endpoints missing"
    );
    assert!(dom.contains("100.00%"), "v2's error rate missing");
    assert!(
        dom.contains("class=\"kind rollback\""),
        "rollback event missing from the timeline"
    );
    assert!(dom.contains("live ·"), "the page did not reach /status");
    assert!(
        dom.contains("data-verdict=\"rollback\"") && dom.contains("last verdict"),
        "the last verdict is missing under the backend"
    );
}
