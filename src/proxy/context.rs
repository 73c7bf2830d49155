//! What a request runs with: its worker's share of the shared state
//! ([`Worker`]) and what it knows of its client connection ([`Conn`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderValue;
use prometheus::IntCounterVec;

use super::headers;
use crate::clock::Clock;
use crate::events::Events;
use crate::server::conn::ConnState;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::upstream::HeadTimer;

/// What one worker thread's requests use of the shared state: the routing
/// snapshot, the fallback counter and the events log (outlier ejections).
pub struct Worker {
    pub id: usize,
    /// Loaded once per request; in-flight requests finish on the snapshot
    /// they started with.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub(super) fallbacks: IntCounterVec,
    pub(super) events: Arc<Events>,
    pub clock: Clock,
}

impl Worker {
    pub fn new(id: usize, shared: &Shared) -> Self {
        Worker {
            id,
            snapshot: Arc::clone(&shared.snapshot),
            fallbacks: shared.metrics.fallbacks.clone(),
            events: Arc::clone(&shared.events),
            clock: shared.clock,
        }
    }
}

/// What the request path needs to know about the client connection.
pub struct Conn {
    pub state: Arc<ConnState>,
    pub peer: SocketAddr,
    /// What the forwarded headers say about the client.
    pub(super) client: headers::Client,
    /// Lent to one request at a time (HTTP/2's concurrent ones make their own).
    head_timer: Mutex<HeadTimer>,
}

impl Conn {
    pub fn new(peer: SocketAddr, tls: bool, state: Arc<ConnState>) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Conn {
            state,
            peer,
            client: headers::Client { peer_ip, tls },
            head_timer: Mutex::default(),
        }
    }

    pub(super) fn lend_timer(&self) -> HeadTimer {
        match self.head_timer.try_lock() {
            Ok(mut timer) => std::mem::take(&mut *timer),
            Err(_) => HeadTimer::default(),
        }
    }

    pub(super) fn return_timer(&self, timer: HeadTimer) {
        if let Ok(mut slot) = self.head_timer.try_lock() {
            *slot = timer;
        }
    }

    /// Frees the timer while the connection is parked (busy connections,
    /// which never park, are the ones that reuse it).
    pub fn release_timer(&self) {
        self.return_timer(HeadTimer::default());
    }
}
