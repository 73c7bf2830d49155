//! DNS endpoint discovery against a real DNS server (dnsmasq on 127.0.0.1):
//! one endpoint per address of a name, followed as the answers change under
//! load. Backends listen on distinct loopback addresses (127.0.0.2...) on
//! one port, as the pods of a headless Service do.

mod support;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const NAME: &str = "app.fleet.test";

fn ips(backends: &[&Backend]) -> Vec<IpAddr> {
    backends.iter().map(|b| b.addr().ip()).collect()
}

/// One catch-all route to backend `app`, whose `v1` is discovered.
fn discovered_single(dns: &Dns, port: u16, extra: &str) -> String {
    let mut yaml = head(1);
    yaml.push_str(&format!(
        "routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n{extra}    versions:\n      v1:\n        discover: {{ dns: {NAME}, port: {port}, interval: 200ms, resolver: \"{}\", hold_empty: 1s }}\n",
        dns.addr()
    ));
    yaml
}

async fn status(client: &Client, gw: &TestGateway) -> Value {
    let text = client.get(&gw.admin_url("/status")).await.text();
    serde_json::from_str(&text).expect("status is JSON")
}

/// The addresses `/status` lists for `app`'s `version`, sorted.
async fn listed(client: &Client, gw: &TestGateway, version: &str) -> Vec<String> {
    let doc = status(client, gw).await;
    let mut list: Vec<String> = doc["backends"]["app"]["versions"][version]["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    list
}

fn addresses(backends: &[&Backend]) -> Vec<String> {
    let mut list: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    list.sort();
    list
}

/// Requests in a loop from `tasks` clients until stopped; counts answers
/// and failures (anything but 200).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..tasks)
            .map(|_| {
                let (stop, ok, failed, url) = (
                    Arc::clone(&stop),
                    Arc::clone(&ok),
                    Arc::clone(&failed),
                    url.clone(),
                );
                tokio::spawn(async move {
                    let client = Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        match client.try_get(&url).await {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(r) => {
                                eprintln!("load: {} {}", r.status, r.text());
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                eprintln!("load: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the clients; (answered, failed).
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_discovered_version_2_5_1_under_load_fails_no_request() {
    let dns = Dns::start();
    let (port, pods) = pods(5).await;
    let all: Vec<&Backend> = pods.iter().collect();
    dns.set(NAME, &ips(&all[..2]));
    let gw = TestGateway::start(&discovered_single(&dns, port, ""));
    let client = Client::new();
    // The first lookup happened before serving.
    assert_eq!(listed(&client, &gw, "v1").await, addresses(&all[..2]));
    let load = Load::start(gw.url("/"), 4);

    // 2 -> 5: each new address takes traffic within about one interval.
    assert!(
        poll_until(Duration::from_secs(3), || async {
            all[..2].iter().all(|b| b.hits() > 0)
        })
        .await
    );
    let scaled = Instant::now();
    dns.set(NAME, &ips(&all));
    let mut first_traffic = Vec::new();
    for pod in &all[2..] {
        let served = poll_until(Duration::from_secs(5), || async { pod.hits() > 0 }).await;
        assert!(served, "{} never got traffic", pod.name());
        first_traffic.push(scaled.elapsed());
    }
    let slowest = first_traffic.iter().max().copied().unwrap_or_default();
    eprintln!("DNS change to traffic at every new address: {slowest:?} (interval 200ms)");
    assert!(
        slowest < Duration::from_secs(2),
        "new endpoints took {slowest:?}"
    );
    assert_eq!(listed(&client, &gw, "v1").await, addresses(&all));

    // Requests in flight on the endpoints about to go finish there.
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let url = gw.url("/delay/1500");
            tokio::spawn(async move { Client::new().get(&url).await })
        })
        .collect();
    assert!(
        poll_until(Duration::from_secs(2), || async {
            all[1..].iter().any(|b| {
                b.requests()
                    .iter()
                    .any(|r| r.path_and_query == "/delay/1500")
            })
        })
        .await,
        "some slow request is in flight on an endpoint that will be removed"
    );
    // 5 -> 1.
    dns.set(NAME, &ips(&all[..1]));
    assert!(
        poll_until(Duration::from_secs(3), || async {
            listed(&client, &gw, "v1").await == addresses(&all[..1])
        })
        .await,
        "the set shrank to one"
    );
    for request in slow {
        let resp = request.await.expect("slow request");
        assert_eq!(
            resp.status,
            200,
            "an in-flight request on a removed endpoint: {}",
            resp.text()
        );
    }
    // Removed endpoints get nothing new.
    for pod in &all[1..] {
        pod.reset_hits();
    }
    let before = all[0].hits();
    assert!(
        poll_until(Duration::from_secs(3), || async {
            all[0].hits() > before + 50
        })
        .await
    );
    assert!(
        all[1..].iter().all(|b| b.hits() == 0),
        "a removed endpoint got a new request"
    );

    let (ok, failed) = load.finish().await;
    eprintln!("scale 2 -> 5 -> 1: {ok} requests answered, {failed} failed");
    assert!(ok > 200, "the load ran ({ok})");
    assert_eq!(failed, 0, "requests failed while the set changed");

    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    let samples = samples(&metrics);
    let labels = [("backend", "app"), ("version", "v1")];
    assert_eq!(
        sample(&samples, "switchyard_discovered_endpoints", &labels),
        1.0
    );
    let doc = status(&client, &gw).await;
    let events: Vec<&str> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "discovery")
        .filter_map(|e| e["message"].as_str())
        .collect();
    let grown = format!(
        "v1: +{} +{} +{}",
        all[2].addr(),
        all[3].addr(),
        all[4].addr()
    );
    assert!(
        events.iter().any(|m| *m == grown),
        "a discovery event for the growth ({grown}): {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_address_of_five_is_ejected_alone() {
    let dns = Dns::start();
    let (port, mut pods) = pods(5).await;
    // The last pod dies: its address stays in DNS, nothing listens there.
    let dead = pods.pop().expect("five pods");
    let dead_addr = dead.addr();
    drop(dead);
    let alive: Vec<&Backend> = pods.iter().collect();
    let mut answer = ips(&alive);
    answer.push(dead_addr.ip());
    dns.set(NAME, &answer);
    let outlier = "    outlier: { consecutive_failures: 3, ejection_time: 30s }\n";
    let gw = TestGateway::start(&discovered_single(&dns, port, outlier));
    let client = Client::new();
    let mut failed = 0;
    for _ in 0..200 {
        if client.get(&gw.url("/")).await.status != 200 {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "connect failures go to another endpoint");
    let doc = status(&client, &gw).await;
    let endpoints = doc["backends"]["app"]["versions"]["v1"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone();
    assert_eq!(endpoints.len(), 5);
    for e in &endpoints {
        let is_dead = e["address"] == dead_addr.to_string();
        assert_eq!(e["ejected"], Value::Bool(is_dead), "{e}");
    }
    assert!(alive.iter().all(|b| b.hits() > 0), "the four others serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_server_that_stops_answering_keeps_the_last_set() {
    let dns = Dns::start();
    let (port, pods) = pods(3).await;
    let all: Vec<&Backend> = pods.iter().collect();
    dns.set(NAME, &ips(&all));
    let gw = TestGateway::start(&discovered_single(&dns, port, ""));
    let client = Client::new();
    let labels = [("backend", "app"), ("version", "v1")];
    assert_eq!(
        metric(
            &client,
            &gw.admin_url("/metrics"),
            "switchyard_discovery_errors_total",
            &labels
        )
        .await,
        0.0
    );

    dns.pause();
    assert!(
        poll_until(Duration::from_secs(5), || async {
            metric(
                &client,
                &gw.admin_url("/metrics"),
                "switchyard_discovery_errors_total",
                &labels,
            )
            .await
                >= 2.0
        })
        .await,
        "failed lookups are counted"
    );
    for pod in &all {
        pod.reset_hits();
    }
    for _ in 0..60 {
        assert_eq!(client.get(&gw.url("/")).await.status, 200);
    }
    assert!(
        all.iter().all(|b| b.hits() > 0),
        "the last set keeps serving"
    );
    assert_eq!(listed(&client, &gw, "v1").await, addresses(&all));

    dns.resume();
    dns.set(NAME, &ips(&all[..2]));
    assert!(
        poll_until(Duration::from_secs(5), || async {
            listed(&client, &gw, "v1").await == addresses(&all[..2])
        })
        .await,
        "answers are followed again once the server is back"
    );
}

/// A canary release between a fixed `v1` and a discovered `v2`.
fn discovered_canary(v1: &Backend, dns: &Dns, port: u16, release_extra: &str) -> String {
    let mut yaml = head(1);
    yaml.push_str(&format!(
        "routes:\n  - name: all\n    backend: app\nbackends:\n  app:\n    versions:\n      v1: {{ endpoints: [\"{}\"] }}\n      v2:\n        discover: {{ dns: {NAME}, port: {port}, interval: 200ms, resolver: \"{}\", hold_empty: 1s }}\n    release:\n      strategy: canary\n      stable: v1\n      canary: v2\n      weight: 50\n{release_extra}",
        v1.addr(),
        dns.addr()
    ));
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_gone_empties_the_version_after_hold_empty_and_traffic_falls_back() {
    let dns = Dns::start();
    let v1 = Backend::start("v1").await;
    let (port, pods) = pods(2).await;
    let all: Vec<&Backend> = pods.iter().collect();
    dns.set(NAME, &ips(&all));
    let gw = TestGateway::start(&discovered_canary(&v1, &dns, port, ""));
    let client = Client::new();
    let load = Load::start(gw.url("/"), 2);
    assert!(
        poll_until(Duration::from_secs(3), || async {
            all.iter().all(|b| b.hits() > 0)
        })
        .await
    );

    dns.set(NAME, &[]);
    let gone = Instant::now();
    // Held: the last set serves through hold_empty (1 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        listed(&client, &gw, "v2").await.len(),
        2,
        "held within hold_empty"
    );
    assert!(
        poll_until(Duration::from_secs(4), || async {
            listed(&client, &gw, "v2").await.is_empty()
        })
        .await,
        "emptied after hold_empty"
    );
    assert!(
        gone.elapsed() >= Duration::from_secs(1),
        "not before hold_empty"
    );
    for pod in &all {
        pod.reset_hits();
    }
    let labels = [("backend", "app"), ("from", "v2"), ("to", "v1")];
    let before = metric(
        &client,
        &gw.admin_url("/metrics"),
        "switchyard_version_fallbacks_total",
        &labels,
    )
    .await;
    let v1_before = v1.hits();
    assert!(
        poll_until(Duration::from_secs(3), || async {
            v1.hits() > v1_before + 100
        })
        .await
    );
    assert!(
        all.iter().all(|b| b.hits() == 0),
        "nothing reaches the gone pods"
    );
    let after = metric(
        &client,
        &gw.admin_url("/metrics"),
        "switchyard_version_fallbacks_total",
        &labels,
    )
    .await;
    assert!(
        after > before + 20.0,
        "falling back is counted ({before} -> {after})"
    );
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "no request failed ({ok} answered)");
    let metrics = client.get(&gw.admin_url("/metrics")).await.text();
    let labels = [("backend", "app"), ("version", "v2")];
    assert_eq!(
        sample(
            &samples(&metrics),
            "switchyard_discovered_endpoints",
            &labels
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_coming_and_going_never_restart_the_release() {
    let dns = Dns::start();
    let v1 = Backend::start("v1").await;
    let (port, pods) = pods(3).await;
    let all: Vec<&Backend> = pods.iter().collect();
    dns.set(NAME, &ips(&all[..1]));
    let extra = "      steps: [50, 75]\n      step_interval: 1h\n";
    let gw = TestGateway::start(&discovered_canary(&v1, &dns, port, extra));
    let client = Client::new();
    let promoted = client
        .post(&gw.admin_url("/admin/backends/app/promote"), "")
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    let phase = |doc: &Value| doc["backends"]["app"]["phase"].clone();
    assert_eq!(phase(&status(&client, &gw).await), "promoted");

    for set in [&all[..3], &all[1..2], &all[..2]] {
        dns.set(NAME, &ips(set));
        assert!(
            poll_until(Duration::from_secs(3), || async {
                listed(&client, &gw, "v2").await == addresses(set)
            })
            .await
        );
        let doc = status(&client, &gw).await;
        assert_eq!(phase(&doc), "promoted", "the release went on: {doc}");
        assert_eq!(doc["backends"]["app"]["weights"]["v2"], 100.0);
    }
    for _ in 0..30 {
        let resp = client.get(&gw.url("/")).await;
        assert_eq!(resp.status, 200);
        assert_ne!(resp.header(SERVED_BY), Some("v1"), "all traffic on v2");
    }
}
