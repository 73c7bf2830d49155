//! The diagnostics collector and the value checks every part of the
//! validation shares (durations, counts, percentages, header names,
//! addresses), each reporting at the value's position.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde_saphyr::{Location, Spanned};

use super::super::error::Diagnostic;
use super::super::file::Dur;

/// Collects diagnostics while validating.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Diagnostic>);

impl Problems {
    pub(super) fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        self.at_loc(spanned.referenced, message);
    }

    pub(super) fn at_loc(&mut self, loc: Location, message: impl Into<String>) {
        self.0
            .push(Diagnostic::new(loc.line(), loc.column(), message));
    }
}

pub(super) fn dur_or(
    v: &Option<Spanned<Dur>>,
    default: Duration,
    p: &mut Problems,
    what: &str,
) -> Duration {
    match v {
        Some(s) if s.value.0.is_zero() => {
            p.at(s, format!("{what} must be greater than zero"));
            default
        }
        Some(s) => s.value.0,
        None => default,
    }
}

pub(super) fn count_or(
    v: &Option<Spanned<u64>>,
    default: u64,
    p: &mut Problems,
    what: &str,
) -> u64 {
    match v {
        Some(s) if s.value == 0 => {
            p.at(s, format!("{what} must be at least 1"));
            default
        }
        Some(s) => s.value,
        None => default,
    }
}

pub(super) fn percent(v: &Spanned<f64>, p: &mut Problems, what: &str) -> f64 {
    if !(0.0..=100.0).contains(&v.value) {
        p.at(
            v,
            format!("{what} must be between 0 and 100, got {}", v.value),
        );
        return 0.0;
    }
    v.value
}

pub(super) fn header_name(v: &Spanned<String>, p: &mut Problems, what: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(v.value.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            p.at(
                v,
                format!("{what} {:?} is not a valid header name", v.value),
            );
            None
        }
    }
}

pub(super) fn socket_addr(v: &Spanned<String>, p: &mut Problems, what: &str) -> Option<SocketAddr> {
    match v.value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.at(
                v,
                format!(
                    "{what} {:?} is not an address such as 0.0.0.0:8080 or [::1]:8080",
                    v.value
                ),
            );
            None
        }
    }
}
