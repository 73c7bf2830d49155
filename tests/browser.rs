//! The live dashboard in a real browser: headless Chromium loads the page
//! from a running gateway, runs its script against `/status`, and the
//! rendered DOM must show the live figures.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::*;

/// Runs headless Chromium on `url` at a 1280 x 1000 window for `budget` of
/// virtual time, with `output` (`--dump-dom`, `--screenshot=...`); returns
/// its stdout.
fn chromium(url: &str, budget: Duration, output: &str) -> String {
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
            "--hide-scrollbars",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg(output)
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

/// The DOM after the page's scripts ran for `budget` of virtual time.
fn rendered_dom(url: &str, budget: Duration) -> String {
    chromium(url, budget, "--dump-dom")
}

/// A PNG of the page after `budget`, written to `target/screenshots/NAME`
/// (and to `$SWITCHYARD_SCREENSHOTS/NAME` when set, e.g. `docs/`); returns
/// the first path.
fn screenshot(url: &str, budget: Duration, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    chromium(url, budget, &format!("--screenshot={}", path.display()));
    let png = std::fs::read(&path).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(extra) = std::env::var_os("SWITCHYARD_SCREENSHOTS") {
        let extra = PathBuf::from(extra).join(name);
        std::fs::write(&extra, &png).expect("copy the screenshot");
    }
    path
}

/// The value of `attr` on the first element that has class `class`.
fn attr_of(dom: &str, class: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("class=\"{class}\""))?;
    let tag_start = dom[..at].rfind('<')?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let key = format!("{attr}=\"");
    let value = &tag[tag.find(&key)? + key.len()..];
    Some(value[..value.find('"')?].to_string())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_chart_draws_the_release_and_grows() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let analysis = "analysis: { interval: 200ms, window: 30s, min_requests: 10, max_error_rate: 0.1, max_p99_latency: 500ms }";
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 30.0, analysis));
    let client = Client::new();
    for _ in 0..60 {
        client.get(&gw.url("/")).await;
    }
    v2.set_mode(Mode::Status(500));
    for _ in 0..60 {
        client.get(&gw.url("/")).await;
    }
    assert!(
        poll_until(Duration::from_secs(5), || async {
            client
                .get(&gw.admin_url("/status"))
                .await
                .text()
                .contains("\"phase\":\"rolled_back\"")
        })
        .await
    );
    let url = gw.admin_url("/");
    let first = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || rendered_dom(&url, Duration::from_secs(3)))
            .await
            .expect("join")
    };
    let samples = |dom: &str| -> usize {
        attr_of(dom, "timeline", "data-samples")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let drawn = samples(&first);
    assert!(drawn >= 3, "the chart has the samples: {drawn}\n{first}");
    for hook in [
        "data-backend=\"app\"",
        "data-series=\"weight\"",
        "data-series=\"error_rate:v2\"",
        "data-series=\"error_rate:v1\"",
        "data-series=\"p99:v1\"",
        "data-threshold=\"error_rate\"",
        "data-threshold=\"p99\"",
        "data-mark=\"step\"",
        "data-mark=\"rollback\"",
    ] {
        assert!(first.contains(hook), "{hook} missing from the chart");
    }
    // Later, the same page holds more samples.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let shot = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            screenshot(&url, Duration::from_secs(3), "timeline.png")
        })
        .await
        .expect("join")
    };
    let later = tokio::task::spawn_blocking(move || rendered_dom(&url, Duration::from_secs(3)))
        .await
        .expect("join");
    assert!(
        samples(&later) > drawn,
        "the chart grew: {drawn} -> {}",
        samples(&later)
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "a screenshot with content: {} bytes", size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_event_messages_never_widen_the_page() {
    let v1 = Backend::start("v1").await;
    // A config in a deep directory: its reload error names the long path.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut deep = dir.path().to_path_buf();
    for _ in 0..4 {
        deep.push("a_directory_name_long_enough_to_overflow_any_card_on_the_page_without_spaces");
    }
    std::fs::create_dir_all(&deep).expect("deep dir");
    let file = deep.join("switchyard.yaml");
    std::fs::write(&file, single(&[v1.addr()], "", "")).expect("config");
    let gateway = switchyard::Gateway::start_from_file(&file).expect("start");
    std::fs::write(
        &file,
        "routes: [ {name: x, backend: nowhere} ]\nnot yaml: [",
    )
    .expect("break it");
    let client = Client::new();
    let admin = format!("http://{}", gateway.admin_addr());
    let reloaded = client
        .request(
            http::Request::post(format!("{admin}/admin/reload"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(reloaded.status, 422, "{}", reloaded.text());
    let url = format!("{admin}/");
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&url, Duration::from_secs(3)))
        .await
        .expect("join");
    assert!(
        dom.contains("class=\"kind reload_error\""),
        "the reload error is listed"
    );
    assert!(
        dom.contains("a_directory_name_long_enough"),
        "with its path"
    );
    assert!(
        dom.contains("data-overflow-x=\"false\""),
        "the page scrolls sideways at 1280 px: {}",
        &dom[..dom.len().min(400)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_rollback_on_the_dashboard() {
    let mut child = start_demo_fast();
    let stdout = child.stdout.take().expect("stdout");
    let (admin, rolled_back) = tokio::task::spawn_blocking(move || {
        let mut admin = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("dashboard:") {
                admin = url.split_whitespace().next().map(str::to_string);
            }
            if line.contains("ROLLED BACK") {
                return (admin, true);
            }
        }
        (admin, false)
    })
    .await
    .expect("join");
    let admin = admin.expect("the demo printed its dashboard URL");
    assert!(rolled_back, "the demo rolled back");
    // A moment after the rollback, as someone looking at it would see it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shot = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            screenshot(&admin, Duration::from_secs(3), "dashboard.png")
        })
        .await
        .expect("join")
    };
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&admin, Duration::from_secs(3)))
        .await
        .expect("join");
    let _ = child.kill();
    let _ = child.wait();
    assert!(dom.contains("data-phase=\"rolled_back\""));
    assert!(
        dom.contains("data-mark=\"rollback\""),
        "the rollback mark on the timeline"
    );
    assert!(dom.contains("data-overflow-x=\"false\""));
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "a screenshot with content: {size} bytes");
    println!("screenshot: {}", shot.display());
}
