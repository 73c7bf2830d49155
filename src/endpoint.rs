//! One upstream address: how to reach it (address, connect timeout, TLS) and
//! its live state — health (set by the probes), outlier ejection (set by the
//! request path), requests in flight (for `least_request`).
//!
//! An endpoint is shared by every snapshot that lists it unchanged, so a
//! reload keeps its state, and the workers' pools (keyed by its `id`) keep
//! its connections; the pool sweep forgets them once no snapshot lists it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::uri::Authority;

use crate::config::Outlier;
use crate::tls::UpstreamTls;

/// Ejections grow with each repeat, up to this many times `ejection_time`.
const MAX_EJECTION_FACTOR: u32 = 10;

pub struct Endpoint {
    /// Unique for the process's lifetime: the key of the workers' pools.
    pub id: u64,
    pub address: String,
    pub authority: Authority,
    pub connect_timeout: Duration,
    /// TLS to this endpoint (the version's `tls`); `None` for plain HTTP.
    pub tls: Option<UpstreamTls>,
    /// Written by the health probes; read by every request.
    pub healthy: AtomicBool,
    /// [`clock_ms`] until which outlier ejection keeps this endpoint out; 0
    /// when not ejected.
    pub ejected_until: AtomicU64,
    /// Times ejected so far (each ejection lasts longer).
    pub ejections: AtomicU32,
    /// Connect errors, resets and timeouts in a row on live traffic.
    pub consecutive_failures: AtomicU32,
    /// Requests sent and not yet finished, for `least_request`.
    pub in_flight: AtomicU32,
}

impl Endpoint {
    pub fn new(
        address: &str,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Option<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Some(Endpoint {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            address: address.to_string(),
            authority: address.parse().ok()?,
            connect_timeout,
            tls: tls.cloned(),
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
        })
    }

    /// Whether `self` reaches the same upstream in the same way as one made
    /// from `connect_timeout` and `tls` (so a reload may keep it).
    pub fn same_upstream(&self, connect_timeout: Duration, tls: Option<&UpstreamTls>) -> bool {
        self.connect_timeout == connect_timeout
            && self.tls.as_ref().map(|t| t.fingerprint) == tls.map(|t| t.fingerprint)
    }

    /// Passes its health checks (ejected or not).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Healthy and not ejected: may take requests.
    pub fn usable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected()
    }

    pub fn ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > clock_ms()
    }

    /// A request got an answer: the failure streak ends.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connect error, reset or timeout. Returns the ejection time when this
    /// failure ejects the endpoint; `may_eject` says whether other endpoints
    /// would still serve (the last ones are never ejected).
    pub fn record_failure(
        &self,
        outlier: &Outlier,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let streak = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < outlier.consecutive_failures || self.ejected() || !may_eject() {
            return None;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = outlier.ejection_time * times.min(MAX_EJECTION_FACTOR);
        self.ejected_until
            .store(clock_ms() + duration.as_millis() as u64, Ordering::Relaxed);
        Some(duration)
    }
}

/// Milliseconds since the process's clock origin (monotonic).
pub fn clock_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Counts a request in flight on an endpoint until dropped.
pub struct InFlight(pub Arc<Endpoint>);

impl InFlight {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(endpoint)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new("127.0.0.1:1", Duration::from_secs(1), None).expect("address")
    }

    const OUTLIER: Outlier = Outlier {
        consecutive_failures: 3,
        ejection_time: Duration::from_secs(10),
    };

    #[test]
    fn a_streak_of_failures_ejects_and_a_success_breaks_it() {
        let e = endpoint();
        assert_eq!(e.record_failure(&OUTLIER, || true), None);
        assert_eq!(e.record_failure(&OUTLIER, || true), None);
        e.record_success();
        assert_eq!(e.record_failure(&OUTLIER, || true), None);
        assert_eq!(e.record_failure(&OUTLIER, || true), None);
        assert_eq!(
            e.record_failure(&OUTLIER, || true),
            Some(Duration::from_secs(10))
        );
        assert!(e.ejected() && !e.usable());
    }

    #[test]
    fn repeat_ejections_last_longer() {
        let e = endpoint();
        for _ in 0..3 {
            e.record_failure(&OUTLIER, || true);
        }
        e.ejected_until.store(0, Ordering::Relaxed); // the first ejection ran out
        for _ in 0..2 {
            e.record_failure(&OUTLIER, || true);
        }
        assert_eq!(
            e.record_failure(&OUTLIER, || true),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn the_last_endpoint_is_never_ejected() {
        let e = endpoint();
        for _ in 0..10 {
            assert_eq!(e.record_failure(&OUTLIER, || false), None);
        }
        assert!(e.usable());
    }
}
