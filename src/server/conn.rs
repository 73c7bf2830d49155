//! The state one client connection shares between its guard (`guard`), the
//! requests served on it (the request path's bodies) and the eviction
//! registry (`evict`), and the clock they stamp it with.
//!
//! The low module of the server: it imports nothing of the server, the
//! request path or the upstream, so all of them can use it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use atomic_waker::AtomicWaker;
use tokio::sync::Notify;

use crate::clock::Clock;

/// How an accept waiting for a slot learns that a connection went idle (and
/// can be evicted for it): a connection going idle pays one relaxed load,
/// and notifies only while someone waits.
#[derive(Debug, Default)]
pub struct IdleSignal {
    pub(super) waiting: AtomicUsize,
    pub(super) notify: Notify,
}

impl IdleSignal {
    /// A connection went idle.
    pub fn went_idle(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }
}

/// State shared between a connection's guard and the requests served on it.
#[derive(Debug)]
pub struct ConnState {
    /// Raised whenever the connection goes idle (see `evict`).
    pub idle_signal: Arc<IdleSignal>,
    /// What `idle_since` and `last_head` are stamped with.
    pub clock: Clock,
    /// Responses finished on this connection. Written by the response body
    /// when it is dropped; read by the guard to know the next head may start.
    pub completed: AtomicU64,
    /// Set by the proxy when the connection stops carrying HTTP/1 messages
    /// the guard can follow (a 101 upgrade, or a response sent before the
    /// request body was read). The guard then stops inspecting.
    pub passthrough: AtomicBool,
    /// Whether the current request's body has been read to its end. Set by
    /// the request path (HTTP/1 carries one request at a time).
    pub body_done: AtomicBool,
    /// While the connection waits for a request: since when, in the clock's
    /// milliseconds; 0 otherwise. Written by the guard and by
    /// the response body when it ends; read by the eviction registry.
    pub idle_since: AtomicU64,
    /// Set to ask an idle connection to close (to admit a new one).
    pub evict: AtomicBool,
    /// Wakes the connection's task when it is asked to close, and when its
    /// response ends if `wake_when_done`.
    pub waker: AtomicWaker,
    /// The guard parks the connection as soon as this response ends, so it
    /// wants to hear of it at once.
    pub wake_when_done: AtomicBool,
    /// Set by the guard while the client's socket takes no more bytes (the
    /// client reads slower than the upstream sends); an HTTP/1 response body
    /// waits for it to clear instead of queueing more (`write_waker`).
    pub write_blocked: AtomicBool,
    /// The response body waiting for `write_blocked` to clear.
    pub write_waker: AtomicWaker,
    /// When the connection's last request head began, in the clock's
    /// milliseconds (0: none yet). Kept across parks.
    pub last_head: AtomicU64,
}

impl ConnState {
    pub fn new(clock: Clock) -> Self {
        Self::with_signal(clock, Arc::default())
    }

    /// A connection that raises `idle_signal` whenever it goes idle.
    pub fn with_signal(clock: Clock, idle_signal: Arc<IdleSignal>) -> Self {
        ConnState {
            idle_signal,
            clock,
            completed: AtomicU64::new(0),
            passthrough: AtomicBool::new(false),
            body_done: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            evict: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            wake_when_done: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            write_waker: AtomicWaker::new(),
            last_head: AtomicU64::new(0),
        }
    }

    /// Idle (waiting for a request) from now on.
    pub fn mark_idle(&self) {
        self.idle_since
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.idle_signal.went_idle();
    }

    /// Ready for a new hyper connection on the same socket (after parking).
    pub fn reset(&self) {
        self.completed.store(0, Ordering::Relaxed);
        self.passthrough.store(false, Ordering::Relaxed);
        self.body_done.store(false, Ordering::Relaxed);
    }

    /// A response on this connection ended (sent or dropped): the guard may
    /// look for the next request head, or stop following the connection
    /// when the request's body was not read to its end.
    pub fn response_ended(&self) {
        if !self.body_done.load(Ordering::Relaxed) {
            // The answer ended before the request body did: the guard can no
            // longer tell where the next request head starts.
            self.passthrough.store(true, Ordering::Relaxed);
        } else if !self.passthrough.load(Ordering::Relaxed) {
            // Idle from now on, as far as evicting at max_connections goes.
            self.mark_idle();
        }
        self.completed.fetch_add(1, Ordering::Release);
        if self.wake_when_done.load(Ordering::Relaxed) {
            self.waker.wake();
        }
    }
}
