//! The blue/green release state machine (SPEC §4), as plain data and pure
//! functions: `stable`, then after a switch of `active` `progressing` for one
//! analysis window, going back to the previous active (`rolled_back`) if the
//! new one fails within it. Time comes in as an argument.

use serde::{Deserialize, Serialize};

use super::progress::{Action, Change, Phase};
use super::verdict::Verdict;
use crate::events::EventKind;

/// The live state of a blue/green release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueGreen {
    pub identity: String,
    pub phase: Phase,
    /// The version taking traffic now.
    pub active: String,
    /// The version to go back to if `active` fails soon after a switch.
    pub previous: Option<String>,
    pub switched_ms: Option<u64>,
    pub reason: Option<String>,
    pub since_ms: u64,
    /// The configured `active`, to notice config switches.
    pub configured_active: String,
}

impl BlueGreen {
    pub fn start(identity: String, active: &str, now_ms: u64) -> BlueGreen {
        BlueGreen {
            identity,
            phase: Phase::Stable,
            active: active.to_string(),
            previous: None,
            switched_ms: None,
            reason: None,
            since_ms: now_ms,
            configured_active: active.to_string(),
        }
    }

    /// The config now names `active`: a different one is a switch, watched
    /// for one window.
    pub fn reconfigure(&mut self, active: &str, identity: String, now_ms: u64) -> Option<Change> {
        if active == self.configured_active {
            return None;
        }
        let from = std::mem::replace(&mut self.active, active.to_string());
        self.configured_active = active.to_string();
        self.identity = identity;
        self.previous = Some(from.clone());
        self.switched_ms = Some(now_ms);
        self.reason = None;
        self.phase = Phase::Progressing;
        self.since_ms = now_ms;
        Some(Change::new(
            EventKind::Step,
            format!("switched from {from} to {active}"),
        ))
    }

    /// One analysis interval over the active version.
    pub fn tick(&mut self, verdict: &Verdict, window_ms: u64, now_ms: u64) -> Option<Change> {
        if self.phase != Phase::Progressing {
            return None;
        }
        let switched = self.switched_ms.unwrap_or(0);
        // Blue/green judges the new active on its own: there is no baseline
        // taking traffic beside it, so a hold never arrives here.
        if let Verdict::Failing(reason) = verdict {
            let previous = self.previous.take()?;
            let failed = std::mem::replace(&mut self.active, previous.clone());
            self.reason = Some(reason.clone());
            self.phase = Phase::RolledBack;
            self.since_ms = now_ms;
            return Some(Change::new(
                EventKind::Rollback,
                format!("{reason}: back from {failed} to {previous}"),
            ));
        }
        if now_ms.saturating_sub(switched) >= window_ms {
            self.phase = Phase::Stable;
            self.since_ms = now_ms;
            self.previous = None;
            return Some(Change::new(
                EventKind::Promote,
                format!("{} healthy for one window after the switch", self.active),
            ));
        }
        None
    }

    pub fn act(&mut self, action: Action, now_ms: u64) -> Result<Change, String> {
        match action {
            Action::Abort => {
                let previous = self.previous.take().ok_or("no switch to undo")?;
                let failed = std::mem::replace(&mut self.active, previous.clone());
                self.reason = Some("aborted by operator".into());
                self.phase = Phase::RolledBack;
                self.since_ms = now_ms;
                Ok(Change::new(
                    EventKind::Rollback,
                    format!("aborted by operator: back from {failed} to {previous}"),
                ))
            }
            Action::Retry => {
                if self.phase != Phase::RolledBack {
                    return Err(format!(
                        "release is {}, not rolled back",
                        self.phase.as_str()
                    ));
                }
                let configured = self.configured_active.clone();
                let from = std::mem::replace(&mut self.active, configured.clone());
                self.previous = Some(from);
                self.switched_ms = Some(now_ms);
                self.reason = None;
                self.phase = Phase::Progressing;
                self.since_ms = now_ms;
                Ok(Change::new(
                    EventKind::Retry,
                    format!("switching to {configured} again"),
                ))
            }
            Action::Promote | Action::Pause | Action::Resume => Err(
                "blue/green releases switch by editing `active`; only abort and retry apply".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing() -> Verdict {
        Verdict::Failing("v2 error rate 0.31 > 0.05".into())
    }

    #[test]
    fn blue_green_goes_back_when_the_new_active_fails_within_a_window() {
        let mut bg = BlueGreen::start("a".into(), "blue", 0);
        assert!(bg.reconfigure("green", "b".into(), 1_000).is_some());
        assert_eq!(
            (bg.phase, bg.active.as_str()),
            (Phase::Progressing, "green")
        );
        let change = bg.tick(&failing(), 30_000, 5_000).expect("rollback");
        assert_eq!(change.kind, EventKind::Rollback);
        assert_eq!((bg.phase, bg.active.as_str()), (Phase::RolledBack, "blue"));
        bg.act(Action::Retry, 6_000).expect("retry");
        assert_eq!(bg.active, "green");
    }

    #[test]
    fn blue_green_settles_after_a_healthy_window() {
        let mut bg = BlueGreen::start("a".into(), "blue", 0);
        bg.reconfigure("green", "b".into(), 0);
        assert_eq!(bg.tick(&Verdict::Healthy, 30_000, 10_000), None);
        assert!(bg.tick(&Verdict::Healthy, 30_000, 30_000).is_some());
        assert_eq!(bg.phase, Phase::Stable);
        assert_eq!(
            bg.tick(&failing(), 30_000, 40_000),
            None,
            "after the window a failure is not ours to undo"
        );
    }
}
