//! Request ids: 16 hex digits from a per-thread fast random generator.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
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
