//! The request path: route → choose → attempt (with retry) → answer.
//!
//! [`handle`] serves one request and never fails: `forward` does the work,
//! and the `Exchange` it fills in turns the outcome — the upstream's
//! answer or a [`ProxyError`] — into the response, its headers, metrics and
//! access log line. The parts: `headers` (pure header rules), `attempt` (one
//! try on one version, the retry on stable), `mirror` (bounded copies to the
//! canary), `tunnel` (upgrades), `body` (what the client receives),
//! `exchange` and `access_log`.

mod access_log;
mod attempt;
pub mod body;
mod context;
mod exchange;
mod grpc;
pub mod headers;
mod mirror;
mod tunnel;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::config::Sticky;
use crate::error::ProxyError;
use crate::release::bucket::{bucket, cookie_value};
use crate::release::split::{self, Decision, Inputs};
use crate::request_id::{random_below, random_u64, split_roll};
use crate::snapshot::{BackendRt, RouteRt, Snapshot};
use crate::upstream::{self, RequestBody, UpstreamBody};
use attempt::{Kind, Plan, Target};
use body::ResponseBody;
pub use context::{Conn, Worker};
use exchange::Exchange;
use headers::Forwarded;

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    worker: &Worker,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let snapshot = worker.snapshot.load_full();
    let mut ex = Exchange::begin(&snapshot, conn, &req);
    let forwarded = forward(worker, conn, &snapshot, &mut ex, req).await;
    Ok(ex.finish(conn, forwarded))
}

/// Route → choose → attempt (with retry) → answer.
async fn forward(
    worker: &Worker,
    conn: &Conn,
    snapshot: &Snapshot,
    ex: &mut Exchange<'_>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (route, host) = route(snapshot, &req, ex)?;
    let backend = Arc::clone(&snapshot.backends[route.backend]);
    let decision = choose(worker, &backend, req.headers(), ex)?;
    let upgrade = headers::is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let id = &ex.request_id;
    let kind = Kind {
        bodiless: http_body::Body::is_end_stream(&body),
        upgrade: upgrade.is_some(),
        grpc: ex.grpc,
    };
    let forwarded = Forwarded {
        upgrade: kind.upgrade,
        grpc: kind.grpc,
    };
    headers::prepare_request(&mut parts.headers, &conn.client, &host, id, forwarded);
    parts.version = Version::HTTP_11;
    // A call's deadline bounds the wait when shorter than the route's.
    let deadline = kind.grpc.then(|| grpc::timeout(&parts.headers)).flatten();
    let timeout = deadline.map_or(route.timeout, |d| d.min(route.timeout));
    let roll = || random_below(10_000);
    let plan = Plan::new(&backend, &decision, &parts, kind, roll);
    if let Some(canary) = plan.mirror_to {
        let metrics = &route.metrics[canary];
        mirror::spawn(worker, &backend, canary, &parts, route.timeout, metrics);
    }
    let limit = snapshot.config.limits.max_body_bytes;
    let body = RequestBody::new(body, limit, conn.state.clone());
    let target = Target {
        backend: &backend,
        timeout,
        grpc: kind.grpc,
        body_limit: limit,
        events: &worker.events,
        clock: worker.clock,
        fallbacks: &worker.fallbacks,
    };
    let metrics = &route.metrics;
    let version = decision.version;
    let response =
        attempt::with_retry(&target, metrics, version, parts, body, plan.retry_on, ex).await?;
    Ok(answer(conn, route, response, upgrade))
}

/// The route for `req`, and the host it was routed by; refuses what cannot
/// be forwarded (CONNECT, contradictory framing, no Host, a body over the
/// limit).
fn route<'s>(
    snapshot: &'s Snapshot,
    req: &Request<Incoming>,
    ex: &mut Exchange<'_>,
) -> Result<(&'s RouteRt, HeaderValue), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    headers::check_framing_headers(req.headers())?;
    let host = match headers::request_host(req) {
        Some(host) => host,
        // HTTP/1.1 requires Host (RFC 9112 §3.2); HTTP/1.0 may omit it.
        None if req.version() == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("missing Host header"))
        }
        None => HeaderValue::from_static(""),
    };
    let index = snapshot
        .table
        .find(host.to_str().unwrap_or(""), req.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    ex.route = Some(index);
    let route = &snapshot.routes[index];
    ex.backend = Some(Arc::clone(&snapshot.backends[route.backend]));
    let limit = snapshot.config.limits.max_body_bytes;
    if upstream::content_length(req.headers()).is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    Ok((route, host))
}

/// The version that serves the request: override header, sticky bucket or
/// weighted roll, falling back to the other version when the chosen one has
/// no usable endpoint (counted).
fn choose(
    worker: &Worker,
    backend: &BackendRt,
    headers: &HeaderMap,
    ex: &mut Exchange<'_>,
) -> Result<Decision, ProxyError> {
    let inputs = Inputs {
        forced: backend
            .override_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| backend.version_index(v.as_bytes())),
        sticky_bucket: sticky_bucket(backend, headers, ex),
        roll: split_roll(),
    };
    let split = backend.split();
    let clock = &worker.clock;
    let decision = split::choose(&split, &inputs, |v| backend.versions[v].has_usable(clock))
        // Every healthy endpoint ejected: ejection yields (see `VersionRt::pick`).
        .or_else(|| split::choose(&split, &inputs, |v| backend.versions[v].has_healthy()))
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
    Ok(decision)
}

/// The upstream's answer as the client gets it: streamed, hop-by-hop headers
/// removed; a 101 hands both connections to a tunnel.
fn answer(
    conn: &Conn,
    route: &RouteRt,
    mut response: Response<UpstreamBody>,
    upgrade: Option<OnUpgrade>,
) -> Response<ResponseBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // An upgraded connection never goes back to the pool.
        response.body_mut().forget_connection();
        if let Some(client_upgrade) = upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            conn.state.passthrough.store(true, Ordering::Relaxed);
            tokio::spawn(tunnel::tunnel(client_upgrade, upstream_upgrade));
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, ResponseBody::empty());
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    // We answer in the client's protocol, whatever the upstream spoke.
    parts.version = Version::HTTP_11;
    let mut body = ResponseBody::stream(body);
    // The route timeout bounds the wait for the head and, after it, every
    // wait for more body.
    body.set_stall_timeout(route.timeout);
    Response::from_parts(parts, body)
}

/// The sticky key's bucket; gives a new client a cookie when needed.
fn sticky_bucket(backend: &BackendRt, headers: &HeaderMap, ex: &mut Exchange<'_>) -> Option<u32> {
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
