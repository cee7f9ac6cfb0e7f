//! The files rows reference, across a link: a task of its own beside the rows (rows never
//! wait for files). Hashes found in rows that just crossed come first (newest first); a sweep
//! of every referenced hash at start and every minute finds the rest. A file this side holds
//! and the peer lacks is uploaded (resumed where the peer's upload stopped); one the peer
//! holds and this side lacks is downloaded, hashed as it arrives, and stored only when its
//! bytes have its name. The peer verifies uploads the same way.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_client::Remote;
use ferry_files::{AnyFileStore, FileStore};
use ferry_protocol::{FileStateKind, MAX_FILE_CHECK, SyncLogEntry};
use ferry_store::Store;
use futures_util::StreamExt;
use sha2::Digest;

/// This server's file store, for a link: where verified files are, and where downloads
/// wait until their bytes are checked.
pub struct LocalFiles {
    pub store: AnyFileStore,
    pub staging: PathBuf,
}

/// How often every referenced hash is looked at again.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A file of a row that just crossed but is on neither side yet (its device has not
/// uploaded it), or that the peer has no row for yet, is looked at again this often, for
/// this long; then the sweeps find it.
const AGAIN_EVERY: Duration = Duration::from_secs(1);
const AGAIN_FOR: Duration = Duration::from_secs(600);

/// The link's file queue: hashes to look at, newest first, and how many wait to cross.
pub(crate) struct Queue {
    pending: VecDeque<String>,
    queued: HashSet<String>,
    /// Files not movable yet, with when they were first found so.
    again: Vec<(String, Instant)>,
    /// Of those, files whose transfer failed (they wait to cross).
    failed: HashSet<String>,
    /// Files known to wait for a transfer (the status's file queue).
    pub waiting: Arc<AtomicU64>,
}

impl Queue {
    pub fn new() -> Queue {
        Queue {
            pending: VecDeque::new(),
            queued: HashSet::new(),
            again: Vec::new(),
            failed: HashSet::new(),
            waiting: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hashes of rows that just crossed: looked at first.
    fn urgent(&mut self, hashes: Vec<String>) {
        for h in hashes.into_iter().rev() {
            if self.queued.insert(h.clone()) {
                self.pending.push_front(h);
            }
        }
    }

    fn later(&mut self, hashes: impl IntoIterator<Item = String>) {
        for h in hashes {
            if self.queued.insert(h.clone()) {
                self.pending.push_back(h);
            }
        }
    }

    /// Files not movable yet go back to the queue (those found so too long ago are left to
    /// the sweeps).
    fn retry_later(&mut self, hashes: Vec<String>) {
        for h in hashes {
            match self.again.iter().position(|(x, _)| *x == h) {
                Some(i) if self.again[i].1.elapsed() >= AGAIN_FOR => {
                    self.again.remove(i);
                }
                Some(_) => {}
                None => self.again.push((h, Instant::now())),
            }
        }
    }

    /// Puts the files not movable yet back in line.
    fn requeue_again(&mut self) {
        let hashes: Vec<String> = self.again.iter().map(|(h, _)| h.clone()).collect();
        self.later(hashes);
    }

    fn take(&mut self, n: usize) -> Vec<String> {
        let out: Vec<String> = self.pending.drain(..n.min(self.pending.len())).collect();
        for h in &out {
            self.queued.remove(h);
        }
        out
    }
}

/// Moves the files of one link until the process ends: `news` brings the hashes of rows that
/// crossed.
pub(crate) async fn run<S: Store>(
    store: S,
    remote: Remote,
    local: Arc<LocalFiles>,
    link: String,
    log_keep: Duration,
    mut queue: Queue,
    mut news: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
) {
    let mut last_sweep: Option<Instant> = None;
    loop {
        if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            match store.referenced_files().await {
                Ok(all) => {
                    queue.later(all);
                    last_sweep = Some(Instant::now());
                }
                Err(e) => tracing::warn!(peer = %link, "cannot list referenced files: {e}"),
            }
        }
        while let Ok(hashes) = news.try_recv() {
            queue.urgent(hashes);
        }
        let batch = queue.take(MAX_FILE_CHECK.min(100));
        if batch.is_empty() {
            queue.waiting.store(queue.failed.len() as u64, Ordering::SeqCst);
            let pause = if queue.again.is_empty() { SWEEP_EVERY } else { AGAIN_EVERY };
            tokio::select! {
                got = news.recv() => match got {
                    Some(hashes) => queue.urgent(hashes),
                    None => return,
                },
                _ = tokio::time::sleep(pause) => queue.requeue_again(),
            }
            continue;
        }
        let started = Instant::now();
        let others = queue.failed.iter().filter(|h| !batch.contains(h)).count() as u64;
        match cross(&remote, &local, &batch, others, &queue.waiting).await {
            Ok(report) => {
                // A file failing again is not news: its first failure was logged.
                let fresh = |fails: Vec<(String, String)>| -> Vec<String> {
                    fails.into_iter().filter(|(h, _)| !queue.failed.contains(h)).map(|(_, m)| m).collect()
                };
                let ways = [
                    ("push", report.up.0, report.up.1, fresh(report.up.2)),
                    ("pull", report.down.0, report.down.1, fresh(report.down.2)),
                ];
                for (direction, files, bytes, failures) in ways {
                    if files == 0 && failures.is_empty() {
                        continue;
                    }
                    let entry = SyncLogEntry {
                        at_ms: crate::now_ms(),
                        peer: link.clone(),
                        kind: "files".into(),
                        direction: direction.into(),
                        status: if failures.is_empty() { "SUCCESS" } else { "WARNING" }.into(),
                        rows: files,
                        bytes,
                        duration_ms: started.elapsed().as_millis() as u64,
                        error: (!failures.is_empty()).then(|| failures.join("\n")),
                        ..SyncLogEntry::default()
                    };
                    let _ = store.log_sync(entry, log_keep.as_millis() as u64).await;
                }
                // A failed transfer is tried again a second later, not at once.
                queue.again.retain(|(h, _)| !report.moved.contains(h));
                for h in &report.moved {
                    queue.failed.remove(h);
                }
                queue.failed.extend(report.retry.iter().cloned());
                queue.retry_later(report.retry);
                queue.retry_later(report.not_yet);
            }
            Err(e) => {
                // The peer is away: the rows' link says so; try these again later.
                tracing::debug!(peer = %link, "files wait: {e}");
                queue.later(batch);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// What one batch moved: per direction files, bytes and failures; and hashes to try again.
#[derive(Default)]
struct Crossed {
    up: (u64, u64, Vec<(String, String)>),
    down: (u64, u64, Vec<(String, String)>),
    retry: Vec<String>,
    /// Files on neither side yet, or of rows the peer does not have yet.
    not_yet: Vec<String>,
    /// Files that crossed, or that both sides hold.
    moved: Vec<String>,
}

/// Looks at a batch of hashes on both sides and moves each file the other side lacks.
async fn cross(
    remote: &Remote,
    local: &LocalFiles,
    batch: &[String],
    others: u64,
    waiting: &AtomicU64,
) -> Result<Crossed, ferry_client::Error> {
    let answer = remote.check_files(batch.to_vec()).await?;
    let mut todo = Vec::new();
    let mut out = Crossed::default();
    for state in answer.files {
        let here = local.store.size(&state.hash).await.map_err(|e| ferry_client::Error::Local(e.to_string()))?;
        match (here, state.state) {
            (Some(size), FileStateKind::Missing) => todo.push((state.hash, Some((size, 0)))),
            (Some(size), FileStateKind::Partial) => todo.push((state.hash, Some((size, state.offset.unwrap_or(0))))),
            (None, FileStateKind::Stored) => todo.push((state.hash, None)),
            (Some(_), FileStateKind::Stored) => out.moved.push(state.hash),
            // Neither side has it yet (its device has not uploaded it), or the peer has no row
            // for it yet: looked at again soon.
            _ => out.not_yet.push(state.hash),
        }
    }
    // Waiting to cross: this batch's transfers and earlier failures.
    waiting.store(others + todo.len() as u64, Ordering::SeqCst);
    for (hash, upload) in todo {
        let result = match upload {
            Some((size, offset)) => upload_one(remote, local, &hash, size, offset).await.map(|b| (true, b)),
            None => download_one(remote, local, &hash).await.map(|b| (false, b)),
        };
        if result.is_ok() {
            let _ = waiting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_sub(1)));
        }
        match result {
            Ok((true, bytes)) => {
                out.up.0 += 1;
                out.up.1 += bytes;
                out.moved.push(hash);
            }
            Ok((false, bytes)) => {
                out.down.0 += 1;
                out.down.1 += bytes;
                out.moved.push(hash);
            }
            Err(e) => {
                let failures = if upload.is_some() { &mut out.up.2 } else { &mut out.down.2 };
                failures.push((hash.clone(), format!("file {hash}: {e}")));
                out.retry.push(hash);
            }
        }
    }
    Ok(out)
}

async fn upload_one(remote: &Remote, local: &LocalFiles, hash: &str, size: u64, offset: u64) -> Result<u64, String> {
    let stream = local.store.get(hash, offset).await.map_err(|e| e.to_string())?.ok_or("gone from this store")?;
    remote.upload_file(hash, size, offset, reqwest::Body::wrap_stream(stream)).await.map_err(|e| e.to_string())?;
    Ok(size - offset)
}

/// Downloads a file into the staging directory, hashing it as it comes, and stores it when
/// its bytes have its name.
async fn download_one(remote: &Remote, local: &LocalFiles, hash: &str) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let resp = remote.download_file(hash, 0).await.map_err(|e| e.to_string())?;
    tokio::fs::create_dir_all(&local.staging).await.map_err(|e| e.to_string())?;
    let path = local.staging.join(format!("{hash}.peer"));
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut body = resp.bytes_stream();
    let written: Result<(), String> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("download broke: {e}"))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.sync_all().await.map_err(|e| e.to_string())
    }
    .await;
    drop(file);
    let got = ferry_core::to_hex(&hasher.finalize());
    let stored = match written {
        Err(e) => Err(e),
        Ok(()) if got != hash => Err(format!("the peer's bytes hash to {got}, not to the file's name; not kept")),
        Ok(()) => local.store.put_file(hash, &path, size).await.map_err(|e| e.to_string()),
    };
    let _ = tokio::fs::remove_file(&path).await;
    stored.map(|()| size)
}
