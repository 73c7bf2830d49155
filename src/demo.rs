//! `switchyard demo`: the whole product in one command, needing no file.
//!
//! Starts two demo backends (v1, v2) on loopback, the gateway on the built-in
//! `config/demo.yaml`, and a bounded synthetic load. The canary steps up while
//! healthy; on a schedule v2 starts failing more and more, the analysis rolls
//! it back, and retry_on_stable keeps users from seeing its errors. Then a
//! summary is printed and the gateway keeps serving until Ctrl-C.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::{Gateway, StartError};
use crate::config::{self, Config, Release};
use crate::control::engine::ReleaseState;
use crate::control::Handle;
use crate::release::progress::Phase;
use crate::request_id::random_below;

/// The demo's config, the same text as `config/demo.yaml`.
pub const CONFIG: &str = include_str!("../config/demo.yaml");

/// When v2 starts failing, at speed 1.
const FAIL_AT: Duration = Duration::from_secs(85);
/// How long v2's error rate takes to climb to its maximum, at speed 1.
const FAIL_RAMP: Duration = Duration::from_secs(10);
/// The most v2 fails, in per-mille of its requests.
const FAIL_MAX_PERMILLE: u32 = 600;
/// Requests per second of the synthetic load, at speed 1.
const LOAD_RPS: f64 = 50.0;
/// The load never exceeds this many requests per second.
const LOAD_RPS_CAP: f64 = 2000.0;
/// Concurrent load clients.
const CLIENTS: usize = 4;
/// The story gives up waiting for a rollback after this long, at speed 1.
const STORY_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct Options {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Every duration of the story is divided by this.
    pub speed: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the built-in demo config is invalid: {0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("cannot start the demo: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the demo until SIGINT or SIGTERM.
pub fn run(options: Options) -> Result<(), DemoError> {
    let speed = options.speed.clamp(0.1, 1000.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("switchyard-demo")
        .build()?;
    let schedule = Arc::new(Schedule {
        started: Instant::now(),
        speed,
        failures: AtomicU64::new(0),
        first_failure: Mutex::new(None),
    });
    let (v1, v2) = runtime.block_on(async {
        let v1 = start_backend("v1", Arc::clone(&schedule)).await?;
        let v2 = start_backend("v2", Arc::clone(&schedule)).await?;
        Ok::<_, std::io::Error>((v1, v2))
    })?;
    let mut config = config::parse(CONFIG, "config/demo.yaml")?;
    adapt(&mut config, &options, speed, v1, v2);
    let gateway = Gateway::serve_config(config)?;
    let proxy = gateway.addr();
    let admin = gateway.admin_addr();
    println!("Switchyard demo");
    println!("  proxy:     http://{proxy}/");
    println!("  dashboard: http://{admin}/   (open it now: the canary starts at 5 %)");
    println!("  status:    http://{admin}/status   metrics: http://{admin}/metrics");
    println!("Press Ctrl-C to stop.\n");
    runtime.spawn(story(gateway.control().clone(), proxy, schedule));
    gateway.run_until_signal();
    runtime.shutdown_background();
    Ok(())
}

/// Points the config at the demo backends and applies the options.
fn adapt(config: &mut Config, options: &Options, speed: f64, v1: SocketAddr, v2: SocketAddr) {
    if let (Some(listen), Some(listener)) = (options.listen, config.listeners.first_mut()) {
        listener.bind = listen;
    }
    if let Some(admin) = options.admin {
        config.admin.bind = admin;
    }
    let scale = |d: &mut Duration| *d = d.div_f64(speed).max(Duration::from_millis(1));
    for backend in config.backends.values_mut() {
        for (name, version) in backend.versions.iter_mut() {
            version.endpoints = vec![if name == "v1" { v1 } else { v2 }.to_string()];
        }
        if let Some(check) = backend.health_check.as_mut() {
            scale(&mut check.interval);
            scale(&mut check.timeout);
        }
        if let Release::Canary(c) = &mut backend.release {
            scale(&mut c.step_interval);
            scale(&mut c.analysis.interval);
            scale(&mut c.analysis.window);
        }
    }
}

/// When and how much v2 fails.
struct Schedule {
    started: Instant,
    speed: f64,
    failures: AtomicU64,
    first_failure: Mutex<Option<Instant>>,
}

impl Schedule {
    fn at(&self, d: Duration) -> Duration {
        d.div_f64(self.speed)
    }

    /// v2's failure probability now, in per-mille.
    fn failure_permille(&self) -> u32 {
        let elapsed = self.started.elapsed();
        let (start, ramp) = (self.at(FAIL_AT), self.at(FAIL_RAMP));
        if elapsed < start {
            return 0;
        }
        let progress = ((elapsed - start).as_secs_f64() / ramp.as_secs_f64()).min(1.0);
        100 + ((FAIL_MAX_PERMILLE - 100) as f64 * progress) as u32
    }
}

async fn start_backend(name: &'static str, schedule: Arc<Schedule>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let schedule = Arc::clone(&schedule);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let schedule = Arc::clone(&schedule);
                    async move { Ok::<_, Infallible>(answer(name, &schedule, &req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(name: &str, schedule: &Schedule, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let failing = name == "v2"
        && req.uri().path() != "/health"
        && random_below(1000) < schedule.failure_permille();
    let (status, body) = if failing {
        schedule.failures.fetch_add(1, Ordering::Relaxed);
        let mut first = schedule
            .first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(Instant::now);
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{name}: internal error (the demo's v2 is failing on purpose)\n"),
        )
    } else {
        (StatusCode::OK, format!("hello from {name}\n"))
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// What the load saw, per canary weight in force.
#[derive(Default)]
struct Tally {
    /// weight (in hundredths of a percent) → (requests, answered by v2)
    per_weight: Mutex<BTreeMap<u32, (u64, u64)>>,
    sent: AtomicU64,
    errors: AtomicU64,
}

async fn story(control: Handle, proxy: SocketAddr, schedule: Arc<Schedule>) {
    let tally = Arc::new(Tally::default());
    let weight = Arc::new(AtomicU32::new(0));
    if let Some(ReleaseState::Canary(state)) = control.release("demo").await {
        weight.store((state.weight * 100.0).round() as u32, Ordering::Relaxed);
    }
    let rate = (LOAD_RPS * schedule.speed).min(LOAD_RPS_CAP);
    let period = Duration::from_secs_f64(CLIENTS as f64 / rate);
    let deadline = Instant::now() + schedule.at(STORY_LIMIT);
    // The load goes on after the story, until Ctrl-C: the dashboard keeps
    // live figures for whoever looks at it later.
    for _ in 0..CLIENTS {
        tokio::spawn(load(proxy, period, Arc::clone(&weight), Arc::clone(&tally)));
    }

    let started = schedule.started;
    let stamp = || format!("[{:>6.1}s]", started.elapsed().as_secs_f64());
    let mut last: Option<(Phase, f64)> = None;
    let mut failing_reported = false;
    let mut outcome = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !failing_reported && schedule.failure_permille() > 0 {
            failing_reported = true;
            println!(
                "{} v2 starts failing (its error rate now climbs towards {}%)",
                stamp(),
                FAIL_MAX_PERMILLE / 10
            );
        }
        let Some(ReleaseState::Canary(state)) = control.release("demo").await else {
            continue;
        };
        weight.store((state.weight * 100.0).round() as u32, Ordering::Relaxed);
        if last != Some((state.phase, state.weight)) {
            last = Some((state.phase, state.weight));
            match state.phase {
                Phase::RolledBack => {
                    println!(
                        "{} ROLLED BACK: {}",
                        stamp(),
                        state.reason.clone().unwrap_or_default()
                    );
                    outcome = Some((Instant::now(), state.reason.clone().unwrap_or_default()));
                    break;
                }
                phase => println!(
                    "{} {}: canary v2 at {}%",
                    stamp(),
                    phase.as_str(),
                    state.weight
                ),
            }
        }
    }
    // A little traffic after the rollback shows users stay on v1.
    tokio::time::sleep(schedule.at(Duration::from_secs(3))).await;
    print_summary(&tally, &schedule, outcome);
}

async fn load(proxy: SocketAddr, period: Duration, weight: Arc<AtomicU32>, tally: Arc<Tally>) {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(HttpConnector::new());
    let Ok(uri) = format!("http://{proxy}/").parse::<http::Uri>() else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at_weight = weight.load(Ordering::Relaxed);
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let Ok(request) = Request::get(uri.clone()).body(Empty::new()) else {
            return;
        };
        let (ok, canary) = match client.request(request).await {
            Ok(response) => {
                let canary = response
                    .headers()
                    .get("x-switchyard-version")
                    .is_some_and(|v| v == "v2");
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                (ok, canary)
            }
            Err(_) => (false, false),
        };
        if !ok {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut per_weight = tally.per_weight.lock().unwrap_or_else(|p| p.into_inner());
        let entry = per_weight.entry(at_weight).or_default();
        entry.0 += 1;
        entry.1 += u64::from(canary);
    }
}

fn print_summary(tally: &Tally, schedule: &Schedule, outcome: Option<(Instant, String)>) {
    let sent = tally.sent.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    println!("\nSummary");
    println!("  requests: {sent}, client-visible errors: {errors}");
    let per_weight = tally.per_weight.lock().unwrap_or_else(|p| p.into_inner());
    // Steps in order, the traffic after the rollback (weight 0) last.
    let shares: Vec<String> = per_weight
        .range(1..)
        .chain(per_weight.range(..1))
        .filter(|(_, (n, _))| *n > 0)
        .map(|(w, (n, v2))| {
            let label = match w {
                0 => "after rollback 0".to_string(),
                w => (f64::from(*w) / 100.0).to_string(),
            };
            format!("{label}% -> {:.1}% of {n}", *v2 as f64 * 100.0 / *n as f64)
        })
        .collect();
    println!(
        "  canary share per step (configured -> served): {}",
        shares.join(", ")
    );
    let failures = schedule.failures.load(Ordering::Relaxed);
    let first = *schedule
        .first_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match (outcome, first) {
        (Some((at, reason)), Some(first)) => {
            println!(
                "  time to rollback: {} ms from the first failing canary request ({reason})",
                at.saturating_duration_since(first).as_millis()
            );
            println!("  failed canary attempts: {failures}, all retried on v1 (retry_on_stable)");
        }
        (Some((_, reason)), None) => println!("  rolled back ({reason})"),
        (None, _) => println!("  no rollback happened before the load ended"),
    }
    println!("\nThe gateway keeps serving and the load goes on (the dashboard stays live); Ctrl-C to stop.");
}
