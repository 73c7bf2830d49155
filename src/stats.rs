//! Per-version sliding-window statistics, fed from the request path without
//! a lock: a ring of time slices, each with atomic counters and a fixed
//! latency histogram. Recording is a handful of relaxed atomic adds; reading
//! (once per analysis interval) sums the slices inside the window.
//!
//! A slice is recycled when time comes back round to it: the first writer of
//! a new period swaps in the period number and clears the counters. A write
//! racing that reset can be lost; at one slice per second that is a rounding
//! error, and it keeps the hot path free of locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::release::verdict::Figures;

/// Upper bounds of the latency buckets, in microseconds; one more bucket
/// holds everything slower.
const BOUNDS_US: [u64; 23] = [
    1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000, 100_000,
    150_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000,
    5_000_000, 10_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;
/// Slices per window: the window is cut in this many periods.
const SLICES: u64 = 60;

struct Slice {
    period: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Slice {
    fn new() -> Self {
        Slice {
            period: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One version's recent requests.
pub struct Window {
    slices: Box<[Slice]>,
    slice_ms: u64,
    span: Duration,
}

impl Window {
    /// A window over `span`, cut into 1-second slices or `span / 60`,
    /// whichever is longer.
    pub fn new(span: Duration) -> Self {
        let span_ms = span.as_millis().max(1) as u64;
        let slice_ms = (span_ms / SLICES).max(1000);
        let count = span_ms.div_ceil(slice_ms) + 2;
        Window {
            slices: (0..count).map(|_| Slice::new()).collect(),
            slice_ms,
            span,
        }
    }

    pub fn span(&self) -> Duration {
        self.span
    }

    /// Records one finished request (`now_ms` on the gateway's clock).
    pub fn record(&self, now_ms: u64, latency: Duration, error: bool) {
        let period = now_ms / self.slice_ms;
        let slice = &self.slices[(period % self.slices.len() as u64) as usize];
        let seen = slice.period.load(Ordering::Acquire);
        if seen != period
            && slice
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slice.requests.store(0, Ordering::Relaxed);
            slice.errors.store(0, Ordering::Relaxed);
            for bucket in &slice.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
        slice.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slice.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = latency.as_micros() as u64;
        let bucket = BOUNDS_US.partition_point(|&bound| bound < us);
        slice.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets every recorded request (a retried release starts afresh).
    pub fn clear(&self) {
        for slice in self.slices.iter() {
            slice.period.store(u64::MAX, Ordering::Release);
        }
    }

    /// The figures of the last `span` before `now_ms`.
    pub fn figures(&self, now_ms: u64, span: Duration) -> Figures {
        let now = now_ms / self.slice_ms;
        let count = (span.as_millis() as u64)
            .div_ceil(self.slice_ms)
            .clamp(1, self.slices.len() as u64 - 1);
        let oldest = now.saturating_sub(count - 1);
        let mut figures = Figures::default();
        let mut histogram = [0u64; BUCKETS];
        for slice in self.slices.iter() {
            let period = slice.period.load(Ordering::Acquire);
            if period == u64::MAX || period < oldest || period > now {
                continue;
            }
            figures.requests += slice.requests.load(Ordering::Relaxed);
            figures.errors += slice.errors.load(Ordering::Relaxed);
            for (sum, bucket) in histogram.iter_mut().zip(&slice.latency) {
                *sum += bucket.load(Ordering::Relaxed);
            }
        }
        figures.p99_ms = p99_ms(&histogram);
        figures
    }
}

/// The 99th percentile as the upper bound of the bucket it falls in (the
/// slowest bucket reports its lower bound).
fn p99_ms(histogram: &[u64; BUCKETS]) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total * 99).div_ceil(100);
    let mut seen = 0;
    for (i, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let bound = BOUNDS_US.get(i).or(BOUNDS_US.last()).copied().unwrap_or(0);
            return Some(bound as f64 / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);
    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn counts_requests_errors_and_p99_within_the_window() {
        let (w, clock) = (Window::new(SECS(30)), Clock::new());
        for i in 0..1000u64 {
            let latency = if i % 100 == 0 { 900 * MS } else { 4 * MS };
            w.record(clock.now_ms(), latency, i % 10 == 0);
            advance(MS).await;
        }
        let f = w.figures(clock.now_ms(), SECS(30));
        assert_eq!(f.requests, 1000);
        assert_eq!(f.errors, 100);
        assert_eq!(
            f.p99_ms,
            Some(5.0),
            "990 of 1000 at 4 ms: p99 in the 5 ms bucket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_tail_moves_the_p99() {
        let (w, clock) = (Window::new(SECS(30)), Clock::new());
        for i in 0..100u64 {
            w.record(
                clock.now_ms(),
                if i < 95 { 2 * MS } else { 1200 * MS },
                false,
            );
        }
        assert_eq!(w.figures(clock.now_ms(), SECS(30)).p99_ms, Some(1500.0));
    }

    #[tokio::test(start_paused = true)]
    async fn old_slices_fall_out_of_the_window() {
        let (w, clock) = (Window::new(SECS(10)), Clock::new());
        w.record(clock.now_ms(), MS, true);
        advance(SECS(5)).await;
        w.record(clock.now_ms(), MS, false);
        advance(SECS(4)).await;
        assert_eq!(w.figures(clock.now_ms(), SECS(10)).requests, 2);
        advance(SECS(3)).await;
        let later = w.figures(clock.now_ms(), SECS(10));
        assert_eq!(
            (later.requests, later.errors),
            (1, 0),
            "the first request left the window"
        );
        advance(SECS(18)).await;
        assert_eq!(w.figures(clock.now_ms(), SECS(10)), Figures::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_recycled_slice_starts_from_zero() {
        let (w, clock) = (Window::new(SECS(10)), Clock::new());
        let len = w.slices.len() as u64;
        w.record(clock.now_ms(), MS, true);
        advance(SECS(len)).await; // same slot, a later period
        w.record(clock.now_ms(), MS, false);
        let f = w.figures(clock.now_ms(), SECS(10));
        assert_eq!((f.requests, f.errors), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn long_windows_use_longer_slices() {
        let (w, clock) = (Window::new(SECS(600)), Clock::new());
        assert_eq!(w.slice_ms, 10_000);
        w.record(clock.now_ms(), MS, false);
        for _ in 1..600 {
            advance(SECS(1)).await;
            w.record(clock.now_ms(), MS, false);
        }
        assert_eq!(w.figures(clock.now_ms(), SECS(600)).requests, 600);
    }

    #[tokio::test(start_paused = true)]
    async fn clearing_forgets_everything_recorded() {
        let (w, clock) = (Window::new(SECS(30)), Clock::new());
        for _ in 0..5 {
            w.record(clock.now_ms(), MS, true);
            advance(SECS(1)).await;
        }
        w.clear();
        assert_eq!(w.figures(clock.now_ms(), SECS(30)), Figures::default());
        w.record(clock.now_ms(), MS, false);
        assert_eq!(w.figures(clock.now_ms(), SECS(30)).requests, 1);
    }

    #[test]
    fn recording_from_many_threads_loses_nothing_within_a_slice() {
        let w = std::sync::Arc::new(Window::new(SECS(30)));
        w.record(5_500, MS, false); // claims the period before the threads race
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.record(5_500, MS, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        // All in one pre-claimed period: no reset races.
        assert_eq!(w.figures(5_500, SECS(30)).requests, 40_001);
    }
}
