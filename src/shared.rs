//! The state every part of the gateway shares, and nothing else: the routing
//! snapshot handle, the metrics registry, the events log and the clock.
//!
//! This is the bottom of the crate's layering: the request path, the control
//! plane and the admin API all read it; it imports none of them. The request
//! path takes only the pieces it uses (see `proxy::Worker`); the control
//! protocol lives in `control::Handle`, not here.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

pub struct Shared {
    /// The routing snapshot. Read by every request (`load`); written only by
    /// the control loop (reloads and release decisions).
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Every metric; the request path holds pre-resolved handles.
    pub metrics: Arc<Metrics>,
    /// Last reload, config generation and recent events, for `/status`.
    pub events: Arc<Events>,
    /// The one time source.
    pub clock: Clock,
}

impl Shared {
    /// The shared state of a gateway about to serve `snapshot`.
    pub fn new(snapshot: Snapshot, metrics: Metrics) -> Self {
        Shared {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            metrics: Arc::new(metrics),
            events: Arc::new(Events::default()),
            clock: Clock::new(),
        }
    }
}

/// Resolves once the stop signal `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
