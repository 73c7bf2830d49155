//! The admin API: probes, metrics (parsed by Prometheus's own `promtool`,
//! counters moving with traffic), `/status`, the dashboard page, and every
//! POST with its token rules.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::*;

fn post(url: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test]
async fn metrics_have_the_spec_names_parse_with_promtool_and_move_with_traffic() {
    let promtool = require("promtool", "prometheus");
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(
        v1.addr(),
        v2.addr(),
        50.0,
        "override_header: x-version",
    ));
    let client = Client::new();
    for _ in 0..40 {
        client.get(&gw.url("/")).await;
    }
    client
        .get_with(&gw.url("/status/503"), &[("x-version", "v2")])
        .await;
    let resp = client.get(&gw.admin_url("/metrics")).await;
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text();

    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = check.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool rejected the exposition: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for (name, kind) in [
        ("switchyard_requests_total", "counter"),
        ("switchyard_request_duration_seconds", "histogram"),
        ("switchyard_upstream_errors_total", "counter"),
        ("switchyard_canary_weight_percent", "gauge"),
        ("switchyard_release_phase", "gauge"),
        ("switchyard_rollbacks_total", "counter"),
        ("switchyard_endpoint_healthy", "gauge"),
        ("switchyard_version_fallbacks_total", "counter"),
        ("switchyard_config_reloads_total", "counter"),
        ("switchyard_active_connections", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "{name} ({kind}) missing"
        );
    }
    let all = samples(&text);
    let ok = sample(
        &all,
        "switchyard_requests_total",
        &[("route", "all"), ("backend", "app"), ("code", "2xx")],
    );
    assert_eq!(ok, 40.0);
    let v2_5xx = sample(
        &all,
        "switchyard_requests_total",
        &[("version", "v2"), ("code", "5xx")],
    );
    assert_eq!(v2_5xx, 1.0);
    assert_eq!(
        sample(
            &all,
            "switchyard_request_duration_seconds_count",
            &[("backend", "app")]
        ),
        41.0
    );
    assert_eq!(
        sample(
            &all,
            "switchyard_canary_weight_percent",
            &[("backend", "app")]
        ),
        50.0
    );
    assert_eq!(
        sample(
            &all,
            "switchyard_release_phase",
            &[("backend", "app"), ("phase", "progressing")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &all,
            "switchyard_release_phase",
            &[("backend", "app"), ("phase", "rolled_back")]
        ),
        0.0
    );
    let endpoint = v2.addr().to_string();
    assert_eq!(
        sample(
            &all,
            "switchyard_endpoint_healthy",
            &[("version", "v2"), ("endpoint", &endpoint)]
        ),
        1.0
    );
    assert!(
        sample(
            &all,
            "switchyard_active_connections",
            &[("listener", "http")]
        ) >= 1.0
    );

    // A refused upstream counts as an upstream error of its kind.
    drop(v1);
    drop(v2);
}

#[tokio::test]
async fn status_has_the_spec_shape() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 25.0, "steps: [25, 50, 100]"));
    let client = Client::new();
    for _ in 0..20 {
        client.get(&gw.url("/")).await;
    }
    let resp = client.get(&gw.admin_url("/status")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let status: Value = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(status["generation"], 1);
    assert_eq!(status["last_reload"]["result"], "success");
    assert!(status["last_reload"]["at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let app = &status["backends"]["app"];
    assert_eq!(app["strategy"], "canary");
    assert_eq!(app["phase"], "progressing");
    assert_eq!(app["reason"], Value::Null);
    assert_eq!(app["weights"]["v1"], 75.0);
    assert_eq!(app["weights"]["v2"], 25.0);
    assert_eq!(app["step"], 0);
    let v1s = &app["versions"]["v1"];
    assert_eq!(v1s["endpoints"][0]["address"], v1.addr().to_string());
    assert_eq!(v1s["endpoints"][0]["healthy"], true);
    assert_eq!(v1s["endpoints"][0]["ejected"], false);
    let requests = app["versions"]["v1"]["window"]["requests"]
        .as_u64()
        .unwrap_or(0)
        + app["versions"]["v2"]["window"]["requests"]
            .as_u64()
            .unwrap_or(0);
    assert_eq!(requests, 20);
    assert!(app["versions"]["v1"]["window"]["error_rate"].is_number());
    assert!(app["versions"]["v1"]["window"]["p99_ms"].is_number());
    assert!(status["events"].is_array());
}

#[tokio::test]
async fn the_dashboard_is_one_self_contained_page() {
    let v1 = Backend::start("v1").await;
    let gw = TestGateway::start(&single(&[v1.addr()], "", ""));
    let resp = Client::new().get(&gw.admin_url("/")).await;
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let page = resp.text();
    assert!(page.contains("<script>") && page.contains("fetch(\"/status\""));
    for external in ["src=\"http", "href=\"http", "<link", "@import", "cdn"] {
        assert!(!page.contains(external), "external asset: {external}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_one_sample_per_interval_with_the_release_marks() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let analysis = "analysis: { interval: 200ms, window: 10s, min_requests: 10, max_error_rate: 0.1, max_p99_latency: 1s }";
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 30.0, analysis));
    let client = Client::new();
    let history = |since: u64| {
        let url = gw.admin_url(&format!("/status/history?since={since}"));
        let client = client.clone();
        async move {
            let resp = client.get(&url).await;
            assert_eq!(resp.status, 200);
            serde_json::from_slice::<serde_json::Value>(&resp.body).expect("history JSON")
        }
    };
    for _ in 0..40 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert!(
        poll_until(Duration::from_secs(3), || async {
            history(0).await["backends"]["app"]
                .as_array()
                .map_or(0, Vec::len)
                >= 3
        })
        .await
    );
    v2.set_mode(Mode::Status(500));
    for _ in 0..60 {
        client.get(&gw.url("/")).await;
    }
    let rolled_back = poll_until(Duration::from_secs(5), || async {
        history(0).await["backends"]["app"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["phase"] == "rolled_back"))
    })
    .await;
    assert!(rolled_back);
    let doc = history(0).await;
    assert_eq!(doc["interval_ms"], 200);
    let samples = doc["backends"]["app"].as_array().expect("samples").clone();
    let seqs: Vec<u64> = samples.iter().filter_map(|s| s["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
    assert_eq!(doc["seq"].as_u64(), seqs.last().copied());
    let first = &samples[0];
    assert_eq!(first["weights"]["v2"], 30.0);
    assert_eq!(first["phase"], "progressing");
    assert!(first["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    // The rollback is a mark on the sample after it, with weight 0 from then on.
    let marked = samples
        .iter()
        .position(|s| {
            s["marks"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["kind"] == "rollback"))
        })
        .expect("a rollback mark");
    let mark = &samples[marked];
    assert_eq!(mark["weights"]["v2"], 0.0);
    assert!(mark["versions"]["v2"]["error_rate"].as_f64().unwrap_or(0.0) > 0.1);
    assert!(mark["versions"]["v2"]["errors"].as_u64().unwrap_or(0) > 0);
    assert!(samples[..marked].iter().all(|s| s["weights"]["v2"] == 30.0));
    // The start of the release is a mark too (its first weight).
    assert!(
        samples[0]["marks"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["kind"] == "step")),
        "the first weight is a step mark: {}",
        samples[0]
    );
    // `since` returns only the newer samples.
    let last = seqs[seqs.len() - 2];
    let newer = history(last).await;
    let newer = newer["backends"]["app"]
        .as_array()
        .expect("samples")
        .clone();
    assert!(!newer.is_empty() && newer.iter().all(|s| s["seq"].as_u64() > Some(last)));
    let bad = client.get(&gw.admin_url("/status/history?since=x")).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn no_placeholder_series_for_label_sets_that_cannot_occur() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let gw = TestGateway::start(&canary(v1.addr(), v2.addr(), 10.0, ""));
    let client = Client::new();
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    let own: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_") && l.contains("version=\"\""))
        .collect();
    assert!(
        own.is_empty(),
        "series for the gateway's own answers before any: {own:?}"
    );
    // The configured versions' series are there from the start.
    assert!(metrics.contains(
        "switchyard_upstream_errors_total{backend=\"app\",kind=\"connect\",version=\"v2\"} 0"
    ));
    // The gateway's own answer (no endpoint: 503) makes its request series,
    // and no upstream error series without a version.
    drop(v1);
    drop(v2);
    for _ in 0..40 {
        client.get(&gw.url("/")).await;
    }
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("switchyard_upstream_errors_total") && l.contains("version=\"\"")
        ),
        "an upstream error series without a version"
    );
}

#[tokio::test]
async fn probes_answer_and_unknown_paths_and_methods_are_refused() {
    let v1 = Backend::start("v1").await;
    let gw = TestGateway::start(&single(&[v1.addr()], "", ""));
    let client = Client::new();
    assert_eq!(client.get(&gw.admin_url("/healthz")).await.status, 200);
    assert_eq!(client.get(&gw.admin_url("/readyz")).await.status, 200);
    let missing = client.get(&gw.admin_url("/nope")).await;
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("no admin endpoint at /nope"));
    let wrong = client.request(post(&gw.admin_url("/status"), None)).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    let get_action = client
        .get(&gw.admin_url("/admin/backends/app/promote"))
        .await;
    assert_eq!(get_action.status, 405);
}

#[tokio::test]
async fn post_actions_need_the_bearer_token_and_answer_json() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("write token");
    let yaml = canary(v1.addr(), v2.addr(), 10.0, "").replace(
        "admin:\n  bind: \"127.0.0.1:0\"\n",
        &format!(
            "admin:\n  bind: \"127.0.0.1:0\"\n  token_file: {}\n",
            token_file.display()
        ),
    );
    let gw = TestGateway::start(&yaml);
    let client = Client::new();
    let url = gw.admin_url("/admin/backends/app/pause");
    let none = client.request(post(&url, None)).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert_eq!(client.request(post(&url, Some("wrong"))).await.status, 403);

    let paused = client.request(post(&url, Some("s3cret"))).await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let body: Value = serde_json::from_slice(&paused.body).expect("JSON");
    assert_eq!(
        (body["backend"].as_str(), body["phase"].as_str()),
        (Some("app"), Some("paused"))
    );

    let again = client.request(post(&url, Some("s3cret"))).await;
    assert_eq!(again.status, 409);
    assert!(serde_json::from_slice::<Value>(&again.body).expect("JSON")["error"].is_string());
    for (action, phase) in [
        ("resume", "progressing"),
        ("promote", "promoted"),
        ("abort", "rolled_back"),
        ("retry", "progressing"),
    ] {
        let resp = client
            .request(post(
                &gw.admin_url(&format!("/admin/backends/app/{action}")),
                Some("s3cret"),
            ))
            .await;
        assert_eq!(resp.status, 200, "{action}: {}", resp.text());
        let body: Value = serde_json::from_slice(&resp.body).expect("JSON");
        assert_eq!(body["phase"], phase, "after {action}");
    }
    let unknown_backend = client
        .request(post(
            &gw.admin_url("/admin/backends/nope/abort"),
            Some("s3cret"),
        ))
        .await;
    assert_eq!(unknown_backend.status, 404);
    assert!(
        unknown_backend
            .text()
            .contains("unknown backend \\\"nope\\\""),
        "{}",
        unknown_backend.text()
    );
    let unknown_action = client
        .request(post(
            &gw.admin_url("/admin/backends/app/explode"),
            Some("s3cret"),
        ))
        .await;
    assert_eq!(unknown_action.status, 404);
    assert_eq!(
        unknown_action.header("content-type"),
        Some("application/json")
    );
    // Started from a config value, there is no file to reload: refused, JSON.
    let reload = client
        .request(post(&gw.admin_url("/admin/reload"), Some("s3cret")))
        .await;
    assert_eq!(reload.status, 422);
    assert_eq!(
        serde_json::from_slice::<Value>(&reload.body).expect("JSON")["result"],
        "error"
    );
}

#[tokio::test]
async fn admin_reload_applies_the_file_and_reports_errors() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, canary(v1.addr(), v2.addr(), 0.0, "")).expect("write");
    let gateway = switchyard::Gateway::start_from_file(&path).expect("start");
    let admin = format!("http://{}", gateway.admin_addr());
    let client = Client::new();
    let applied = client
        .request(post(&format!("{admin}/admin/reload"), None))
        .await;
    assert_eq!(applied.status, 200);
    let body: Value = serde_json::from_slice(&applied.body).expect("JSON");
    assert_eq!(
        (body["result"].as_str(), body["generation"].as_u64()),
        (Some("applied"), Some(2))
    );
    std::fs::write(&path, "routes: [").expect("write broken");
    let refused = client
        .request(post(&format!("{admin}/admin/reload"), None))
        .await;
    assert_eq!(refused.status, 422);
    let body: Value = serde_json::from_slice(&refused.body).expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("switchyard.yaml:")),
        "{body}"
    );
    let status: Value =
        serde_json::from_slice(&client.get(&format!("{admin}/status")).await.body).expect("JSON");
    assert_eq!(status["last_reload"]["result"], "error");
    assert!(status["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["kind"] == "reload_error")));
    let metrics = client.get(&format!("{admin}/metrics")).await.text();
    let all = samples(&metrics);
    assert_eq!(
        sample(
            &all,
            "switchyard_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &all,
            "switchyard_config_reloads_total",
            &[("result", "error")]
        ),
        1.0
    );
}

#[tokio::test]
async fn an_admin_client_that_never_finishes_its_head_is_cut() {
    use tokio::io::AsyncWriteExt;
    let v1 = Backend::start("v1").await;
    let gw = TestGateway::start(&single(&[v1.addr()], "", ""));
    let mut stalled = tokio::net::TcpStream::connect(gw.gateway.admin_addr())
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /status HTTP/1.1\r\nHost: admin\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let closed = read_until_closed(&mut stalled, std::time::Duration::from_secs(20)).await;
    assert!(
        closed.is_some(),
        "the stalled admin connection was never closed"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    // The admin listener still answers others.
    let healthz = Client::new().get(&gw.admin_url("/healthz")).await;
    assert_eq!(healthz.status, 200);
}
