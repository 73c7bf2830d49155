//! Switchyard: a progressive-delivery gateway. It routes HTTP traffic to
//! backends, splits each backend's traffic between versions (weighted canary
//! or blue/green), and forwards it through pooled upstream connections.
//!
//! # Layout
//!
//! - [`config`]: the YAML file (`file`), its validation with positioned
//!   errors (`validate`), the validated model, and reload triggers (`watch`:
//!   directory watch, SIGHUP, safety-net timer).
//! - [`release`]: pure release logic — sticky buckets, the version split, the
//!   routing table. No I/O, no clock.
//! - [`snapshot`]: one config generation compiled for the request path:
//!   routes, backends, versions, endpoints with their live state, clients.
//! - [`app`]: starts workers, admin and signals; owns shutdown.
//! - [`demo`]: `switchyard demo`: demo backends, built-in config, load, story.
//! - [`control`]: the only writer of the snapshot: reloads, validated whole,
//!   swapped atomically with live state carried over.
//! - [`events`]: last reload outcome and recent events, for `/status`.
//! - [`engine`]: each backend's release state driven by the analysis:
//!   steps, rollbacks, operator actions, the state file.
//! - [`health`]: active probe loops, one per endpoint, following reloads.
//! - [`prometheus`]: the fleet-wide analysis source (PromQL over HTTP).
//! - [`server`]: listeners (one `SO_REUSEPORT` socket per worker), HTTP/1.1 +
//!   h2c serving, and the connection [`server::guard`] (timeouts, head limits,
//!   framing checks).
//! - [`proxy`]: the request path, from route to response.
//! - [`stats`]: per-version sliding windows (requests, errors, latency).
//! - [`endpoint`]: one upstream address: clients, health, ejection, in-flight.
//! - [`pool`]: each worker's idle upstream HTTP/1.1 connections (thread-local).
//! - [`upstream`]: pooled HTTP/1.1 clients (plain or TLS) and error mapping.
//! - [`tls`]: rustls configs: SNI certificate choice, ALPN, upstream roots.
//! - [`body`]: streaming request and response bodies.
//! - [`error`]: `ProxyError` and its one status mapping.
//! - [`access_log`]: one line per request.
//! - [`metrics`]: the Prometheus registry and every metric (SPEC §7).
//! - [`admin`]: the admin listener: probes, metrics, status, dashboard, actions.
//! - [`status`]: the `/status` document and the state gauges.
//! - [`request_id`]: request ids and the per-thread random generator.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod metrics;
pub mod proxy;
pub mod release;
pub mod request_id;
pub mod server;
pub mod shared;
pub mod snapshot;
pub mod stats;
pub mod tls;
pub mod upstream;

pub use app::Gateway;
