//! Full sync: a whole data set moved between this server and a peer (`ferry full-sync
//! push|pull`, `POST /v1/admin/full-sync`; `docs/full-sync.md`).
//!
//! Four phases, each reported with rows and bytes done, speed and time left:
//!
//! - **snapshot**: the source's store exports the tables from one consistent snapshot
//!   ([`Store::export`]), written as chunks of at most [`CHUNK_ROWS`] rows of one table (a pull
//!   page's JSON, zstd-compressed on request) to `data_dir/full-sync/ID/`, each named in a
//!   manifest with its size and SHA-256. Memory holds a few chunks whatever the size.
//! - **transfer**: the chunks move to the target's spool, each checked against its SHA-256
//!   on arrival; a broken transfer asks which chunks arrived and sends only the others.
//! - **restore**: the target merges the rows as the source's push ([`Store::restore`]),
//!   through the merge rules, one transaction per table: re-running is harmless, a row
//!   changed on the target since the snapshot keeps its newer version, and a cancelled
//!   restore leaves the table as it was.
//! - **verify** (on request): an integrity check of the tables (`crate::integrity`).
//!
//! The run is recorded in the store as it goes ([`Store::save_full_sync`], twice a second):
//! that record is its progress, its history entry, and where a cancel is asked for.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::Remote;
use ferry_core::rules::Rule;
use ferry_core::schema::Schema;
use ferry_core::strategy::RowClocks;
use ferry_protocol::{
    ChunkInfo, FullSyncRun, PageOut, PeerFullSync, PeerSnapshotRequest, PhaseProgress, RowOut, SnapshotManifest,
    full_sync::FULL_SYNC_PHASES,
};
use ferry_store::{FeedRow, IncomingRow, Principal, RestoreStep, Store, StoreError};
use sha2::Digest;

use crate::{Failure, Link, device_here, now_ms, peer_role};

/// Rows per chunk at most (one table's).
pub const CHUNK_ROWS: usize = 2000;
/// A run that has not reported for this long is stuck: it may be cleared, and it no longer
/// keeps another from starting.
pub const STUCK_AFTER_MS: u64 = 30_000;
/// How often a run reports (saves its record, reads whether it is cancelled).
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Transfer attempts before the run fails.
const TRANSFER_ATTEMPTS: u32 = 5;

/// Which way the data set moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// This server's data set to the peer.
    Push,
    /// The peer's data set to this server.
    Pull,
}

impl Direction {
    /// `push` or `pull`.
    ///
    /// # Errors
    /// Any other word, named.
    pub fn parse(word: &str) -> Result<Direction, String> {
        match word {
            "push" => Ok(Direction::Push),
            "pull" => Ok(Direction::Pull),
            other => Err(format!(
                "direction '{}' is neither push (this server's data to the peer) nor pull (the peer's data here)",
                ferry_core::shown(other)
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
        }
    }
}

/// Rows left out of full syncs (`[full_sync.exclude]`: demo data): per table, a predicate over
/// the row's own columns.
#[derive(Clone, Debug, Default)]
pub struct Exclude(BTreeMap<String, Rule>);

impl Exclude {
    /// Checks each predicate against the schema.
    ///
    /// # Errors
    /// An unknown table, a predicate that does not parse, or one with a subquery or `:user`.
    pub fn parse(schema: &Schema, predicates: &BTreeMap<String, String>) -> Result<Exclude, String> {
        let mut out = BTreeMap::new();
        for (table, text) in predicates {
            let t = schema.table(table).ok_or_else(|| {
                format!(
                    "[full_sync.exclude] names table '{table}', which the schema does not sync; the synced tables are: {}",
                    schema.table_names().join(", ")
                )
            })?;
            let rule = Rule::parse(text, t, &schema.tables).map_err(|e| format!("[full_sync.exclude] {table}: {e}"))?;
            if !rule.subqueries().is_empty() || names_user(&rule.expr) {
                return Err(format!(
                    "[full_sync.exclude] {table}: '{text}' must be a predicate over the row's own columns (no subquery, no :user), e.g. \"dropzone = 'demo'\""
                ));
            }
            out.insert(table.clone(), rule);
        }
        Ok(Exclude(out))
    }

    /// Whether rows of `table` may be left out (a predicate names it).
    pub fn covers(&self, table: &str) -> bool {
        self.0.contains_key(table)
    }

    /// Whether a row stays in a full sync.
    pub fn keeps(&self, schema: &Schema, table: &str, key: &str, state: &ferry_core::RowState) -> bool {
        match (self.0.get(table), schema.table(table)) {
            (Some(rule), Some(t)) => !ferry_store::row_matches(rule, t, key, state),
            _ => true,
        }
    }
}

/// Whether a predicate compares with the requesting user (`:user`).
fn names_user(e: &ferry_core::rules::Expr) -> bool {
    use ferry_core::rules::{Expr, Operand};
    let user = |o: &Operand| matches!(o, Operand::User(_));
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => names_user(a) || names_user(b),
        Expr::Not(a) | Expr::IsTrue(a) => names_user(a),
        Expr::Const(_) => false,
        Expr::Compare(a, _, b) => user(a) || user(b),
        Expr::IsNull(a, _) => user(a),
        Expr::InList(a, list, _) => user(a) || list.iter().any(user),
        Expr::InSelect(..) => true,
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub id: String,
    pub direction: Direction,
    pub tables: Vec<String>,
    /// The tables are every table of the link: afterwards the link reads on from the
    /// snapshot instead of sending what it held again.
    pub whole_link: bool,
    pub compress: bool,
    pub verify: bool,
    pub notify: Option<String>,
    /// Rows left out: of the snapshot on a push, of the restore on a pull.
    pub exclude: Exclude,
    /// `[[alerts.webhook]]`: told of the outcome too.
    pub hooks: crate::webhooks::Hooks,
}

/// A new run's id: time-ordered, unique enough for one store's history.
pub fn new_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("fs-{}-{}-{}", now_ms(), std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether `id` may name a run's spool directory: 1 to 80 letters, digits and `-`.
pub fn valid_id(id: &str) -> bool {
    (1..=80).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The run that keeps a new one from starting: one still reporting.
///
/// # Errors
/// The store cannot be read.
pub async fn running<S: Store>(store: &S) -> Result<Option<FullSyncRun>, StoreError> {
    let now = now_ms();
    Ok(store
        .full_syncs(20)
        .await?
        .into_iter()
        .find(|r| r.state == "RUNNING" && now.saturating_sub(r.heartbeat_ms) < STUCK_AFTER_MS))
}

/// Marks runs that stopped reporting (their process died) as failed; returns them.
///
/// # Errors
/// The store cannot be read or written.
pub async fn clear_stuck<S: Store>(store: &S) -> Result<Vec<FullSyncRun>, StoreError> {
    let now = now_ms();
    let mut cleared = Vec::new();
    for mut run in store.full_syncs(1000).await? {
        if run.state == "RUNNING" && now.saturating_sub(run.heartbeat_ms) >= STUCK_AFTER_MS {
            run.state = "FAILED".into();
            run.finished_ms = Some(now);
            run.error = Some(format!(
                "cleared: its process stopped reporting {} s before (in phase {})",
                now.saturating_sub(run.heartbeat_ms) / 1000,
                run.phase
            ));
            store.save_full_sync(run.clone()).await?;
            cleared.push(run);
        }
    }
    Ok(cleared)
}

/// Runs a full sync with the peer of `link` to the end (success, failure or cancel), keeping
/// its record in `store` and telling `observe` of each report. Chunks are kept under
/// `spool/ID/` while it runs and removed after.
pub async fn run<S: Store>(
    store: &S,
    link: &Link,
    plan: Plan,
    spool: &Path,
    observe: &(dyn Fn(&FullSyncRun) + Send + Sync),
) -> FullSyncRun {
    let started = now_ms();
    let phases = FULL_SYNC_PHASES
        .iter()
        .map(|p| PhaseProgress {
            name: (*p).into(),
            state: if *p == "verify" && !plan.verify { "skipped" } else { "pending" }.into(),
            ..PhaseProgress::default()
        })
        .collect();
    let run = FullSyncRun {
        id: plan.id.clone(),
        direction: plan.direction.name().into(),
        peer: link.name.clone(),
        method: "snapshot".into(),
        tables: plan.tables.clone(),
        compress: plan.compress,
        verify: plan.verify,
        state: "RUNNING".into(),
        phase: "snapshot".into(),
        phases,
        started_ms: started,
        heartbeat_ms: started,
        notify: plan.notify.clone(),
        ..FullSyncRun::default()
    };
    let shared = Arc::new(Mutex::new(run));
    let cancel = Arc::new(AtomicBool::new(false));
    report(store, &shared, &cancel, observe).await;
    let result = {
        let work = job(store, link, &plan, spool, &shared, &cancel);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => report(store, &shared, &cancel, observe).await,
            }
        }
    };
    let dir = spool.join(&plan.id);
    let mut run = lock(&shared).clone();
    let now = now_ms();
    run.finished_ms = Some(now);
    run.heartbeat_ms = now;
    run.speed = per_second(run.bytes, now.saturating_sub(run.started_ms));
    match &result {
        Ok(()) => {
            run.state = "SUCCESS".into();
            run.phase = "done".into();
        }
        Err(e) => {
            run.state = if matches!(e, Failure::Cancelled) { "CANCELLED" } else { "FAILED" }.into();
            run.error = Some(e.to_string());
            for p in run.phases.iter_mut().filter(|p| p.state == "running") {
                p.state = "failed".into();
            }
            // The peer's side ends too (a restore still running there rolls back).
            if let Ok(remote) = Remote::new(&link.url, &link.token) {
                let _ = remote.as_peer(&link.name).end_full_sync(&plan.id).await;
            }
        }
    }
    // A run resumes within itself (a broken connection), never across runs: its chunks go.
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let entry = ferry_protocol::SyncLogEntry {
        at_ms: run.started_ms,
        peer: link.name.clone(),
        kind: "full-sync".into(),
        direction: run.direction.clone(),
        status: match run.state.as_str() {
            "SUCCESS" => "SUCCESS",
            "CANCELLED" => "WARNING",
            _ => "FAILED",
        }
        .into(),
        rows: run.rows,
        bytes: run.bytes_sent,
        duration_ms: now.saturating_sub(run.started_ms),
        error: run.error.as_ref().map(|e| format!("full sync {}: {e}", run.id)),
        ..ferry_protocol::SyncLogEntry::default()
    };
    crate::log(store, link, entry).await;
    if let Some(url) = &plan.notify {
        run.notified = Some(match ferry_client::remote::post_webhook(url, &run).await {
            Ok(status) => format!("answered {status}"),
            Err(e) => format!("failed: {e}"),
        });
    }
    if let Err(e) = store.save_full_sync(run.clone()).await {
        tracing::warn!(id = %run.id, "cannot record the full sync's end: {e}");
    }
    observe(&run);
    let event = crate::webhooks::Event {
        name: "full_sync.finished",
        peer: link.name.clone(),
        data: serde_json::to_value(&run).expect("a run serializes"),
    };
    plan.hooks.deliver(store, event, link.log_keep.as_millis() as u64).await;
    run
}

fn lock(shared: &Mutex<FullSyncRun>) -> std::sync::MutexGuard<'_, FullSyncRun> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Saves the run's record and hands it to `observe`; a cancel asked for in the store is
/// passed on to the work.
async fn report<S: Store>(
    store: &S,
    shared: &Mutex<FullSyncRun>,
    cancel: &AtomicBool,
    observe: &(dyn Fn(&FullSyncRun) + Send + Sync),
) {
    let run = {
        let mut run = lock(shared);
        run.heartbeat_ms = now_ms();
        run.clone()
    };
    if let Ok(Some(stored)) = store.full_sync(&run.id).await
        && stored.cancel_requested
    {
        cancel.store(true, Ordering::SeqCst);
        lock(shared).cancel_requested = true;
    }
    if let Err(e) = store.save_full_sync(run.clone()).await {
        tracing::warn!(id = %run.id, "cannot record the full sync's progress: {e}");
    }
    observe(&run);
}

/// Updates phase `name` of the shared run.
fn progress(shared: &Mutex<FullSyncRun>, name: &str, f: impl FnOnce(&mut PhaseProgress)) {
    let mut run = lock(shared);
    let now = now_ms();
    if let Some(p) = run.phases.iter_mut().find(|p| p.name == name) {
        if p.started_ms.is_none() {
            p.started_ms = Some(now);
            p.state = "running".into();
        }
        f(p);
        let elapsed = now.saturating_sub(p.started_ms.unwrap_or(now));
        let (done, total) = if p.bytes_total > 0 { (p.bytes_done, p.bytes_total) } else { (p.rows_done, p.rows_total) };
        p.percent = if total == 0 { 0.0 } else { (done as f64 * 100.0 / total as f64).min(100.0) };
        p.speed = per_second(done, elapsed);
        p.eta_ms = (p.speed > 0.0 && total >= done).then(|| ((total - done) as f64 / p.speed * 1000.0) as u64);
    }
    run.phase = name.into();
}

fn finish_phase(shared: &Mutex<FullSyncRun>, name: &str) {
    progress(shared, name, |p| {
        p.state = "done".into();
        p.rows_done = p.rows_total.max(p.rows_done);
        p.bytes_done = p.bytes_total.max(p.bytes_done);
        p.finished_ms = Some(now_ms());
        p.eta_ms = Some(0);
    });
}

fn per_second(n: u64, ms: u64) -> f64 {
    if ms == 0 { 0.0 } else { n as f64 * 1000.0 / ms as f64 }
}

fn check(cancel: &AtomicBool) -> Result<(), Failure> {
    if cancel.load(Ordering::SeqCst) { Err(Failure::Cancelled) } else { Ok(()) }
}

/// `work`, unless a cancel comes first (looked at ten times a second): a request to a peer
/// that hangs does not hold a cancel up.
async fn or_cancel<T>(
    cancel: &AtomicBool,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let cancelled = async {
        while !cancel.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        done = work => done,
        () = cancelled => Err(Failure::Cancelled),
    }
}

async fn job<S: Store>(
    store: &S,
    link: &Link,
    plan: &Plan,
    spool: &Path,
    shared: &Mutex<FullSyncRun>,
    cancel: &AtomicBool,
) -> Result<(), Failure> {
    let remote = Remote::new(&link.url, &link.token)?.as_peer(&link.name);
    let dir = spool.join(&plan.id);
    let manifest = match plan.direction {
        Direction::Push => {
            let total = store.count_rows(plan.tables.clone()).await?;
            progress(shared, "snapshot", |p| p.rows_total = total);
            let snapshot = Snapshot { id: &plan.id, compress: plan.compress, dir: &dir, exclude: &plan.exclude };
            let manifest = take_snapshot(store, plan.tables.clone(), &snapshot, cancel, &|rows, bytes, excluded| {
                progress(shared, "snapshot", |p| {
                    p.rows_done = rows + excluded;
                    p.bytes_done = bytes;
                    p.bytes_total = 0;
                });
                lock(shared).excluded = excluded;
            })
            .await?;
            noted(shared, &manifest);
            finish_phase(shared, "snapshot");
            upload(&remote, &manifest, &dir, shared, cancel).await?;
            finish_phase(shared, "transfer");
            remote_restore(&remote, &manifest, shared, cancel).await?;
            // The peer's device here, to record what both now hold: when it cannot be had (a
            // user name two servers made with two ids), the link cannot run either; the rows
            // have moved all the same.
            let me = remote.me().await?;
            let role = peer_role(store, &me);
            match device_here(store, link, me, role).await {
                Ok(there) => record_bases(store, &there, &manifest, &dir, &plan.exclude, cancel).await?,
                Err(e) => {
                    tracing::warn!(id = %plan.id, "the versions both sides hold are not recorded for the link: {e}")
                }
            }
            finish_phase(shared, "restore");
            manifest
        }
        Direction::Pull => {
            let manifest = remote_snapshot(&remote, plan, shared, cancel).await?;
            noted(shared, &manifest);
            finish_phase(shared, "snapshot");
            download(&remote, &manifest, &dir, shared, cancel).await?;
            finish_phase(shared, "transfer");
            let me = remote.me().await?;
            let role = peer_role(store, &me);
            let here = device_here(store, link, me, role).await?;
            progress(shared, "restore", |p| p.rows_total = manifest.rows);
            let (_, changed, excluded) =
                restore_snapshot(store, &here, &manifest, &dir, &plan.exclude, cancel, &|rows, changed| {
                    progress(shared, "restore", |p| p.rows_done = rows);
                    lock(shared).changed = changed;
                })
                .await?;
            lock(shared).changed = changed;
            lock(shared).excluded = excluded;
            record_bases(store, &here, &manifest, &dir, &plan.exclude, cancel).await?;
            finish_phase(shared, "restore");
            let _ = remote.end_full_sync(&plan.id).await;
            manifest
        }
    };
    if plan.verify {
        progress(shared, "verify", |p| p.rows_total = manifest.rows);
        let mut differing = 0u64;
        for table in &plan.tables {
            check(cancel)?;
            let t = crate::integrity::table_report(store, &remote, table).await?;
            differing += t.differences.len() as u64;
            progress(shared, "verify", |p| p.rows_done += t.here_rows);
        }
        let mut run = lock(shared);
        run.verified_equal = Some(differing == 0);
        run.differences = Some(differing);
        drop(run);
        finish_phase(shared, "verify");
    }
    if plan.whole_link {
        let way = match plan.direction {
            Direction::Push => "out",
            Direction::Pull => "in",
        };
        store.set_link_start(&link.name, way, &manifest.cursor).await?;
    }
    Ok(())
}

/// Records that the peer (`peer`: its device here) and this store both hold at least the
/// snapshot's version of each of its rows: the link's later changes to them are judged
/// against it, as after rows that crossed the link (else each would look concurrent with a
/// version the other side never saw).
async fn record_bases<S: Store>(
    store: &S,
    peer: &Principal,
    manifest: &SnapshotManifest,
    dir: &Path,
    exclude: &Exclude,
    cancel: &AtomicBool,
) -> Result<(), Failure> {
    let schema = Arc::new(store.schema().clone());
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    // One transaction for them all, fed from the chunks on disk (a partial record, should
    // a chunk fail, claims nothing untrue: the restore is done).
    let feed = async move {
        for c in &manifest.chunks {
            check(cancel)?;
            let bytes = tokio::fs::read(chunk_path(dir, c.n)).await.map_err(|e| local(dir, &e))?;
            let (schema, exclude, compressed) = (schema.clone(), exclude.clone(), manifest.compressed);
            let covered = exclude.covers(&c.table);
            let held = off_thread(move || {
                if !covered {
                    return chunk_clocks(&bytes, compressed);
                }
                // The rows the exclusion left out were not restored: each row's values decide.
                let page = decode_chunk(&schema, &bytes, compressed)?;
                Ok(page
                    .rows
                    .into_iter()
                    .filter(|(t, k, state)| exclude.keeps(&schema, t, k, state))
                    .map(|(t, k, state)| (t, k, state.clocks()))
                    .collect())
            })
            .await?;
            if tx.send(held).await.is_err() {
                // The store stopped; its error says why.
                break;
            }
        }
        Ok::<_, Failure>(())
    };
    let (saved, fed) = tokio::join!(store.save_peer_bases_from(&peer.device_id, rx), feed);
    fed?;
    saved?;
    Ok(())
}

/// Records what the snapshot holds in the run.
fn noted(shared: &Mutex<FullSyncRun>, manifest: &SnapshotManifest) {
    let mut run = lock(shared);
    run.rows = manifest.rows;
    run.bytes = manifest.bytes;
    run.cursor = Some(manifest.cursor.clone());
}

/// Sends the chunks the peer lacks, asking again after a break which ones arrived.
async fn upload(
    remote: &Remote,
    manifest: &SnapshotManifest,
    dir: &Path,
    shared: &Mutex<FullSyncRun>,
    cancel: &AtomicBool,
) -> Result<(), Failure> {
    let held = || async {
        match remote.peer_full_sync(&manifest.id).await {
            Ok(state) => Ok(state.held.into_iter().collect()),
            Err(ferry_client::Error::Refused { status: 404, .. }) => Ok(HashSet::new()),
            Err(e) => Err(Failure::from(e)),
        }
    };
    let send = |c: &ChunkInfo| {
        let (n, sha) = (c.n, c.sha256.clone());
        async move {
            let bytes = tokio::fs::read(chunk_path(dir, n)).await.map_err(|e| local(dir, &e))?;
            Ok(remote.put_chunk(&manifest.id, n, &sha, bytes).await?)
        }
    };
    transfer(manifest, shared, cancel, held, send).await
}

/// Fetches the chunks this side lacks (a resumed run keeps what arrived).
async fn download(
    remote: &Remote,
    manifest: &SnapshotManifest,
    dir: &Path,
    shared: &Mutex<FullSyncRun>,
    cancel: &AtomicBool,
) -> Result<(), Failure> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| local(dir, &e))?;
    let held = || async { Ok(held_chunks(dir).into_iter().collect()) };
    let fetch = |c: &ChunkInfo| {
        let (n, sha) = (c.n, c.sha256.clone());
        async move {
            let bytes = remote.get_chunk(&manifest.id, n).await?;
            save_chunk(dir, n, &bytes, &sha).map_err(Failure::Local)
        }
    };
    transfer(manifest, shared, cancel, held, fetch).await
}

/// Moves every chunk of `manifest` the far side does not hold (`held` says which it does)
/// with `move_one`, accounting the transfer phase; after a broken connection it waits a
/// little longer each time, asks again what arrived, and goes on from there.
async fn transfer<H, M>(
    manifest: &SnapshotManifest,
    shared: &Mutex<FullSyncRun>,
    cancel: &AtomicBool,
    held: impl Fn() -> H,
    move_one: impl Fn(&ChunkInfo) -> M,
) -> Result<(), Failure>
where
    H: std::future::Future<Output = Result<HashSet<u64>, Failure>>,
    M: std::future::Future<Output = Result<(), Failure>>,
{
    progress(shared, "transfer", |p| {
        p.bytes_total = manifest.bytes;
        p.rows_total = manifest.rows;
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        lock(shared).attempts = attempt;
        check(cancel)?;
        let moved = or_cancel(cancel, async {
            let held = held().await?;
            if attempt > 1 {
                lock(shared).resumed_chunks = held.len() as u64;
            }
            let already: u64 = manifest.chunks.iter().filter(|c| held.contains(&c.n)).map(|c| c.bytes).sum();
            progress(shared, "transfer", |p| p.bytes_done = already);
            for c in manifest.chunks.iter().filter(|c| !held.contains(&c.n)) {
                check(cancel)?;
                move_one(c).await?;
                lock(shared).bytes_sent += c.bytes;
                progress(shared, "transfer", |p| {
                    p.bytes_done += c.bytes;
                    p.rows_done += c.rows;
                });
            }
            Ok(())
        })
        .await;
        match moved {
            Ok(()) => return Ok(()),
            Err(Failure::Remote(e @ ferry_client::Error::Unreachable(_))) if attempt < TRANSFER_ATTEMPTS => {
                tracing::warn!(id = %manifest.id, "transfer broke (attempt {attempt}): {e}; resuming");
                or_cancel(cancel, async {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    Ok(())
                })
                .await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asks the peer to restore the chunks it holds, and follows it to the end.
async fn remote_restore(
    remote: &Remote,
    manifest: &SnapshotManifest,
    shared: &Mutex<FullSyncRun>,
    cancel: &AtomicBool,
) -> Result<(), Failure> {
    progress(shared, "restore", |p| p.rows_total = manifest.rows);
    let first = remote.restore_snapshot(&manifest.id, manifest).await?;
    follow(remote, &manifest.id, first, "restore", cancel, |state| {
        progress(shared, "restore", |p| p.rows_done = state.rows_done);
        lock(shared).changed = state.changed;
        (state.state == "RESTORED").then_some(())
    })
    .await
}

/// Asks the peer for a snapshot and follows it until its manifest is ready.
async fn remote_snapshot(
    remote: &Remote,
    plan: &Plan,
    shared: &Mutex<FullSyncRun>,
    cancel: &AtomicBool,
) -> Result<SnapshotManifest, Failure> {
    let req = PeerSnapshotRequest { tables: plan.tables.clone(), compress: plan.compress };
    let first = remote.take_snapshot(&plan.id, &req).await?;
    follow(remote, &plan.id, first, "snapshot", cancel, |state| {
        progress(shared, "snapshot", |p| {
            p.rows_done = state.rows_done;
            p.rows_total = state.rows_total;
        });
        if state.state == "READY" { state.manifest.take() } else { None }
    })
    .await
}

/// Follows the peer's side of run `id` (`state`: its first answer), ten times a second,
/// until `done` finds it finished, the peer says it failed (its `what`), or a cancel comes
/// (the run then ends the peer's side).
async fn follow<T>(
    remote: &Remote,
    id: &str,
    mut state: PeerFullSync,
    what: &str,
    cancel: &AtomicBool,
    mut done: impl FnMut(&mut PeerFullSync) -> Option<T>,
) -> Result<T, Failure> {
    loop {
        if let Some(finished) = done(&mut state) {
            return Ok(finished);
        }
        if state.state == "FAILED" {
            return Err(Failure::Local(format!(
                "the peer's {what} failed: {}",
                state.error.as_deref().unwrap_or("no reason given")
            )));
        }
        check(cancel)?;
        state = or_cancel(cancel, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(remote.peer_full_sync(id).await?)
        })
        .await?;
    }
}

fn local(dir: &Path, e: &std::io::Error) -> Failure {
    Failure::Local(format!("full sync files in '{}': {e}", dir.display()))
}

/// Where chunk `n` of a run is kept.
pub fn chunk_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.chunk"))
}

/// The chunks held in `dir` (each was checked against its SHA-256 before it was kept).
pub fn held_chunks(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut held: Vec<u64> =
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".chunk")?.parse().ok()).collect();
    held.sort_unstable();
    held
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ferry_core::to_hex(&sha2::Sha256::digest(bytes))
}

/// Keeps chunk `n` in `dir` if its bytes hash to `sha256` (written whole, then renamed: a
/// chunk is held entirely or not at all).
///
/// # Errors
/// The bytes do not hash to `sha256` (nothing is kept), or the file cannot be written.
pub fn save_chunk(dir: &Path, n: u64, bytes: &[u8], sha256: &str) -> Result<(), String> {
    let actual = sha256_hex(bytes);
    if actual != sha256 {
        return Err(format!(
            "chunk {n} ({} bytes) hashes to {actual}, not {}; it was damaged on the way and is not kept (send it again)",
            bytes.len(),
            ferry_core::shown(sha256)
        ));
    }
    write_chunk(dir, n, bytes)
}

/// Writes chunk `n` into `dir` whole, then names it: a chunk found there is entire.
///
/// # Errors
/// The file cannot be written.
pub fn write_chunk(dir: &Path, n: u64, bytes: &[u8]) -> Result<(), String> {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let part = dir.join(format!("{n:08}.part"));
        std::fs::write(&part, bytes)?;
        std::fs::rename(&part, chunk_path(dir, n))
    };
    write().map_err(|e| format!("cannot keep chunk {n} in '{}': {e}", dir.display()))
}

/// Encodes rows as a chunk: a pull page's JSON (`cursor` `""`, `more` false), compressed on
/// request. A full sync's chunks hold rows of one table; a device's snapshot's, any.
///
/// # Errors
/// The rows cannot be encoded or compressed.
pub fn encode_chunk(schema: &Schema, rows: &[FeedRow], compress: bool) -> Result<Vec<u8>, String> {
    let out = || {
        rows.iter().filter_map(|r| {
            Some(RowOut { table: schema.table(&r.table)?, key: &r.key, state: &r.state, base: None, seen: None })
        })
    };
    let json = serde_json::to_vec(&PageOut { rows: out, cursor: "", more: false, removed: &[] })
        .map_err(|e| format!("encoding a chunk: {e}"))?;
    if !compress {
        return Ok(json);
    }
    zstd::bulk::compress(&json, 3).map_err(|e| format!("compressing a chunk: {e}"))
}

/// Decodes a chunk into its rows (and the rows this server's rules refuse).
///
/// # Errors
/// Bytes that are not a chunk.
pub fn decode_chunk(schema: &Schema, bytes: &[u8], compressed: bool) -> Result<ferry_protocol::DecodedPage, String> {
    let json;
    let bytes = if compressed {
        json = zstd::stream::decode_all(bytes).map_err(|e| format!("a chunk does not decompress: {e}"))?;
        &json[..]
    } else {
        bytes
    };
    ferry_protocol::decode_page(schema, bytes).map_err(|e| format!("a chunk is not a page of rows: {e}"))
}

/// Runs a chunk's CPU work (encoding, hashing, decoding) on a blocking thread, so that the
/// store's side of the pipeline runs beside it instead of waiting its turn.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Local(format!("a chunk's worker stopped: {e}")))?
        .map_err(Failure::Local)
}

/// The clocks of a chunk's rows, values unread.
fn chunk_clocks(bytes: &[u8], compressed: bool) -> Result<Vec<(String, String, RowClocks)>, String> {
    if compressed {
        let json = zstd::stream::decode_all(bytes).map_err(|e| format!("a chunk does not decompress: {e}"))?;
        ferry_protocol::full_sync::page_clocks(&json)
    } else {
        ferry_protocol::full_sync::page_clocks(bytes)
    }
}

/// Where and how a snapshot is taken.
pub struct Snapshot<'a> {
    pub id: &'a str,
    pub compress: bool,
    /// Its chunks and manifest go here.
    pub dir: &'a Path,
    pub exclude: &'a Exclude,
}

/// Takes a snapshot of `tables` into `how.dir`: chunks and their manifest (`manifest.json`).
/// `progress` hears the rows and bytes written so far, and the rows left out.
///
/// # Errors
/// The store or the files fail, or `cancel` was set.
pub async fn take_snapshot<S: Store>(
    store: &S,
    tables: Vec<String>,
    how: &Snapshot<'_>,
    cancel: &AtomicBool,
    progress: &(dyn Fn(u64, u64, u64) + Send + Sync),
) -> Result<SnapshotManifest, Failure> {
    let (id, compress, dir) = (how.id, how.compress, how.dir);
    let _ = tokio::fs::remove_dir_all(dir).await;
    tokio::fs::create_dir_all(dir).await.map_err(|e| local(dir, &e))?;
    let schema = store.schema();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<FeedRow>>(4);
    let mut manifest = SnapshotManifest {
        id: id.to_owned(),
        tables: tables.clone(),
        compressed: compress,
        ..SnapshotManifest::default()
    };
    let export = store.export(tables, tx);
    let mut excluded = 0u64;
    let write = async {
        // Owned here: when the writing stops (a cancel, a full disk), the receiver goes with
        // it and the export's next send fails, instead of waiting for a reader forever.
        let mut rx = rx;
        let shared = Arc::new(schema.clone());
        while let Some(mut batch) = rx.recv().await {
            check(cancel)?;
            let (schema, exclude) = (shared.clone(), how.exclude.clone());
            let (parts, left_out) = off_thread(move || {
                let before = batch.len();
                batch.retain(|r| exclude.keeps(&schema, &r.table, &r.key, &r.state));
                let parts = batch
                    .chunks(CHUNK_ROWS)
                    .map(|part| {
                        let bytes = encode_chunk(&schema, part, compress)?;
                        Ok((part[0].table.clone(), part.len() as u64, sha256_hex(&bytes), bytes))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok((parts, (before - batch.len()) as u64))
            })
            .await?;
            excluded += left_out;
            for (table, rows, sha256, bytes) in parts {
                let n = manifest.chunks.len() as u64;
                tokio::fs::write(chunk_path(dir, n), &bytes).await.map_err(|e| local(dir, &e))?;
                manifest.chunks.push(ChunkInfo { n, table, rows, bytes: bytes.len() as u64, sha256 });
                manifest.rows += rows;
                manifest.bytes += bytes.len() as u64;
                progress(manifest.rows, manifest.bytes, excluded);
            }
        }
        Ok::<(), Failure>(())
    };
    let (cursor, written) = tokio::join!(export, write);
    written?;
    manifest.cursor = cursor?;
    let text = serde_json::to_vec(&manifest).map_err(|e| Failure::Local(format!("encoding a manifest: {e}")))?;
    tokio::fs::write(dir.join("manifest.json"), text).await.map_err(|e| local(dir, &e))?;
    Ok(manifest)
}

/// The manifest a snapshot in `dir` was taken with, once it is complete.
pub fn read_manifest(dir: &Path) -> Option<SnapshotManifest> {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()
}

/// Restores the snapshot whose chunks are in `dir` as `who`'s push (the source's device
/// here), one transaction per table, with the version both sides last held of each row as
/// `seen`; rows `exclude` names are left out. `progress` hears the rows read and changed so
/// far. Returns them, and how many were left out.
///
/// # Errors
/// A chunk is missing or damaged, the store fails, or `cancel` was set (the table being
/// restored rolls back; tables restored before it stay).
pub async fn restore_snapshot<S: Store>(
    store: &S,
    who: &Principal,
    manifest: &SnapshotManifest,
    dir: &Path,
    exclude: &Exclude,
    cancel: &AtomicBool,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<(u64, u64, u64), Failure> {
    let schema = store.schema();
    let owned = Arc::new(schema.clone());
    let (mut rows, mut changed, mut excluded) = (0u64, 0u64, 0u64);
    for table in &manifest.tables {
        let shared = &owned;
        let (tx, rx) = tokio::sync::mpsc::channel::<RestoreStep>(2);
        let restore = store.restore(who, rx);
        let feed = async move {
            let (mut sent, mut left_out) = (0u64, 0u64);
            for c in manifest.chunks.iter().filter(|c| c.table == *table) {
                check(cancel)?;
                let bytes = tokio::fs::read(chunk_path(dir, c.n)).await.map_err(|e| local(dir, &e))?;
                let (shared, compressed, n, sha256) = (shared.clone(), manifest.compressed, c.n, c.sha256.clone());
                let page = off_thread(move || {
                    if sha256_hex(&bytes) != sha256 {
                        return Err(format!("chunk {n} changed on disk since it arrived; run the full sync again"));
                    }
                    decode_chunk(&shared, &bytes, compressed)
                })
                .await?;
                for r in page.refused {
                    tracing::warn!(chunk = c.n, "a row of the snapshot is refused here: {}", r.reason);
                }
                let mut decoded = page.rows;
                let before = decoded.len();
                decoded.retain(|(t, k, state)| exclude.keeps(schema, t, k, state));
                left_out += (before - decoded.len()) as u64;
                let keys = decoded.iter().map(|(t, k, _)| (t.clone(), k.clone())).collect();
                let bases = store.peer_bases(&who.device_id, keys).await?;
                let batch: Vec<IncomingRow> = decoded
                    .into_iter()
                    .map(|(t, k, state)| {
                        let seen = Some(bases.get(&(t.clone(), k.clone())).cloned().unwrap_or_default());
                        IncomingRow { table: t, key: k, state, seen, if_version: None }
                    })
                    .collect();
                sent += batch.len() as u64;
                if tx.send(RestoreStep::Rows(batch)).await.is_err() {
                    // The restore stopped; its error says why.
                    return Ok(left_out);
                }
                progress(rows + sent, changed);
            }
            check(cancel)?;
            let _ = tx.send(RestoreStep::Commit).await;
            Ok::<_, Failure>(left_out)
        };
        let (restored, fed) = tokio::join!(restore, feed);
        let restored = restored?;
        excluded += fed?;
        if !restored.committed {
            return Err(Failure::Cancelled);
        }
        rows += restored.rows;
        changed += restored.changed;
        progress(rows, changed);
    }
    Ok((rows, changed, excluded))
}
