//! Sticky bucketing: a key (cookie or header value) maps to one of 10,000
//! buckets by a fixed hash, so the same client lands in the same bucket on
//! every replica, across reloads, restarts and releases of Switchyard itself.
//!
//! A request goes to the canary when `bucket < weight × 100`. Raising the
//! weight only adds buckets at the top of the range, so a client that is on
//! the canary at 10 % stays on it at 50 %.

/// Number of buckets: weights have a resolution of 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// FNV-1a over the key, then the SplitMix64 finaliser to spread the low bits.
/// Both are fixed algorithms with fixed constants: never change them, or every
/// sticky client moves.
pub fn bucket(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % u64::from(BUCKETS)) as u32
}

/// The canary's share of buckets for a weight in percent (0–100, decimals
/// allowed); buckets below the threshold go to the canary.
pub fn threshold(weight_percent: f64) -> u32 {
    if weight_percent.is_nan() {
        return 0;
    }
    (weight_percent * 100.0)
        .round()
        .clamp(0.0, f64::from(BUCKETS)) as u32
}

/// The value of cookie `name` in a `Cookie` header value (`a=1; b=2`).
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        (key.trim_ascii() == name.as_bytes()).then(|| {
            let value = value.trim_ascii();
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_keys_have_fixed_buckets() {
        // Pinned values: if these change, every sticky client on every
        // replica would move version after an upgrade.
        let pinned = [bucket(b"alice"), bucket(b"bob"), bucket(b"user-42")];
        assert_eq!(pinned, [PINNED_ALICE, PINNED_BOB, PINNED_USER_42]);
    }

    const PINNED_ALICE: u32 = 572;
    const PINNED_BOB: u32 = 3964;
    const PINNED_USER_42: u32 = 8355;

    #[test]
    fn cookie_values_are_found_among_others() {
        assert_eq!(cookie_value(b"a=1; sy=abc; b=2", "sy"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(b"sy=\"q\"", "sy"), Some(&b"q"[..]));
        assert_eq!(cookie_value(b"xsy=1; sy2=3", "sy"), None);
        assert_eq!(cookie_value(b"garbage;;=;", "sy"), None);
        assert_eq!(cookie_value(b"", "sy"), None);
    }

    #[test]
    fn threshold_maps_percent_to_buckets() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(10.0), 1000);
        assert_eq!(threshold(12.34), 1234);
        assert_eq!(threshold(100.0), BUCKETS);
        assert_eq!(threshold(150.0), BUCKETS);
        assert_eq!(threshold(-1.0), 0);
        assert_eq!(threshold(f64::NAN), 0);
    }

    #[test]
    fn buckets_spread_evenly() {
        let n = 100_000u32;
        let below = (0..n)
            .filter(|i| bucket(format!("client-{i}").as_bytes()) < 1000)
            .count();
        // 10 % expected; binomial sd ≈ 95, allow ±6 sd.
        assert!(
            (9_430..=10_570).contains(&below),
            "{below} of {n} keys below 10%"
        );
    }

    proptest! {
        #[test]
        fn bucket_is_in_range_and_deterministic(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = bucket(&key);
            prop_assert!(b < BUCKETS);
            prop_assert_eq!(b, bucket(&key));
        }

        #[test]
        fn canary_membership_is_monotone_in_weight(
            key in "[a-z0-9-]{1,24}",
            low in 0.0f64..=100.0,
            extra in 0.0f64..=100.0,
        ) {
            let high = (low + extra).min(100.0);
            let b = bucket(key.as_bytes());
            if b < threshold(low) {
                prop_assert!(b < threshold(high), "on canary at {low}% but not at {high}%");
            }
        }
    }
}
