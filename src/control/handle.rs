//! How the rest of the process talks to the control loop: every request
//! (reload, operator action, a copy of the release states) is a [`Trigger`]
//! on one channel, answered on a oneshot where an answer is wanted.
//! [`Handle`] is the one request/reply helper the admin API, the demo and the
//! tests use.

use tokio::sync::{mpsc, oneshot};

use super::engine::{ActError, ReleaseState, ReleaseView};
use super::history::Page;
use crate::release::progress::Action;

/// Triggers the channel holds before senders wait.
const CAPACITY: usize = 16;
/// What a request gets when the control loop is gone.
const STOPPED: &str = "the control loop has stopped";

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new config generation is serving.
    Applied { generation: u64 },
    /// The file's content did not change; nothing was done.
    Unchanged,
    /// The new config was refused; the old one keeps serving.
    Failed(String),
}

/// Why the control loop should act.
#[derive(Debug)]
pub enum Trigger {
    /// The config file may have changed: reload only if its content did.
    FileChanged,
    /// `SIGHUP`: always reload (re-reading certificates too).
    Signal,
    /// An explicit request (admin API): always reload, and answer.
    Request(oneshot::Sender<ReloadOutcome>),
    /// An operator action on a backend's release.
    Action {
        backend: String,
        action: Action,
        reply: oneshot::Sender<Result<String, ActError>>,
    },
    /// A copy of every release state and last verdict, by backend.
    Inspect(oneshot::Sender<Vec<ReleaseView>>),
    /// The timeline samples newer than `since`.
    History {
        since: u64,
        reply: oneshot::Sender<Page>,
    },
}

/// The sending side of the control loop's channel.
#[derive(Debug, Clone)]
pub struct Handle {
    triggers: mpsc::Sender<Trigger>,
}

impl Handle {
    /// A handle and the receiver the control loop serves.
    pub fn channel() -> (Handle, mpsc::Receiver<Trigger>) {
        let (triggers, receiver) = mpsc::channel(CAPACITY);
        (Handle { triggers }, receiver)
    }

    /// The raw sender, for the file watch and the signal forwarder.
    pub fn sender(&self) -> mpsc::Sender<Trigger> {
        self.triggers.clone()
    }

    /// Sends the trigger `make` builds around a reply slot and waits for the
    /// answer; `None` when the control loop has stopped.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Trigger) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.triggers.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Reloads the config file now and waits for the outcome.
    pub async fn reload(&self) -> ReloadOutcome {
        self.ask(Trigger::Request)
            .await
            .unwrap_or_else(|| ReloadOutcome::Failed(STOPPED.into()))
    }

    /// Carries out an operator action on `backend`'s release.
    pub async fn act(&self, backend: &str, action: Action) -> Result<String, ActError> {
        let backend = backend.to_string();
        self.ask(|reply| Trigger::Action {
            backend,
            action,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(ActError::Conflict(STOPPED.into())))
    }

    /// Every backend's release state and last verdict now.
    pub async fn inspect(&self) -> Vec<ReleaseView> {
        self.ask(Trigger::Inspect).await.unwrap_or_default()
    }

    /// The release timeline: the samples newer than `since`.
    pub async fn history(&self, since: u64) -> Page {
        self.ask(|reply| Trigger::History { since, reply })
            .await
            .unwrap_or_default()
    }

    /// Every backend's release state now.
    pub async fn releases(&self) -> Vec<(String, ReleaseState)> {
        let views = self.inspect().await;
        views.into_iter().map(|v| (v.backend, v.state)).collect()
    }

    /// One backend's release state now.
    pub async fn release(&self, backend: &str) -> Option<ReleaseState> {
        self.releases()
            .await
            .into_iter()
            .find(|(name, _)| name == backend)
            .map(|(_, state)| state)
    }
}
