//! The files rows point to: kept beside the replica in `REPLICA-files/`, named by the
//! SHA-256 of their content, and moved to and from the server apart from row sync.
//!
//! The worker ([`run`], [`sync_files`]) finds the hashes file columns hold, uploads the ones
//! this device has and the server lacks, downloads the ones it lacks, newest row first, at
//! most `concurrency` at once, under a byte-rate limit, with retries and exponential
//! backoff. Every transfer is verified by hash where it lands: the server refuses an upload
//! whose bytes do not hash to its name, and a download that does not is thrown away and
//! tried again. Broken transfers resume: the server keeps the bytes of an interrupted
//! upload (`/v1/files/check` says how many), and a download keeps its partial file and
//! asks for the rest with `Range`.
//!
//! Row sync never waits for any of this: a row arrives at once; its file follows.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use ferry_core::schema::{is_file_hash, quote};
use ferry_protocol::{ErrorCode, FileCheckResponse, FileStateKind, MAX_FILE_CHECK};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::remote::Remote;
pub use crate::replica::FileQueue;
use crate::replica::{Key, Replica};

/// Transfers at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 3;

/// The worker warns when free disk is under this share with more than
/// [`LOW_DISK_QUEUE`] files queued.
pub const LOW_DISK_SHARE: f64 = 0.20;
pub const LOW_DISK_QUEUE: u64 = 100;

/// The longest wait between retries of one file.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// The directory beside a replica where its files live: `REPLICA-files/`.
pub fn files_dir(replica: &Path) -> PathBuf {
    let mut name = replica.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push("-files");
    replica.with_file_name(name)
}

/// The files of one replica, on disk.
#[derive(Clone, Debug)]
pub struct LocalFiles {
    dir: PathBuf,
}

fn local(e: std::io::Error, what: impl std::fmt::Display) -> Error {
    Error::Local(format!("{what}: {e}"))
}

fn check(hash: &str) -> Result<()> {
    if is_file_hash(hash) {
        Ok(())
    } else {
        Err(Error::Local(format!(
            "'{hash}' is not a file hash; a file is named by its SHA-256 in 64 lowercase hex digits (what `ferry file add` prints)"
        )))
    }
}

/// Copies `from` into `to`; returns the SHA-256 (hex) of the bytes copied and their count.
///
/// # Errors
/// The first read or write error.
pub fn copy_hashing(from: &mut impl Read, to: &mut impl std::io::Write) -> std::io::Result<(String, u64)> {
    let copied = hash_reader(Tee { from, to: &mut *to })?;
    to.flush()?;
    Ok(copied)
}

/// SHA-256 of everything `r` yields, hex, and how many bytes that was.
fn hash_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            return Ok((ferry_core::to_hex(&h.finalize()), n));
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
}

impl LocalFiles {
    /// The files of the replica at `replica`.
    pub fn beside(replica: &Path) -> LocalFiles {
        LocalFiles { dir: files_dir(replica) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file named `hash` is (whether or not it is there).
    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    fn partial(&self, hash: &str) -> PathBuf {
        self.dir.join(".partial").join(hash)
    }

    /// The size of the file named `hash`, if this device has it.
    pub fn size(&self, hash: &str) -> Option<u64> {
        std::fs::metadata(self.path(hash)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    /// Copies `src` in, named by the SHA-256 of its content; returns the hash and size. The
    /// copy is hashed as it is written, so the name is that of the bytes kept.
    ///
    /// # Errors
    /// When `src` cannot be read or the files directory cannot be written.
    pub fn add(&self, src: &Path) -> Result<(String, u64)> {
        let mut input = std::fs::File::open(src).map_err(|e| local(e, format!("cannot read '{}'", src.display())))?;
        let staging = self.dir.join(".partial");
        std::fs::create_dir_all(&staging).map_err(|e| local(e, format!("cannot create '{}'", staging.display())))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&staging)
            .map_err(|e| local(e, format!("cannot write in '{}'", staging.display())))?;
        let (hash, size) = copy_hashing(&mut input, tmp.as_file_mut())
            .map_err(|e| local(e, format!("cannot copy '{}'", src.display())))?;
        tmp.as_file().sync_all().map_err(|e| local(e, "cannot flush the copy"))?;
        if self.size(&hash) != Some(size) {
            tmp.persist(self.path(&hash)).map_err(|e| local(e.error, "cannot keep the copy"))?;
        }
        Ok((hash, size))
    }

    /// Opens the file named `hash` for reading.
    ///
    /// # Errors
    /// When the hash is malformed or this device does not have the file.
    pub fn open(&self, hash: &str) -> Result<std::fs::File> {
        check(hash)?;
        std::fs::File::open(self.path(hash)).map_err(|e| {
            local(
                e,
                format!("file {hash} is not on this device (in {}); `ferry file sync` fetches it", self.dir.display()),
            )
        })
    }

    /// Whether the file named `hash` still hashes to its name.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn verify(&self, hash: &str) -> Result<bool> {
        let f = self.open(hash)?;
        let (got, _) = hash_reader(f).map_err(|e| local(e, format!("cannot read file {hash}")))?;
        Ok(got == hash)
    }

    /// Moves a copy that no longer hashes to its name aside to `.corrupt/`, so that it is
    /// fetched again from the server.
    fn quarantine(&self, hash: &str) -> Result<PathBuf> {
        let dir = self.dir.join(".corrupt");
        std::fs::create_dir_all(&dir).map_err(|e| local(e, "cannot create .corrupt"))?;
        let to = dir.join(hash);
        std::fs::rename(self.path(hash), &to).map_err(|e| local(e, format!("cannot move file {hash} aside")))?;
        Ok(to)
    }
}

/// Copies what it reads into `to`.
struct Tee<'a, R: Read, W: std::io::Write> {
    from: &'a mut R,
    to: &'a mut W,
}

impl<R: Read, W: std::io::Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        self.to.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Which way a file moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// One file the worker has to move, as far as this device knows without asking the server.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Queued {
    pub hash: String,
    pub direction: Direction,
    /// Known size (the local copy's, or the server's answer for a download).
    pub size: Option<u64>,
    pub attempts: u32,
    pub last_error: Option<String>,
    #[serde(skip)]
    next_try: i64,
}

/// One logged transfer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Transfer {
    pub at: String,
    pub direction: String,
    pub hash: String,
    pub size: u64,
    /// Bytes moved by this attempt (less than `size` for a resumed or broken transfer).
    pub bytes: u64,
    pub millis: u64,
    /// `ok`, `mismatch` (the bytes did not hash to the name; nothing kept), `failed` or `paused`.
    pub outcome: String,
    pub error: Option<String>,
}

/// What `_ferry_files` knows of a hash: uploaded, size, attempts, next try, last error.
type Known = (bool, Option<i64>, u32, i64, Option<String>);

/// The worker's clock: milliseconds since the epoch as the system's clock said at start, moved
/// on by tokio's clock (the one its sleeps use), so that its schedule runs on a paused clock
/// in tests and never sees the system's clock step back.
#[derive(Clone, Copy, Debug)]
struct Clock {
    wall_ms: i64,
    at: Instant,
}

impl Clock {
    fn start() -> Clock {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Clock { wall_ms: wall.map_or(0, |d| d.as_millis() as i64), at: Instant::now() }
    }

    fn now_ms(&self) -> i64 {
        self.wall_ms + self.at.elapsed().as_millis() as i64
    }
}

impl Replica {
    /// The files of this replica on disk.
    pub fn files(&self) -> LocalFiles {
        LocalFiles::beside(self.path())
    }

    /// Copies `src` into this replica's files; returns its hash (put it in a file column).
    ///
    /// # Errors
    /// As [`LocalFiles::add`].
    pub fn add_file(&self, src: &Path) -> Result<(String, u64)> {
        self.files().add(src)
    }

    /// Every file hash the replica's file columns hold, with the newest clock of a row
    /// holding it, newest first. A row written locally and not yet stamped counts as newest.
    fn referenced(&self) -> Result<Vec<(String, String)>> {
        let Some(schema) = self.schema() else { return Ok(Vec::new()) };
        let mut newest: HashMap<String, String> = HashMap::new();
        for t in &schema.tables {
            let pk = quote(&t.pk_column().name);
            for col in &t.options.files {
                let c = quote(col);
                let sql = format!(
                    "SELECT t.{c}, max(coalesce(r.clock, 'z')) FROM {} t
                     LEFT JOIN _ferry_rows r ON r.tbl = ?1 AND r.pk = t.{pk}
                     WHERE t.{c} IS NOT NULL GROUP BY t.{c}",
                    quote(&t.name)
                );
                let mut stmt = self.connection().prepare_cached(&sql)?;
                let rows = stmt.query_map([&t.name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (hash, clock) = row?;
                    if !is_file_hash(&hash) {
                        continue;
                    }
                    let e = newest.entry(hash).or_default();
                    if clock > *e {
                        *e = clock;
                    }
                }
            }
        }
        let mut list: Vec<_> = newest.into_iter().collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(list)
    }

    /// The files to move, newest row first: ones this device has and has not seen on the
    /// server, and ones it lacks.
    ///
    /// # Errors
    /// When the replica cannot be read.
    pub fn file_queue(&self) -> Result<Vec<Queued>> {
        let files = self.files();
        let mut known = self.connection().prepare_cached(
            "SELECT uploaded, size, attempts, next_try, last_error FROM _ferry_files WHERE hash = ?1",
        )?;
        let mut out = Vec::new();
        for (hash, _) in self.referenced()? {
            let row: Option<Known> =
                known.query_row([&hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).optional()?;
            let (uploaded, size, attempts, next_try, last_error) = row.unwrap_or((false, None, 0, 0, None));
            let (direction, size) = match files.size(&hash) {
                Some(_) if uploaded => continue,
                Some(n) => (Direction::Up, Some(n)),
                None => (Direction::Down, size.map(|s| s as u64)),
            };
            out.push(Queued { hash, direction, size, attempts, last_error, next_try });
        }
        Ok(out)
    }

    /// The queue's totals.
    ///
    /// # Errors
    /// When the replica cannot be read.
    pub fn file_queue_totals(&self) -> Result<FileQueue> {
        let q = self.file_queue()?;
        Ok(FileQueue {
            queued: q.len() as u64,
            uploads: q.iter().filter(|f| f.direction == Direction::Up).count() as u64,
            downloads: q.iter().filter(|f| f.direction == Direction::Down).count() as u64,
            bytes_pending: q.iter().filter_map(|f| f.size).sum(),
            failing: q.iter().filter(|f| f.last_error.is_some()).count() as u64,
            paused: self.files_paused()?,
        })
    }

    /// The transfer log, newest first.
    ///
    /// # Errors
    /// When the replica cannot be read.
    pub fn file_log(&self, limit: usize) -> Result<Vec<Transfer>> {
        let mut stmt = self.connection().prepare_cached(
            "SELECT at, direction, hash, size, bytes, millis, outcome, error FROM _ferry_file_log ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Transfer {
                at: r.get(0)?,
                direction: r.get(1)?,
                hash: r.get(2)?,
                size: r.get::<_, i64>(3)? as u64,
                bytes: r.get::<_, i64>(4)? as u64,
                millis: r.get::<_, i64>(5)? as u64,
                outcome: r.get(6)?,
                error: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stops file transfers (running ones stop at their next chunk and resume later) until
    /// [`Replica::resume_files`]. Row sync goes on.
    ///
    /// # Errors
    /// When the replica cannot be written.
    pub fn pause_files(&self) -> Result<()> {
        self.set_meta(Key::FilesPaused, "1")
    }

    /// # Errors
    /// When the replica cannot be written.
    pub fn resume_files(&self) -> Result<()> {
        self.set_meta(Key::FilesPaused, "0")?;
        self.trigger_files()
    }

    /// Asks the worker to look for files to move now, forgetting retry waits.
    ///
    /// # Errors
    /// When the replica cannot be written.
    pub fn trigger_files(&self) -> Result<()> {
        self.connection().execute("UPDATE _ferry_files SET next_try = 0", [])?;
        let n: i64 = self.meta(Key::FilesTrigger)?.and_then(|s| s.parse().ok()).unwrap_or(0);
        self.set_meta(Key::FilesTrigger, &(n + 1).to_string())
    }

    /// # Errors
    /// When the replica cannot be read.
    pub fn files_paused(&self) -> Result<bool> {
        Ok(self.meta(Key::FilesPaused)?.as_deref() == Some("1"))
    }
}

/// How the worker moves files.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// Transfers at once (at least 1).
    pub concurrency: usize,
    /// Bytes per second over all transfers; `None` for no limit.
    pub rate: Option<u64>,
    /// The first wait after a failed transfer; it doubles per failure up to 5 minutes.
    pub retry_base: Duration,
    /// [`sync_files`] only: give a failing file up for this run after this many attempts.
    pub attempts: u32,
    /// [`run`] only: look for new files at least this often.
    pub interval: Duration,
    /// [`run`] only: look now when notified (the engine's [`crate::engine::Event::Files`]:
    /// files arrived on the server).
    pub wake: Option<Arc<tokio::sync::Notify>>,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            concurrency: DEFAULT_CONCURRENCY,
            rate: None,
            retry_base: Duration::from_secs(1),
            attempts: 3,
            interval: Duration::from_secs(10),
            wake: None,
        }
    }
}

/// What the worker reports.
#[derive(Clone, Debug)]
pub enum FileEvent {
    /// A transfer ended (also logged in the replica).
    Transferred(Transfer),
    /// A file can not move yet: the server does not hold it (download) or no synced row
    /// references it yet (upload).
    Waiting { hash: String, direction: Direction, reason: String },
    /// The queue after a look: files and bytes still to move.
    Queue { queued: u64, bytes_pending: u64 },
    /// Something an operator should know (low disk).
    Warning(String),
    /// Bytes moved so far in this pass, of how many known.
    Progress { bytes: u64, total: u64 },
    /// News came (a trigger, the stream, a write to the replica) while transfers are
    /// paused: nothing moves until `ferry file resume`.
    Held { why: &'static str },
}

/// What [`sync_files`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FilesReport {
    pub uploaded: u64,
    pub downloaded: u64,
    pub bytes: u64,
    /// Files that failed every attempt of this run.
    pub failed: u64,
    /// Files that cannot move yet (not on the server yet, or their rows not synced yet).
    pub waiting: u64,
    pub millis: u64,
}

/// A token bucket over bytes, shared by every transfer: debt is allowed, so a taker sleeps
/// until the bucket is back to zero, and the long-run rate is exactly `rate`.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    /// Tokens (bytes; negative while in debt) and when they were counted, on tokio's clock
    /// (the one its sleeps use).
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    /// `rate` bytes per second; bursts of up to a tenth of a second's worth (at least 64 KiB).
    pub fn new(rate: u64) -> RateLimit {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(65536.0);
        RateLimit { rate, burst, state: tokio::sync::Mutex::new((burst, tokio::time::Instant::now())) }
    }

    /// Waits until `n` bytes may go.
    pub async fn take(&self, n: u64) {
        // Holding the lock while sleeping makes waiters queue in turn.
        let mut s = self.state.lock().await;
        let now = tokio::time::Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
        s.1 = now;
        s.0 -= n as f64;
        if s.0 < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-s.0 / self.rate)).await;
        }
    }
}

/// What every transfer of one worker shares.
struct Shared {
    db: PathBuf,
    /// For the transfers' bookkeeping (`_ferry_files`, `_ferry_file_log`).
    conn: std::sync::Mutex<Connection>,
    files: LocalFiles,
    remote: Remote,
    rate: Option<RateLimit>,
    paused: AtomicBool,
    moved: AtomicU64,
    /// The server's upload limit, from its last check answer (0: not known).
    max_upload: AtomicU64,
    /// Transfers on the network at once (`FileOptions::concurrency`). A download gives its
    /// permit back once its last byte arrived, before its fsync and rename, so the disk's
    /// latency does not idle the network.
    network: tokio::sync::Semaphore,
    /// When retries are due (`_ferry_files.next_try`).
    clock: Clock,
}

impl Shared {
    fn replica(&self) -> Result<Replica> {
        Replica::open(&self.db)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A file ready to move now, with what the server said of it.
struct Job {
    hash: String,
    direction: Direction,
    size: u64,
    /// Upload: the bytes the server already holds.
    offset: u64,
    attempts: u32,
}

/// Looks at the queue and asks the server about it: the jobs ready now, newest first, and
/// the files that must wait.
async fn plan(
    shared: &Shared,
    events: &(dyn Fn(FileEvent) + Send + Sync),
    ignore_backoff: bool,
) -> Result<(Vec<Job>, u64)> {
    let queue = shared.replica()?.file_queue()?;
    let now = shared.clock.now_ms();
    let ready: Vec<&Queued> = queue.iter().filter(|q| ignore_backoff || q.next_try <= now).collect();
    let mut jobs = Vec::new();
    let mut waiting = 0;
    for chunk in ready.chunks(MAX_FILE_CHECK) {
        let hashes: Vec<String> = chunk.iter().map(|q| q.hash.clone()).collect();
        let answer = check_files(shared, hashes).await?;
        shared.max_upload.store(answer.max_upload_bytes.unwrap_or(0), Ordering::SeqCst);
        let conn = shared.conn();
        for (q, state) in chunk.iter().zip(answer.files) {
            let wait = |reason: &str| FileEvent::Waiting {
                hash: q.hash.clone(),
                direction: q.direction,
                reason: reason.to_owned(),
            };
            match (q.direction, state.state) {
                (Direction::Up, FileStateKind::Stored) => {
                    mark_uploaded(&conn, &q.hash, state.size.or(q.size))?;
                }
                (Direction::Up, FileStateKind::Missing | FileStateKind::Partial) => jobs.push(Job {
                    hash: q.hash.clone(),
                    direction: Direction::Up,
                    size: q.size.unwrap_or(0),
                    offset: state.offset.unwrap_or(0),
                    attempts: q.attempts,
                }),
                (Direction::Down, FileStateKind::Stored) => {
                    let size = state.size.unwrap_or(0);
                    conn.execute(
                        "INSERT INTO _ferry_files (hash, size) VALUES (?1, ?2) ON CONFLICT (hash) DO UPDATE SET size = excluded.size",
                        params![q.hash, size as i64],
                    )?;
                    jobs.push(Job {
                        hash: q.hash.clone(),
                        direction: Direction::Down,
                        size,
                        offset: 0,
                        attempts: q.attempts,
                    });
                }
                (Direction::Up, FileStateKind::Unreferenced) => {
                    waiting += 1;
                    events(wait("its row has not reached the server yet"));
                }
                (Direction::Down, FileStateKind::Unreferenced) => {
                    waiting += 1;
                    events(wait("the server has no row of yours referencing it (a local row not synced yet?)"));
                }
                (Direction::Down, _) => {
                    waiting += 1;
                    events(wait("not on the server yet; the device that added it uploads it when online"));
                }
            }
        }
    }
    Ok((jobs, waiting))
}

fn mark_uploaded(conn: &Connection, hash: &str, size: Option<u64>) -> Result<()> {
    conn.execute(
        "INSERT INTO _ferry_files (hash, uploaded, size, attempts, next_try, last_error) VALUES (?1, 1, ?2, 0, 0, NULL)
         ON CONFLICT (hash) DO UPDATE SET uploaded = 1, size = coalesce(excluded.size, size), attempts = 0, next_try = 0, last_error = NULL",
        params![hash, size.map(|s| s as i64)],
    )?;
    Ok(())
}

async fn check_files(shared: &Shared, hashes: Vec<String>) -> Result<FileCheckResponse> {
    shared.remote.check_files(hashes).await
}

/// The outcome of one transfer attempt.
enum Outcome {
    Done {
        bytes: u64,
    },
    /// The bytes did not hash to the name; nothing was kept.
    Mismatch {
        bytes: u64,
        message: String,
    },
    /// Stopped by a pause; resumes later.
    Paused {
        bytes: u64,
    },
    /// Not the server's to give or take yet: try at the next look, no backoff.
    Waiting(String),
    Failed {
        bytes: u64,
        error: Error,
    },
}

const CHUNK: usize = 256 * 1024;
const RATED_CHUNK: usize = 64 * 1024;

async fn upload(shared: &Arc<Shared>, job: &Job) -> Outcome {
    let mut offset = job.offset;
    // A wrong offset is answered with the right one: follow it once.
    for _ in 0..2 {
        match upload_from(shared, job, offset).await {
            Err(Error::Refused { code, offset: Some(at), .. }) if code == ErrorCode::UploadOffset.as_str() => {
                offset = at;
            }
            Ok(o) => return o,
            Err(e) => return Outcome::Failed { bytes: 0, error: e },
        }
    }
    Outcome::Failed { bytes: 0, error: Error::Protocol("the server moved the upload offset twice".into()) }
}

async fn upload_from(shared: &Arc<Shared>, job: &Job, offset: u64) -> Result<Outcome> {
    let path = shared.files.path(&job.hash);
    let mut file =
        tokio::fs::File::open(&path).await.map_err(|e| local(e, format!("cannot read {}", path.display())))?;
    let size = file.metadata().await.map_err(|e| local(e, "cannot stat"))?.len();
    let limit = shared.max_upload.load(Ordering::SeqCst);
    if limit > 0 && size > limit {
        // The server would answer 413; sending the bytes first would only waste them.
        let message = format!(
            "file {} is {size} bytes, over the server's upload limit of {limit} bytes (413); the server's max_upload_bytes in [files] must grow to take it",
            job.hash
        );
        return Ok(Outcome::Failed {
            bytes: 0,
            error: Error::Refused {
                status: 413,
                code: ErrorCode::PayloadTooLarge.as_str().into(),
                message,
                offset: None,
            },
        });
    }
    if offset > 0 {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| local(e, "cannot seek"))?;
    }
    let sent = Arc::new(AtomicU64::new(0));
    let chunk = if shared.rate.is_some() { RATED_CHUNK } else { CHUNK };
    let body = {
        let (shared, sent) = (shared.clone(), sent.clone());
        futures_util::stream::unfold(file, move |mut file| {
            let (shared, sent) = (shared.clone(), sent.clone());
            async move {
                use tokio::io::AsyncReadExt;
                if shared.paused.load(Ordering::SeqCst) {
                    return Some((Err(std::io::Error::other("paused")), file));
                }
                let mut buf = vec![0u8; chunk];
                let n = match file.read(&mut buf).await {
                    Ok(0) => return None,
                    Ok(n) => n,
                    Err(e) => return Some((Err(e), file)),
                };
                buf.truncate(n);
                if let Some(rate) = &shared.rate {
                    rate.take(n as u64).await;
                }
                sent.fetch_add(n as u64, Ordering::SeqCst);
                shared.moved.fetch_add(n as u64, Ordering::SeqCst);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
        })
    };
    let result = shared.remote.upload_file(&job.hash, size, offset, reqwest::Body::wrap_stream(body)).await;
    let bytes = sent.load(Ordering::SeqCst);
    match result {
        Ok(()) => {
            mark_uploaded(&shared.conn(), &job.hash, Some(size))?;
            Ok(Outcome::Done { bytes })
        }
        Err(Error::Refused { status: 422, message, .. }) => {
            // Corrupted on the way, or on this device: look at the local copy.
            if !shared.files.verify(&job.hash)? {
                let to = shared.files.quarantine(&job.hash)?;
                return Ok(Outcome::Mismatch {
                    bytes,
                    message: format!(
                        "this device's copy no longer hashes to its name; moved aside to {} (it is fetched again if the server has it)",
                        to.display()
                    ),
                });
            }
            Ok(Outcome::Mismatch { bytes, message })
        }
        Err(Error::Refused { status: 403, message, .. }) => Ok(Outcome::Waiting(message)),
        // Resumed from the offset the server named, by the caller.
        Err(e @ Error::Refused { offset: Some(_), .. }) if e.code() == Some(ErrorCode::UploadOffset) => Err(e),
        // The connection broke because the transfer was paused.
        Err(Error::Unreachable(_)) if shared.paused.load(Ordering::SeqCst) => Ok(Outcome::Paused { bytes }),
        Err(error) => Ok(Outcome::Failed { bytes, error }),
    }
}

async fn download(shared: &Arc<Shared>, job: &Job, network: tokio::sync::SemaphorePermit<'_>) -> Result<Outcome> {
    use futures_util::StreamExt;
    let part = shared.files.partial(&job.hash);
    if let Some(dir) = part.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| local(e, format!("cannot create {}", dir.display())))?;
    }
    let held = tokio::fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
    // A partial as long as the file (a crash before it was kept) is checked from scratch.
    let held = if held >= job.size { 0 } else { held };
    let resp = match shared.remote.download_file(&job.hash, held).await {
        Ok(r) => r,
        Err(Error::Refused { status: 404, message, .. }) => return Ok(Outcome::Waiting(message)),
        Err(error) => return Ok(Outcome::Failed { bytes: 0, error }),
    };
    let from = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT { held } else { 0 };
    let out = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(from == 0)
        .append(from > 0)
        .open(&part)
        .await
        .map_err(|e| local(e, format!("cannot write {}", part.display())))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, out);
    let mut hasher = (from == 0).then(sha2::Sha256::new);
    let mut stream = resp.bytes_stream();
    let mut bytes = 0u64;
    let mut total = from;
    while let Some(chunk) = stream.next().await {
        if shared.paused.load(Ordering::SeqCst) {
            out.flush().await.map_err(|e| local(e, "cannot write"))?;
            return Ok(Outcome::Paused { bytes });
        }
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                out.flush().await.map_err(|e| local(e, "cannot write"))?;
                let error = Error::Unreachable(format!(
                    "connection to {} broke during a download: {}",
                    shared.remote.base(),
                    crate::remote::error_chain(&e)
                ));
                return Ok(Outcome::Failed { bytes, error });
            }
        };
        if total + chunk.len() as u64 > job.size {
            drop(out);
            let _ = tokio::fs::remove_file(&part).await;
            return Ok(Outcome::Mismatch {
                bytes,
                message: format!("the server sent more than the {} bytes of file {}", job.size, job.hash),
            });
        }
        if let Some(rate) = &shared.rate {
            rate.take(chunk.len() as u64).await;
        }
        out.write_all(&chunk).await.map_err(|e| local(e, format!("cannot write {}", part.display())))?;
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        bytes += chunk.len() as u64;
        total += chunk.len() as u64;
        shared.moved.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    drop(network);
    out.flush().await.map_err(|e| local(e, "cannot write"))?;
    out.get_mut().sync_all().await.map_err(|e| local(e, "cannot flush"))?;
    drop(out);
    if total < job.size {
        return Ok(Outcome::Failed {
            bytes,
            error: Error::Unreachable(format!("download of {} ended after {total} of {} bytes", job.hash, job.size)),
        });
    }
    let digest = match hasher {
        Some(h) => ferry_core::to_hex(&h.finalize()),
        None => {
            let part = part.clone();
            tokio::task::spawn_blocking(move || std::fs::File::open(part).and_then(hash_reader))
                .await
                .map_err(|e| Error::Local(format!("hashing stopped: {e}")))?
                .map_err(|e| local(e, "cannot read the download"))?
                .0
        }
    };
    if digest != job.hash {
        let _ = tokio::fs::remove_file(&part).await;
        return Ok(Outcome::Mismatch {
            bytes,
            message: format!("the downloaded bytes hash to {digest}, not {}; nothing was kept", job.hash),
        });
    }
    tokio::fs::rename(&part, shared.files.path(&job.hash))
        .await
        .map_err(|e| local(e, format!("cannot keep file {}", job.hash)))?;
    Ok(Outcome::Done { bytes })
}

/// Runs one transfer and records it: the log, and the retry state.
async fn transfer(
    shared: Arc<Shared>,
    job: Job,
    retry_base: Duration,
    events: Arc<dyn Fn(FileEvent) + Send + Sync>,
) -> Result<bool> {
    let started = Instant::now();
    let Ok(network) = shared.network.acquire().await else { return Ok(false) };
    if shared.paused.load(Ordering::SeqCst) {
        // Paused while it waited for the network: it starts after the resume.
        return Ok(false);
    }
    let outcome = match job.direction {
        Direction::Up => upload(&shared, &job).await,
        Direction::Down => {
            download(&shared, &job, network).await.unwrap_or_else(|error| Outcome::Failed { bytes: 0, error })
        }
    };
    let millis = started.elapsed().as_millis() as u64;
    let (bytes, name, error) = match &outcome {
        Outcome::Done { bytes } => (*bytes, "ok", None),
        Outcome::Mismatch { bytes, message } => (*bytes, "mismatch", Some(message.clone())),
        Outcome::Paused { bytes } => (*bytes, "paused", None),
        Outcome::Failed { bytes, error } => (*bytes, "failed", Some(error.to_string())),
        Outcome::Waiting(reason) => {
            events(FileEvent::Waiting { hash: job.hash.clone(), direction: job.direction, reason: reason.clone() });
            return Ok(false);
        }
    };
    let conn = shared.conn();
    let at: String = conn.query_row(
        "INSERT INTO _ferry_file_log (direction, hash, size, bytes, millis, outcome, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING at",
        params![job.direction.name(), job.hash, job.size as i64, bytes as i64, millis as i64, name, error],
        |r| r.get(0),
    )?;
    match &outcome {
        Outcome::Done { .. } => {
            conn.execute(
                // Either way the server holds it now: uploaded, or downloaded from it.
                "INSERT INTO _ferry_files (hash, uploaded, size) VALUES (?1, 1, ?2)
                 ON CONFLICT (hash) DO UPDATE SET uploaded = 1, size = excluded.size, attempts = 0, next_try = 0, last_error = NULL",
                params![job.hash, job.size as i64],
            )?;
        }
        Outcome::Mismatch { .. } | Outcome::Failed { .. } => {
            let attempts = job.attempts + 1;
            let delay = retry_base.saturating_mul(1 << (attempts - 1).min(16)).min(MAX_RETRY_DELAY);
            conn.execute(
                "INSERT INTO _ferry_files (hash, attempts, next_try, last_error) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (hash) DO UPDATE SET attempts = excluded.attempts, next_try = excluded.next_try, last_error = excluded.last_error",
                params![job.hash, attempts, shared.clock.now_ms() + delay.as_millis() as i64, error],
            )?;
        }
        _ => {}
    }
    drop(conn);
    let ok = matches!(outcome, Outcome::Done { .. });
    events(FileEvent::Transferred(Transfer {
        at,
        direction: job.direction.name().to_owned(),
        hash: job.hash,
        size: job.size,
        bytes,
        millis,
        outcome: name.to_owned(),
        error,
    }));
    Ok(ok)
}

/// Free and total bytes of the filesystem holding `path`.
fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let probe = path.ancestors().find(|p| p.exists())?;
    let s = rustix::fs::statvfs(probe).ok()?;
    Some((s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize))
}

/// The low-disk warning, when free space is under [`LOW_DISK_SHARE`] and more than
/// [`LOW_DISK_QUEUE`] files are queued.
pub fn low_disk_warning(free: u64, total: u64, queued: u64, dir: &Path) -> Option<String> {
    (total > 0 && (free as f64) < LOW_DISK_SHARE * total as f64 && queued > LOW_DISK_QUEUE).then(|| {
        format!(
            "low disk: {:.1} % free ({} MB of {} MB) on the disk of {} with {queued} files queued; free some space or pause files (`ferry file pause`)",
            100.0 * free as f64 / total as f64,
            free / 1_000_000,
            total / 1_000_000,
            dir.display()
        )
    })
}

/// One look at the queue and the transfers it allows, at most `concurrency` at once;
/// whether anything moved, and how many files wait.
async fn pass(
    shared: &Arc<Shared>,
    opts: &FileOptions,
    events: &Arc<dyn Fn(FileEvent) + Send + Sync>,
    ignore_backoff: bool,
    report: &mut FilesReport,
) -> Result<usize> {
    let (jobs, waiting) = plan(shared, &**events, ignore_backoff).await?;
    report.waiting = waiting;
    let queued = jobs.len() as u64 + waiting;
    events(FileEvent::Queue { queued, bytes_pending: jobs.iter().map(|j| j.size - j.offset).sum() });
    if let Some((free, total)) = disk_space(shared.files.dir())
        && let Some(w) = low_disk_warning(free, total, queued, shared.files.dir())
    {
        tracing::warn!("{w}");
        events(FileEvent::Warning(w));
    }
    let total: u64 = jobs.iter().map(|j| j.size - j.offset).sum();
    shared.moved.store(0, Ordering::SeqCst);
    let mut set = tokio::task::JoinSet::new();
    let mut jobs = jobs.into_iter();
    let mut done = 0;
    let retry_base = opts.retry_base;
    loop {
        // The network permits (`Shared::network`) bound transfers on the wire; a few more
        // tasks wait for one, or finish writing to disk.
        while set.len() < 4 * opts.concurrency.max(1) && !shared.paused.load(Ordering::SeqCst) {
            let Some(job) = jobs.next() else { break };
            let direction = job.direction;
            set.spawn(transfer(shared.clone(), job, retry_base, events.clone()).map_ok(move |ok| (ok, direction)));
        }
        let Some(joined) = set.join_next().await else { break };
        events(FileEvent::Progress { bytes: shared.moved.load(Ordering::SeqCst), total });
        match joined.map_err(|e| Error::Local(format!("file transfer stopped: {e}")))? {
            Ok((true, dir)) => {
                done += 1;
                match dir {
                    Direction::Up => report.uploaded += 1,
                    Direction::Down => report.downloaded += 1,
                }
            }
            Ok((false, _)) => {}
            Err(e) => return Err(e),
        }
    }
    report.bytes += shared.moved.load(Ordering::SeqCst);
    Ok(done)
}

use futures_util::TryFutureExt as _;

fn shared(db: &Path, remote: &Remote, opts: &FileOptions) -> Result<Arc<Shared>> {
    let conn = ferry_sqlite::open(db).map_err(|e| Error::Local(format!("cannot open '{}': {e}", db.display())))?;
    Ok(Arc::new(Shared {
        db: db.to_owned(),
        conn: std::sync::Mutex::new(conn),
        files: LocalFiles::beside(db),
        remote: remote.clone(),
        rate: opts.rate.map(RateLimit::new),
        paused: AtomicBool::new(false),
        moved: AtomicU64::new(0),
        max_upload: AtomicU64::new(0),
        network: tokio::sync::Semaphore::new(opts.concurrency.max(1)),
        clock: Clock::start(),
    }))
}

/// Moves every file that can move now ("trigger now", once): passes until nothing is left
/// but files that must wait or that failed `opts.attempts` times in this run.
///
/// # Errors
/// When the replica cannot be read, or the server refuses the token or cannot be reached
/// at all.
pub async fn sync_files(
    db: &Path,
    remote: &Remote,
    opts: &FileOptions,
    events: impl Fn(FileEvent) + Send + Sync + 'static,
) -> Result<FilesReport> {
    let started = Instant::now();
    let shared = shared(db, remote, opts)?;
    let events: Arc<dyn Fn(FileEvent) + Send + Sync> = Arc::new(events);
    let mut report = FilesReport::default();
    if shared.replica()?.files_paused()? {
        return Err(Error::Local("file transfers are paused on this replica; `ferry file resume` first".into()));
    }
    let mut round = 0u32;
    loop {
        pass(&shared, opts, &events, round == 0, &mut report).await?;
        round += 1;
        // What failed waits its backoff, up to the attempts allowed.
        let replica = shared.replica()?;
        let queue = replica.file_queue()?;
        let retry: Vec<&Queued> =
            queue.iter().filter(|q| q.last_error.is_some() && q.attempts < opts.attempts).collect();
        if retry.is_empty() {
            report.failed = queue.iter().filter(|q| q.last_error.is_some()).count() as u64;
            break;
        }
        let soonest = retry.iter().map(|q| q.next_try).min().unwrap_or(0);
        let wait = (soonest - shared.clock.now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The file worker: looks at the queue at `opts.interval`, soon after the replica changes
/// (new rows may reference new files), on [`Replica::trigger_files`], and moves what it
/// can; [`Replica::pause_files`] stops it until resumed. Runs until `shutdown` completes.
///
/// # Errors
/// When the replica cannot be opened; transfer failures are retried, not returned.
pub async fn run(
    db: &Path,
    remote: &Remote,
    opts: FileOptions,
    events: impl Fn(FileEvent) + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let shared = shared(db, remote, &opts)?;
    let events: Arc<dyn Fn(FileEvent) + Send + Sync> = Arc::new(events);
    let watcher = Connection::open(db).map_err(|e| Error::Local(format!("cannot open '{}': {e}", db.display())))?;
    let look = |conn: &Connection| -> (bool, String, i64) {
        let meta = |k: Key<'_>| crate::replica::meta_of(conn, k).ok().flatten();
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap_or(0);
        (meta(Key::FilesPaused).as_deref() == Some("1"), meta(Key::FilesTrigger).unwrap_or_default(), version)
    };
    tokio::pin!(shutdown);
    let (mut paused, mut trigger, mut version) = look(&watcher);
    shared.paused.store(paused, Ordering::SeqCst);
    let mut last_pass = None::<Instant>;
    let mut next_retry = None::<i64>;
    let mut ignore_backoff = true;
    loop {
        if !paused {
            let mut report = FilesReport::default();
            let run_pass = pass(&shared, &opts, &events, ignore_backoff, &mut report);
            tokio::pin!(run_pass);
            // A pause reaches the transfers through `shared.paused`, set by the watch below.
            let result = loop {
                tokio::select! {
                    r = &mut run_pass => break Some(r),
                    _ = &mut shutdown => break None,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {
                        let (p, _, _) = look(&watcher);
                        shared.paused.store(p, Ordering::SeqCst);
                    }
                }
            };
            match result {
                None => return Ok(()),
                Some(Err(e)) => {
                    tracing::warn!("file pass failed: {e}");
                    events(FileEvent::Warning(format!("file transfers: {e}; retrying at the next look")));
                }
                Some(Ok(_)) => {}
            }
            last_pass = Some(Instant::now());
            // Our own bookkeeping moved data_version; only later commits are news.
            version = look(&watcher).2;
            next_retry = shared
                .replica()
                .and_then(|r| r.file_queue())
                .map_or(None, |q| q.iter().filter(|f| f.last_error.is_some()).map(|f| f.next_try).min());
        }
        // Wait for a reason to look again.
        let wake = opts.wake.clone().unwrap_or_default();
        loop {
            let mut told = false;
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = wake.notified() => told = true,
            }
            let (p, t, v) = look(&watcher);
            let woke = t != trigger;
            let resumed = paused && !p;
            paused = p;
            shared.paused.store(p, Ordering::SeqCst);
            let changed = v != version;
            version = v;
            trigger = t;
            let due = last_pass.is_none_or(|at| at.elapsed() >= opts.interval);
            let retry_due = next_retry.is_some_and(|t| t <= shared.clock.now_ms());
            if !paused && (woke || resumed || changed || due || retry_due || told) {
                ignore_backoff = woke || resumed;
                break;
            }
            if paused && (woke || told || changed) {
                let why = if woke {
                    "a trigger"
                } else if told {
                    "the stream's news"
                } else {
                    "a write to the replica"
                };
                events(FileEvent::Held { why });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_disk_warns_only_under_a_fifth_free_with_more_than_a_hundred_queued() {
        let dir = Path::new("/data/phone.db-files");
        assert!(low_disk_warning(19, 100, 101, dir).is_some());
        assert!(low_disk_warning(19, 100, 100, dir).is_none(), "100 queued is not more than 100");
        assert!(low_disk_warning(20, 100, 500, dir).is_none(), "20 % free is not under 20 %");
        assert!(low_disk_warning(0, 0, 500, dir).is_none(), "an unknown disk says nothing");
        let w = low_disk_warning(5_000_000_000, 100_000_000_000, 250, dir).unwrap();
        assert!(w.contains("5.0 %") && w.contains("250 files") && w.contains("phone.db-files"), "{w}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_holds_over_time_after_one_burst() {
        let limit = RateLimit::new(100_000);
        let started = Instant::now();
        for _ in 0..50 {
            limit.take(20_000).await;
        }
        // 1 MB at 100 kB/s, less the first burst of 64 KiB.
        let took = started.elapsed().as_secs_f64();
        let floor = (1_000_000.0 - 65_536.0) / 100_000.0;
        assert!(took >= floor - 0.01 && took <= floor + 0.3, "took {took} s, expected about {floor} s");
    }

    #[test]
    fn added_files_are_named_by_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::beside(&dir.path().join("app.db"));
        let src = dir.path().join("photo.jpg");
        std::fs::write(&src, b"not really a photo").unwrap();
        let (hash, size) = files.add(&src).unwrap();
        assert_eq!(hash, ferry_core::to_hex(&sha2::Sha256::digest(b"not really a photo")));
        assert_eq!((size, files.size(&hash)), (18, Some(18)));
        assert_eq!(files.path(&hash), dir.path().join("app.db-files").join(&hash));
        assert!(files.verify(&hash).unwrap());
        std::fs::write(files.path(&hash), b"tampered").unwrap();
        assert!(!files.verify(&hash).unwrap(), "a changed copy no longer verifies");
        assert!(files.open("../../etc/passwd").is_err());
    }
}
