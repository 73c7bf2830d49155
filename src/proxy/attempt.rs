//! Attempts: one try of a request on one version — pick an endpoint, send,
//! record the outcome (metrics, analysis window, outlier streak) — with one
//! more endpoint when the connection could not be made, and the retry on
//! stable of a failed canary request. Mirrors use the same attempt.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use prometheus::IntCounterVec;
use tokio::time::Instant;

use super::exchange::{Exchange, Tried};
use super::grpc::{self, CallWatch};
use super::headers::{copy_head, prepare_target};
use crate::clock::Clock;
use crate::endpoint::{Endpoint, InFlight};
use crate::error::{ProxyError, UpstreamFailure};
use crate::events::{EventKind, Events};
use crate::metrics::VersionMetrics;
use crate::release::split::{Decision, Reason};
use crate::snapshot::{BackendRt, VersionRt};
use crate::upstream::{self, HeadTimer, RequestBody, UpstreamBody};

/// Where the attempts of one request go.
pub struct Target<'a> {
    pub backend: &'a Arc<BackendRt>,
    /// The wait for the response head: the route timeout, or a gRPC call's
    /// deadline when shorter.
    pub timeout: Duration,
    /// A gRPC call: judged on its `grpc-status`.
    pub grpc: bool,
    pub body_limit: u64,
    /// Where an outlier ejection is reported.
    pub events: &'a Events,
    pub clock: Clock,
    /// Version fallbacks (a retry on stable is one), by backend, from, to.
    pub fallbacks: &'a IntCounterVec,
}

/// What kind of request a plan is for.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub bodiless: bool,
    pub upgrade: bool,
    pub grpc: bool,
}

/// What a request may need beyond its attempt: a retry on stable when the
/// canary fails, a copy to the canary when stable serves it.
pub struct Plan {
    pub retry_on: Option<usize>,
    pub mirror_to: Option<usize>,
}

impl Plan {
    /// `mirror_roll` is a roll in `0..10000`, drawn only for requests that
    /// could be mirrored.
    pub fn new(
        backend: &BackendRt,
        decision: &Decision,
        head: &Parts,
        request: Kind,
        mirror_roll: impl FnOnce() -> u32,
    ) -> Plan {
        let Kind {
            bodiless,
            upgrade,
            grpc,
        } = request;
        // Only bodiless or idempotent requests can be sent twice, and gRPC
        // calls whose body is kept whole (unary ones, in practice).
        let replayable = !upgrade
            && (bodiless
                || grpc
                || matches!(head.method, Method::GET | Method::HEAD | Method::OPTIONS));
        let on_canary = backend.canary() == Some(decision.version);
        // A request forced onto a version by the override header is answered
        // by that version, failure or not: hiding it would defeat the preview.
        let forced = decision.reason == Reason::Override;
        let retry_on = backend
            .stable()
            .filter(|_| on_canary && !forced && backend.retry_on_stable && replayable);
        let mirror_to = backend.canary().filter(|_| {
            !on_canary
                && backend.mirror_threshold > 0
                && bodiless
                && !upgrade
                && mirror_roll() < backend.mirror_threshold
        });
        Plan {
            retry_on,
            mirror_to,
        }
    }
}

/// The attempt on `version`, and when it fails before anything reached the
/// client, one on `retry_on` (stable) with a copy of the head and no body.
pub async fn with_retry(
    target: &Target<'_>,
    metrics: &[VersionMetrics],
    version: usize,
    parts: Parts,
    body: RequestBody,
    retry_on: Option<usize>,
    ex: &mut Exchange<'_>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let copy = retry_on.map(|stable| (stable, copy_head(&parts)));
    let progress = copy.as_ref().and_then(|_| body.progress());
    if progress.is_some() {
        body.keep_for_replay();
    }
    let (timer, tried) = (&mut ex.timer, &mut ex.tried);
    let mut result = once(
        target,
        &metrics[version],
        version,
        parts,
        body,
        timer,
        tried,
    )
    .await;
    if let Some((stable, head)) = copy {
        let failed = match &result {
            Ok(response) => {
                response.status().is_server_error()
                    || (target.grpc && grpc::failed(response.headers()))
            }
            Err(e) => e.upstream_failure().is_some(),
        };
        // A body goes again only as kept (a gRPC call's, whole).
        let again = match &progress {
            None => Some(RequestBody::empty()),
            Some(progress) => progress.replay(),
        };
        if let (true, Some(body)) = (failed, again) {
            // Nothing reached the client yet: the canary's failure is
            // recorded in its window, the client gets the stable answer.
            let backend = target.backend;
            let (from, to) = (
                &backend.versions[version].name,
                &backend.versions[stable].name,
            );
            if let Err(error) = &result {
                tracing::debug!(%error, %from, %to, "request failed on the canary: answered by stable");
            }
            drop(result);
            target
                .fallbacks
                .with_label_values(&[&backend.name, from, to])
                .inc();
            ex.version = Some(stable);
            ex.retried = true;
            let (timer, tried) = (&mut ex.timer, &mut ex.tried);
            result = once(target, &metrics[stable], stable, head, body, timer, tried).await;
        }
    }
    result
}

/// One try on one version: pick an endpoint, send, record the outcome. A
/// connection that could not be made is tried once more on another endpoint
/// of the version (nothing of the request was sent yet), and so is a
/// bodiless idempotent request the upstream reset before answering. What was tried goes
/// into `tried` (left alone when no endpoint could be picked).
pub async fn once(
    target: &Target<'_>,
    metrics: &VersionMetrics,
    version: usize,
    mut parts: Parts,
    mut body: RequestBody,
    timer: &mut HeadTimer,
    tried: &mut Tried,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let backend = target.backend;
    let v = &backend.versions[version];
    let Some(mut endpoint) = v.pick(backend.load_balancing, &target.clock) else {
        return Err(ProxyError::NoHealthyEndpoint(backend.name.clone()));
    };
    let mut next_tried = false;
    loop {
        prepare_target(endpoint, &mut parts)?;
        tried.endpoint = Some(InFlight::new(Arc::clone(endpoint)));
        let started = Instant::now();
        let progress = body.progress();
        // Kept to send again when the upstream resets before answering.
        let resend = (!next_tried
            && progress.is_none()
            && v.endpoints.len() > 1
            && resendable(&parts.method))
        .then(|| copy_head(&parts));
        let request = Request::from_parts(parts, body);
        let exchanged =
            upstream::exchange(endpoint, request, timer, target.timeout, target.body_limit).await;
        let (result, unsent) = match exchanged {
            Ok(response) => (Ok(response), None),
            // The route timeout came while the upload waited on the client:
            // the client's failure, not the upstream's.
            Err(failed)
                if matches!(failed.error, ProxyError::Timeout)
                    && progress.is_some_and(|p| p.stalled_on_client()) =>
            {
                (Err(ProxyError::ClientBodyTimeout), None)
            }
            // A reset before any answer (the endpoint died with the request
            // in flight, or closed the connection under it): a bodiless
            // idempotent request goes to another endpoint, as NGINX's
            // `proxy_next_upstream error` does. The reset still counts.
            Err(failed) if matches!(failed.error, ProxyError::Reset(_)) && resend.is_some() => {
                let unsent = resend.map(|head| Request::from_parts(head, RequestBody::empty()));
                (Err(failed.error), unsent)
            }
            Err(failed) => (Err(failed.error), failed.unsent),
        };
        let elapsed = started.elapsed();
        tried.upstream_ms = Some(elapsed.as_secs_f64() * 1e3);
        tried.call = record_outcome(target, version, endpoint, &result, elapsed, metrics);
        let next = match unsent {
            Some(unsent) if !next_tried => v
                .pick_other(endpoint, &target.clock)
                .map(|next| (next, unsent)),
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

/// Methods a request may be sent again with after the upstream reset
/// (RFC 9110 §9.2.2's idempotent methods).
fn resendable(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Feeds the metrics, the analysis window and the outlier detector; a gRPC
/// call answered with messages is judged later, on its trailers (the watch
/// returned).
fn record_outcome(
    target: &Target<'_>,
    version: usize,
    endpoint: &Endpoint,
    result: &Result<Response<UpstreamBody>, ProxyError>,
    elapsed: Duration,
    metrics: &VersionMetrics,
) -> Option<CallWatch> {
    if result.as_ref().is_err_and(ProxyError::is_client_abort) {
        // The client's doing: nothing against the version (SPEC §3).
        return None;
    }
    let v = &target.backend.versions[version];
    let status = match result {
        Ok(response) => response.status(),
        Err(e) => e.status(),
    };
    metrics.observe(status.as_u16(), elapsed.as_secs_f64());
    if let Some(kind) = result.as_ref().err().and_then(ProxyError::upstream_failure) {
        metrics.upstream_error(kind);
    }
    let error = match result {
        Ok(response) if target.grpc && response.status() == StatusCode::OK => {
            match grpc::status(response.headers()) {
                // Trailers-only: the status is in the head.
                Some(code) => {
                    v.grpc_codes.count(code, grpc::name(code));
                    grpc::is_failure(code)
                }
                None => {
                    endpoint.record_success();
                    let backend = Arc::clone(target.backend);
                    return Some(CallWatch::new(backend, version, elapsed, target.clock));
                }
            }
        }
        Ok(response) => response.status().is_server_error(),
        Err(e) => match e.upstream_failure() {
            Some(_) => true,
            // The client's fault (body too large): not the version's.
            None => return None,
        },
    };
    v.window.record(target.clock.now_ms(), elapsed, error);
    match result.as_ref().map_err(ProxyError::upstream_failure) {
        Ok(_) => endpoint.record_success(),
        Err(Some(UpstreamFailure::Connect | UpstreamFailure::Reset | UpstreamFailure::Timeout)) => {
            record_failure(target, v, endpoint);
        }
        Err(_) => {}
    }
    None
}

/// One more failure in the endpoint's streak; reports an ejection.
fn record_failure(target: &Target<'_>, version: &VersionRt, endpoint: &Endpoint) {
    let backend = target.backend;
    let clock = &target.clock;
    let ejected = endpoint.record_failure(&backend.outlier, clock, || {
        backend.others_usable(endpoint, clock)
    });
    if let Some(duration) = ejected {
        let message = format!(
            "{} ({}) ejected for {}s after {} consecutive failures",
            endpoint.address,
            version.name,
            duration.as_secs(),
            backend.outlier.consecutive_failures
        );
        tracing::warn!(backend = %backend.name, "{message}");
        target
            .events
            .push(EventKind::Ejection, Some(&backend.name), message);
    }
}
