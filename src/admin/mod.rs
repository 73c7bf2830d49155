//! The admin listener (SPEC §6), on its own address and runtime: a `match`
//! on method and path.
//!
//! `GET /healthz`, `/readyz`, `/metrics`, `/status` and `/` (the dashboard);
//! `POST /admin/reload` and `POST /admin/backends/{name}/{action}`. With
//! `admin.token_file`, every POST needs `Authorization: Bearer <token>`: 401
//! without it, 403 with a wrong one. The token file is read on each POST, so
//! rotating it needs no reload. Every POST answers JSON.

pub mod status;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::control::engine::ActError;
use crate::control::{Handle, ReloadOutcome};
use crate::release::progress::Action;
use crate::shared::Shared;

/// The live dashboard: one self-contained page, no external assets.
const DASHBOARD: &str = include_str!("dashboard.html");

type Answer = Response<Full<Bytes>>;

/// Open admin connections at most; more wait in the accept queue. Scrapers,
/// probes and dashboards need a handful.
const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive this fast, and an idle connection closes after
/// this long: a stuck or hostile client cannot hold the admin listener.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/readyz` answers: ready once the listeners are bound, draining
/// from the start of shutdown. Written by the application shell.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Readiness fails from now on: the process is shutting down.
    pub fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// What the admin API reads and acts through.
pub struct Context {
    pub shared: Arc<Shared>,
    pub control: Handle,
    pub readiness: Arc<Readiness>,
}

/// Serves the admin API until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    context: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(CONNECTION_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(32)
        .keep_alive_interval(CONNECTION_TIMEOUT)
        .keep_alive_timeout(CONNECTION_TIMEOUT);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = crate::shared::stopped(&mut shutdown) => return,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shared::stopped(&mut shutdown) => return,
        };
        let context = Arc::clone(&context);
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let context = Arc::clone(&context);
                async move { Ok::<_, Infallible>(answer(&context, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

async fn answer(context: &Context, req: Request<Incoming>) -> Answer {
    let shared = &context.shared;
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = req.method() == Method::POST;
    match segments.as_slice() {
        [""] if get => html(DASHBOARD),
        ["healthz"] if get => text(StatusCode::OK, "ok\n"),
        ["readyz"] if get => {
            if context.readiness.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if context.readiness.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        ["metrics"] if get => {
            let releases: HashMap<_, _> = context.control.releases().await.into_iter().collect();
            status::refresh_gauges(shared, &releases);
            let mut response = text(StatusCode::OK, "");
            *response.body_mut() = Full::new(Bytes::from(shared.metrics.encode()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        ["status"] if get => {
            let views = context.control.inspect().await;
            let ready = context.readiness.is_ready();
            json_answer(StatusCode::OK, &status::document(shared, ready, &views))
        }
        ["status", "history"] if get => match since(req.uri().query()) {
            Some(since) => {
                let page = context.control.history(since).await;
                json_answer(StatusCode::OK, &status::history_document(&page))
            }
            None => json_answer(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "since must be a sample number: /status/history?since=N" }),
            ),
        },
        ["admin", "reload"] if post => match authorize(shared, &req).await {
            Some(denied) => denied,
            None => match context.control.reload().await {
                ReloadOutcome::Applied { generation } => json_answer(
                    StatusCode::OK,
                    &json!({ "result": "applied", "generation": generation }),
                ),
                ReloadOutcome::Unchanged => {
                    json_answer(StatusCode::OK, &json!({ "result": "unchanged" }))
                }
                ReloadOutcome::Failed(error) => json_answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({ "result": "error", "error": error }),
                ),
            },
        },
        ["admin", "backends", name, action] if post => match authorize(shared, &req).await {
            Some(denied) => denied,
            None => act(&context.control, name, action).await,
        },
        [""] | ["healthz"] | ["readyz"] | ["metrics"] | ["status"] | ["status", "history"] => {
            method_not_allowed("GET, HEAD")
        }
        ["admin", "reload"] | ["admin", "backends", _, _] => method_not_allowed("POST"),
        _ => json_answer(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no admin endpoint at {path}") }),
        ),
    }
}

async fn act(control: &Handle, backend: &str, action: &str) -> Answer {
    let Some(parsed) = Action::parse(action) else {
        let error =
            format!("unknown action {action:?}: use promote, abort, pause, resume or retry");
        return json_answer(StatusCode::NOT_FOUND, &json!({ "error": error }));
    };
    match control.act(backend, parsed).await {
        Ok(message) => {
            let phase = control
                .release(backend)
                .await
                .map(|state| state.phase().as_str());
            json_answer(
                StatusCode::OK,
                &json!({ "backend": backend, "action": action, "result": message, "phase": phase }),
            )
        }
        Err(e) => {
            let status = match e {
                ActError::UnknownBackend(_) => StatusCode::NOT_FOUND,
                ActError::NoRelease(_) | ActError::Conflict(_) => StatusCode::CONFLICT,
            };
            json_answer(
                status,
                &json!({ "backend": backend, "action": action, "error": e.to_string() }),
            )
        }
    }
}

/// Checks the bearer token when `admin.token_file` is set; `Some` is the
/// refusal to send. The file is read (off the runtime) on every POST.
async fn authorize(shared: &Shared, req: &Request<Incoming>) -> Option<Answer> {
    let path = shared.snapshot.load().config.admin.token_file.clone()?;
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await
    };
    let expected = match read {
        Ok(Ok(token)) if !token.trim().is_empty() => token.trim().to_string(),
        Ok(_) | Err(_) => {
            tracing::error!(path = %path.display(), "admin token file unreadable or empty: refusing POSTs");
            let error = json!({ "error": "admin token unavailable" });
            return Some(json_answer(StatusCode::SERVICE_UNAVAILABLE, &error));
        }
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => {
            let mut denied = json_answer(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "missing bearer token" }),
            );
            denied
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(denied)
        }
        Some(token) if constant_time_eq(token.trim().as_bytes(), expected.as_bytes()) => None,
        Some(_) => Some(json_answer(
            StatusCode::FORBIDDEN,
            &json!({ "error": "wrong token" }),
        )),
    }
}

/// Compares without an early exit, so timing does not reveal the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn html(body: &'static str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    let mut body = value.to_string();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn method_not_allowed(allow: &'static str) -> Answer {
    let mut response = json_answer(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({ "error": format!("use {allow}") }),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `since=N` from a query string: 0 when absent, `None` when not a number.
fn since(query: Option<&str>) -> Option<u64> {
    let Some(query) = query else {
        return Some(0);
    };
    let mut since = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("since", value)) => since = value.parse().ok()?,
            _ => continue,
        }
    }
    Some(since)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
