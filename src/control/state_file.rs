//! The state file: release states written atomically on every change and
//! restored at start (SPEC §4).
//!
//! Writes happen on a thread of their own ([`Writer`]): a temp file, an
//! fsync, a rename and a directory fsync can take long on a slow disk, and
//! the control runtime they would otherwise block also drives the health
//! probes and `/readyz`. The control loop queues each new state; the writer
//! writes the latest one queued (states replace each other whole).
//! Shutdown flushes what is queued.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The file's shape: `backends`, a state per backend name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile<B> {
    backends: B,
}

enum Job {
    Write {
        path: PathBuf,
        text: Vec<u8>,
    },
    /// Answered once every write queued before it is done.
    Flush(mpsc::Sender<()>),
}

/// Queues state-file writes for the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread; it ends when every `Writer` is dropped.
    pub fn start() -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("switchyard-state".into())
            .spawn(move || run(queue))?;
        Ok(Writer { jobs })
    }

    /// Queues `releases` to be written to `path`.
    pub fn write<S: Serialize>(&self, path: &Path, releases: &BTreeMap<String, S>) {
        let file = StateFile { backends: releases };
        match serde_json::to_vec_pretty(&file) {
            Ok(text) => {
                let path = path.to_path_buf();
                let _ = self.jobs.send(Job::Write { path, text });
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the release state"),
        }
    }

    /// Waits at most `within` for the writes queued so far; false when they
    /// did not finish in time.
    pub fn flush(&self, within: Duration) -> bool {
        let (done, finished) = mpsc::channel();
        self.jobs.send(Job::Flush(done)).is_ok() && finished.recv_timeout(within).is_ok()
    }
}

/// The writer thread: the latest state queued for a path wins.
fn run(queue: mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        let mut flushes = Vec::new();
        let mut latest: Option<(PathBuf, Vec<u8>)> = None;
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Write { path, text } => {
                    if let Some((earlier, text)) = latest.take() {
                        if earlier != path {
                            write(&earlier, &text);
                        }
                    }
                    latest = Some((path, text));
                }
                Job::Flush(done) => flushes.push(done),
            }
            next = queue.try_recv().ok();
        }
        if let Some((path, text)) = latest {
            write(&path, &text);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn write(path: &Path, text: &[u8]) {
    if let Err(e) = write_atomically(path, text) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the state file");
    }
}

pub fn restore<S: DeserializeOwned>(path: &Path) -> BTreeMap<String, S> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no state file yet: starting from the config");
            return BTreeMap::new();
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the state file: starting from the config");
            return BTreeMap::new();
        }
    };
    match serde_json::from_str::<StateFile<BTreeMap<String, S>>>(&text) {
        Ok(file) => {
            tracing::info!(path = %path.display(), releases = file.backends.len(), "release state restored");
            file.backends
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt state file ignored: starting from the config");
            BTreeMap::new()
        }
    }
}

/// Temp file in the same directory, fsync, rename over, fsync the directory:
/// a crash leaves the old file or the new one, never half of one.
fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(text)?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(dir) = std::fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}
