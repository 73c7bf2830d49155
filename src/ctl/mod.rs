//! `switchyard ctl` (SPEC §11): the fleet's admin APIs as one. Each command
//! goes to every replica at once, each bounded by `--timeout`; one result
//! line per replica (or one JSON document), and an exit status scripts can
//! trust:
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | every replica answered and did it (`status`: and they agree) |
//! | 1 | some replica failed, refused or did not answer in time |
//! | 2 | nothing was sent: bad arguments, no replicas, unreadable token |
//! | 3 | `status` only: every replica answered, but they disagree |

mod outcome;
mod replicas;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

pub use outcome::{Command, Outcome, DISAGREE, FAILED, OK, USAGE};
pub use replicas::Replica;

#[derive(Debug, Clone)]
pub struct Options {
    /// `--admin` values: URLs, `host:port`, or `dns:NAME:PORT`.
    pub admins: Vec<String>,
    pub token_file: Option<PathBuf>,
    /// `SWITCHYARD_ADMIN_TOKEN`, when set.
    pub token: Option<String>,
    pub timeout: Duration,
    pub json: bool,
    /// The DNS server for `dns:` replicas (default: the system's).
    pub resolver: Option<SocketAddr>,
}

/// Runs `command` on every replica; prints the report; returns the exit
/// status.
pub fn run(command: Command, options: Options) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard ctl: cannot start: {e}");
            return USAGE;
        }
    };
    runtime.block_on(run_async(command, options))
}

async fn run_async(command: Command, options: Options) -> u8 {
    let token = match token(&options, &command) {
        Ok(token) => token,
        Err(message) => {
            eprintln!("switchyard ctl: {message}");
            return USAGE;
        }
    };
    let replicas = match replicas::resolve(&options.admins, options.resolver, options.timeout).await
    {
        Ok(replicas) if replicas.is_empty() => {
            eprintln!("switchyard ctl: no replicas: pass --admin URL (repeatable), --admin dns:NAME:PORT, or set SWITCHYARD_ADMIN");
            return USAGE;
        }
        Ok(replicas) => replicas,
        Err(message) => {
            eprintln!("switchyard ctl: {message}");
            return USAGE;
        }
    };
    let outcomes = fan_out(&command, &replicas, token.as_deref(), options.timeout).await;
    report::print(&command, &outcomes, options.json)
}

/// The token for POSTs: the file's content, else the environment's; none
/// needed for `status`.
fn token(options: &Options, command: &Command) -> Result<Option<String>, String> {
    if let Some(path) = &options.token_file {
        return match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
            Ok(_) => Err(format!("token file {} is empty", path.display())),
            Err(e) => Err(format!("cannot read token file {}: {e}", path.display())),
        };
    }
    match (&options.token, command) {
        (Some(token), _) if !token.trim().is_empty() => Ok(Some(token.trim().to_string())),
        (Some(_), _) => Err("SWITCHYARD_ADMIN_TOKEN is empty".into()),
        (None, _) => Ok(None),
    }
}

/// The request for `command` to one replica.
fn request(
    command: &Command,
    replica: &Replica,
    token: Option<&str>,
) -> Result<Request<Full<Bytes>>, String> {
    let (method, path) = match command {
        Command::Status { .. } => (Method::GET, "/status".to_string()),
        Command::Action { action, backend } => (
            Method::POST,
            format!("/admin/backends/{}/{action}", percent_encode(backend)),
        ),
        Command::Reload => (Method::POST, "/admin/reload".to_string()),
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(format!("{}{path}", replica.base));
    if let (Some(token), true) = (token, method == Method::POST) {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad request for {}: {e}", replica.base))
}

/// RFC 3986's unreserved characters stay; the rest is `%XX`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A backend name as one path segment.
fn percent_encode(segment: &str) -> String {
    utf8_percent_encode(segment, UNRESERVED).to_string()
}

/// Sends to every replica at once; each answer or failure within `timeout`.
async fn fan_out(
    command: &Command,
    replicas: &[Replica],
    token: Option<&str>,
    timeout: Duration,
) -> Vec<Outcome> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut running = tokio::task::JoinSet::new();
    for (i, replica) in replicas.iter().enumerate() {
        let request = request(command, replica, token);
        let (client, replica) = (client.clone(), replica.clone());
        running.spawn(async move {
            let outcome = match request {
                Err(error) => Outcome {
                    replica,
                    status: None,
                    body: Value::Null,
                    error: Some(error),
                },
                Ok(request) => {
                    match tokio::time::timeout(timeout, exchange(&client, request)).await {
                        Err(_) => Outcome {
                            replica,
                            status: None,
                            body: Value::Null,
                            error: Some(format!(
                                "no answer within {}",
                                humantime::format_duration(timeout)
                            )),
                        },
                        Ok(Err(error)) => Outcome {
                            replica,
                            status: None,
                            body: Value::Null,
                            error: Some(error),
                        },
                        Ok(Ok((status, body))) => Outcome {
                            replica,
                            status: Some(status),
                            body,
                            error: None,
                        },
                    }
                }
            };
            (i, outcome)
        });
    }
    let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
    while let Some(done) = running.join_next().await {
        if let Ok(pair) = done {
            outcomes.push(pair);
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Value), String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| connect_error(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("answer cut short: {e}"))?
        .to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).trim().to_string()));
    Ok((status, value))
}

/// The innermost cause of a client error, which says what happened.
fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(err) = source {
        last = err.to_string();
        source = err.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_one_path_segment() {
        assert_eq!(percent_encode("app"), "app");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }
}
