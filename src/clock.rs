//! The gateway's one time source, built on `tokio::time` so that tests can
//! pause and advance it (`tokio::time::pause`): milliseconds since the
//! clock was made, for everything that compares times — analysis windows,
//! outlier ejection, idle connections — and wall-clock milliseconds that
//! advance with it, for what is shown or persisted (release phases' times).
//!
//! A [`Clock`] is a value, made once per gateway and passed to whatever
//! reads time; code that only needs "now" for a deadline uses
//! `tokio::time::Instant` directly, the same source.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    /// Wall-clock milliseconds since the Unix epoch at `origin`.
    wall_origin_ms: u64,
}

impl Clock {
    /// A clock starting now (on the paused clock, when a test paused it).
    pub fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            origin: Instant::now(),
            wall_origin_ms: wall,
        }
    }

    /// Milliseconds since the clock was made, never 0 (0 means "never" or
    /// "not set" in the atomics that store these).
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `at` in this clock's milliseconds (never 0).
    pub fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64 + 1
    }

    /// Wall-clock milliseconds since the Unix epoch, advancing with
    /// [`Clock::now_ms`].
    pub fn wall_ms(&self) -> u64 {
        self.wall_origin_ms + self.now_ms() - 1
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn paused_time_drives_both_readings() {
        let clock = Clock::new();
        let (mono, wall) = (clock.now_ms(), clock.wall_ms());
        assert_eq!(mono, 1, "never 0, even at the origin");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now_ms(), mono + 1500);
        assert_eq!(clock.wall_ms(), wall + 1500);
    }
}
