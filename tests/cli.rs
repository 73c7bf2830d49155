//! The `switchyard` binary: `check`, the access log, the admin probes and
//! graceful exit on SIGTERM, run as a real process.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_shipped_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["switchyard.yaml", "canary.yaml", "blue-green.yaml"] {
        let (ok, stdout, stderr) = check(&root.join("config").join(name));
        assert!(ok, "{name}: {stderr}");
        assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
        assert!(stdout.contains("ok"), "{stdout}");
    }
}

#[test]
fn check_lists_every_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - name: http\n    bind: \"nowhere\"\nroutes:\n  - name: r\n    backend: missing\nbackends:\n  app:\n    versions:\n      v1: { endpoints: [\"127.0.0.1:1\"] }\n      v2: { endpoints: [\"127.0.0.1:2\"] }\n    release:\n      strategy: canary\n      stable: v1\n      canary: v3\n      weight: 101\n",
    )
    .expect("write");
    let (ok, stdout, stderr) = check(&path);
    assert!(!ok);
    assert!(stdout.is_empty());
    let file = path.display().to_string();
    let expected = [
        format!("{file}:3:11: bind \"nowhere\""),
        format!("{file}:6:14: unknown backend \"missing\""),
        format!("{file}:15:15: canary version \"v3\""),
        format!("{file}:16:15: weight must be between 0 and 100"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "got {line:?}, want {want:?}"
        );
    }
}

#[test]
fn check_points_at_unknown_keys_and_bad_durations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, "limits:\n  idle_timeout: 5 parsecs\n").expect("write");
    let (ok, _, stderr) = check(&path);
    assert!(!ok);
    assert!(
        stderr.starts_with(&format!("{}:2:17: invalid duration", path.display())),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "listeners:\n  - name: a\n    bind: \"127.0.0.1:0\"\n    colour: blue\n",
    )
    .expect("write");
    let (_, _, stderr) = check(&path);
    assert!(
        stderr.starts_with(&format!("{}:4:5: unknown field `colour`", path.display())),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_reported() {
    let (ok, _, stderr) = check(Path::new("/nonexistent/switchyard.yaml"));
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/switchyard.yaml: cannot read"),
        "{stderr}"
    );
}

#[tokio::test]
async fn access_log_lines_are_json_with_the_spec_fields_and_sigterm_exits_0() {
    let backend = Backend::start("b").await;
    let yaml = single(&[backend.addr()], "", "").replace("access_log: false", "access_log: true");
    let process = Process::start(&yaml);
    let addr = process.addr_of("listening");
    let admin = process.addr_of("admin listening");
    let client = Client::new();
    assert_eq!(
        client.get(&format!("http://{admin}/healthz")).await.status,
        200
    );
    assert_eq!(
        client.get(&format!("http://{admin}/readyz")).await.status,
        200
    );

    let resp = client
        .get_with(
            &format!("http://{addr}/hello?x=1"),
            &[("x-request-id", "log-me")],
        )
        .await;
    assert_eq!(resp.status, 200);
    let line = process.wait_for(|v| (v["request_id"] == "log-me").then(|| v.clone()));
    for key in [
        "ts",
        "request_id",
        "method",
        "host",
        "path",
        "status",
        "route",
        "backend",
        "version",
        "endpoint",
        "duration_ms",
        "upstream_ms",
        "bytes_out",
    ] {
        assert!(line.get(key).is_some(), "access log lacks {key}: {line}");
    }
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/hello");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "all");
    assert_eq!(line["backend"], "app");
    assert_eq!(line["version"], "v1");
    assert_eq!(line["endpoint"], backend.addr().to_string());
    assert_eq!(line["bytes_out"], 1, "body \"b\"");

    process.signal("TERM");
    let status = process.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn version_flag_prints_the_version() {
    let mut out = String::new();
    let mut child = Command::new(BIN)
        .arg("--version")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        out.trim(),
        format!("switchyard {}", env!("CARGO_PKG_VERSION"))
    );
}
