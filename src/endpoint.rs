//! One upstream address: how to reach it (address, connect timeout, TLS) and
//! its live state — health (set by the probes), outlier ejection (set by the
//! request path), requests in flight (for `least_request`).
//!
//! An endpoint is shared by every snapshot that lists it unchanged, so a
//! reload keeps its state, and the workers' pools (keyed by its `id`) keep
//! its connections; the pool sweep forgets them once no snapshot lists it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

use crate::clock::Clock;
use crate::config::{Outlier, Protocol};
use crate::tls::UpstreamTls;

/// What one connection to an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    H1,
    H2,
}

const WIRE_H1: u8 = 1;
const WIRE_H2: u8 = 2;

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
    /// What the version is spoken to in.
    pub protocol: Protocol,
    /// For `auto` over TLS: what ALPN picked on the first connection
    /// (0 unknown, [`WIRE_H1`], [`WIRE_H2`]); later connections go to that
    /// pool. Written by the request path, once.
    negotiated: AtomicU8,
    /// Written by the health probes; read by every request.
    pub healthy: AtomicBool,
    /// The gateway clock's milliseconds (`Clock::now_ms`) until which outlier
    /// ejection keeps this endpoint out; 0 when not ejected.
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
        protocol: Protocol,
    ) -> Option<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Some(Endpoint {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            address: address.to_string(),
            authority: address.parse().ok()?,
            connect_timeout,
            tls: tls.cloned(),
            protocol,
            negotiated: AtomicU8::new(0),
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
        })
    }

    /// Whether `self` reaches the same upstream in the same way as one made
    /// from `connect_timeout`, `tls` and `protocol` (so a reload may keep it).
    pub fn same_upstream(
        &self,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
        protocol: Protocol,
    ) -> bool {
        self.connect_timeout == connect_timeout
            && self.protocol == protocol
            && self.tls.as_ref().map(|t| t.fingerprint) == tls.map(|t| t.fingerprint)
    }

    /// What the next request to this endpoint is sent in, when known: h2 for
    /// `h2`, HTTP/1.1 for `http1` (and `auto` in the clear), ALPN's earlier
    /// pick for `auto` over TLS (`None` until the first connection).
    pub fn wire(&self) -> Option<Wire> {
        match (self.protocol, self.tls.is_some()) {
            (Protocol::Http1, _) | (Protocol::Auto, false) => Some(Wire::H1),
            (Protocol::H2, _) => Some(Wire::H2),
            (Protocol::Auto, true) => match self.negotiated.load(Ordering::Relaxed) {
                WIRE_H1 => Some(Wire::H1),
                WIRE_H2 => Some(Wire::H2),
                _ => None,
            },
        }
    }

    /// Remembers what ALPN picked for an `auto` endpoint.
    pub fn negotiated(&self, wire: Wire) {
        let value = match wire {
            Wire::H1 => WIRE_H1,
            Wire::H2 => WIRE_H2,
        };
        self.negotiated.store(value, Ordering::Relaxed);
    }

    /// Passes its health checks (ejected or not).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Healthy and not ejected now: may take requests.
    pub fn usable(&self, clock: &Clock) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected(clock)
    }

    /// Kept out by outlier ejection now. The clock is read only for an
    /// endpoint that was ejected (almost never on the request path).
    pub fn ejected(&self, clock: &Clock) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > clock.now_ms()
    }

    /// A request got an answer: the failure streak ends.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connect error, reset or timeout now. Returns the ejection time when
    /// this failure ejects the endpoint; `may_eject` says whether other
    /// endpoints would still serve (the last ones are never ejected).
    pub fn record_failure(
        &self,
        outlier: &Outlier,
        clock: &Clock,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let streak = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < outlier.consecutive_failures || self.ejected(clock) || !may_eject() {
            return None;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let times = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = outlier.ejection_time * times.min(MAX_EJECTION_FACTOR);
        self.ejected_until.store(
            clock.now_ms() + duration.as_millis() as u64,
            Ordering::Relaxed,
        );
        Some(duration)
    }
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
    use tokio::time::advance;

    fn endpoint() -> Endpoint {
        Endpoint::new("127.0.0.1:1", Duration::from_secs(1), None, Protocol::Http1)
            .expect("address")
    }

    const OUTLIER: Outlier = Outlier {
        consecutive_failures: 3,
        ejection_time: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn a_streak_of_failures_ejects_for_the_ejection_time_and_a_success_breaks_it() {
        let (e, clock) = (endpoint(), Clock::new());
        let fail = || e.record_failure(&OUTLIER, &clock, || true);
        assert_eq!(fail(), None);
        assert_eq!(fail(), None);
        e.record_success();
        assert_eq!(fail(), None);
        assert_eq!(fail(), None);
        assert_eq!(fail(), Some(Duration::from_secs(10)));
        assert!(e.ejected(&clock) && !e.usable(&clock));
        advance(Duration::from_millis(9_999)).await;
        assert!(e.ejected(&clock), "still out just before 10 s");
        advance(Duration::from_millis(1)).await;
        assert!(e.usable(&clock), "back after 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn repeat_ejections_last_longer() {
        let (e, clock) = (endpoint(), Clock::new());
        let fail = || e.record_failure(&OUTLIER, &clock, || true);
        for _ in 0..2 {
            assert_eq!(fail(), None);
        }
        assert_eq!(fail(), Some(Duration::from_secs(10)));
        advance(Duration::from_secs(10)).await;
        for _ in 0..2 {
            assert_eq!(fail(), None);
        }
        assert_eq!(fail(), Some(Duration::from_secs(20)));
        advance(Duration::from_secs(19)).await;
        assert!(e.ejected(&clock));
        advance(Duration::from_secs(1)).await;
        assert!(!e.ejected(&clock));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_while_ejected_do_not_extend_the_ejection() {
        let (e, clock) = (endpoint(), Clock::new());
        for _ in 0..3 {
            e.record_failure(&OUTLIER, &clock, || true);
        }
        advance(Duration::from_secs(5)).await;
        for _ in 0..5 {
            assert_eq!(e.record_failure(&OUTLIER, &clock, || true), None);
        }
        advance(Duration::from_secs(5)).await;
        assert!(!e.ejected(&clock));
    }

    #[test]
    fn the_last_endpoint_is_never_ejected() {
        let (e, clock) = (endpoint(), Clock::new());
        for _ in 0..10 {
            assert_eq!(e.record_failure(&OUTLIER, &clock, || false), None);
        }
        assert!(e.usable(&clock));
    }
}
