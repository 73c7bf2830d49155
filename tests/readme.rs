//! The README's "Run your own config" commands, run as written (with the
//! built binary for `cargo run --release --`): two terminals' worth of
//! commands, said to be two, with how to stop what they start.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

/// The shell blocks of the README section that starts with `heading`.
fn blocks_after(readme: &str, heading: &str) -> (String, Vec<Vec<String>>) {
    let start = readme.find(heading).expect("the section");
    let section = &readme[start..];
    let end = section[heading.len()..]
        .find("\n**")
        .map_or(section.len(), |i| i + heading.len());
    let section = &section[..end];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("closed block");
        blocks.push(body[..close].lines().map(str::to_string).collect());
        rest = &body[close + 3..];
    }
    (section.to_string(), blocks)
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn run_your_own_config_works_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let (text, blocks) = blocks_after(&readme, "**Run your own config**");
    assert_eq!(blocks.len(), 2, "one block per terminal: {blocks:?}");
    assert!(
        text.contains("In a second terminal"),
        "says where the curls go"
    );
    assert!(
        text.contains("Ctrl-C") && text.contains("kill %1 %2"),
        "says how to stop"
    );
    for port in [8080, 9901, 9001, 9002] {
        assert!(
            free(port),
            "port {port} is taken: stop what holds it to run this test"
        );
    }
    python3_or_fail();

    // Terminal one: the backends in the background, the gateway.
    let [servers, gateway] = &blocks[0][..] else {
        panic!("the first block is two lines: {:?}", blocks[0]);
    };
    let mut running = Killed(Vec::new());
    for command in servers.split('&').map(str::trim).filter(|c| !c.is_empty()) {
        let words: Vec<&str> = command.split_whitespace().collect();
        running.0.push(
            Command::new(words[0])
                .args(&words[1..])
                .current_dir(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a backend"),
        );
    }
    let args = gateway
        .strip_prefix("cargo run --release -- ")
        .expect("the gateway runs with cargo run --release --");
    running.0.push(
        Command::new(BIN)
            .args(args.split_whitespace())
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway"),
    );
    let client = Client::new();
    let ready = poll_until(Duration::from_secs(10), || async {
        client
            .try_get("http://127.0.0.1:9901/readyz")
            .await
            .is_ok_and(|r| r.status == 200)
            && client.try_get("http://127.0.0.1:9001/").await.is_ok()
            && client.try_get("http://127.0.0.1:9002/").await.is_ok()
    })
    .await;
    assert!(ready, "the gateway and both backends came up");

    // Terminal two: each command prints the version header.
    for line in &blocks[1] {
        let out = Command::new("bash")
            .args(["-c", line])
            .current_dir(root)
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout
                .to_ascii_lowercase()
                .contains("x-switchyard-version:"),
            "{line}\n{stdout}"
        );
        if line.contains("x-version: v2") {
            assert!(stdout.contains("v2"), "the override forces v2: {stdout}");
        }
    }
}

fn python3_or_fail() {
    let found = Command::new("python3").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "python3 is needed by this test: apt-get install -y python3"
    );
}
