//! gRPC awareness (SPEC §9): which requests are calls, their deadline
//! (`grpc-timeout`), the gateway's own errors as trailers-only answers, and
//! each answer's `grpc-status` — counted in `switchyard_grpc_responses_total`
//! and, for the failure statuses, judged as the version's errors.
//!
//! A call's status comes in the response headers (trailers-only answers) or
//! in the trailers after the messages; in the second case the call is judged
//! when its trailers pass ([`Verdict`], held by the response body).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::clock::Clock;
use crate::error::ProxyError;
use crate::snapshot::BackendRt;

pub const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The status names, by code (the `grpc_code` label).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub const CANCELLED: u32 = 1;
pub const UNKNOWN: u32 = 2;
const INTERNAL: u32 = 13;
const DEADLINE_EXCEEDED: u32 = 4;
const RESOURCE_EXHAUSTED: u32 = 8;
const UNIMPLEMENTED: u32 = 12;
const UNAVAILABLE: u32 = 14;

/// Whether the request is a gRPC call (`content-type: application/grpc…`).
pub fn is_call(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The call's deadline from `grpc-timeout` (`1S`, `250m`, `30u`…: at most
/// 8 digits and a unit H M S m u n).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-status` in `headers`, if any.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get(GRPC_STATUS)?.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The name of a status code (`UNKNOWN` for codes past the known ones).
pub fn name(code: u32) -> &'static str {
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The statuses that say the server failed, not the call: UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
pub fn is_failure(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Whether a response head is a trailers-only answer with a failure status.
pub fn failed(headers: &HeaderMap) -> bool {
    status(headers).is_some_and(is_failure)
}

/// A call answered with messages, whose status comes in its trailers: judged
/// (counted, and recorded in the version's window) when they pass.
pub struct CallWatch {
    backend: Arc<BackendRt>,
    version: usize,
    /// Time to the response head, as for every attempt.
    latency: Duration,
    clock: Clock,
}

impl CallWatch {
    pub fn new(backend: Arc<BackendRt>, version: usize, latency: Duration, clock: Clock) -> Self {
        CallWatch {
            backend,
            version,
            latency,
            clock,
        }
    }

    /// The call ended with `code`; `None` when no status came (the upstream
    /// broke off): a failure either way when the status is one.
    pub fn ended(self, code: Option<u32>) {
        let version = &self.backend.versions[self.version];
        let failed = match code {
            Some(code) => {
                version.grpc_codes.count(code, name(code));
                is_failure(code)
            }
            None => true,
        };
        version
            .window
            .record(self.clock.now_ms(), self.latency, failed);
    }
}

/// The status the gateway answers a call with for its own error.
fn code_for(err: &ProxyError) -> u32 {
    match err {
        ProxyError::NoRoute => UNIMPLEMENTED,
        ProxyError::NoHealthyEndpoint(_)
        | ProxyError::Draining
        | ProxyError::Connect(_)
        | ProxyError::Reset(_)
        | ProxyError::Protocol(_)
        | ProxyError::Refused(_) => UNAVAILABLE,
        ProxyError::Timeout | ProxyError::ClientBodyTimeout => DEADLINE_EXCEEDED,
        ProxyError::BodyTooLarge(_) => RESOURCE_EXHAUSTED,
        ProxyError::ClientAborted(_) => CANCELLED,
        ProxyError::BadRequest(_) | ProxyError::UnsupportedTransferCoding(_) => INTERNAL,
    }
}

/// The gateway's own error as a gRPC answer's head: HTTP 200,
/// trailers-only (`grpc-status`, `grpc-message` in the headers; no body).
pub fn error_answer<B>(err: &ProxyError, empty: B) -> Response<B> {
    let mut response = Response::new(empty);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(code_for(err)));
    if let Ok(message) =
        HeaderValue::from_maybe_shared(Bytes::from(percent_encode(&err.to_string())))
    {
        headers.insert(GRPC_MESSAGE, message);
    }
    response
}

/// `grpc-message` encoding: printable ASCII but `%` as is, the rest as
/// `%XX` of its UTF-8 bytes (bytes above ASCII are always escaped).
const MESSAGE_ESCAPED: &AsciiSet = &CONTROLS.add(b'%');

fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, MESSAGE_ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn deadlines_parse_in_every_unit_and_junk_does_not() {
        let t = |v| timeout(&headers(GRPC_TIMEOUT, v));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("30u"), Some(Duration::from_micros(30)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for junk in ["", "S", "123456789S", "1s", "1.5S", "-1S", "1 S"] {
            assert_eq!(t(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_failure_statuses_are_the_servers() {
        let failures: Vec<&str> = (0..17).filter(|&c| is_failure(c)).map(name).collect();
        assert_eq!(
            failures,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        assert!(!is_failure(5), "NOT_FOUND is the caller's");
        assert_eq!(name(99), "UNKNOWN");
    }

    #[test]
    fn gateway_errors_are_trailers_only_answers() {
        let answer = error_answer(&ProxyError::NoRoute, ());
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(status(answer.headers()), Some(UNIMPLEMENTED));
        assert_eq!(answer.headers()["content-type"], "application/grpc");
        let code = |err: ProxyError| status(error_answer(&err, ()).headers());
        assert_eq!(code(ProxyError::Timeout), Some(4));
        assert_eq!(code(ProxyError::Connect("x".into())), Some(14));
        assert_eq!(code(ProxyError::BodyTooLarge(1)), Some(8));
        // Unprocessed by the upstream: a retry is safe.
        assert_eq!(code(ProxyError::Refused("x".into())), Some(14));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%c\u{e9}"), "a b%25c%C3%A9");
    }
}
