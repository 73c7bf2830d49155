//! The access log: one line per request (SPEC §1), written when the response
//! body ends so it can report the bytes sent and the full duration.
//!
//! Only built when `access_log: true`; the record is the one allocation the
//! log adds to a request.

use std::time::SystemTime;

use http::{HeaderValue, Method, Request, StatusCode};
use tokio::time::Instant;

use super::body::OnFinish;
use crate::error::CLIENT_CLOSED;
use crate::snapshot::BackendRt;

pub struct AccessRecord {
    ts: SystemTime,
    started: Instant,
    request_id: HeaderValue,
    method: Method,
    host: String,
    path: String,
    status: u16,
    route: String,
    backend: String,
    version: String,
    endpoint: String,
    upstream_ms: Option<f64>,
    /// The canary failed and stable answered (retry_on_stable).
    pub retried: bool,
}

impl AccessRecord {
    pub fn begin<B>(req: &Request<B>, request_id: &HeaderValue, started: Instant) -> Self {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        AccessRecord {
            ts: SystemTime::now(),
            started,
            request_id: request_id.clone(),
            method: req.method().clone(),
            host: host.to_string(),
            path: req.uri().path().to_string(),
            status: 0,
            route: String::new(),
            backend: String::new(),
            version: String::new(),
            endpoint: String::new(),
            upstream_ms: None,
            retried: false,
        }
    }

    pub fn decided(
        &mut self,
        status: StatusCode,
        route: Option<&str>,
        backend: Option<&BackendRt>,
        version: Option<usize>,
        endpoint: Option<&str>,
        upstream_ms: Option<f64>,
    ) {
        self.status = status.as_u16();
        self.route = route.unwrap_or("").to_string();
        if let Some(backend) = backend {
            self.backend = backend.name.clone();
            if let Some(v) = version {
                self.version = backend.versions[v].name.clone();
            }
        }
        self.endpoint = endpoint.unwrap_or("").to_string();
        self.upstream_ms = upstream_ms;
    }
}

impl OnFinish for AccessRecord {
    fn finish(&mut self, bytes_out: u64, complete: bool, aborted: bool) {
        if aborted {
            self.status = CLIENT_CLOSED;
        }
        let duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            target: "access",
            ts = %humantime::format_rfc3339_millis(self.ts),
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = self.method.as_str(),
            host = self.host.as_str(),
            path = self.path.as_str(),
            status = self.status,
            route = self.route.as_str(),
            backend = self.backend.as_str(),
            version = self.version.as_str(),
            endpoint = self.endpoint.as_str(),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            upstream_ms = self.upstream_ms.map(|ms| (ms * 1000.0).round() / 1000.0),
            bytes_out,
            complete,
            retried = self.retried,
            "access"
        );
    }
}
