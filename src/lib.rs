//! Switchyard: a progressive-delivery gateway. It routes HTTP traffic to
//! backends, splits each backend's traffic between versions (weighted canary
//! or blue/green), and forwards it through pooled upstream connections.
//!
//! # Layout
//!
//! Layers, top to bottom; a module uses what is below it, never what is
//! above (`scripts/check-layers.py` checks the `use` graph is a DAG).
//!
//! ```text
//! shell      app, demo, ctl (and the binary's main): wiring, shutdown, the
//!            demo, fleet control
//! control    control/  the only writer of the snapshot: the loop (mod),
//!                      handle (request/reply), watch, engine, analysis,
//!                      state_file, health + probe (active checks, HTTP and
//!                      gRPC), prometheus (fleet-wide source)
//!            admin/    the admin listener (mod), status, dashboard.html
//! data path  server/   bind, admit, accept (mod), connection (serving one,
//!                      parking), guard (I/O), head_scan (pure), conn
//!                      (per-connection state), evict
//!            proxy/    handle = route -> choose -> attempt -> answer (mod),
//!                      context, headers (pure), attempt, mirror, tunnel,
//!                      exchange, grpc (calls, status, trailers), body,
//!                      access_log
//!            upstream/ exchange (mod), connect (TCP, TLS, ALPN), pool
//!                      (HTTP/1.1), h2_pool (multiplexed HTTP/2),
//!                      request_body (replay), response_body (hand-back),
//!                      client (Prometheus queries), timer
//! core       shared (snapshot handle, metrics, events, clock), snapshot,
//!            endpoint, metrics, events, clock, stats, tls, error, request_id
//! pure       config/ (file -> validate -> model), release/ (buckets, split,
//!            route table, verdicts, canary and blue/green state machines)
//! ```
//!
//! - [`app`]: starts workers, the control loop, admin and signals; owns
//!   shutdown. [`demo`]: `switchyard demo`.
//! - [`control`]: reloads (validated whole, swapped atomically with live
//!   state carried over), the release engine, probes, triggers.
//! - [`admin`]: probes, metrics, `/status`, the dashboard, actions.
//! - [`server`]: listeners (one `SO_REUSEPORT` socket per worker), HTTP/1.1 +
//!   h2c serving, the connection guard (timeouts, head limits, framing).
//! - [`proxy`]: the request path, from route to response.
//! - [`upstream`]: connections to endpoints: pooled HTTP/1.1, multiplexed
//!   HTTP/2, TLS, errors.
//! - [`shared`], [`snapshot`], [`endpoint`], [`metrics`], [`events`],
//!   [`clock`], [`stats`], [`tls`], [`error`], [`request_id`]: the core.
//! - [`config`], [`release`]: no I/O on the request path, no clock reads.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
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
