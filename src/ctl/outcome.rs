//! What `ctl` does on a replica and what came back.

use http::StatusCode;
use serde_json::Value;

use super::replicas::Replica;

/// What to do on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GET /status`, optionally for one backend.
    Status { backend: Option<String> },
    /// `POST /admin/backends/{backend}/{action}`.
    Action { action: String, backend: String },
    /// `POST /admin/reload`.
    Reload,
}

/// Exit statuses.
pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const DISAGREE: u8 = 3;

/// One replica's answer.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub replica: Replica,
    /// The HTTP status, when the replica answered.
    pub status: Option<StatusCode>,
    /// The answer's JSON (or its text as a string).
    pub body: Value,
    /// Why there is no usable answer (connect error, timeout, ...).
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| s.is_success())
    }
}
