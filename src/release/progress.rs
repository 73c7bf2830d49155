//! The release phases, operator actions and the canary state machine (SPEC
//! §4), as plain data and pure functions: time comes in as an argument, and
//! every change returns the event to log (blue/green: `blue_green`).
//!
//! Canary: `stable` (weight 0), `progressing` (weight > 0, analysis running,
//! steps advancing one per `step_interval` while the canary is healthy),
//! `paused` (weight held), `promoted` (weight 100), `rolled_back` (weight
//! forced to 0 with a reason; sticks until the release identity changes or an
//! operator retries).

use serde::{Deserialize, Serialize};

use super::verdict::Verdict;
use crate::events::EventKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Stable,
    Progressing,
    Paused,
    Promoted,
    RolledBack,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Stable,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoted,
        Phase::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stable => "stable",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
        }
    }
}

/// What the config asks of a canary release.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The configured `weight`.
    pub weight: f64,
    pub steps: Vec<f64>,
    pub step_interval_ms: u64,
}

/// A change worth an event and a log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: EventKind,
    pub message: String,
}

impl Change {
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Change {
            kind,
            message: message.into(),
        }
    }
}

/// Operator actions (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Promote,
    Abort,
    Pause,
    Resume,
    Retry,
}

impl Action {
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "promote" => Action::Promote,
            "abort" => Action::Abort,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "retry" => Action::Retry,
            _ => return None,
        })
    }
}

/// The live state of a canary release. Times are milliseconds of wall clock
/// (Unix epoch), so the state can be persisted and restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// backend + canary version + its endpoints: a change starts a new release.
    pub identity: String,
    pub phase: Phase,
    /// The canary weight in force, percent.
    pub weight: f64,
    /// Index into the plan's steps, when there are steps.
    pub step: Option<usize>,
    pub reason: Option<String>,
    /// When the phase last changed.
    pub since_ms: u64,
    /// When the current step began (steps advance from here).
    pub step_started_ms: u64,
    /// The configured weight this state follows; a config edit of the weight
    /// applies to the running release.
    pub configured_weight: f64,
    /// Why the release holds (against stable, the evidence does not tell the
    /// versions apart): no step, no rollback until it does.
    #[serde(default)]
    pub hold: Option<String>,
}

fn phase_for(weight: f64) -> Phase {
    if weight <= 0.0 {
        Phase::Stable
    } else if weight >= 100.0 {
        Phase::Promoted
    } else {
        Phase::Progressing
    }
}

impl Canary {
    /// A new release: at the first step if there are steps, else at the
    /// configured weight.
    pub fn start(identity: String, plan: &Plan, now_ms: u64) -> Canary {
        let (weight, step) = match plan.steps.first() {
            Some(&first) => (first, Some(0)),
            None => (plan.weight, None),
        };
        Canary {
            identity,
            phase: phase_for(weight),
            weight,
            step,
            reason: None,
            since_ms: now_ms,
            step_started_ms: now_ms,
            configured_weight: plan.weight,
            hold: None,
        }
    }

    /// Applies a config edit that kept the identity: a changed weight is set,
    /// changed steps keep the current step where it still exists.
    pub fn reconfigure(&mut self, plan: &Plan, now_ms: u64) -> Option<Change> {
        if self.phase == Phase::RolledBack {
            self.configured_weight = plan.weight;
            return None;
        }
        if let Some(step) = self.step {
            if plan.steps.is_empty() {
                self.step = None;
            } else if step >= plan.steps.len() {
                self.step = Some(plan.steps.len() - 1);
            }
        } else if !plan.steps.is_empty() && plan.weight == self.configured_weight {
            self.step = Some(0);
            self.weight = plan.steps[0];
        }
        if plan.weight != self.configured_weight {
            self.configured_weight = plan.weight;
            self.weight = plan.weight;
            self.step = plan
                .steps
                .iter()
                .position(|&s| s >= plan.weight)
                .filter(|_| !plan.steps.is_empty());
            self.step_started_ms = now_ms;
            if self.phase != Phase::Paused {
                self.set_phase(phase_for(self.weight), now_ms);
            }
            return Some(Change::new(
                EventKind::Step,
                format!("weight set to {} by config", self.weight),
            ));
        }
        None
    }

    fn set_phase(&mut self, phase: Phase, now_ms: u64) {
        if self.phase != phase {
            self.phase = phase;
            self.since_ms = now_ms;
        }
    }

    fn roll_back(&mut self, reason: String, now_ms: u64) -> Change {
        self.weight = 0.0;
        self.hold = None;
        self.reason = Some(reason.clone());
        self.set_phase(Phase::RolledBack, now_ms);
        Change::new(EventKind::Rollback, reason)
    }

    /// One analysis interval: roll back on a failing verdict, hold on a
    /// holding one (a step's interval starts again once the hold ends), else
    /// advance a step when its interval has passed and the canary is healthy.
    pub fn tick(&mut self, plan: &Plan, verdict: &Verdict, now_ms: u64) -> Option<Change> {
        if self.phase == Phase::RolledBack {
            return None;
        }
        if let Verdict::Hold(reason) = verdict {
            self.step_started_ms = now_ms;
            let entering = self.hold.is_none();
            self.hold = Some(reason.clone());
            return entering.then(|| Change::new(EventKind::Hold, format!("holding: {reason}")));
        }
        self.hold = None;
        if let Verdict::Failing(reason) = verdict {
            // Only a canary that takes traffic of its own can be rolled back.
            if self.weight > 0.0 || self.step.is_some() {
                return Some(self.roll_back(reason.clone(), now_ms));
            }
            return None;
        }
        if self.phase != Phase::Progressing || *verdict != Verdict::Healthy {
            return None;
        }
        let step = self.step?;
        if now_ms.saturating_sub(self.step_started_ms) < plan.step_interval_ms {
            return None;
        }
        let next = step + 1;
        let &weight = plan.steps.get(next)?;
        self.step = Some(next);
        self.weight = weight;
        self.step_started_ms = now_ms;
        if weight >= 100.0 {
            self.set_phase(Phase::Promoted, now_ms);
            Some(Change::new(
                EventKind::Promote,
                format!("step {next}: canary promoted to 100%"),
            ))
        } else {
            Some(Change::new(
                EventKind::Step,
                format!("step {next}: canary at {weight}%"),
            ))
        }
    }

    /// An operator action; `Err` says why it does not apply now.
    pub fn act(&mut self, action: Action, plan: &Plan, now_ms: u64) -> Result<Change, String> {
        match action {
            Action::Promote => {
                if self.phase == Phase::RolledBack {
                    return Err("release is rolled back: retry it first".into());
                }
                self.weight = 100.0;
                self.step = (!plan.steps.is_empty()).then(|| plan.steps.len() - 1);
                self.reason = None;
                self.set_phase(Phase::Promoted, now_ms);
                Ok(Change::new(
                    EventKind::Promote,
                    "promoted to 100% by operator",
                ))
            }
            Action::Abort => {
                if self.phase == Phase::RolledBack {
                    return Err("release is already rolled back".into());
                }
                Ok(self.roll_back("aborted by operator".into(), now_ms))
            }
            Action::Pause => match self.phase {
                Phase::Paused => Err("release is already paused".into()),
                Phase::RolledBack => Err("release is rolled back".into()),
                _ => {
                    self.set_phase(Phase::Paused, now_ms);
                    Ok(Change::new(
                        EventKind::Pause,
                        format!("paused at {}%", self.weight),
                    ))
                }
            },
            Action::Resume => {
                if self.phase != Phase::Paused {
                    return Err(format!("release is {}, not paused", self.phase.as_str()));
                }
                self.step_started_ms = now_ms;
                self.set_phase(phase_for(self.weight), now_ms);
                Ok(Change::new(
                    EventKind::Resume,
                    format!("resumed at {}%", self.weight),
                ))
            }
            Action::Retry => {
                if self.phase != Phase::RolledBack {
                    return Err(format!(
                        "release is {}, not rolled back",
                        self.phase.as_str()
                    ));
                }
                *self = Canary::start(self.identity.clone(), plan, now_ms);
                Ok(Change::new(
                    EventKind::Retry,
                    format!("release restarted at {}%", self.weight),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            weight: 10.0,
            steps: vec![10.0, 25.0, 50.0, 100.0],
            step_interval_ms: 30_000,
        }
    }

    fn failing() -> Verdict {
        Verdict::Failing("v2 error rate 0.31 > 0.05".into())
    }

    #[test]
    fn a_release_with_steps_starts_at_the_first_step() {
        let c = Canary::start("id".into(), &plan(), 0);
        assert_eq!(
            (c.phase, c.weight, c.step),
            (Phase::Progressing, 10.0, Some(0))
        );
    }

    #[test]
    fn steps_advance_one_per_interval_while_healthy() {
        let p = plan();
        let mut c = Canary::start("id".into(), &p, 0);
        assert_eq!(
            c.tick(&p, &Verdict::Healthy, 29_999),
            None,
            "interval not over"
        );
        assert_eq!(
            c.tick(&p, &Verdict::Inconclusive, 30_000),
            None,
            "no data: hold"
        );
        let change = c.tick(&p, &Verdict::Healthy, 30_000).expect("step");
        assert_eq!(
            (change.kind, c.weight, c.step),
            (EventKind::Step, 25.0, Some(1))
        );
        assert_eq!(
            c.tick(&p, &Verdict::Healthy, 45_000),
            None,
            "one step per interval"
        );
        c.tick(&p, &Verdict::Healthy, 60_000).expect("step to 50");
        let last = c.tick(&p, &Verdict::Healthy, 90_000).expect("promote");
        assert_eq!(
            (last.kind, c.phase, c.weight),
            (EventKind::Promote, Phase::Promoted, 100.0)
        );
        assert_eq!(c.tick(&p, &Verdict::Healthy, 200_000), None);
    }

    #[test]
    fn a_failing_canary_is_rolled_back_and_stays_rolled_back() {
        let p = plan();
        let mut c = Canary::start("id".into(), &p, 0);
        let change = c.tick(&p, &failing(), 1_000).expect("rollback");
        assert_eq!(change.kind, EventKind::Rollback);
        assert_eq!((c.phase, c.weight), (Phase::RolledBack, 0.0));
        assert_eq!(c.reason.as_deref(), Some("v2 error rate 0.31 > 0.05"));
        assert_eq!(c.since_ms, 1_000);
        assert_eq!(c.tick(&p, &Verdict::Healthy, 100_000), None);
        assert_eq!(
            c.reconfigure(
                &Plan {
                    weight: 50.0,
                    ..p.clone()
                },
                200_000
            ),
            None,
            "edits do not undo a rollback"
        );
        assert_eq!(c.weight, 0.0);
    }

    #[test]
    fn retry_restarts_a_rolled_back_release() {
        let p = plan();
        let mut c = Canary::start("id".into(), &p, 0);
        c.tick(&p, &failing(), 1_000);
        assert!(c.act(Action::Resume, &p, 2_000).is_err());
        c.act(Action::Retry, &p, 2_000).expect("retry");
        assert_eq!(
            (c.phase, c.weight, c.reason.clone()),
            (Phase::Progressing, 10.0, None)
        );
    }

    #[test]
    fn pause_holds_the_weight_and_resume_continues() {
        let p = plan();
        let mut c = Canary::start("id".into(), &p, 0);
        c.act(Action::Pause, &p, 1_000).expect("pause");
        assert_eq!(
            c.tick(&p, &Verdict::Healthy, 60_000),
            None,
            "paused: no step"
        );
        assert!(c.act(Action::Pause, &p, 61_000).is_err());
        c.act(Action::Resume, &p, 61_000).expect("resume");
        assert_eq!(c.phase, Phase::Progressing);
        assert_eq!(
            c.tick(&p, &Verdict::Healthy, 62_000),
            None,
            "interval restarts at resume"
        );
        assert!(c.tick(&p, &Verdict::Healthy, 91_000).is_some());
    }

    #[test]
    fn a_paused_canary_is_still_rolled_back_when_failing() {
        let p = plan();
        let mut c = Canary::start("id".into(), &p, 0);
        c.act(Action::Pause, &p, 1_000).expect("pause");
        assert!(c.tick(&p, &failing(), 2_000).is_some());
        assert_eq!(c.phase, Phase::RolledBack);
    }

    #[test]
    fn promote_and_abort_jump_to_the_ends() {
        let p = plan();
        let mut c = Canary::start("id".into(), &p, 0);
        c.act(Action::Promote, &p, 1).expect("promote");
        assert_eq!(
            (c.phase, c.weight, c.step),
            (Phase::Promoted, 100.0, Some(3))
        );
        c.act(Action::Abort, &p, 2).expect("abort");
        assert_eq!((c.phase, c.weight), (Phase::RolledBack, 0.0));
        assert!(c.act(Action::Abort, &p, 3).is_err());
        assert!(c.act(Action::Promote, &p, 3).is_err());
    }

    #[test]
    fn a_weight_edit_applies_to_the_running_release() {
        let p = Plan {
            weight: 10.0,
            steps: vec![],
            step_interval_ms: 1,
        };
        let mut c = Canary::start("id".into(), &p, 0);
        assert_eq!(c.phase, Phase::Progressing);
        let edited = Plan {
            weight: 0.0,
            ..p.clone()
        };
        assert!(c.reconfigure(&edited, 5).is_some());
        assert_eq!((c.weight, c.phase), (0.0, Phase::Stable));
        assert_eq!(
            c.reconfigure(&edited, 6),
            None,
            "same weight: nothing to do"
        );
    }

    #[test]
    fn a_weight_zero_canary_without_steps_is_not_rolled_back() {
        let p = Plan {
            weight: 0.0,
            steps: vec![],
            step_interval_ms: 1,
        };
        let mut c = Canary::start("id".into(), &p, 0);
        assert_eq!(c.tick(&p, &failing(), 1), None);
        assert_eq!(c.phase, Phase::Stable);
    }

    #[test]
    fn a_hold_is_reported_once_and_its_step_interval_starts_again_when_it_ends() {
        let p = plan();
        let mut c = Canary::start("a".into(), &p, 0);
        let hold = Verdict::Hold("v1 and v2 both breach".into());
        let change = c
            .tick(&p, &hold, 40_000)
            .expect("entering a hold is an event");
        assert_eq!(change.kind, EventKind::Hold);
        assert_eq!(c.tick(&p, &hold, 50_000), None, "reported once");
        assert_eq!(c.hold.as_deref(), Some("v1 and v2 both breach"));
        // Healthy again: a whole step interval from the last hold first.
        assert_eq!(c.tick(&p, &Verdict::Healthy, 79_999), None);
        assert!(c.hold.is_none(), "the hold ends with the evidence");
        assert!(c.tick(&p, &Verdict::Healthy, 80_000).is_some());
    }

    proptest::proptest! {
        /// Holding never advances a step, never rolls back, whatever the time.
        #[test]
        fn holding_never_advances_a_step(gaps in proptest::collection::vec(0u64..120_000, 1..40)) {
            let p = plan();
            let mut c = Canary::start("a".into(), &p, 0);
            let before = (c.step, c.weight, c.phase);
            let mut now = 0;
            for gap in gaps {
                now += gap;
                let change = c.tick(&p, &Verdict::Hold("both breach".into()), now);
                proptest::prop_assert!(change.is_none_or(|c| c.kind == EventKind::Hold));
                proptest::prop_assert_eq!((c.step, c.weight, c.phase), before);
            }
        }
    }
}
