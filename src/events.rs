//! What the gateway remembers for `/status` and the dashboard: the outcome of
//! the last reload (with the config generation serving since), and a bounded
//! list of recent events.
//!
//! Written by the control loop (reloads, release decisions, probes) and, for
//! the rare outlier ejection, by the request path; read by the admin API. A
//! plain mutex is the right tool: nothing here is touched per request.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// How many recent events are kept.
const MAX_EVENTS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Step,
    Hold,
    Promote,
    Rollback,
    Pause,
    Resume,
    Retry,
    Reload,
    ReloadError,
    Ejection,
    Health,
    Discovery,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Step => "step",
            EventKind::Hold => "hold",
            EventKind::Promote => "promote",
            EventKind::Rollback => "rollback",
            EventKind::Pause => "pause",
            EventKind::Resume => "resume",
            EventKind::Retry => "retry",
            EventKind::Reload => "reload",
            EventKind::ReloadError => "reload_error",
            EventKind::Discovery => "discovery",
            EventKind::Ejection => "ejection",
            EventKind::Health => "health",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at: SystemTime,
    pub backend: Option<String>,
    pub kind: EventKind,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub success: bool,
    /// The config generation serving after this reload (1 at start).
    pub generation: u64,
    pub at: SystemTime,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    last_reload: Option<ReloadRecord>,
    events: VecDeque<Event>,
}

#[derive(Debug, Default)]
pub struct Events {
    inner: Mutex<Inner>,
}

impl Events {
    pub fn push(&self, kind: EventKind, backend: Option<&str>, message: impl Into<String>) {
        let event = Event {
            at: SystemTime::now(),
            backend: backend.map(str::to_string),
            kind,
            message: message.into(),
        };
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.events.len() == MAX_EVENTS {
            inner.events.pop_front();
        }
        inner.events.push_back(event);
    }

    pub fn set_last_reload(&self, record: ReloadRecord) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.last_reload = Some(record);
    }

    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .last_reload
            .clone()
    }

    /// The config generation serving now (1 at start, +1 per applied reload).
    pub fn generation(&self) -> u64 {
        self.last_reload().map_or(1, |r| r.generation)
    }

    /// The kinds and messages of `backend`'s events of one of `kinds` that
    /// happened after `after`, oldest first.
    pub fn since(
        &self,
        after: SystemTime,
        backend: &str,
        kinds: &[EventKind],
    ) -> Vec<(EventKind, String)> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner
            .events
            .iter()
            .rev()
            .take_while(|e| e.at > after)
            .filter(|e| e.backend.as_deref() == Some(backend) && kinds.contains(&e.kind))
            .map(|e| (e.kind, e.message.clone()))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    /// Recent events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .events
            .iter()
            .cloned()
            .collect()
    }
}
