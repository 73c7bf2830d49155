//! Header rules of the request path, as pure functions over header maps:
//! framing checks, the request's host, hop-by-hop removal (RFC 9110 §7.6.1),
//! the `X-Forwarded-*` and request-id headers, and the request target for an
//! endpoint.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Version};
use hyper::body::Incoming;

use crate::endpoint::Endpoint;
use crate::error::ProxyError;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_SWITCHYARD_VERSION: HeaderName = HeaderName::from_static("x-switchyard-version");
/// Marks a mirrored copy, so the canary can tell it from real traffic.
pub const X_SWITCHYARD_MIRROR: HeaderName = HeaderName::from_static("x-switchyard-mirror");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What kind of request is forwarded, as its headers go.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded {
    /// An upgrade (WebSocket): `Connection: upgrade` and `Upgrade` pass.
    pub upgrade: bool,
    /// A gRPC call: `te: trailers` passes.
    pub grpc: bool,
}

/// What the forwarded headers say about the client.
pub struct Client {
    /// The client address as an `X-Forwarded-For` element, built once per
    /// connection.
    pub peer_ip: HeaderValue,
    /// Whether it came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

/// Refuses what hyper would accept but an upstream could read otherwise:
/// transfer codings other than plain `chunked` (we would forward the coded
/// bytes as if decoded, RFC 9112 §6.1 → 501) and several differing Host
/// headers (RFC 9112 §3.2 → 400).
pub fn check_framing_headers(headers: &HeaderMap) -> Result<(), ProxyError> {
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
pub fn request_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    if let Some(authority) = req.uri().authority() {
        return HeaderValue::from_str(authority.as_str()).ok();
    }
    req.headers().get(header::HOST).cloned()
}

pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

/// The headers a request goes upstream with: hop-by-hop ones removed (but
/// an upgrade's), the routed Host, `X-Forwarded-*` and the request id.
pub fn prepare_request(
    headers: &mut HeaderMap,
    client: &Client,
    host: &HeaderValue,
    id: &HeaderValue,
    kind: Forwarded,
) {
    let upgrade_value = if kind.upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // gRPC servers require `te: trailers`; it is the one TE that passes.
    let te_trailers = kind.grpc
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(headers, true);
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // The Host the request was routed by goes upstream: for an absolute-form
    // target it replaces whatever Host the client also sent (RFC 9112 §3.2.2).
    if !host.is_empty() && headers.get(header::HOST) != Some(host) {
        headers.insert(header::HOST, host.clone());
    }
    match headers.get_mut(X_FORWARDED_FOR) {
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + client.peer_ip.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.peer_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                *existing = value;
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR, client.peer_ip.clone());
        }
    }
    let proto = if client.tls { "https" } else { "http" };
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
pub fn strip_hop_by_hop(headers: &mut HeaderMap, request: bool) {
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

pub fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// Points the request at `endpoint`: origin-form, with the `Host` it was
/// routed by (the endpoint's authority when the client sent none). The
/// upstream turns it into what its protocol wants.
pub fn prepare_target(
    endpoint: &Endpoint,
    parts: &mut http::request::Parts,
) -> Result<(), ProxyError> {
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(host) = HeaderValue::from_str(endpoint.authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    Ok(())
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
