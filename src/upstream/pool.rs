//! The upstream connection pool of one worker thread: idle HTTP/1.1
//! connections (hyper `http1::SendRequest` handles) per endpoint.
//!
//! Each worker runs its own single-threaded runtime, so its pool is a
//! thread-local: no lock, no atomic, and a connection is only ever used by the
//! runtime that drives it. A handle is checked out for one exchange and
//! checked back in when the response body has been read to its end (see
//! `body::UpstreamBody`); a response dropped early drops its connection.
//! Idle handles are evicted after [`IDLE_TIMEOUT`], when their connection
//! closes, or beyond [`MAX_IDLE_PER_ENDPOINT`]; a sweep every
//! [`SWEEP_INTERVAL`] also forgets endpoints a reload removed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use super::body::RequestBody;

/// Idle upstream connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept per endpoint and worker
/// (each holds ~26 KiB of hyper buffers and channels; NGINX's `keepalive` is
/// commonly 32–320 per worker). More concurrent requests than this still
/// open connections; the extra ones close once idle.
pub const MAX_IDLE_PER_ENDPOINT: usize = 128;
/// How often idle connections are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

pub type Sender = SendRequest<RequestBody>;

/// A pooled connection lent to one exchange; goes back to the worker's pool
/// when the response body has been read to its end.
pub struct Pooled {
    /// The endpoint's id: the pool's key.
    pub id: u64,
    pub sender: Sender,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Hashes endpoint ids, which are distinct counters, by one multiplication
/// (the default SipHash costs more than the rest of a checkout).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads consecutive ids over the high bits.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by endpoint id.
pub type IdMap<T> = HashMap<u64, T, BuildHasherDefault<IdHasher>>;

thread_local! {
    static IDLE: RefCell<IdMap<Vec<Idle>>> = RefCell::new(HashMap::default());
}

/// An idle connection to endpoint `id`, if one is still usable.
pub fn checkout(id: u64) -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&id)?;
        // Most recently used first: warm connections, and the cold ones age out.
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    })
}

/// Returns a connection whose last exchange ended cleanly.
pub fn checkin(pooled: Pooled) {
    let Pooled { id, sender } = pooled;
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(id).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    });
}

/// Drops closed and expired connections, and endpoints `alive` rejects.
pub fn sweep(alive: &dyn Fn(u64) -> bool) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|id, list| {
            if !alive(*id) {
                return false;
            }
            list.retain(|entry| !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT);
            !list.is_empty()
        });
    });
}
