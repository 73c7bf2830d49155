//! Reload triggers from outside the process: the config file's directory
//! (through notify), `SIGHUP`, and a slow safety-net timer, all sent on the
//! control loop's one channel (see `handle`).
//!
//! The watch is on the parent directory, not the file: editors replace the
//! file by renaming a new one over it, and a Kubernetes ConfigMap volume swaps
//! a `..data` symlink to a new directory, and neither is seen by a watch on
//! the file itself. Events that arrive in a burst are debounced into one; the
//! control loop then re-reads the file by its path and skips the reload when
//! the content hash did not change. A slow timer re-reads the file too, as a
//! safety net for events a filesystem never delivers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

use super::handle::Trigger;

/// Quiet time after the last file event before a reload is tried.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the file is re-read even without events.
pub const SAFETY_NET: Duration = Duration::from_secs(30);

/// Keeps the directory watch alive; dropping it stops watching.
pub struct FileWatch {
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
}

/// Watches the directory of `path` and sends [`Trigger::FileChanged`] after
/// each debounced burst of events in it.
pub fn watch_file(path: &Path, triggers: mpsc::Sender<Trigger>) -> Result<FileWatch, String> {
    let dir = parent_dir(path);
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) if !events.is_empty() => {
            // A full channel already holds a pending FileChanged: coalesce.
            let _ = triggers.try_send(Trigger::FileChanged);
        }
        Ok(_) => {}
        Err(errors) => {
            for error in errors {
                tracing::warn!(%error, "config watch error");
            }
        }
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, handler).map_err(|e| e.to_string())?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(FileWatch {
        _debouncer: debouncer,
    })
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Sends [`Trigger::Signal`] on every `SIGHUP` until the channel closes.
pub async fn forward_sighup(mut hup: tokio::signal::unix::Signal, triggers: mpsc::Sender<Trigger>) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading");
        if triggers.send(Trigger::Signal).await.is_err() {
            return;
        }
    }
}

/// Sends [`Trigger::FileChanged`] every [`SAFETY_NET`].
pub async fn safety_net(triggers: mpsc::Sender<Trigger>) {
    let mut tick = tokio::time::interval(SAFETY_NET);
    tick.tick().await;
    loop {
        tick.tick().await;
        if triggers.send(Trigger::FileChanged).await.is_err() {
            return;
        }
    }
}
