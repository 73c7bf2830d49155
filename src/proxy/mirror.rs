//! Mirroring: a copy of a stable request sent to the canary in the
//! background (`mirror_percent`), through the same attempt as any request, so
//! its answer is recorded in the canary's window; the answer itself is read
//! to its end (the connection goes back to the pool) and discarded.
//!
//! Bounded: at most [`MAX_IN_FLIGHT`] mirrored requests per backend are in
//! flight at once; a slow canary makes the extra copies be dropped (counted
//! in `switchyard_mirror_dropped_total`), never pile up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::HeaderValue;
use http_body_util::BodyExt;

use super::attempt::{self, Target};
use super::context::Worker;
use super::exchange::Tried;
use super::headers::{copy_head, X_SWITCHYARD_MIRROR};
use crate::metrics::VersionMetrics;
use crate::snapshot::BackendRt;
use crate::upstream::{HeadTimer, RequestBody};

/// Mirrored requests in flight per backend at most.
pub const MAX_IN_FLIGHT: usize = 64;

/// Copies `head` (a bodiless request) to `canary` in the background, unless
/// the backend already has [`MAX_IN_FLIGHT`] copies in flight.
pub fn spawn(
    worker: &Worker,
    backend: &Arc<BackendRt>,
    canary: usize,
    head: &Parts,
    timeout: Duration,
    metrics: &VersionMetrics,
) {
    let Some(slot) = Slot::take(backend) else {
        tracing::debug!(backend = %backend.name, "mirror dropped: too many in flight");
        if let Some(dropped) = &backend.mirror_dropped {
            dropped.inc();
        }
        return;
    };
    let mut parts = copy_head(head);
    parts
        .headers
        .insert(X_SWITCHYARD_MIRROR, HeaderValue::from_static("1"));
    let (events, clock, metrics) = (Arc::clone(&worker.events), worker.clock, metrics.clone());
    let fallbacks = worker.fallbacks.clone();
    tokio::spawn(async move {
        let target = Target {
            backend: &slot.0,
            timeout,
            grpc: false,
            body_limit: 0,
            events: &events,
            clock,
            fallbacks: &fallbacks,
        };
        let (mut timer, mut tried) = (HeadTimer::default(), Tried::default());
        let body = RequestBody::empty();
        let sent = attempt::once(
            &target, &metrics, canary, parts, body, &mut timer, &mut tried,
        );
        if let Ok(response) = sent.await {
            // Read to its end so the connection goes back to the pool.
            let mut body = response.into_body();
            while let Some(Ok(_)) = body.frame().await {}
        }
    });
}

/// One of a backend's mirror slots, held while the copy is in flight.
struct Slot(Arc<BackendRt>);

impl Slot {
    fn take(backend: &Arc<BackendRt>) -> Option<Slot> {
        let taken =
            backend
                .mirrors_in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_IN_FLIGHT).then_some(n + 1)
                });
        taken.is_ok().then(|| Slot(Arc::clone(backend)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.mirrors_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
