//! The HTTP/2 connections of one worker thread, per endpoint. Each carries
//! many streams at once, up to the peer's `MAX_CONCURRENT_STREAMS`; when
//! every connection is full a new one is opened (hyper would otherwise queue
//! the stream on a full connection). A [`StreamSlot`] counts a stream on
//! its connection until the response body is done.
//!
//! Thread-local like the HTTP/1 pool: a worker's h2 connections are driven
//! by its own runtime. Connections that closed (GOAWAY, an error, a missed
//! ping) are dropped at the next checkout; idle ones beyond the first are
//! closed by the sweep after the pool's idle timeout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::h2_client::H2Sender;
use super::pool::{IdMap, IDLE_TIMEOUT};

struct H2Conn {
    sender: H2Sender,
    /// Streams open on it now.
    streams: Arc<AtomicUsize>,
    /// The peer's `MAX_CONCURRENT_STREAMS`, kept current by the connection.
    max_streams: Arc<AtomicUsize>,
    last_used: Instant,
}

impl H2Conn {
    /// The streams the peer lets us open at once (at least one).
    fn capacity(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed).max(1)
    }
}

/// One open stream on a pooled h2 connection; frees its place when dropped.
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

thread_local! {
    static CONNS: RefCell<IdMap<Vec<H2Conn>>> = RefCell::new(HashMap::default());
}

/// A connection to endpoint `id` with room for one more stream, and the
/// stream's slot on it.
pub fn checkout(id: u64) -> Option<(H2Sender, StreamSlot)> {
    let now = Instant::now();
    CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        let list = conns.get_mut(&id)?;
        list.retain(|c| !c.sender.is_closed());
        let conn = list
            .iter_mut()
            .find(|c| c.streams.load(Ordering::Acquire) < c.capacity())?;
        conn.last_used = now;
        Some(take_slot(conn))
    })
}

/// Pools a new connection to endpoint `id` and takes its first stream.
pub fn add(id: u64, sender: H2Sender, max_streams: Arc<AtomicUsize>) -> (H2Sender, StreamSlot) {
    let mut conn = H2Conn {
        sender,
        streams: Arc::default(),
        max_streams,
        last_used: Instant::now(),
    };
    let taken = take_slot(&mut conn);
    CONNS.with(|conns| conns.borrow_mut().entry(id).or_default().push(conn));
    taken
}

fn take_slot(conn: &mut H2Conn) -> (H2Sender, StreamSlot) {
    conn.streams.fetch_add(1, Ordering::AcqRel);
    (conn.sender.clone(), StreamSlot(Arc::clone(&conn.streams)))
}

/// Drops closed connections, idle ones past the idle timeout (keeping one
/// per endpoint), and every connection of endpoints `alive` rejects.
pub fn sweep(alive: &dyn Fn(u64) -> bool) {
    let now = Instant::now();
    CONNS.with(|conns| {
        conns.borrow_mut().retain(|id, list| {
            if !alive(*id) {
                return false;
            }
            let mut kept = 0;
            list.retain(|c| {
                let idle = c.streams.load(Ordering::Acquire) == 0
                    && now.saturating_duration_since(c.last_used) >= IDLE_TIMEOUT;
                let keep = !c.sender.is_closed() && (!idle || kept == 0);
                kept += usize::from(keep);
                keep
            });
            !list.is_empty()
        });
    });
}
