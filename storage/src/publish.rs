//! Publishing a stage's output directory to object storage, file by file as each completes.
//!
//! The stage writes into [`Publisher::dir`], a staging directory of its own. With `live`
//! (capture, the proxy's recording) a thread uploads every complete Parquet file once a second
//! and removes it locally, so a long recording never needs more disk than its open files; at
//! [`Publisher::finish`] everything left (summaries, reports) goes up. A file whose upload
//! fails stays on disk and the staging directory is kept: [`Publisher::finish`] says where, so
//! nothing recorded is lost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Remote, StorageError};

/// Uploads a staging directory to a [`Remote`] prefix.
pub struct Publisher {
    remote: Remote,
    staging: Option<tempfile::TempDir>,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    uploaded: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("remote", &self.remote.url().as_str())
            .field("dir", &self.dir)
            .finish()
    }
}

/// Complete files under `dir` (relative paths): not hidden (the sink's `.NAME.inprogress`,
/// a download's `.NAME.part`), and with `parquet_only`, Parquet only (those are renamed into
/// place whole; other files may still be being written).
fn complete_files(dir: &Path, parquet_only: bool) -> Vec<String> {
    fn walk(root: &Path, d: &Path, parquet_only: bool, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, parquet_only, out);
            } else if !parquet_only || p.extension().is_some_and(|x| x == "parquet") {
                if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, parquet_only, &mut out);
    out.sort();
    out
}

/// Uploads `rels` from `dir`, removing each local file once it is up; returns the URLs.
fn push(remote: &Remote, dir: &Path, rels: &[String]) -> Result<Vec<String>, StorageError> {
    crate::block_on(async {
        let mut done = Vec::new();
        for rel in rels {
            let local = dir.join(rel);
            remote.upload(&local, rel).await?;
            std::fs::remove_file(&local).map_err(|source| StorageError::Io {
                path: local.clone(),
                source,
            })?;
            tracing::debug!(object = %remote.url_of(rel), "uploaded");
            done.push(remote.url_of(rel));
        }
        Ok(done)
    })
}

impl Publisher {
    /// A publisher with a fresh staging directory. `live`: upload complete Parquet files while
    /// the stage runs.
    pub fn start(remote: Remote, live: bool) -> Result<Self, StorageError> {
        let staging = tempfile::Builder::new()
            .prefix("shadowtap-upload-")
            .tempdir()
            .map_err(|source| StorageError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let dir = staging.path().to_path_buf();
        tracing::info!(to = %remote.url(), staging = %dir.display(), "writing through a local staging directory");
        let stop = Arc::new(AtomicBool::new(false));
        let uploaded = Arc::new(Mutex::new(Vec::new()));
        let thread = live.then(|| {
            let (remote, dir, stop, uploaded) =
                (remote.clone(), dir.clone(), stop.clone(), uploaded.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let files = complete_files(&dir, true);
                    if !files.is_empty() {
                        match push(&remote, &dir, &files) {
                            Ok(urls) => uploaded
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .extend(urls),
                            Err(e) => {
                                // Retried on the next pass and at the end, which reports it.
                                tracing::warn!("upload failed (retrying): {e}");
                            }
                        }
                    }
                    for _ in 0..10 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        });
        Ok(Self {
            remote,
            staging: Some(staging),
            dir,
            stop,
            uploaded,
            thread,
        })
    }

    /// The directory the stage writes into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The destination.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Stops the live uploads, uploads every file left and removes the staging directory;
    /// returns the URLs of the objects written. On failure the staging directory is kept and
    /// the error names it.
    pub fn finish(mut self) -> Result<Vec<String>, StorageError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<Vec<String>, StorageError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let rest = complete_files(&self.dir, false);
        let result = push(&self.remote, &self.dir, &rest);
        let Some(staging) = self.staging.take() else {
            return Ok(Vec::new());
        };
        match result {
            Ok(urls) => {
                let mut all =
                    std::mem::take(&mut *self.uploaded.lock().unwrap_or_else(|p| p.into_inner()));
                all.extend(urls);
                Ok(all)
            }
            Err(e) => {
                let kept = staging.keep();
                Err(StorageError::Location(format!(
                    "uploading to {} failed ({e}); the files not uploaded are kept in {}",
                    self.remote.url(),
                    kept.display()
                )))
            }
        }
    }
}

impl Drop for Publisher {
    /// A publisher dropped on an error path still uploads what was complete (a local run
    /// would have left those files on disk too).
    fn drop(&mut self) {
        if self.staging.is_some() {
            if let Err(e) = self.finish_inner() {
                tracing::error!("{e}");
            }
        }
    }
}
