//! Pure release logic: no I/O, no async, no clock reads (time is an argument).
//!
//! - `bucket`: sticky key → stable bucket 0..9999; weight → bucket threshold.
//! - `split`: which version serves a request, from the override header, the
//!   sticky bucket or a random roll, with fallback when a version is unusable.
//! - `table`: the routing table compiled from the config: host + path → route.
//! - `verdict`: a version's window figures against the analysis thresholds.
//! - `progress`: the canary state machine: phases, steps, rollback, actions.
//! - `blue_green`: the blue/green state machine: switch, watch, go back.

pub mod blue_green;
pub mod bucket;
pub mod progress;
pub mod split;
pub mod table;
pub mod verdict;
