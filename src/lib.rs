//! Switchyard: a progressive-delivery gateway. It routes HTTP traffic to
//! backends, splits each backend's traffic between versions (weighted canary
//! or blue/green), and forwards it through pooled upstream connections.
//!
//! # Layout
//!
//! - [`config`]: the YAML file (`file`), its validation with positioned
//!   errors (`validate`), and the validated model.
//! - [`release`]: pure release logic — sticky buckets, the version split, the
//!   routing table. No I/O, no clock.
//! - [`snapshot`]: one config generation compiled for the request path:
//!   routes, backends, versions, endpoints with their live state, clients.
//! - [`app`]: starts workers, admin and signals; owns shutdown.
//! - [`server`]: listeners (one `SO_REUSEPORT` socket per worker), HTTP/1.1 +
//!   h2c serving, and the connection [`server::guard`] (timeouts, head limits,
//!   framing checks).
//! - [`proxy`]: the request path, from route to response.
//! - [`upstream`]: pooled HTTP/1.1 clients and upstream error mapping.
//! - [`body`]: streaming request and response bodies.
//! - [`error`]: `ProxyError` and its one status mapping.
//! - [`access_log`]: one line per request.
//! - [`admin`]: the admin listener.
//! - [`request_id`]: request ids and the per-thread random generator.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod proxy;
pub mod release;
pub mod request_id;
pub mod server;
pub mod snapshot;
pub mod upstream;

pub use app::Gateway;
