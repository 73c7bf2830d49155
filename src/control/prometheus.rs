//! The fleet-wide analysis source: the canary's figures from a Prometheus
//! server's HTTP API (`/api/v1/query`), so that every replica judges the same
//! numbers and reaches the same decision.
//!
//! Queries are PromQL with `{backend}`, `{version}` and `{window}`
//! placeholders; the defaults use our own metric names. An unreachable
//! server, an error or an empty result decides nothing (and is logged) —
//! never a rollback by accident.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::analysis::{judge_figures, Judged, Query};
use crate::release::verdict::Figures;
use crate::tls::{TlsError, UpstreamTls};
use crate::upstream::client;

pub const DEFAULT_REQUESTS: &str = r#"sum(increase(switchyard_requests_total{backend="{backend}",version="{version}"}[{window}]))"#;
pub const DEFAULT_ERROR_RATE: &str = r#"sum(rate(switchyard_requests_total{backend="{backend}",version="{version}",code="5xx"}[{window}])) / sum(rate(switchyard_requests_total{backend="{backend}",version="{version}"}[{window}]))"#;
pub const DEFAULT_P99: &str = r#"histogram_quantile(0.99, sum by (le) (rate(switchyard_request_duration_seconds_bucket{backend="{backend}",version="{version}"}[{window}])))"#;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

pub type PromClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for `http://` and `https://` Prometheus URLs (system roots).
/// Loads the system roots on first use: call it at start, not on a runtime.
pub fn client() -> Result<PromClient, TlsError> {
    let tls = UpstreamTls::system()?;
    Ok(client::https(QUERY_TIMEOUT, &tls))
}

/// Fills the placeholders of a query.
pub fn render(template: &str, backend: &str, version: &str, window: Duration) -> String {
    template
        .replace("{backend}", backend)
        .replace("{version}", version)
        .replace("{window}", &format!("{}s", window.as_secs().max(1)))
}

/// Runs the three queries of `query` for every version of the backend and
/// judges its subject on the figures.
pub async fn analyse(client: &PromClient, query: &Query) -> Judged {
    let mut versions = Vec::new();
    for version in &query.versions {
        if let Some(figures) = figures(client, query, version).await {
            versions.push((version.clone(), figures));
        }
    }
    let verdict = judge_figures(&versions, &query.subject, &query.limits);
    Judged { verdict, versions }
}

/// One version's figures over the window; `None` when Prometheus has none.
async fn figures(client: &PromClient, query: &Query, version: &str) -> Option<Figures> {
    let q = |custom: &Option<String>, default: &str| {
        render(
            custom.as_deref().unwrap_or(default),
            &query.backend,
            version,
            query.window,
        )
    };
    let requests = scalar(client, &query.url, &q(&query.requests, DEFAULT_REQUESTS)).await;
    let error_rate = scalar(
        client,
        &query.url,
        &q(&query.error_rate, DEFAULT_ERROR_RATE),
    )
    .await;
    let p99 = scalar(client, &query.url, &q(&query.p99, DEFAULT_P99)).await;
    let (requests, error_rate) = match (requests, error_rate) {
        (Ok(Some(r)), Ok(Some(e))) if r.is_finite() && e.is_finite() => (r, e),
        (requests, error_rate) => {
            if version == query.subject.candidate {
                tracing::info!(backend = %query.backend, version, ?requests, ?error_rate, "no Prometheus figures: no decision");
            }
            return None;
        }
    };
    let requests = requests.round().max(0.0) as u64;
    Some(Figures {
        requests,
        errors: (error_rate.clamp(0.0, 1.0) * requests as f64).round() as u64,
        p99_ms: match p99 {
            Ok(Some(seconds)) if seconds.is_finite() => Some(seconds * 1e3),
            _ => None,
        },
    })
}

/// The first sample of an instant query, `None` for an empty result.
async fn scalar(client: &PromClient, base: &str, promql: &str) -> Result<Option<f64>, String> {
    let url = format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        percent_encode(promql)
    );
    let request = Request::get(url.as_str())
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let body = tokio::time::timeout(QUERY_TIMEOUT, async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "Prometheus answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body)
    })
    .await
    .map_err(|_| "Prometheus query timed out".to_string())??;
    parse_scalar(&body)
}

/// Reads `data.result[0].value[1]` of a query answer.
pub fn parse_scalar(body: &[u8]) -> Result<Option<f64>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid answer: {e}"))?;
    if value["status"] != "success" {
        return Err(format!("query failed: {}", value["error"]));
    }
    let sample = match value["data"]["resultType"].as_str() {
        Some("vector") => value["data"]["result"]
            .get(0)
            .map(|r| r["value"][1].clone()),
        Some("scalar") => Some(value["data"]["result"][1].clone()),
        other => return Err(format!("unexpected result type {other:?}")),
    };
    match sample.as_ref().and_then(|s| s.as_str()) {
        None => Ok(None),
        Some(text) => text
            .parse::<f64>()
            .map(Some)
            .map_err(|e| format!("not a number {text:?}: {e}")),
    }
}

/// RFC 3986's unreserved characters stay; the rest is `%XX`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A query as a URL query value.
fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled() {
        let q = render(DEFAULT_REQUESTS, "users", "v2", Duration::from_secs(30));
        assert_eq!(
            q,
            r#"sum(increase(switchyard_requests_total{backend="users",version="v2"}[30s]))"#
        );
    }

    #[test]
    fn vector_scalar_and_empty_answers_parse() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(parse_scalar(vector), Ok(Some(0.25)));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(parse_scalar(scalar), Ok(Some(3.0)));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_scalar(empty), Ok(None));
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"NaN"]}]}}"#;
        assert!(matches!(parse_scalar(nan), Ok(Some(x)) if x.is_nan()));
        assert!(parse_scalar(br#"{"status":"error","error":"bad"}"#).is_err());
        assert!(parse_scalar(b"<html>").is_err());
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"a{b="c"}[5s]"#),
            "a%7Bb%3D%22c%22%7D%5B5s%5D"
        );
    }
}
