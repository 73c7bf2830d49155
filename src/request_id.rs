//! Request ids (16 hex digits) and the per-thread random sources of the
//! request path: a fast generator, and the weighted-split roll.

use std::cell::{Cell, RefCell};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
    /// The split roll's position: a random start, then golden-ratio steps.
    static ROLL: Cell<u64> = Cell::new(rand::random());
}

/// 2^64 / φ: successive multiples spread as evenly as any sequence can.
const GOLDEN_STEP: u64 = 0x9e37_79b9_7f4a_7c15;

/// The next weighted-split roll in `0..10000` for this thread.
///
/// A random starting point followed by golden-ratio steps (an additive
/// recurrence): each roll looks random, but any run of N consecutive rolls
/// hits a weight's share within about log(N)/N, where independent random
/// rolls would wander by ±√N. So 1,000 requests at 10 % send 99–101 to the
/// canary, as a weighted round robin would, while no fixed pattern ties a
/// client's requests together.
pub fn split_roll() -> u32 {
    ROLL.with(|position| {
        let next = position.get().wrapping_add(GOLDEN_STEP);
        position.set(next);
        (((next >> 32) * 10_000) >> 32) as u32
    })
}

/// A uniform random number in `0..bound`, from this thread's generator.
pub fn random_below(bound: u32) -> u32 {
    RNG.with(|rng| rng.borrow_mut().random_range(0..bound))
}

/// A random u64 from this thread's generator.
pub fn random_u64() -> u64 {
    RNG.with(|rng| rng.borrow_mut().random())
}

/// A new request id: 16 lower-case hex digits.
pub fn new_request_id() -> [u8; 16] {
    let mut n = random_u64();
    let mut out = [b'0'; 16];
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_roll;

    #[test]
    fn split_rolls_hit_every_weight_evenly_in_short_runs() {
        for threshold in [1_000u32, 2_500, 5_000, 9_000] {
            for _ in 0..20 {
                let hits = (0..1_000).filter(|_| split_roll() < threshold).count() as i64;
                let expected = i64::from(threshold) / 10;
                assert!(
                    (hits - expected).abs() <= 4,
                    "{hits} of 1000 below {threshold}"
                );
            }
        }
    }

    #[test]
    fn split_rolls_stay_in_range() {
        assert!((0..100_000).all(|_| split_roll() < 10_000));
    }
}
