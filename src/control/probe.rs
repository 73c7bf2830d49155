//! One health probe of one endpoint, sent through the upstream subsystem in
//! what the endpoint speaks (HTTP/1.1 or h2, plain or TLS; the control
//! thread's own pools): `GET path` answered 2xx or 3xx, or the standard gRPC
//! health check (`grpc.health.v1.Health/Check`) answered SERVING.
//!
//! The gRPC messages are two one-field protobufs, encoded and decoded here
//! by hand rather than with a code generator:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }` (SERVING = 1).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::config::HealthCheck;
use crate::endpoint::Endpoint;
use crate::upstream::{self, HeadTimer, RequestBody, UpstreamBody};

const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const SERVING: u64 = 1;

/// Whether `endpoint` passes one probe of `check`, within its timeout.
pub async fn probe(endpoint: &Endpoint, check: &HealthCheck, timer: &mut HeadTimer) -> bool {
    let answered = tokio::time::timeout(check.timeout, async {
        // The timeout around it bounds the head and the body together.
        match &check.grpc {
            Some(service) => grpc(endpoint, service, timer, check).await,
            None => http(endpoint, &check.path, timer, check).await,
        }
    })
    .await;
    answered.unwrap_or(false)
}

async fn http(endpoint: &Endpoint, path: &str, timer: &mut HeadTimer, check: &HealthCheck) -> bool {
    let Some(request) = request(endpoint, Method::GET, path, RequestBody::empty()) else {
        return false;
    };
    let Some(response) = send(endpoint, request, timer, check).await else {
        return false;
    };
    let status = response.status();
    // Read the body so the connection can be reused for the next probe.
    let _ = response.into_body().collect().await;
    status.is_success() || status.is_redirection()
}

async fn grpc(
    endpoint: &Endpoint,
    service: &str,
    timer: &mut HeadTimer,
    check: &HealthCheck,
) -> bool {
    let body = RequestBody::full(health_check_request(service));
    let Some(mut request) = request(endpoint, Method::POST, GRPC_HEALTH_CHECK, body) else {
        return false;
    };
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let Some(response) = send(endpoint, request, timer, check).await else {
        return false;
    };
    // A trailers-only answer carries an error status and no message.
    if response.status() != StatusCode::OK || response.headers().contains_key("grpc-status") {
        return false;
    }
    let Ok(collected) = response.into_body().collect().await else {
        return false;
    };
    let ok = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .is_some_and(|s| s.as_bytes() == b"0");
    ok && serving_status(&collected.to_bytes()) == Some(SERVING)
}

fn request(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: RequestBody,
) -> Option<Request<RequestBody>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, endpoint.authority.as_str())
        .header(header::USER_AGENT, "switchyard-probe")
        .body(body)
        .ok()
}

async fn send(
    endpoint: &Endpoint,
    request: Request<RequestBody>,
    timer: &mut HeadTimer,
    check: &HealthCheck,
) -> Option<http::Response<UpstreamBody>> {
    upstream::exchange(endpoint, request, timer, check.timeout, 0)
        .await
        .ok()
}

/// A gRPC message (uncompressed, length-prefixed) holding
/// `HealthCheckRequest { service }`.
fn health_check_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// The `status` of a length-prefixed `HealthCheckResponse`; `None` when it
/// is malformed. A message without the field says UNKNOWN (0).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (len, mut message) = rest.split_at(4);
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    message = message.get(..len)?;
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut message)?,
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 2) => {
                let skip = varint(&mut message)? as usize;
                message = message.get(skip..)?;
            }
            (_, 1) => message = message.get(8..)?,
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_message_is_the_standard_encoding() {
        assert_eq!(&health_check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_check_request("shop")[..],
            &[0, 0, 0, 0, 6, 0x0a, 4, b's', b'h', b'o', b'p']
        );
    }

    #[test]
    fn serving_statuses_decode_and_junk_does_not() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        // An empty message: the default, UNKNOWN.
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // An unknown length-delimited field is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
        assert_eq!(
            serving_status(&[1, 0, 0, 0, 2, 0x08, 1]),
            None,
            "compressed"
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None, "short");
        assert_eq!(serving_status(&[]), None);
    }
}
