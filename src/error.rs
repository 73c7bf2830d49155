//! Errors of the request path and the one place that maps them to a status.

use http::StatusCode;

/// Why a request could not be proxied. Each variant decides its status in
/// [`ProxyError::status`], which has no wildcard arm on purpose.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("no route matches this request")]
    NoRoute,
    #[error("transfer coding {0:?} is not supported: only chunked")]
    UnsupportedTransferCoding(String),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("no healthy endpoint for backend {0}")]
    NoHealthyEndpoint(String),
    #[error("the gateway is shutting down")]
    Draining,
    #[error("upstream connection failed: {0}")]
    Connect(String),
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream reset the connection: {0}")]
    Reset(String),
    #[error("upstream sent an invalid response: {0}")]
    Protocol(String),
    /// An h2 upstream refused the request unprocessed (GOAWAY, REFUSED_STREAM)
    /// and its body could not be sent again (not kept: over the replay limit,
    /// or not all read yet). Safe for the client to retry; not a failure of
    /// the upstream, which said it did nothing with it.
    #[error(
        "the upstream refused the request unprocessed and its body could not be sent again: {0}"
    )]
    Refused(String),
    /// The client abandoned the request: its body stopped short (the
    /// connection closed, or the stream was reset) before the upstream
    /// answered.
    #[error("the client abandoned the request: {0}")]
    ClientAborted(String),
    /// The client's body stalled while the upstream waited for it, until the
    /// route timeout cut the request.
    #[error("the request body did not arrive in time")]
    ClientBodyTimeout,
}

/// Nginx's "client closed request": the access log's status for a request
/// the client abandoned.
pub const CLIENT_CLOSED: u16 = 499;

/// The kinds of upstream failure, as counted in metrics and analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
    Reset,
    Protocol,
}

impl UpstreamFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Protocol => "protocol",
        }
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoHealthyEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Draining => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Reset(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Protocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Rarely seen: the client is usually gone.
            ProxyError::ClientAborted(_) => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The client's doing (SPEC §3 "Whose failure"): never the version's.
    pub fn is_client_abort(&self) -> bool {
        matches!(
            self,
            ProxyError::ClientAborted(_) | ProxyError::ClientBodyTimeout
        )
    }

    /// The upstream failure this error stands for, if the upstream failed.
    pub fn upstream_failure(&self) -> Option<UpstreamFailure> {
        match self {
            ProxyError::Connect(_) => Some(UpstreamFailure::Connect),
            ProxyError::Timeout => Some(UpstreamFailure::Timeout),
            ProxyError::Reset(_) => Some(UpstreamFailure::Reset),
            ProxyError::Protocol(_) => Some(UpstreamFailure::Protocol),
            ProxyError::BadRequest(_)
            | ProxyError::NoRoute
            | ProxyError::UnsupportedTransferCoding(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::NoHealthyEndpoint(_)
            | ProxyError::Draining
            | ProxyError::Refused(_)
            | ProxyError::ClientAborted(_)
            | ProxyError::ClientBodyTimeout => None,
        }
    }
}

/// The small body of every error answer: status, reason and request id.
pub fn error_body(status: StatusCode, detail: &str, request_id: &str) -> String {
    format!(
        "{} {}: {detail}\nrequest-id: {request_id}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    )
}
