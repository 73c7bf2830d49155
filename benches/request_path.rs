//! Micro-benchmarks of the per-request decisions: route lookup, sticky
//! bucketing and version choice. Run with `cargo bench --bench request_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use switchyard::config;
use switchyard::metrics::Metrics;
use switchyard::release::bucket::{bucket, cookie_value, threshold};
use switchyard::release::split::{choose, Inputs, Split};
use switchyard::release::table::RouteTable;
use switchyard::stats::Window;

const CONFIG: &str = r#"
listeners:
  - name: http
    bind: "127.0.0.1:0"
routes:
  - { name: users, match: { host: api.example.com, path_prefix: /users }, backend: app }
  - { name: orders, match: { host: api.example.com, path_prefix: /orders }, backend: app }
  - { name: web, match: { host: "*.example.com", path_prefix: / }, backend: app }
  - { name: static, match: { path_prefix: /static }, backend: app }
  - { name: all, backend: app }
backends:
  app:
    versions:
      v1: { endpoints: ["127.0.0.1:9001"] }
"#;

fn route_lookup(c: &mut Criterion) {
    let config = config::parse(CONFIG, "bench.yaml").expect("bench config is valid");
    let table = RouteTable::new(&config.routes);
    let mut group = c.benchmark_group("route_lookup");
    group.bench_function("exact_host", |b| {
        b.iter(|| table.find(black_box("api.example.com"), black_box("/users/42")))
    });
    group.bench_function("wildcard_host", |b| {
        b.iter(|| table.find(black_box("www.example.com:8080"), black_box("/a/b")))
    });
    group.bench_function("any_host_fallthrough", |b| {
        b.iter(|| table.find(black_box("10.1.2.3"), black_box("/static/app.js")))
    });
    group.finish();
}

fn version_choice(c: &mut Criterion) {
    let split = Split::Canary {
        stable: 0,
        canary: 1,
        threshold: threshold(10.0),
    };
    let mut group = c.benchmark_group("version_choice");
    group.bench_function("weighted_roll", |b| {
        let mut roll = 0u32;
        b.iter(|| {
            roll = (roll + 7919) % 10_000;
            choose(
                black_box(&split),
                &Inputs {
                    roll,
                    ..Inputs::default()
                },
                |_| true,
            )
        })
    });
    group.bench_function("sticky_cookie", |b| {
        let header = b"session=abc; sy-users=08eb861ef38fa45e; theme=dark";
        b.iter(|| {
            let key = cookie_value(black_box(header), "sy-users");
            let sticky_bucket = key.map(bucket);
            choose(
                &split,
                &Inputs {
                    sticky_bucket,
                    ..Inputs::default()
                },
                |_| true,
            )
        })
    });
    group.bench_function("bucket_only", |b| {
        b.iter(|| bucket(black_box(b"user-1234567")))
    });
    group.finish();
}

fn stats_recording(c: &mut Criterion) {
    let window = Window::new(Duration::from_secs(30));
    let mut group = c.benchmark_group("stats");
    group.bench_function("record", |b| {
        let mut now = 0u64;
        b.iter(|| {
            now += 1; // a new slice every 1000 records, as under load
            window.record(
                black_box(now / 10),
                Duration::from_micros(black_box(2_500)),
                false,
            )
        })
    });
    group.bench_function("figures_30s", |b| {
        b.iter(|| window.figures(black_box(50_000), Duration::from_secs(30)))
    });
    group.finish();
}

fn metrics_counting(c: &mut Criterion) {
    let metrics = Metrics::new();
    let handles = metrics.version("users", "users", "v2");
    c.bench_function("metrics/observe_request", |b| {
        b.iter(|| handles.observe(black_box(200), black_box(0.0025)))
    });
}

criterion_group!(
    benches,
    route_lookup,
    version_choice,
    stats_recording,
    metrics_counting
);
criterion_main!(benches);
