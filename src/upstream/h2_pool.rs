//! The HTTP/2 connections of one worker thread, per endpoint. Each carries
//! many streams at once, up to the peer's `MAX_CONCURRENT_STREAMS`; when
//! every connection is full a new one is opened (hyper would otherwise queue
//! the stream on a full connection). A [`StreamSlot`] counts a stream on
//! its connection until the response body is done. While a connection to an
//! endpoint is being made, the requests that find no room wait for it
//! instead of each making their own: a burst on a cold pool opens one
//! connection, not one per request.
//!
//! Thread-local like the HTTP/1 pool: a worker's h2 connections are driven
//! by its own runtime. Connections that closed (GOAWAY, an error, a missed
//! ping) are dropped at the next checkout; idle ones beyond the first are
//! closed by the sweep after the pool's idle timeout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::h2_client::H2Sender;
use super::pool::{IdMap, IDLE_TIMEOUT};
use crate::error::ProxyError;

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

/// How a connection being made ended; `None` while it is being made.
pub type Outcome = Option<Result<(), ProxyError>>;

thread_local! {
    static CONNS: RefCell<IdMap<Vec<H2Conn>>> = RefCell::new(HashMap::default());
    /// The endpoints a connection is being made to, and its outcome.
    static CONNECTING: RefCell<IdMap<watch::Receiver<Outcome>>> = RefCell::new(HashMap::default());
}

/// What a request gets for a stream to an endpoint.
pub enum Checkout {
    /// A stream on a connection with room.
    Ready(H2Sender, StreamSlot),
    /// No connection has room and another request is making one: wait for
    /// its outcome, then look again.
    Wait(watch::Receiver<Outcome>),
    /// No connection has room: make one, holding this meanwhile.
    Connect(Connecting),
}

/// Held by the one request making a connection to an endpoint while others
/// wait for it. Dropped without an outcome (the request went away), it
/// lets them look again.
pub struct Connecting {
    id: u64,
    outcome: watch::Sender<Outcome>,
}

impl Connecting {
    /// Tells the waiting requests how it ended (a new connection is pooled
    /// by then).
    pub fn done<T>(self, made: &Result<T, ProxyError>) {
        let outcome = made.as_ref().map(|_| ()).map_err(Clone::clone);
        self.outcome.send_replace(Some(outcome));
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        // `try_with`: not during the thread's teardown.
        let _ = CONNECTING.try_with(|connecting| connecting.borrow_mut().remove(&self.id));
    }
}

/// Waits for the connection another request is making: its failure, or
/// `Ok` to look again (it was made, or the request making it went away).
pub async fn wait(mut made: watch::Receiver<Outcome>) -> Result<(), ProxyError> {
    match made.wait_for(Option::is_some).await.as_deref() {
        Ok(Some(Err(error))) => Err(error.clone()),
        _ => Ok(()),
    }
}

/// A stream to endpoint `id`: on a connection with room, or else waiting
/// for the one being made, or else making one.
pub fn checkout(id: u64) -> Checkout {
    if let Some((sender, slot)) = with_room(id) {
        return Checkout::Ready(sender, slot);
    }
    CONNECTING.with(|connecting| {
        let mut connecting = connecting.borrow_mut();
        if let Some(made) = connecting.get(&id) {
            return Checkout::Wait(made.clone());
        }
        let (outcome, made) = watch::channel(None);
        connecting.insert(id, made);
        Checkout::Connect(Connecting { id, outcome })
    })
}

/// A connection to endpoint `id` with room for one more stream, and the
/// stream's slot on it.
fn with_room(id: u64) -> Option<(H2Sender, StreamSlot)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_request_connects_while_the_others_wait_for_its_outcome() {
        let Checkout::Connect(connecting) = checkout(1) else {
            panic!("the first request makes the connection");
        };
        let Checkout::Wait(made) = checkout(1) else {
            panic!("the second waits for it");
        };
        connecting.done::<()>(&Err(ProxyError::Connect("refused".into())));
        let outcome = wait(made).await;
        assert!(
            matches!(outcome, Err(ProxyError::Connect(_))),
            "{outcome:?}"
        );
        // That one is over: the next request makes a connection again.
        assert!(matches!(checkout(1), Checkout::Connect(_)));
    }

    #[tokio::test]
    async fn a_connecting_request_that_goes_away_lets_the_waiters_look_again() {
        let Checkout::Connect(connecting) = checkout(2) else {
            panic!("the first request makes the connection");
        };
        let Checkout::Wait(made) = checkout(2) else {
            panic!("the second waits for it");
        };
        drop(connecting);
        // Nothing to pass on: look again.
        assert!(wait(made).await.is_ok());
        assert!(matches!(checkout(2), Checkout::Connect(_)));
    }
}
