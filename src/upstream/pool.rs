//! The upstream connection pool of one worker thread: idle HTTP/1.1
//! connections (hyper `http1::SendRequest` handles) per endpoint.
//!
//! Each worker runs its own single-threaded runtime, so its pool is a
//! thread-local: no lock, no atomic, and a connection is only ever used by the
//! runtime that drives it. A handle is checked out for one exchange and
//! checked back in when the response body has been read to its end (see
//! `response_body::UpstreamBody`); a response dropped early drops its connection.
//! Idle handles are evicted after [`IDLE_TIMEOUT`], when their connection
//! closes, or beyond [`MAX_IDLE_PER_ENDPOINT`]; a sweep every
//! [`SWEEP_INTERVAL`] also forgets endpoints a reload removed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::request_body::RequestBody;

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

/// What the pool needs to know of a connection.
pub trait Connection {
    /// The peer closed it (or it failed): it can carry nothing more.
    fn is_closed(&self) -> bool;
}

impl Connection for Sender {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

/// One endpoint's idle connections, the most recently used last. Times come
/// in as arguments (the tokio clock), so tests drive them.
#[derive(Debug)]
pub struct IdleList<C> {
    entries: Vec<(C, Instant)>,
}

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        IdleList {
            entries: Vec::new(),
        }
    }
}

impl<C: Connection> IdleList<C> {
    /// The most recently used connection still open and idle for less than
    /// [`IDLE_TIMEOUT`] at `now` (warm connections first; the cold ones age
    /// out); the dead ones on the way are dropped.
    pub fn take(&mut self, now: Instant) -> Option<C> {
        while let Some((conn, since)) = self.entries.pop() {
            if !conn.is_closed() && now.saturating_duration_since(since) < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn`, idle from `now`, unless it is closed or the list holds
    /// [`MAX_IDLE_PER_ENDPOINT`] already (then it is dropped, closing it).
    pub fn put(&mut self, conn: C, now: Instant) {
        if !conn.is_closed() && self.entries.len() < MAX_IDLE_PER_ENDPOINT {
            self.entries.push((conn, now));
        }
    }

    /// Drops the closed and expired connections.
    pub fn prune(&mut self, now: Instant) {
        self.entries.retain(|(conn, since)| {
            !conn.is_closed() && now.saturating_duration_since(*since) < IDLE_TIMEOUT
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
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
    static IDLE: RefCell<IdMap<IdleList<Sender>>> = RefCell::new(HashMap::default());
}

/// An idle connection to endpoint `id`, if one is still usable.
pub fn checkout(id: u64) -> Option<Sender> {
    let now = Instant::now();
    IDLE.with(|idle| idle.borrow_mut().get_mut(&id)?.take(now))
}

/// Returns a connection whose last exchange ended cleanly.
pub fn checkin(pooled: Pooled) {
    let Pooled { id, sender } = pooled;
    if sender.is_closed() {
        return;
    }
    let now = Instant::now();
    IDLE.with(|idle| idle.borrow_mut().entry(id).or_default().put(sender, now));
}

/// Drops closed and expired connections, and endpoints `alive` rejects.
pub fn sweep(alive: &dyn Fn(u64) -> bool) {
    let now = Instant::now();
    IDLE.with(|idle| {
        idle.borrow_mut().retain(|id, list| {
            if !alive(*id) {
                return false;
            }
            list.prune(now);
            !list.is_empty()
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use tokio::time::advance;

    /// A connection whose closing the test controls.
    #[derive(Debug, Clone, Default)]
    struct Fake {
        id: u32,
        closed: Rc<Cell<bool>>,
    }

    impl Connection for Fake {
        fn is_closed(&self) -> bool {
            self.closed.get()
        }
    }

    fn fake(id: u32) -> Fake {
        Fake {
            id,
            ..Fake::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let mut list = IdleList::default();
        list.put(fake(1), Instant::now());
        advance(IDLE_TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(list.take(Instant::now()).map(|c| c.id), Some(1));
        list.put(fake(2), Instant::now());
        advance(IDLE_TIMEOUT).await;
        assert!(
            list.take(Instant::now()).is_none(),
            "expired at the timeout"
        );
        assert!(list.is_empty(), "and dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn the_most_recently_used_comes_first_and_closed_ones_are_skipped() {
        let mut list = IdleList::default();
        let (a, b, c) = (fake(1), fake(2), fake(3));
        list.put(a, Instant::now());
        advance(Duration::from_secs(1)).await;
        list.put(b, Instant::now());
        list.put(c.clone(), Instant::now());
        c.closed.set(true);
        assert_eq!(list.take(Instant::now()).map(|c| c.id), Some(2));
        assert_eq!(list.take(Instant::now()).map(|c| c.id), Some(1));
        assert!(list.take(Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn prune_drops_expired_and_closed_connections_only() {
        let mut list = IdleList::default();
        list.put(fake(1), Instant::now());
        advance(IDLE_TIMEOUT / 2).await;
        let closed = fake(2);
        list.put(closed.clone(), Instant::now());
        list.put(fake(3), Instant::now());
        closed.closed.set(true);
        advance(IDLE_TIMEOUT / 2).await;
        list.prune(Instant::now());
        assert_eq!(list.len(), 1);
        assert_eq!(list.take(Instant::now()).map(|c| c.id), Some(3));
    }

    #[test]
    fn at_most_the_cap_is_kept_and_closed_connections_never() {
        let mut list = IdleList::default();
        let now = Instant::now();
        for id in 0..(MAX_IDLE_PER_ENDPOINT as u32 + 10) {
            list.put(fake(id), now);
        }
        assert_eq!(list.len(), MAX_IDLE_PER_ENDPOINT);
        let mut other = IdleList::default();
        let closed = fake(1);
        closed.closed.set(true);
        other.put(closed, now);
        assert!(other.is_empty());
    }
}
