//! The `switchyard` binary as a child process, for the tests that need a real
//! process: signals, exit codes, log output.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// `switchyard demo` at speed 20 on ephemeral ports, its stdout piped (the
/// story and the dashboard's address), its stderr dropped.
pub fn start_demo_fast() -> Child {
    Command::new(BIN)
        .args([
            "demo",
            "--speed",
            "20",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo")
}

/// A gateway process whose stderr lines arrive on a channel.
pub struct Process {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub dir: tempfile::TempDir,
}

impl Process {
    pub fn start(yaml: &str) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn switchyard");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Process { child, lines, dir }
    }

    /// The next JSON log line for which `pick` returns something.
    pub fn wait_for<T>(&self, mut pick: impl FnMut(&serde_json::Value) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("expected log line in time");
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if let Some(found) = pick(&value) {
                return found;
            }
        }
    }

    pub fn addr_of(&self, message: &str) -> SocketAddr {
        self.wait_for(|v| {
            (v["message"] == message)
                .then(|| {
                    v["addr"]
                        .as_str()
                        .or(v["admin"].as_str())
                        .and_then(|a| a.parse().ok())
                })
                .flatten()
        })
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Process {
    /// The config file the process runs with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("switchyard.yaml")
    }

    /// Every stderr line received and not consumed yet.
    #[allow(dead_code)]
    pub fn drain_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits (off the async runtime) for the process to exit.
    pub async fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + limit;
            loop {
                if let Some(status) = self.child.try_wait().expect("wait") {
                    return status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "process did not exit within {limit:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .expect("join")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
