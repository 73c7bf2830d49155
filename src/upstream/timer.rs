//! [`HeadTimer`]: the timer bounding the wait for a response head, kept from
//! one request to the next of a client connection.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The timer bounding the wait for a response head, kept from one request
/// to the next of a client connection: re-arming a registered tokio `Sleep`
/// for a later deadline only moves its expiry, where a new `timeout` per
/// request inserts into and removes from the timer wheel each time.
#[derive(Default)]
pub struct HeadTimer(Option<Pin<Box<Sleep>>>);

impl HeadTimer {
    /// Runs `fut` for at most `limit`; `None` when the time ran out.
    ///
    /// Takes the future pinned where the caller made it: an upstream
    /// exchange is a large future, and taking it by value would move it
    /// (and keep a second copy in this one's state) on every request.
    pub async fn run<F: Future>(
        &mut self,
        limit: Duration,
        mut fut: Pin<&mut F>,
    ) -> Option<F::Output> {
        let deadline = Instant::now() + limit;
        let sleep = match &mut self.0 {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    /// Each run is bounded by its own limit, whether the reused timer fired
    /// before, is re-armed earlier (re-registered) or later (only extended).
    /// On paused time: every bound is exact.
    #[tokio::test(start_paused = true)]
    async fn a_reused_head_timer_bounds_each_run_by_its_own_limit() {
        let ms = Duration::from_millis;
        let mut timer = HeadTimer::default();
        let never = std::future::pending::<u8>;
        let after = |d: Duration, v: u8| async move {
            tokio::time::sleep(d).await;
            v
        };

        let started = Instant::now();
        assert_eq!(timer.run(ms(50), pin!(never())).await, None);
        assert_eq!(started.elapsed(), ms(50));
        // After firing: re-armed for longer, the work finishes first.
        let started = Instant::now();
        assert_eq!(timer.run(ms(2000), pin!(after(ms(100), 1))).await, Some(1));
        assert_eq!(started.elapsed(), ms(100));
        // Armed for 2 s and still registered: an earlier deadline is kept.
        let started = Instant::now();
        assert_eq!(timer.run(ms(50), pin!(never())).await, None);
        assert_eq!(started.elapsed(), ms(50));
        // Re-armed later while registered (the extension path): fires at
        // the new deadline, not the old one.
        assert_eq!(timer.run(ms(300), pin!(after(ms(10), 2))).await, Some(2));
        let started = Instant::now();
        assert_eq!(timer.run(ms(600), pin!(after(ms(450), 3))).await, Some(3));
        assert_eq!(started.elapsed(), ms(450));
        let started = Instant::now();
        assert_eq!(timer.run(ms(400), pin!(never())).await, None);
        assert_eq!(started.elapsed(), ms(400));
    }
}
