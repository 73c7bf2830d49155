//! Pure release logic: no I/O, no async, no clock reads (time is an argument).
//!
//! - `bucket`: sticky key → stable bucket 0..9999; weight → bucket threshold.
//! - `split`: which version serves a request, from the override header, the
//!   sticky bucket or a random roll, with fallback when a version is unusable.
//! - `table`: the routing table compiled from the config: host + path → route.
//! - `verdict`: a version's window figures against the analysis thresholds.
//! - `progress`: the release state machine: phases, steps, rollback, actions.

pub mod bucket;
pub mod progress;
pub mod split;
pub mod table;
pub mod verdict;
