//! Which version serves a request.
//!
//! [`choose`] is the whole decision, as SPEC §3 orders it: the override header
//! naming a known version; else the sticky key's bucket against the canary
//! threshold; else a random roll against the same threshold. Blue/green sends
//! everything to `active`, and `preview` only by override. When the chosen
//! version has no usable endpoint the other version of the release serves it
//! (a fallback), and when neither can, there is no decision (503).

/// Index of a version within its backend (the order of the compiled backend).
pub type VersionIdx = usize;

/// The prepared traffic split of one backend, built once per config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// One version, no release.
    Single(VersionIdx),
    /// Weighted canary: buckets below `threshold` (0..=10000) go to `canary`.
    Canary {
        stable: VersionIdx,
        canary: VersionIdx,
        threshold: u32,
    },
    /// Blue/green: `active` takes all traffic; `preview` only by override.
    BlueGreen {
        active: VersionIdx,
        preview: Option<VersionIdx>,
    },
}

/// What the request brings to the decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs {
    /// The version named by the override header, if it names a known one.
    pub forced: Option<VersionIdx>,
    /// The sticky key's bucket, when the release is sticky and the key present.
    pub sticky_bucket: Option<u32>,
    /// A uniform random roll in 0..10000, used when nothing else decides.
    pub roll: u32,
}

/// Why a version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Override,
    Sticky,
    Weight,
    Only,
    Fallback,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Override => "override",
            Reason::Sticky => "sticky",
            Reason::Weight => "weight",
            Reason::Only => "only",
            Reason::Fallback => "fallback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub version: VersionIdx,
    pub reason: Reason,
    /// Set when the first choice had no usable endpoint.
    pub fallback_from: Option<VersionIdx>,
}

impl Split {
    /// The version that would serve a request before looking at health.
    fn first_choice(&self, inputs: &Inputs) -> (VersionIdx, Reason) {
        if let Some(v) = inputs.forced {
            return (v, Reason::Override);
        }
        match *self {
            Split::Single(v) => (v, Reason::Only),
            Split::BlueGreen { active, .. } => (active, Reason::Only),
            Split::Canary {
                stable,
                canary,
                threshold,
            } => {
                let (roll, reason) = match inputs.sticky_bucket {
                    Some(bucket) => (bucket, Reason::Sticky),
                    None => (inputs.roll, Reason::Weight),
                };
                if roll < threshold {
                    (canary, reason)
                } else {
                    (stable, reason)
                }
            }
        }
    }

    /// The version that takes over when `from` cannot serve.
    fn other(&self, from: VersionIdx) -> Option<VersionIdx> {
        match *self {
            Split::Single(_) => None,
            Split::Canary { stable, canary, .. } => {
                Some(if from == stable { canary } else { stable })
            }
            Split::BlueGreen { active, preview } => {
                if from == active {
                    preview
                } else {
                    Some(active)
                }
            }
        }
    }
}

/// Decides the version for one request; `usable(v)` tells whether version `v`
/// has at least one healthy, non-ejected endpoint right now.
pub fn choose(
    split: &Split,
    inputs: &Inputs,
    usable: impl Fn(VersionIdx) -> bool,
) -> Option<Decision> {
    let (version, reason) = split.first_choice(inputs);
    if usable(version) {
        return Some(Decision {
            version,
            reason,
            fallback_from: None,
        });
    }
    let other = split
        .other(version)
        .filter(|&o| o != version && usable(o))?;
    Some(Decision {
        version: other,
        reason: Reason::Fallback,
        fallback_from: Some(version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::bucket::{bucket, threshold};
    use proptest::prelude::*;

    const STABLE: VersionIdx = 0;
    const CANARY: VersionIdx = 1;

    fn canary(weight: f64) -> Split {
        Split::Canary {
            stable: STABLE,
            canary: CANARY,
            threshold: threshold(weight),
        }
    }

    fn all_usable(_: VersionIdx) -> bool {
        true
    }

    fn pick(split: &Split, inputs: Inputs) -> Decision {
        choose(split, &inputs, all_usable).expect("a usable version")
    }

    #[test]
    fn override_header_wins_over_weight_and_stickiness() {
        let inputs = Inputs {
            forced: Some(CANARY),
            sticky_bucket: Some(9_999),
            roll: 9_999,
        };
        let d = pick(&canary(0.0), inputs);
        assert_eq!((d.version, d.reason), (CANARY, Reason::Override));
    }

    #[test]
    fn sticky_bucket_decides_instead_of_the_roll() {
        let d = pick(
            &canary(10.0),
            Inputs {
                sticky_bucket: Some(999),
                roll: 9_999,
                ..Inputs::default()
            },
        );
        assert_eq!((d.version, d.reason), (CANARY, Reason::Sticky));
        let d = pick(
            &canary(10.0),
            Inputs {
                sticky_bucket: Some(1_000),
                roll: 0,
                ..Inputs::default()
            },
        );
        assert_eq!((d.version, d.reason), (STABLE, Reason::Sticky));
    }

    #[test]
    fn weight_zero_never_picks_the_canary_and_hundred_always_does() {
        for roll in [0, 1, 5_000, 9_999] {
            assert_eq!(
                pick(
                    &canary(0.0),
                    Inputs {
                        roll,
                        ..Inputs::default()
                    }
                )
                .version,
                STABLE
            );
            assert_eq!(
                pick(
                    &canary(100.0),
                    Inputs {
                        roll,
                        ..Inputs::default()
                    }
                )
                .version,
                CANARY
            );
        }
    }

    #[test]
    fn blue_green_sends_everything_to_active_and_preview_only_by_override() {
        let split = Split::BlueGreen {
            active: 0,
            preview: Some(1),
        };
        for roll in [0, 9_999] {
            assert_eq!(
                pick(
                    &split,
                    Inputs {
                        roll,
                        ..Inputs::default()
                    }
                )
                .version,
                0
            );
        }
        assert_eq!(
            pick(
                &split,
                Inputs {
                    forced: Some(1),
                    ..Inputs::default()
                }
            )
            .version,
            1
        );
    }

    #[test]
    fn an_unusable_choice_falls_back_to_the_other_version() {
        let d = choose(&canary(100.0), &Inputs::default(), |v| v == STABLE).expect("stable serves");
        assert_eq!(
            d,
            Decision {
                version: STABLE,
                reason: Reason::Fallback,
                fallback_from: Some(CANARY)
            }
        );
        let d = choose(&canary(0.0), &Inputs::default(), |v| v == CANARY).expect("canary serves");
        assert_eq!(d.fallback_from, Some(STABLE));
    }

    #[test]
    fn nothing_usable_means_no_decision() {
        assert_eq!(choose(&canary(50.0), &Inputs::default(), |_| false), None);
        assert_eq!(
            choose(&Split::Single(0), &Inputs::default(), |_| false),
            None
        );
    }

    #[test]
    fn blue_green_without_preview_has_no_fallback() {
        let split = Split::BlueGreen {
            active: 0,
            preview: None,
        };
        assert_eq!(choose(&split, &Inputs::default(), |_| false), None);
    }

    proptest! {
        #[test]
        fn weight_zero_never_picks_canary(roll in 0u32..10_000, sticky in proptest::option::of(0u32..10_000)) {
            let d = pick(&canary(0.0), Inputs { roll, sticky_bucket: sticky, ..Inputs::default() });
            prop_assert_eq!(d.version, STABLE);
        }

        #[test]
        fn a_sticky_client_on_the_canary_stays_there_as_weight_grows(
            key in "[a-zA-Z0-9]{1,32}",
            low in 0.0f64..100.0,
            step in 0.0f64..100.0,
        ) {
            let b = Some(bucket(key.as_bytes()));
            let before = pick(&canary(low), Inputs { sticky_bucket: b, ..Inputs::default() });
            let after = pick(&canary((low + step).min(100.0)), Inputs { sticky_bucket: b, ..Inputs::default() });
            if before.version == CANARY {
                prop_assert_eq!(after.version, CANARY);
            }
        }

        #[test]
        fn random_rolls_converge_to_the_weight(weight in 1u32..100, seed in any::<u64>()) {
            // A deterministic stream of rolls from the seed (SplitMix64).
            let mut state = seed;
            let mut next = || {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                ((z ^ (z >> 31)) % 10_000) as u32
            };
            let n = 20_000;
            let split = canary(f64::from(weight));
            let hits = (0..n)
                .filter(|_| pick(&split, Inputs { roll: next(), ..Inputs::default() }).version == CANARY)
                .count() as f64;
            let p = f64::from(weight) / 100.0;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            prop_assert!((hits - n as f64 * p).abs() <= 6.0 * sd, "{} hits at {}%", hits, weight);
        }
    }
}
