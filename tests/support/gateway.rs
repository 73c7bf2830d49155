//! Starting the real gateway in-process for a test, on ephemeral ports.

use std::net::SocketAddr;

use switchyard::config;
use switchyard::Gateway;

/// A running gateway; stops when dropped.
pub struct TestGateway {
    pub gateway: Gateway,
}

impl TestGateway {
    /// Starts a gateway from YAML text. The text should bind its listeners and
    /// admin on `127.0.0.1:0`.
    pub fn start(yaml: &str) -> TestGateway {
        let config = match config::parse(yaml, "test.yaml") {
            Ok(config) => config,
            Err(e) => panic!("test config is invalid:\n{e}\n---\n{yaml}"),
        };
        let gateway = Gateway::start(config).expect("gateway starts");
        TestGateway { gateway }
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway.admin_addr(), path)
    }
}

/// The common head of a test config: one listener, admin, short shutdown.
pub fn head(workers: usize) -> String {
    format!(
        "workers: {workers}\naccess_log: false\nlisteners:\n  - name: http\n    bind: \"127.0.0.1:0\"\nadmin:\n  bind: \"127.0.0.1:0\"\nshutdown:\n  drain_delay: 0s\n  timeout: 2s\n"
    )
}

/// A config with one catch-all route to backend `app` with a canary release
/// between `v1` and `v2` at `weight`; `release_extra` is appended to the
/// release block (indented by 6 spaces per line).
pub fn canary(v1: SocketAddr, v2: SocketAddr, weight: f64, release_extra: &str) -> String {
    let mut yaml = head(1);
    yaml.push_str(&format!(
        "routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{v1}\"] }}\n      v2: {{ endpoints: [\"{v2}\"] }}\n    release:\n      strategy: canary\n      stable: v1\n      canary: v2\n      weight: {weight}\n"
    ));
    for line in release_extra.lines() {
        yaml.push_str("      ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// A config with one catch-all route to a single-version backend.
pub fn single(endpoints: &[SocketAddr], backend_extra: &str, top_extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut yaml = head(1);
    yaml.push_str(top_extra);
    yaml.push_str(&format!(
        "routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [{}] }}\n",
        list.join(", ")
    ));
    for line in backend_extra.lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}
