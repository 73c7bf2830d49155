//! `switchyard demo` end to end, sped up: the canary steps up, fails, is
//! rolled back with users shielded, the summary says so, and Ctrl-C ends it
//! with exit 0.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use support::*;

#[tokio::test]
async fn the_demo_tells_the_whole_story_fast() {
    let mut child = start_demo_fast();
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut output = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !output
        .iter()
        .any(|l: &String| l.contains("The gateway keeps serving"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => output.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no summary within 40 s; output so far:\n{}",
                    output.join("\n")
                );
            }
        }
    }
    let text = output.join("\n");
    println!("{text}");
    let find = |prefix: &str| {
        output
            .iter()
            .find(|l| l.trim_start().starts_with(prefix))
            .cloned()
            .unwrap_or_default()
    };

    // The URLs to open.
    let dashboard = find("dashboard:");
    assert!(dashboard.contains("http://127.0.0.1:"), "{text}");
    // The steps, then the failure and the rollback.
    for step in [
        "canary v2 at 5%",
        "canary v2 at 10%",
        "canary v2 at 25%",
        "canary v2 at 50%",
        "v2 starts failing",
        "ROLLED BACK: v2 error rate",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    // Requests and client-visible errors: retry_on_stable shields users.
    let counts = find("requests:");
    let numbers: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let (requests, errors) = (numbers[0], numbers[1]);
    assert!(requests > 1000, "{counts}");
    assert!(
        errors * 100 <= requests,
        "more than 1% client-visible errors: {counts}"
    );
    // The canary's share per step is near its weight.
    let shares = find("canary share per step");
    for weight in [
        "5% ->",
        "10% ->",
        "25% ->",
        "50% ->",
        "after rollback 0% -> 0.0%",
    ] {
        assert!(shares.contains(weight), "{shares}");
    }
    let rollback = find("time to rollback:");
    let ms: u64 = rollback
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(ms < 2000, "{rollback}");

    // The load goes on after the story: the dashboard stays live.
    let admin = dashboard
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("dashboard URL")
        .trim_end_matches('/')
        .to_string();
    let client = Client::new();
    let served = |text: String| {
        sample(
            &samples(&text),
            "switchyard_requests_total",
            &[("backend", "demo"), ("version", "v1"), ("code", "2xx")],
        )
    };
    let before = served(client.get(&format!("{admin}/metrics")).await.text());
    let more = poll_until(Duration::from_secs(5), || async {
        served(client.get(&format!("{admin}/metrics")).await.text()) > before + 20.0
    })
    .await;
    assert!(more, "the load stopped after the summary");

    // Ctrl-C ends it cleanly.
    let status = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "demo did not stop on Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("join");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn the_built_in_config_is_config_demo_yaml() {
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.yaml"))
        .expect("read");
    assert_eq!(switchyard::demo::CONFIG, file);
}
