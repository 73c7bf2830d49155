//! Room for new connections at `max_connections`: the open connections that
//! wait for a request (new ones that sent nothing yet, keep-alive ones between
//! requests) can be closed to admit new ones, those idle longest first, the
//! way NGINX reuses its keep-alive connections when it runs out. A flood of
//! connections that send nothing then costs legitimate clients no more than
//! a short wait, instead of their place behind the flood in the accept queue.
//!
//! Each connection publishes, in its [`ConnState`], since when it has been
//! idle; the accept loop, finding every slot taken when a new connection
//! comes, asks the [`Registry`] to evict the oldest idle ones. The request
//! path pays a clock read, two relaxed stores and a waker registration per
//! request; the registry's lock is taken when a connection opens and closes,
//! and on eviction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use slab::Slab;

use super::conn::{ConnState, IdleSignal};

/// How many idle connections one full accept evicts at most (NGINX: 32).
pub const EVICT_BATCH: usize = 16;

/// The open HTTP connections of the process.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<Slab<Arc<ConnState>>>,
    /// Times a connection was parked between requests (see `server`).
    parks: AtomicU64,
    /// Tells a connection waiting for a slot that one went idle.
    idle: Arc<IdleSignal>,
}

/// One accept waiting for a slot; counted while it lives.
pub struct Waiting<'a>(&'a IdleSignal);

impl Waiting<'_> {
    /// Resolves at the next connection going idle (registered now, so one
    /// that goes idle before the caller polls it is not missed).
    pub fn next_idle(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.0.notify.notified());
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Removes its connection from the registry when dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    registry: &'a Registry,
    key: usize,
}

impl Registry {
    pub fn register(&self, state: Arc<ConnState>) -> Registered<'_> {
        let key = self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(state);
        Registered {
            registry: self,
            key,
        }
    }

    /// The signal its connections raise when they go idle.
    pub fn idle_signal(&self) -> Arc<IdleSignal> {
        Arc::clone(&self.idle)
    }

    /// Counts the caller as waiting for a slot until the guard drops.
    pub fn wait_for_idle(&self) -> Waiting<'_> {
        self.idle.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.idle)
    }

    pub fn parked(&self) {
        self.parks.fetch_add(1, Ordering::Relaxed);
    }

    /// Times a connection was parked between requests, since start.
    pub fn parks(&self) -> u64 {
        self.parks.load(Ordering::Relaxed)
    }

    /// Asks up to `max` idle connections, those idle longest, to close. Returns how many were asked.
    pub fn evict_idle(&self, max: usize) -> usize {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let mut idle: Vec<(u64, &Arc<ConnState>)> = conns
            .iter()
            .filter_map(|(_, state)| {
                let since = state.idle_since.load(Ordering::Relaxed);
                let idle = since != 0
                    && !state.evict.load(Ordering::Relaxed)
                    && !state.passthrough.load(Ordering::Relaxed);
                idle.then_some((since, state))
            })
            .collect();
        if idle.len() > max {
            idle.select_nth_unstable_by_key(max, |(since, _)| *since);
            idle.truncate(max);
        }
        for (_, state) in &idle {
            state.evict.store(true, Ordering::Relaxed);
            state.waker.wake();
        }
        idle.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(since: u64) -> Arc<ConnState> {
        let state = Arc::new(ConnState::new(crate::clock::Clock::new()));
        state.idle_since.store(since, Ordering::Relaxed);
        state
    }

    #[test]
    fn the_longest_idle_connections_are_evicted_and_busy_ones_never() {
        let registry = Registry::default();
        let states = [idle(30), idle(0), idle(10), idle(20), idle(0)];
        let _held: Vec<_> = states
            .iter()
            .map(|s| registry.register(Arc::clone(s)))
            .collect();
        assert_eq!(registry.evict_idle(2), 2);
        let evicted: Vec<bool> = states
            .iter()
            .map(|s| s.evict.load(Ordering::Relaxed))
            .collect();
        assert_eq!(evicted, [false, false, true, true, false]);
        // Already asked ones are not counted again; busy ones are never asked.
        assert_eq!(registry.evict_idle(10), 1);
        assert!(states[0].evict.load(Ordering::Relaxed));
        assert!(!states[1].evict.load(Ordering::Relaxed));
        assert_eq!(registry.evict_idle(10), 0);
    }

    #[test]
    fn a_closed_connection_leaves_the_registry() {
        let registry = Registry::default();
        let first = registry.register(idle(5));
        let second = registry.register(idle(6));
        assert_eq!(registry.len(), 2);
        drop(first);
        assert_eq!(registry.len(), 1);
        drop(second);
        assert_eq!(registry.len(), 0);
    }
}
