//! The request path: route, choose a version and an endpoint, forward, answer.
//!
//! [`handle`] wraps [`forward`]: it owns the request id, the response headers
//! every answer carries, the access log, and is the only place that turns a
//! [`ProxyError`] into a response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::IntCounterVec;

mod access_log;
pub mod body;

use crate::config::Sticky;
use crate::endpoint::{clock_ms, Endpoint, InFlight};
use crate::error::UpstreamFailure;
use crate::error::{error_body, ProxyError};
use crate::events::{EventKind, Events};
use crate::metrics::VersionMetrics;
use crate::release::bucket::{bucket, cookie_value};
use crate::release::split::{choose, Inputs, Reason};
use crate::request_id::{new_request_id, random_below, random_u64, split_roll};
use crate::server::conn::ConnState;
use crate::shared::Shared;
use crate::snapshot::{BackendRt, RouteRt, Snapshot, VersionRt};
use crate::upstream::{self, RequestBody, UpstreamBody};
use access_log::AccessRecord;
use body::ResponseBody;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_SWITCHYARD_VERSION: HeaderName = HeaderName::from_static("x-switchyard-version");
/// Marks a mirrored copy, so the canary can tell it from real traffic.
const X_SWITCHYARD_MIRROR: HeaderName = HeaderName::from_static("x-switchyard-mirror");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What one worker thread's requests use of the shared state: its index
/// (for its upstream clients), the routing snapshot, the fallback counter and
/// the events log (outlier ejections).
pub struct Worker {
    pub id: usize,
    /// Loaded once per request; in-flight requests finish on the snapshot
    /// they started with.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    fallbacks: IntCounterVec,
    events: Arc<Events>,
}

impl Worker {
    pub fn new(id: usize, shared: &Shared) -> Self {
        Worker {
            id,
            snapshot: Arc::clone(&shared.snapshot),
            fallbacks: shared.metrics.fallbacks.clone(),
            events: Arc::clone(&shared.events),
        }
    }
}

/// What the request path needs to know about the client connection.
pub struct Conn {
    pub state: Arc<ConnState>,
    pub peer: SocketAddr,
    /// The client address as an `X-Forwarded-For` element, built once.
    pub peer_ip: HeaderValue,
    pub tls: bool,
    /// Lent to one request at a time (HTTP/2's concurrent ones make their own).
    head_timer: Mutex<upstream::HeadTimer>,
}

impl Conn {
    pub fn new(peer: SocketAddr, tls: bool, state: Arc<ConnState>) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Conn {
            state,
            peer,
            peer_ip,
            tls,
            head_timer: Mutex::default(),
        }
    }

    fn lend_timer(&self) -> upstream::HeadTimer {
        match self.head_timer.try_lock() {
            Ok(mut timer) => std::mem::take(&mut *timer),
            Err(_) => upstream::HeadTimer::default(),
        }
    }

    fn return_timer(&self, timer: upstream::HeadTimer) {
        if let Ok(mut slot) = self.head_timer.try_lock() {
            *slot = timer;
        }
    }

    /// Frees the timer while the connection is parked (busy connections,
    /// which never park, are the ones that reuse it).
    pub fn release_timer(&self) {
        self.return_timer(upstream::HeadTimer::default());
    }
}

/// What was decided for one request, for the response headers and the log.
#[derive(Default)]
struct Exchange {
    route: Option<usize>,
    backend: Option<Arc<BackendRt>>,
    version: Option<usize>,
    endpoint: Option<InFlight>,
    set_cookie: Option<HeaderValue>,
    upstream_ms: Option<f64>,
    /// The canary failed and stable answered instead.
    retried: bool,
    /// An upstream attempt was made (and counted in the metrics).
    attempted: bool,
    /// Times the wait for the response head; the connection's, lent.
    timer: upstream::HeadTimer,
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    worker: &Worker,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let snapshot = worker.snapshot.load_full();
    let request_id = match req.headers().get(X_REQUEST_ID) {
        Some(id) => id.clone(),
        // One allocation that the upstream request and the response share
        // (a copied slice would allocate again when first cloned).
        None => HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(new_request_id()))
            .unwrap_or(HeaderValue::from_static("-")),
    };
    let http1 = req.version() <= Version::HTTP_11;
    let has_body = !http_body::Body::is_end_stream(req.body());
    conn.state.body_done.store(!has_body, Ordering::Relaxed);
    let record = snapshot
        .config
        .access_log
        .then(|| AccessRecord::begin(&req, &request_id, started));
    let mut ex = Exchange {
        timer: conn.lend_timer(),
        ..Exchange::default()
    };

    let mut response = match forward(worker, conn, &snapshot, &mut ex, &request_id, req).await {
        Ok(response) => response,
        Err(err) => {
            let status = err.status();
            if status.is_server_error() {
                tracing::debug!(error = %err, request_id = ?request_id, "request failed");
            }
            let text = error_body(status, &err.to_string(), request_id.to_str().unwrap_or("-"));
            let mut response = Response::new(ResponseBody::full(text));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if http1 && !conn.state.body_done.load(Ordering::Relaxed) {
                // The request body was not read: the connection cannot carry
                // another request safely, so end it after this answer.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    conn.return_timer(std::mem::take(&mut ex.timer));
    if !ex.attempted {
        // The gateway answered by itself: count it on the route, or as
        // unrouted.
        let metrics = ex
            .route
            .map_or(&snapshot.unrouted, |r| &snapshot.routes[r].own);
        metrics.observe(response.status().as_u16(), started.elapsed().as_secs_f64());
    }

    let headers = response.headers_mut();
    if let (Some(backend), Some(v)) = (&ex.backend, ex.version) {
        headers.insert(X_SWITCHYARD_VERSION, backend.versions[v].header.clone());
    }
    if let Some(cookie) = ex.set_cookie.take() {
        headers.append(header::SET_COOKIE, cookie);
    }
    headers.insert(X_REQUEST_ID, request_id);
    if let Some(mut record) = record {
        record.decided(
            response.status(),
            ex.route.map(|r| snapshot.routes[r].name.as_str()),
            ex.backend.as_deref(),
            ex.version,
            ex.endpoint.as_ref().map(|e| e.0.address.as_str()),
            ex.upstream_ms,
        );
        record.retried = ex.retried;
        response.body_mut().set_finish(Box::new(record));
    }
    if let Some(in_flight) = ex.endpoint.take() {
        response.body_mut().set_in_flight(in_flight);
    }
    response.body_mut().set_conn(conn.state.clone());
    Ok(response)
}

async fn forward(
    worker: &Worker,
    conn: &Conn,
    snapshot: &Snapshot,
    ex: &mut Exchange,
    request_id: &HeaderValue,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let limits = snapshot.config.limits;
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    check_framing_headers(req.headers())?;
    let host = match request_host(&req) {
        Some(host) => host,
        // HTTP/1.1 requires Host (RFC 9112 §3.2); HTTP/1.0 may omit it.
        None if req.version() == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("missing Host header"))
        }
        None => HeaderValue::from_static(""),
    };
    let route_idx = snapshot
        .table
        .find(host.to_str().unwrap_or(""), req.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    ex.route = Some(route_idx);
    let route = &snapshot.routes[route_idx];
    let backend = Arc::clone(&snapshot.backends[route.backend]);
    ex.backend = Some(Arc::clone(&backend));

    if let Some(len) = content_length(req.headers()) {
        if len > limits.max_body_bytes {
            return Err(ProxyError::BodyTooLarge(limits.max_body_bytes));
        }
    }

    let inputs = Inputs {
        forced: backend
            .override_header
            .as_ref()
            .and_then(|h| req.headers().get(h))
            .and_then(|v| backend.version_index(v.as_bytes())),
        sticky_bucket: sticky_bucket(&backend, req.headers(), ex),
        roll: split_roll(),
    };
    let split = backend.split();
    let decision = choose(&split, &inputs, |v| backend.versions[v].has_usable())
        // Every healthy endpoint ejected: ejection yields (see `VersionRt::pick`).
        .or_else(|| choose(&split, &inputs, |v| backend.versions[v].has_healthy()))
        .ok_or_else(|| ProxyError::NoHealthyEndpoint(backend.name.clone()))?;
    if let Some(from) = decision.fallback_from {
        let (from, to) = (
            &backend.versions[from].name,
            &backend.versions[decision.version].name,
        );
        tracing::debug!(backend = %backend.name, %from, %to, "version fallback");
        worker
            .fallbacks
            .with_label_values(&[&backend.name, from, to])
            .inc();
    }
    ex.version = Some(decision.version);

    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    prepare_request_headers(&mut parts.headers, conn, &host, request_id, upgrade);
    parts.version = Version::HTTP_11;

    // A copy of the head for a retry on stable or a mirror to the canary;
    // only bodiless or idempotent requests qualify, and only they pay for it.
    let bodiless = http_body::Body::is_end_stream(&body);
    let replayable = !upgrade
        && (bodiless || matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS));
    let on_canary = backend.canary() == Some(decision.version);
    // A request forced onto a version by the override header is answered by
    // that version, failure or not: hiding it would defeat the preview.
    let forced = decision.reason == Reason::Override;
    let retry_on = backend
        .stable()
        .filter(|_| on_canary && !forced && backend.retry_on_stable && replayable);
    let mirror_to = backend.canary().filter(|_| {
        !on_canary
            && backend.mirror_threshold > 0
            && bodiless
            && !upgrade
            && random_below(10_000) < backend.mirror_threshold
    });
    let copy = (retry_on.is_some() || mirror_to.is_some()).then(|| copy_head(&parts));
    if let (Some(canary), Some(head)) = (mirror_to, copy.as_ref()) {
        tokio::spawn(mirror(
            Arc::clone(&backend),
            canary,
            copy_head(head),
            route.timeout,
            Arc::clone(&worker.events),
            route.metrics[canary].clone(),
        ));
    }

    let body = RequestBody::new(body, limits.max_body_bytes, conn.state.clone());
    let target = Target {
        backend: &backend,
        route,
        timeout: route.timeout,
        body_limit: limits.max_body_bytes,
    };
    let mut result = attempt(&target, decision.version, parts, body, ex, &worker.events).await;
    if let (Some(stable), Some(head)) = (retry_on, copy) {
        let failed = match &result {
            Ok(response) => response.status().is_server_error(),
            Err(e) => e.upstream_failure().is_some(),
        };
        if failed {
            // Nothing reached the client yet: the canary's failure is
            // recorded in its window, the client gets the stable answer.
            drop(result);
            ex.version = Some(stable);
            ex.retried = true;
            result = attempt(
                &target,
                stable,
                head,
                RequestBody::empty(),
                ex,
                &worker.events,
            )
            .await;
        }
    }
    let mut response = result?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // An upgraded connection never goes back to the pool.
        response.body_mut().forget_connection();
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            conn.state.passthrough.store(true, Ordering::Relaxed);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
        }
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, ResponseBody::empty()));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // We answer in the client's protocol, whatever the upstream spoke.
    parts.version = Version::HTTP_11;
    let mut body = ResponseBody::stream(body);
    // The route timeout bounds the wait for the head and, after it, every
    // wait for more body.
    body.set_stall_timeout(route.timeout);
    Ok(Response::from_parts(parts, body))
}

/// Where a request of one route goes.
struct Target<'a> {
    backend: &'a BackendRt,
    route: &'a RouteRt,
    timeout: std::time::Duration,
    body_limit: u64,
}

/// One try on one version: pick an endpoint, send, and record the outcome
/// (analysis window, outlier streak).
async fn attempt(
    target: &Target<'_>,
    version: usize,
    mut parts: http::request::Parts,
    mut body: RequestBody,
    ex: &mut Exchange,
    events: &Events,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let backend = target.backend;
    let v = &backend.versions[version];
    let mut endpoint = v
        .pick(backend.load_balancing)
        .ok_or_else(|| ProxyError::NoHealthyEndpoint(backend.name.clone()))?;
    let metrics = &target.route.metrics[version];
    // A connection that could not be made is tried once more on another
    // endpoint of the version: nothing of the request was sent yet.
    let mut next_tried = false;
    loop {
        prepare_target(endpoint, &mut parts)?;
        ex.endpoint = Some(InFlight::new(Arc::clone(endpoint)));
        let started = Instant::now();
        let request = Request::from_parts(parts, body);
        let exchanged = upstream::exchange(
            endpoint,
            request,
            &mut ex.timer,
            target.timeout,
            target.body_limit,
        )
        .await;
        let (result, unsent) = match exchanged {
            Ok(response) => (Ok(response), None),
            Err(failed) => (Err(failed.error), failed.unsent),
        };
        let elapsed = started.elapsed();
        ex.upstream_ms = Some(elapsed.as_secs_f64() * 1e3);
        ex.attempted = true;
        record_outcome(backend, v, endpoint, &result, elapsed, events, metrics);
        let next = match unsent {
            Some(unsent) if !next_tried => v.pick_other(endpoint).map(|next| (next, unsent)),
            _ => None,
        };
        let Some((next, unsent)) = next else {
            return result;
        };
        tracing::debug!(
            backend = %backend.name,
            failed = %endpoint.address,
            next = %next.address,
            "upstream connection failed: trying another endpoint"
        );
        next_tried = true;
        endpoint = next;
        (parts, body) = unsent.into_parts();
    }
}

/// Feeds the analysis window and the outlier detector.
fn record_outcome(
    backend: &BackendRt,
    version: &VersionRt,
    endpoint: &Endpoint,
    result: &Result<Response<UpstreamBody>, ProxyError>,
    elapsed: std::time::Duration,
    events: &Events,
    metrics: &VersionMetrics,
) {
    let status = match result {
        Ok(response) => response.status(),
        Err(e) => e.status(),
    };
    metrics.observe(status.as_u16(), elapsed.as_secs_f64());
    if let Some(kind) = result.as_ref().err().and_then(ProxyError::upstream_failure) {
        metrics.upstream_error(kind);
    }
    let error = match result {
        Ok(response) => response.status().is_server_error(),
        Err(e) => match e.upstream_failure() {
            Some(_) => true,
            // The client's fault (body too large): not the version's.
            None => return,
        },
    };
    version.window.record(clock_ms(), elapsed, error);
    match result.as_ref().map_err(ProxyError::upstream_failure) {
        Ok(_) => endpoint.record_success(),
        Err(Some(UpstreamFailure::Connect | UpstreamFailure::Reset | UpstreamFailure::Timeout)) => {
            if let Some(duration) =
                endpoint.record_failure(&backend.outlier, || backend.others_usable(endpoint))
            {
                let message = format!(
                    "{} ({}) ejected for {}s after {} consecutive failures",
                    endpoint.address,
                    version.name,
                    duration.as_secs(),
                    backend.outlier.consecutive_failures
                );
                tracing::warn!(backend = %backend.name, "{message}");
                events.push(EventKind::Ejection, Some(&backend.name), message);
            }
        }
        Err(_) => {}
    }
}

/// Sends a copy of a stable request to the canary in the background; the
/// answer is read and discarded, and counted in the canary's window.
async fn mirror(
    backend: Arc<BackendRt>,
    canary: usize,
    mut parts: http::request::Parts,
    timeout: std::time::Duration,
    events: Arc<Events>,
    metrics: VersionMetrics,
) {
    let v = &backend.versions[canary];
    let Some(endpoint) = v.pick(backend.load_balancing) else {
        return;
    };
    if prepare_target(endpoint, &mut parts).is_err() {
        return;
    }
    parts
        .headers
        .insert(X_SWITCHYARD_MIRROR, HeaderValue::from_static("1"));
    let _in_flight = InFlight::new(Arc::clone(endpoint));
    let started = Instant::now();
    let request = Request::from_parts(parts, RequestBody::empty());
    let mut timer = upstream::HeadTimer::default();
    let result = upstream::exchange(endpoint, request, &mut timer, timeout, 0)
        .await
        .map_err(|failed| failed.error);
    record_outcome(
        &backend,
        v,
        endpoint,
        &result,
        started.elapsed(),
        &events,
        &metrics,
    );
    if let Ok(response) = result {
        // Read the answer to its end so the connection goes back to the pool.
        let mut body = response.into_body();
        while let Some(Ok(_)) = body.frame().await {}
    }
}

fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// Points the request at `endpoint`: origin-form with a Host header for our
/// own pooled connections, absolute-form for the TLS client (it connects by
/// the URI).
fn prepare_target(endpoint: &Endpoint, parts: &mut http::request::Parts) -> Result<(), ProxyError> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = if endpoint.tls.is_some() {
        Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(endpoint.authority.clone())
            .path_and_query(path)
            .build()
    } else {
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(endpoint.authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        Uri::builder().path_and_query(path).build()
    };
    parts.uri = uri.map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    Ok(())
}

/// Copies bytes both ways between an upgraded client and upstream connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// The sticky key's bucket; gives a new client a cookie when needed.
fn sticky_bucket(backend: &BackendRt, headers: &HeaderMap, ex: &mut Exchange) -> Option<u32> {
    match backend.sticky.as_ref()? {
        Sticky::Header(name) => headers.get(name).map(|v| bucket(v.as_bytes())),
        Sticky::Cookie(name) => {
            let found = headers
                .get_all(header::COOKIE)
                .iter()
                .find_map(|v| cookie_value(v.as_bytes(), name).filter(|v| !v.is_empty()));
            if let Some(value) = found {
                return Some(bucket(value));
            }
            let key = format!("{:016x}", random_u64());
            let cookie = format!("{name}={key}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax");
            ex.set_cookie = HeaderValue::from_str(&cookie).ok();
            Some(bucket(key.as_bytes()))
        }
    }
}

/// Refuses what hyper would accept but an upstream could read otherwise:
/// transfer codings other than plain `chunked` (we would forward the coded
/// bytes as if decoded, RFC 9112 §6.1 → 501) and several differing Host
/// headers (RFC 9112 §3.2 → 400).
fn check_framing_headers(headers: &HeaderMap) -> Result<(), ProxyError> {
    for coding in headers.get_all(header::TRANSFER_ENCODING) {
        if !coding
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
        {
            let coding = String::from_utf8_lossy(coding.as_bytes()).into_owned();
            return Err(ProxyError::UnsupportedTransferCoding(coding));
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    if let Some(first) = hosts.next() {
        if hosts.any(|other| other != first) {
            return Err(ProxyError::BadRequest("several differing Host headers"));
        }
    }
    Ok(())
}

/// The request's host: the Host header, or the authority of an absolute or
/// HTTP/2 request target.
fn request_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    if let Some(authority) = req.uri().authority() {
        return HeaderValue::from_str(authority.as_str()).ok();
    }
    req.headers().get(header::HOST).cloned()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

fn prepare_request_headers(
    headers: &mut HeaderMap,
    conn: &Conn,
    host: &HeaderValue,
    id: &HeaderValue,
    upgrade: bool,
) {
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(headers, true);
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
    // The Host the request was routed by goes upstream: for an absolute-form
    // target it replaces whatever Host the client also sent (RFC 9112 §3.2.2).
    if !host.is_empty() && headers.get(header::HOST) != Some(host) {
        headers.insert(header::HOST, host.clone());
    }
    match headers.get_mut(X_FORWARDED_FOR) {
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + conn.peer_ip.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(conn.peer_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                *existing = value;
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, conn.peer_ip.clone());
        }
    }
    let proto = if conn.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if !host.is_empty() {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    // Added when absent (SPEC); a client's own ids pass unchanged.
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, id.clone());
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
];

/// Which hop-by-hop header `name` is, as a bit: `HOP_BY_HOP[i]` is `1 << i`,
/// `TE` (requests only) is `TE_BIT`; 0 for any other header.
fn hop_by_hop_bit(name: &HeaderName, request: bool) -> u8 {
    // Their lengths are 2, 7, 10, 16 and 17: most names are ruled out by one
    // comparison instead of seven.
    if !matches!(name.as_str().len(), 2 | 7 | 10 | 16 | 17) {
        return 0;
    }
    if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
        return 1 << i;
    }
    if request && name == header::TE {
        return TE_BIT;
    }
    0
}

const HOP_BY_HOP_COUNT: usize = 6;
const TE_BIT: u8 = 1 << HOP_BY_HOP_COUNT;

/// Whether a `Connection` value names a header beyond the hop-by-hop ones
/// (`close`, `keep-alive` and `upgrade` are removed anyway).
fn names_other_headers(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|token| {
            !token.is_empty()
                && !["close", "keep-alive", "upgrade"]
                    .iter()
                    .any(|known| token.eq_ignore_ascii_case(known.as_bytes()))
        })
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `request` also drops `TE` (we speak to the upstream ourselves). Most
/// messages carry none or only `Connection: keep-alive`, so one pass over the
/// names decides whether anything needs removing at all.
fn strip_hop_by_hop(headers: &mut HeaderMap, request: bool) {
    let mut found = 0u8;
    let mut named = false;
    for (name, value) in headers.iter() {
        let bit = hop_by_hop_bit(name, request);
        found |= bit;
        named |= bit == 1 && names_other_headers(value);
    }
    if found == 0 {
        return;
    }
    if named {
        let others: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect();
        for name in others {
            headers.remove(name);
        }
    }
    // Only what is there: most messages carry just `Connection`.
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if found & TE_BIT != 0 {
        headers.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_keep_alive_connection_header_is_removed_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-type", "x-kept"]);
        assert!(!names_other_headers(&HeaderValue::from_static(
            "close, keep-alive ,Upgrade"
        )));
        assert!(names_other_headers(&HeaderValue::from_static(
            "keep-alive, x-secret"
        )));
    }

    #[test]
    fn each_hop_by_hop_header_goes_alone_and_te_only_from_requests() {
        for name in HOP_BY_HOP.iter().chain([&header::TE]) {
            for request in [true, false] {
                let mut h = HeaderMap::new();
                h.insert(name.clone(), HeaderValue::from_static("x"));
                h.insert("x-kept", HeaderValue::from_static("1"));
                strip_hop_by_hop(&mut h, request);
                let kept = name == header::TE && !request;
                assert_eq!(h.contains_key(name), kept, "{name}, request: {request}");
                assert!(h.contains_key("x-kept"), "{name}, request: {request}");
            }
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, true);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }
}
