//! Outside programs some tests need (Chromium, Prometheus). A missing tool
//! fails the test with the command that installs it — never a silent pass.

use std::path::PathBuf;

/// The path of `program`, or a panic naming the package to install.
pub fn require(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => path,
        None => panic!(
            "{program} is needed by this test: install it with `apt-get install -y --no-install-recommends {package}` \
             (./scripts/test.sh does this)"
        ),
    }
}
