//! [`Exchange`]: what was decided and done for one request (route, backend,
//! version, endpoint, the upstream time, whether stable answered for the
//! canary), from which the answer's headers, the gateway's own metrics and
//! the access log line are made. The only place a [`ProxyError`] becomes a
//! response.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio::time::Instant;

use super::access_log::AccessRecord;
use super::body::OnFinish;
use super::body::ResponseBody;
use super::context::Conn;
use super::grpc::{self, CallWatch};
use super::headers::{X_REQUEST_ID, X_SWITCHYARD_VERSION};
use crate::endpoint::InFlight;
use crate::error::{error_body, ProxyError, CLIENT_CLOSED};
use crate::request_id::new_request_id;
use crate::snapshot::{BackendRt, Snapshot};
use crate::upstream::HeadTimer;

/// What the attempts of a request tried: kept for the answer, the access
/// log and the gateway's own metrics.
#[derive(Default)]
pub struct Tried {
    /// The endpoint tried last, counted in flight until the answer ends;
    /// `None` when no endpoint could be picked (nothing sent or recorded).
    pub endpoint: Option<InFlight>,
    /// Time to the response head (or the failure).
    pub upstream_ms: Option<f64>,
    /// A gRPC call answered with messages: judged on its trailers.
    pub call: Option<CallWatch>,
}

/// What was decided for one request, for the response headers and the log.
/// Dropped before [`Exchange::finish`] — the client went away while the
/// upstream was asked — it counts and logs the client's abort.
pub struct Exchange<'s> {
    snapshot: &'s Snapshot,
    /// `finish` ran: the answer is on its way.
    finished: bool,
    pub started: Instant,
    /// The client's `X-Request-Id`, or a new one.
    pub request_id: HeaderValue,
    /// The client spoke HTTP/1.x.
    http1: bool,
    /// A gRPC call: the gateway's own errors are gRPC answers.
    pub grpc: bool,
    /// Built only with `access_log: true`.
    record: Option<AccessRecord>,
    pub route: Option<usize>,
    pub backend: Option<Arc<BackendRt>>,
    pub version: Option<usize>,
    /// The endpoint that answers and the upstream time; an upstream attempt
    /// was made (and counted in the metrics) when it has an endpoint.
    pub tried: Tried,
    /// A new sticky client's cookie.
    pub set_cookie: Option<HeaderValue>,
    /// The canary failed and stable answered instead.
    pub retried: bool,
    /// Times the wait for the response head; the connection's, lent.
    pub timer: HeadTimer,
}

impl<'s> Exchange<'s> {
    /// A request arrives: its id, and the access record when the log is on.
    pub fn begin(snapshot: &'s Snapshot, conn: &Conn, req: &Request<Incoming>) -> Self {
        let started = Instant::now();
        let request_id = match req.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            // One allocation that the upstream request and the response share
            // (a copied slice would allocate again when first cloned).
            None => HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(new_request_id()))
                .map(|mut id| {
                    // Never repeats: HPACK (h2 to clients and upstreams)
                    // sends it as a literal instead of churning its table.
                    id.set_sensitive(true);
                    id
                })
                .unwrap_or(HeaderValue::from_static("-")),
        };
        let has_body = !http_body::Body::is_end_stream(req.body());
        conn.state.body_done.store(!has_body, Ordering::Relaxed);
        let record = snapshot
            .config
            .access_log
            .then(|| AccessRecord::begin(req, &request_id, started));
        Exchange {
            snapshot,
            finished: false,
            started,
            http1: req.version() <= Version::HTTP_11,
            grpc: grpc::is_call(req.headers()),
            record,
            route: None,
            backend: None,
            version: None,
            tried: Tried::default(),
            set_cookie: None,
            retried: false,
            timer: conn.lend_timer(),
            request_id,
        }
    }

    /// The answer the client gets: the upstream's, or the error's, with the
    /// headers every answer carries and the guards its body holds.
    pub fn finish(
        &mut self,
        conn: &Conn,
        forwarded: Result<Response<ResponseBody>, ProxyError>,
    ) -> Response<ResponseBody> {
        self.finished = true;
        let snapshot = self.snapshot;
        let (mut response, aborted) = match forwarded {
            Ok(mut response) => {
                // An upstream answer: the client may still go away mid-body.
                if let Some(aborts) = self.aborts() {
                    response.body_mut().set_aborts(aborts.clone());
                }
                if let Some(call) = self.tried.call.take() {
                    response.body_mut().watch_call(call);
                }
                (response, false)
            }
            Err(err) => {
                let aborted = err.is_client_abort();
                if aborted {
                    self.count_abort();
                }
                (self.error_answer(conn, &err), aborted)
            }
        };
        conn.return_timer(std::mem::take(&mut self.timer));
        if self.tried.endpoint.is_none() {
            // The gateway answered by itself: count it on the route, or as
            // unrouted.
            let metrics = self
                .route
                .map_or(&snapshot.unrouted, |r| &snapshot.routes[r].own);
            let seconds = self.started.elapsed().as_secs_f64();
            metrics.observe(response.status().as_u16(), seconds);
        }
        let headers = response.headers_mut();
        if let (Some(backend), Some(v)) = (&self.backend, self.version) {
            headers.insert(X_SWITCHYARD_VERSION, backend.versions[v].header.clone());
        }
        if let Some(cookie) = self.set_cookie.take() {
            headers.append(header::SET_COOKIE, cookie);
        }
        let id = std::mem::replace(&mut self.request_id, HeaderValue::from_static("-"));
        headers.insert(X_REQUEST_ID, id);
        if let Some(mut record) = self.record.take() {
            let status = if aborted {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(response.status())
            } else {
                response.status()
            };
            record.decided(
                status,
                self.route.map(|r| snapshot.routes[r].name.as_str()),
                self.backend.as_deref(),
                self.version,
                self.tried.endpoint.as_ref().map(|e| e.0.address.as_str()),
                self.tried.upstream_ms,
            );
            record.retried = self.retried;
            response.body_mut().set_finish(Box::new(record));
        }
        if let Some(in_flight) = self.tried.endpoint.take() {
            response.body_mut().set_in_flight(in_flight);
        }
        response.body_mut().set_conn(conn.state.clone());
        if self.http1 {
            response.body_mut().pace_to_client();
        }
        response
    }

    /// The client-abort counter of the version that was chosen.
    fn aborts(&self) -> Option<&IntCounter> {
        let metrics = &self.snapshot.routes[self.route?].metrics;
        metrics.get(self.version?)?.client_aborts.as_ref()
    }

    fn count_abort(&self) {
        if let Some(aborts) = self.aborts() {
            aborts.inc();
        }
    }

    /// The small text answer for `err` (a trailers-only answer to a gRPC
    /// call).
    fn error_answer(&self, conn: &Conn, err: &ProxyError) -> Response<ResponseBody> {
        let status = err.status();
        if status.is_server_error() {
            tracing::debug!(error = %err, request_id = ?self.request_id, "request failed");
        }
        if self.grpc {
            return grpc::error_answer(err, ResponseBody::empty());
        }
        let id = self.request_id.to_str().unwrap_or("-");
        let text = error_body(status, &err.to_string(), id);
        let mut response = Response::new(ResponseBody::full(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.http1 && !conn.state.body_done.load(Ordering::Relaxed) {
            // The request body was not read: the connection cannot carry
            // another request safely, so end it after this answer.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The request future was dropped while waiting on the upstream: the
        // client closed its connection or reset its stream.
        self.count_abort();
        if let Some(mut record) = self.record.take() {
            let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
            record.decided(
                status,
                self.route.map(|r| self.snapshot.routes[r].name.as_str()),
                self.backend.as_deref(),
                self.version,
                self.tried.endpoint.as_ref().map(|e| e.0.address.as_str()),
                self.tried.upstream_ms,
            );
            record.finish(0, false, true);
        }
    }
}
