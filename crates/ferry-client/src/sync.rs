//! One sync: schema, push everything pending, pull everything new.

use std::sync::Arc;
use std::time::Instant;

use ferry_policy::push;

use crate::error::{Error, Result};
use crate::remote::Remote;
use crate::replica::{Key, PendingRow, PulledRow, QueuePosition, Replica, Stamping};

/// Tunables of one sync.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Rows per push request.
    pub push_batch: usize,
    /// Rows per pull page.
    pub pull_page: usize,
    /// How pulled changes settle against local changes not yet pushed, per table.
    pub resolvers: crate::Resolvers,
    /// Push, pull, or both.
    pub direction: Direction,
    /// Sync only these tables (every table when `None`). Each selection keeps its own pull
    /// cursor, so adding a table later pulls that table from the start.
    pub tables: Option<Vec<String>>,
    /// Subscriptions this sync names (`TABLE WHERE PREDICATE`): kept in the replica, and
    /// renewed each time a sync names them. The device then reads only those rows of those
    /// tables; rows move in and out as the subscriptions change.
    pub subscribe: Vec<String>,
    /// How long a subscription stays without a sync naming it; then it is dropped, and with
    /// it its rows from the replica.
    pub subscription_ttl_ms: u64,
    /// A first pull (the cursor at the start, no subscriptions) takes the server's snapshot
    /// of what this device may read, a chunk at a time, instead of its feed page by page.
    pub snapshot: bool,
}

/// How long a subscription stays unnamed by default: a week.
pub const SUBSCRIPTION_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Which way a sync goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Push local changes, then pull.
    #[default]
    Both,
    /// Push only (a one-way backup up: [`seed`]).
    Up,
    /// Pull only (restore down, for a new device: [`hydrate`]).
    Down,
}

/// A one-way sync up: pushes every local change, pulls nothing.
///
/// # Errors
/// As [`sync`].
pub async fn seed(
    replica: &mut Replica,
    remote: &Remote,
    opts: &SyncOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<SyncReport> {
    sync(replica, remote, &SyncOptions { direction: Direction::Up, ..opts.clone() }, progress).await
}

/// A one-way sync down, for a new device: pulls everything it may read, pushes nothing.
///
/// # Errors
/// As [`sync`].
pub async fn hydrate(
    replica: &mut Replica,
    remote: &Remote,
    opts: &SyncOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<SyncReport> {
    sync(replica, remote, &SyncOptions { direction: Direction::Down, ..opts.clone() }, progress).await
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            push_batch: 1000,
            pull_page: 5000,
            resolvers: crate::Resolvers::default(),
            direction: Direction::Both,
            tables: None,
            subscribe: Vec::new(),
            subscription_ttl_ms: SUBSCRIPTION_TTL_MS,
            snapshot: true,
        }
    }
}

/// Progress of a running sync, for bars and logs.
#[derive(Clone, Debug)]
pub enum Progress {
    Pushing {
        done: u64,
        total: u64,
    },
    Pulling {
        rows: u64,
    },
    /// The server refused this row as invalid; it was set aside with the message.
    SetAside {
        table: String,
        key: String,
        message: String,
    },
}

/// What one sync did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub schema_changes: Vec<String>,
    pub pushed: u64,
    pub pushed_changed: u64,
    pub pulled: u64,
    pub pulled_changed: u64,
    pub conflicts: u64,
    /// Local changes the server refused as stale (`reject-stale`); kept, marked conflicted.
    pub refused: u64,
    /// Local changes the server refused as invalid, set aside so the rest moved on.
    pub set_aside: u64,
    /// Pulled rows that break a rule, set aside so the rest of the pull went on.
    pub refused_pulls: u64,
    /// Rows removed here because they left what this device's user may read, or (after a
    /// full re-sync) because the server no longer has them.
    pub removed: u64,
    /// The server's compaction horizon had passed this replica's cursor: everything was
    /// pulled again from the start.
    pub resynced: bool,
    /// The server's compaction horizon had passed this replica's cursor, and it caught up by
    /// difference: the rows that differed were fetched (and those the server no longer shows
    /// removed), with the bytes the comparison and the rows took.
    pub caught_up: bool,
    pub caught_up_rows: u64,
    pub catch_up_bytes: u64,
    /// The first pull took the server's snapshot (chunks applied), then read on from it.
    pub from_snapshot: bool,
    pub snapshot_chunks: u64,
    /// Bytes of the server's answers during this sync (decompressed JSON).
    pub bytes_received: u64,
    pub cursor: String,
    pub elapsed_ms: u64,
}

/// What a catch-up by difference took.
struct CaughtUp {
    /// Rows fetched (they differed here, or were missing).
    rows: u64,
    /// Bytes of the comparison's and the rows' request and answer bodies.
    bytes: u64,
    /// Where the pull reads on from.
    cursor: String,
}

/// Compares each table this replica pulls with the rows its user may read on the server (the
/// digest tree, `crate::descent`), takes the rows that differ through the pull's merge, and
/// removes those the server no longer shows (but for rows with a change not accepted yet);
/// then moves the cursor to where the server's walk of this device's feed ended. The cursor
/// stays until the last table is done: a catch-up cut short is started again.
async fn catch_up(
    replica: &mut Replica,
    remote: &Remote,
    schema: &ferry_core::schema::Schema,
    tables: Option<&[String]>,
    cursor_key: Key<'_>,
    old_cursor: &str,
    resolvers: &crate::replica::Resolvers,
) -> Result<(CaughtUp, crate::replica::Applied)> {
    use ferry_core::digest::{Difference, Tree};
    let mut session = [0u8; 8];
    getrandom::fill(&mut session).map_err(|e| Error::Local(format!("no randomness: {e}")))?;
    let session = ferry_core::to_hex(&session);
    let names: Vec<String> = match tables {
        Some(t) => t.to_vec(),
        None => replica.synced_tables(),
    };
    let selection: Option<Vec<String>> = tables.map(<[String]>::to_vec);
    let mut caught = CaughtUp { rows: 0, bytes: 0, cursor: String::new() };
    let mut total = crate::replica::Applied::default();
    let bytes = std::sync::atomic::AtomicU64::new(0);
    for table in &names {
        let (ours, pending) = replica.digest_entries(table)?;
        let tree = Tree::new(ours);
        let ask = |nodes: Vec<String>, rows: Vec<String>| {
            let req = ferry_protocol::CatchUpRequest {
                session: session.clone(),
                table: table.clone(),
                tables: selection.clone(),
                nodes,
                rows,
            };
            let bytes = &bytes;
            async move {
                let (answer, sent, received) = remote.catch_up(&req).await?;
                bytes.fetch_add(sent + received, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, Error>(answer)
            }
        };
        let root = ask(vec![String::new()], Vec::new()).await?;
        if caught.cursor.is_empty() {
            caught.cursor = root.cursor.clone();
        }
        let root = crate::descent::node_of(&root.nodes, "")?;
        let differences = crate::descent::descend(&tree, root, |nodes, rows| {
            let asked = ask(nodes, rows);
            async move {
                let a = asked.await?;
                Ok(crate::descent::Answer { nodes: a.nodes, rows: a.rows })
            }
        })
        .await?;
        let fetch: Vec<String> =
            differences.iter().filter(|d| !matches!(d, Difference::OnlyHere(_))).map(|d| d.key().to_owned()).collect();
        let removed: Vec<(String, String)> = differences
            .iter()
            .filter_map(|d| match d {
                Difference::OnlyHere(e) if !pending.contains(&e.key) => Some((table.clone(), e.key.clone())),
                _ => None,
            })
            .collect();
        let mut rows = Vec::new();
        let mut refused = Vec::new();
        for keys in fetch.chunks(1000) {
            let req = ferry_protocol::PeerRowsRequest { table: table.clone(), keys: keys.to_vec() };
            let (page, sent, received) = remote.catch_up_rows(schema, &req).await?;
            bytes.fetch_add(sent + received, std::sync::atomic::Ordering::Relaxed);
            rows.extend(page.rows.into_iter().map(|(table, key, state)| PulledRow { table, key, state }));
            refused.extend(page.refused);
        }
        caught.rows += rows.len() as u64;
        let applied = replica.apply_page_removing(&rows, &refused, &removed, cursor_key, old_cursor, resolvers)?;
        total.removed += applied.removed;
        total.changed += applied.changed;
        total.conflicts += applied.conflicts;
    }
    // Every table caught up: the pull reads on from where the server's walk ended.
    replica.apply_page(&[], &[], cursor_key, &caught.cursor, resolvers)?;
    caught.bytes = bytes.load(std::sync::atomic::Ordering::Relaxed);
    Ok((caught, total))
}

/// A first hydrate from the server's snapshot: the rows this device may read as of one
/// moment, fetched a chunk at a time (each checked against its SHA-256, the next fetched while
/// one is applied) and merged as pulled pages are; then the cursor moves to where the
/// snapshot ends and the pull reads on from there. A download cut short resumes at the chunk
/// it lacks ([`Key::Snapshot`]). The cursor and the chunks applied, or `None` when the server
/// takes no snapshot now (an older server, too many at once, or one that failed): the pull
/// then reads the feed page by page, merging over whatever chunks did arrive.
#[allow(clippy::too_many_arguments)]
async fn from_snapshot(
    replica: &mut Replica,
    remote: &Remote,
    (schema, version): (&Arc<ferry_core::schema::Schema>, &str),
    tables: Option<&[String]>,
    cursor_key: Key<'_>,
    resolvers: &crate::replica::Resolvers,
    report: &mut SyncReport,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Option<(String, u64)>> {
    let selection = tables.map_or_else(|| "*".to_owned(), |t| t.join(","));
    let resumed = replica.meta(Key::Snapshot)?.and_then(|v| {
        let mut parts = v.splitn(3, ' ');
        let (id, next, sel) = (parts.next()?, parts.next()?.parse::<u64>().ok()?, parts.next()?);
        (sel == selection).then(|| (id.to_owned(), next))
    });
    let resumed = match resumed {
        Some((id, next)) => match remote.snapshot(&id, next).await {
            Ok(_) => Some((id, next)),
            Err(Error::Refused { status: 404, .. }) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let (id, next) = match resumed {
        Some(found) => found,
        None => match remote.start_snapshot(tables).await {
            Ok(s) => {
                replica.set_meta(Key::Snapshot, &format!("{} 0 {selection}", s.id))?;
                (s.id, 0)
            }
            Err(e @ Error::Unauthorized(_)) => return Err(e),
            Err(e) => {
                tracing::info!("the server takes no snapshot now ({e}): pulling page by page");
                return Ok(None);
            }
        },
    };
    // Chunk `n` once it is written (or the snapshot's end), fetched and decoded by a task of
    // its own: the next one is on its way while one is applied.
    let fetch = |n: u64| {
        let (remote, schema, id, version) = (remote.clone(), schema.clone(), id.clone(), version.to_owned());
        Fetched(tokio::spawn(async move {
            let chunk = loop {
                let now = match remote.snapshot(&id, n).await {
                    Ok(now) => now,
                    // Gone (expired, or the server restarted): the feed page by page, merging
                    // over what arrived.
                    Err(Error::Refused { status: 404, message, .. }) => return Ok(Next::Failed(message)),
                    Err(e) => return Err(e),
                };
                if let Some(c) = now.chunks.into_iter().find(|c| c.n == n) {
                    break c;
                }
                match (now.state.as_str(), now.cursor) {
                    ("done", Some(cursor)) => return Ok(Next::End(cursor)),
                    ("done", None) => {
                        return Err(Error::Protocol(format!(
                            "snapshot {id} is done but names no cursor to read on from"
                        )));
                    }
                    ("failed", _) => return Ok(Next::Failed(now.error.unwrap_or_else(|| "no reason given".into()))),
                    // Still being written: ask again.
                    _ => {}
                }
            };
            // A chunk whose bytes do not hash to the listed SHA-256 is fetched again, twice
            // at most.
            let mut attempt = 0;
            let bytes = loop {
                attempt += 1;
                let bytes = remote.snapshot_chunk(&id, n).await?;
                let got = ferry_core::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                if got == chunk.sha256 {
                    break bytes;
                }
                let damaged = format!(
                    "chunk {n} of snapshot {id} from {} arrived damaged (SHA-256 {got}, expected {})",
                    remote.base(),
                    chunk.sha256
                );
                if attempt == 3 {
                    return Err(Error::Unreachable(format!("{damaged}; three times, the next sync fetches it again")));
                }
                tracing::warn!("{damaged}; fetching it again");
            };
            let page = ferry_protocol::decode_page(&schema, &bytes)
                .map_err(|e| Error::Protocol(format!("chunk {n} of snapshot {id} is not a page of rows: {e}")))?;
            if !page.refused.is_empty() {
                // As for a pull page: rows of a newer schema are not bad rows; the next sync
                // takes the schema and this chunk again.
                let now = remote.schema().await?.version;
                if now != version {
                    return Err(Error::Schema(format!(
                        "the server's schema changed during this sync (version {version}, now {now}); the next sync takes it and this snapshot's chunk {n} again"
                    )));
                }
            }
            Ok(Next::Chunk(n, page))
        }))
    };
    let mut chunks = 0;
    let mut ahead = fetch(next);
    loop {
        let arrived = (&mut ahead.0).await.map_err(|e| Error::Local(format!("snapshot task failed: {e}")))??;
        let (n, page) = match arrived {
            Next::Chunk(n, page) => (n, page),
            Next::End(cursor) => {
                replica.apply_page(&[], &[], cursor_key, &cursor, resolvers)?;
                replica.set_meta(Key::Snapshot, "")?;
                if let Err(e) = remote.end_snapshot(&id).await {
                    tracing::debug!("ending snapshot {id}: {e}");
                }
                return Ok(Some((cursor, chunks)));
            }
            Next::Failed(why) => {
                tracing::warn!("the server's snapshot {id} failed ({why}): pulling page by page");
                replica.set_meta(Key::Snapshot, "")?;
                return Ok(None);
            }
        };
        ahead = fetch(n + 1);
        let rows: Vec<PulledRow> =
            page.rows.into_iter().map(|(table, key, state)| PulledRow { table, key, state }).collect();
        let applied = replica.apply_page(
            &rows,
            &page.refused,
            Key::Snapshot,
            &format!("{id} {} {selection}", n + 1),
            resolvers,
        )?;
        report.pulled += applied.received as u64;
        report.refused_pulls += applied.set_aside as u64;
        report.pulled_changed += applied.changed as u64;
        report.conflicts += applied.conflicts as u64;
        chunks += 1;
        progress(Progress::Pulling { rows: report.pulled });
    }
}

/// What the fetch of a snapshot's next chunk found.
enum Next {
    Chunk(u64, ferry_protocol::DecodedPage),
    /// No more chunks: the cursor to read on from.
    End(String),
    Failed(String),
}

/// A snapshot's chunk being fetched and decoded.
struct Fetched(tokio::task::JoinHandle<Result<Next>>);

impl Drop for Fetched {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn batch_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Local(format!("no randomness: {e}")))?;
    Ok(ferry_core::to_hex(&b))
}

/// Binds the replica to the token's user and the server's store on first sync, and
/// refuses to mix them afterwards (a cursor means nothing against another store).
async fn check_identity(replica: &mut Replica, remote: &Remote) -> Result<()> {
    let me = remote.me().await?;
    match replica.meta(Key::UserId)? {
        Some(u) if u != me.user_id => {
            return Err(Error::Mismatch(format!(
                "this replica belongs to user {u}, but the token is for user '{}' ({}); use that user's token or a new --db file",
                me.user_name, me.user_id
            )));
        }
        Some(_) => {}
        None => replica.set_meta(Key::UserId, &me.user_id)?,
    }
    match replica.meta(Key::StoreId)? {
        Some(s) if s != me.store_id => {
            return Err(Error::Mismatch(format!(
                "this replica was synced with server store {s}, but {} serves store {}; use the original server or a new --db file",
                remote.base(),
                me.store_id
            )));
        }
        Some(_) => {}
        None => replica.set_meta(Key::StoreId, &me.store_id)?,
    }
    replica.set_meta(Key::Server, remote.base())?;
    Ok(())
}

/// Pushes one batch and acknowledges it.
async fn push_batch(
    replica: &mut Replica,
    remote: &Remote,
    rows: &[PendingRow],
    report: &mut SyncReport,
) -> Result<()> {
    let (request, sent) = push_request(replica, &encode_rows(replica, rows)?)?;
    let resp = remote.push_json(request).await?;
    acknowledge(replica, rows, resp, &sent, report)
}

/// A batch's rows serialized for a push request (a JSON array of
/// [`ferry_protocol::RowOut`], straight from their states), and the batch's fingerprint.
/// Made while the previous batch is out; [`push_request`] wraps it once that is answered.
#[derive(Default)]
struct EncodedRows {
    json: Vec<u8>,
    fingerprint: String,
}

fn encode_rows(replica: &Replica, rows: &[PendingRow]) -> Result<EncodedRows> {
    let fingerprint = ferry_core::schema::fingerprint(
        &rows.iter().map(|r| format!("{}|{}|{}", r.table, r.key, r.stamp)).collect::<Vec<_>>().join("\n"),
    );
    let schema = replica.schema().ok_or_else(|| Error::Local("no schema installed".into()))?;
    let wire = rows
        .iter()
        .map(|r| {
            let table = schema.table(&r.table).ok_or_else(|| Error::Schema(format!("unknown table '{}'", r.table)))?;
            Ok(ferry_protocol::RowOut {
                table,
                key: &r.key,
                state: &r.state,
                // The server reads `base` only when `seen` is missing (as older clients
                // sent it): with `seen` it is left out, as dead weight on every row.
                base: r.seen.is_none().then_some(&r.base),
                seen: r.seen.as_ref(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_vec(&wire).map_err(|e| Error::Local(format!("encoding a push: {e}")))?;
    Ok(EncodedRows { json, fingerprint })
}

/// The push request (a [`ferry_protocol::PushRequest`] as JSON) for a batch's encoded rows,
/// and the pull cursor it carries (read now: answering the previous batch may have moved it).
fn push_request(replica: &mut Replica, rows: &EncodedRows) -> Result<(Vec<u8>, String)> {
    let sent = replica.meta(Key::Cursor)?.unwrap_or_else(|| "0".into());
    // A batch whose answer never came is sent again under the same id while its rows are
    // unchanged, so the server answers it from its record instead of applying it twice.
    let batch = match replica
        .meta(Key::UnansweredBatch)?
        .and_then(|v| v.split_once(' ').filter(|(_, f)| *f == rows.fingerprint).map(|(id, _)| id.to_owned()))
    {
        Some(id) => id,
        None => batch_id()?,
    };
    replica.set_meta(Key::UnansweredBatch, &format!("{batch} {}", rows.fingerprint))?;
    Ok((ferry_protocol::push_body(&batch, Some(&sent), &rows.json), sent))
}

/// Records the server's answer to the push of `rows` (sent with the pull cursor `sent`).
fn acknowledge(
    replica: &mut Replica,
    rows: &[PendingRow],
    resp: ferry_protocol::PushResponse,
    sent: &str,
    report: &mut SyncReport,
) -> Result<()> {
    let schema = replica.schema().ok_or_else(|| Error::Local("no schema installed".into()))?;
    let refused = resp
        .rejected
        .iter()
        .map(|r| {
            let (t, state) = ferry_protocol::decode_row(schema, &r.current)
                .map_err(|e| Error::Protocol(format!("server sent a bad row: {e}")))?;
            Ok((PulledRow { table: t.name.clone(), key: r.key.clone(), state }, r.message.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    report.refused += refused.len() as u64;
    replica.acknowledge_with(rows, resp.cursor.as_deref().map(|past| (sent, past)), &refused)?;
    replica.set_meta(Key::UnansweredBatch, "")?;
    report.pushed += rows.len() as u64;
    report.pushed_changed += resp.changed as u64;
    Ok(())
}

/// Whether the server refused a push for its content (a JSON error body saying so), which
/// is about rows; anything else (a proxy's 404, 408, 429 …) is not the rows' fault.
fn refuses_rows(e: &Error) -> bool {
    matches!(e, Error::Refused { code, .. } if push::refusal_about_rows(code))
}

/// After the server refused the batch `rows` with `refusal`: the batch is split until the
/// refused rows are found ([`push::Split`]); those are set aside with the server's answer
/// and the rest is pushed.
async fn push_refused(
    replica: &mut Replica,
    remote: &Remote,
    rows: Vec<PendingRow>,
    refusal: Error,
    total: u64,
    report: &mut SyncReport,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<()> {
    let mut split = push::Split::new(rows.len(), refusal);
    loop {
        match split.step() {
            push::Step::Push(range) => match push_batch(replica, remote, &rows[range.clone()], report).await {
                Ok(()) => progress(Progress::Pushing { done: report.pushed, total: total.max(report.pushed) }),
                Err(e) if refuses_rows(&e) => split.refused(range, e),
                Err(e) => return Err(e),
            },
            push::Step::SetAside(i, Error::Refused { status, code, message, .. }) => {
                replica.set_aside(&rows[i], status, &code, &message)?;
                report.set_aside += 1;
                progress(Progress::SetAside { table: rows[i].table.clone(), key: rows[i].key.clone(), message });
            }
            push::Step::SetAside(_, other) => return Err(other),
            push::Step::Done => return Ok(()),
        }
    }
}

/// A push on its way; stopped if the sync ends before its answer is needed.
struct InFlight(tokio::task::JoinHandle<Result<ferry_protocol::PushResponse>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Installs the server's schema, pushes every pending change, then pulls until caught up,
/// and records the outcome in the replica's sync history.
///
/// A change the server refuses as invalid (a 4xx other than 401) is set aside with the
/// server's answer and the rest of the queue moves on; nothing else stops it.
///
/// # Errors
/// The first failure; everything done before it is kept (each step is its own
/// transaction) and the next sync continues from there.
pub async fn sync(
    replica: &mut Replica,
    remote: &Remote,
    opts: &SyncOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<SyncReport> {
    let started_at: String = replica
        .connection()
        .query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| r.get(0))
        .unwrap_or_default();
    let mut set_aside = 0;
    let result = {
        let mut counting = |p: Progress| {
            if matches!(p, Progress::SetAside { .. }) {
                set_aside += 1;
            }
            progress(p)
        };
        sync_once(replica, remote, opts, &mut counting).await
    };
    let entry = match &result {
        Ok(r) => crate::queue::HistoryEntry {
            started_at,
            outcome: "completed".into(),
            pushed: r.pushed,
            pulled: r.pulled,
            set_aside: r.set_aside,
            ..Default::default()
        },
        Err(e) => crate::queue::HistoryEntry {
            started_at,
            outcome: "failed".into(),
            set_aside,
            error: Some(e.to_string()),
            ..Default::default()
        },
    };
    // The history is a record, not part of the sync: failing to write it fails nothing.
    let _ = replica.record_history(&entry);
    result
}

async fn sync_once(
    replica: &mut Replica,
    remote: &Remote,
    opts: &SyncOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<SyncReport> {
    let started = Instant::now();
    let received_before = remote.received_bytes();
    let mut report = SyncReport::default();
    check_identity(&mut *replica, remote).await?;
    let schema = remote.schema().await?;
    report.schema_changes = replica.install_schema(&schema)?;

    // A large outbox is stamped a chunk at a time while pushes are out, instead of all of
    // it before the first batch goes.
    let (push, pull) = (opts.direction != Direction::Down, opts.direction != Direction::Up);
    let mut stamping = if push {
        replica.start_stamping()?
    } else {
        replica.stamp()?;
        None
    };
    let total = replica.pending_count()?;
    let tables = match &opts.tables {
        Some(t) => {
            let mut t = t.clone();
            t.sort();
            t.dedup();
            if let Some(unknown) = t.iter().find(|n| replica.schema().and_then(|s| s.table(n)).is_none()) {
                return Err(Error::Config(format!(
                    "table '{unknown}' (in --tables) is not in the server's schema; the tables are: {}",
                    replica.schema().map(|s| s.table_names().join(", ")).unwrap_or_default()
                )));
            }
            Some(t)
        }
        None => None,
    };
    // One pull cursor per selection of tables.
    let cursor_key = tables.as_deref().map_or(Key::Cursor, Key::TablesCursor);
    // One batch is out at a time; while it is, the outbox's next chunk is stamped and the
    // next batch read and encoded, so the server's work on one batch and this replica's on
    // the next overlap.
    let read = |replica: &mut Replica, stamping: &mut Option<Stamping>, after: Option<&QueuePosition>| {
        let (rows, end) =
            replica.pending_while_stamping(opts.push_batch, tables.as_deref(), after, stamping.as_mut())?;
        let json = encode_rows(replica, &rows)?;
        Ok::<_, Error>(Batch { rows, end, json })
    };
    let mut batch = if push { read(replica, &mut stamping, None)? } else { Batch::default() };
    while !batch.rows.is_empty() || stamping.is_some() {
        if batch.rows.is_empty() {
            // Every row read waits for a write still in the outbox: stamp on.
            stamp_on(replica, &mut stamping)?;
            batch = read(replica, &mut stamping, batch.end.as_ref())?;
            continue;
        }
        let (request, sent) = push_request(replica, &batch.json)?;
        let mut flight = {
            let remote = remote.clone();
            InFlight(tokio::spawn(async move { remote.push_json(request).await }))
        };
        stamp_on(replica, &mut stamping)?;
        let next = read(replica, &mut stamping, batch.end.as_ref())?;
        match (&mut flight.0).await.map_err(|e| Error::Local(format!("push task failed: {e}")))? {
            Ok(resp) => {
                acknowledge(replica, &batch.rows, resp, &sent, &mut report)?;
                progress(Progress::Pushing { done: report.pushed, total: total.max(report.pushed) });
            }
            Err(e) if refuses_rows(&e) => {
                push_refused(replica, remote, batch.rows, e, total, &mut report, &mut *progress).await?;
            }
            Err(e) => return Err(e),
        }
        batch = next;
    }

    let mut cursor = replica.meta(cursor_key)?.unwrap_or_else(|| "0".into());
    // The next page is asked for as soon as this one's cursor is known, so the server builds
    // it, and another task decodes it, while this one is applied.
    let version = schema.version.clone();
    let schema = Arc::new(replica.schema().ok_or_else(|| Error::Local("no schema installed".into()))?.clone());
    let subscriptions = Arc::new(replica.subscriptions(&opts.subscribe, opts.subscription_ttl_ms)?);
    let fetch = |cursor: String| {
        let (remote, tables, limit, schema) = (remote.clone(), tables.clone(), opts.pull_page, schema.clone());
        let (version, subscriptions) = (version.clone(), subscriptions.clone());
        Prefetch(tokio::spawn(async move {
            let page = remote.pull_decoded(&schema, &cursor, limit, tables.as_deref(), &subscriptions).await?;
            if !page.refused.is_empty() {
                // Rows of a schema newer than this sync's (a server restarted with new tables
                // or columns since the sync began) would read as bad rows and be set aside
                // for good; this page is applied only once it is known to be the same schema.
                let now = remote.schema().await?.version;
                if now != version {
                    return Err(Error::Schema(format!(
                        "the server's schema changed during this sync (version {version}, now {now}); the next sync takes it and pulls this page again"
                    )));
                }
            }
            let rows = page.rows.into_iter().map(|(table, key, state)| PulledRow { table, key, state }).collect();
            Ok((rows, page.refused, page.removed, page.cursor, page.more))
        }))
    };
    if pull {
        // Rows set aside because their clock was ahead of this device's, while this device's
        // time may have caught up since.
        let retried = replica.retry_pulled(&opts.resolvers)?;
        report.pulled_changed += retried.changed as u64;
        report.conflicts += retried.conflicts as u64;
    }
    if pull
        && opts.snapshot
        && (cursor == "0" || cursor.is_empty())
        && subscriptions.is_empty()
        && replica.meta(Key::Resync)?.is_none()
        && let Some((taken, chunks)) = from_snapshot(
            replica,
            remote,
            (&schema, &version),
            tables.as_deref(),
            cursor_key,
            &opts.resolvers,
            &mut report,
            progress,
        )
        .await?
    {
        cursor = taken;
        report.from_snapshot = true;
        report.snapshot_chunks = chunks;
    }
    let mut next = pull.then(|| fetch(cursor.clone()));
    while let Some(mut prefetch) = next.take() {
        let page = (&mut prefetch.0).await.map_err(|e| Error::Local(format!("pull task failed: {e}")))?;
        let (rows, refused, removed, page_cursor, more) = match page {
            // The server compacted history past this replica's cursor: everything again from
            // the start, and rows it no longer has go (pending changes were pushed above).
            Err(Error::Refused { code, .. })
                if code == ferry_protocol::ErrorCode::CursorExpired.as_str() && cursor != "0" =>
            {
                // By difference when it can: compare, take what differs, read on from there.
                if subscriptions.is_empty() && !report.caught_up {
                    match catch_up(replica, remote, &schema, tables.as_deref(), cursor_key, &cursor, &opts.resolvers)
                        .await
                    {
                        Ok((caught, applied)) => {
                            tracing::info!(
                                rows = caught.rows,
                                bytes = caught.bytes,
                                "the server's history no longer reaches this replica's cursor: caught up by difference"
                            );
                            report.caught_up = true;
                            report.caught_up_rows = caught.rows;
                            report.catch_up_bytes = caught.bytes;
                            report.removed += applied.removed as u64;
                            report.pulled_changed += applied.changed as u64;
                            report.conflicts += applied.conflicts as u64;
                            cursor = caught.cursor;
                            next = Some(fetch(cursor.clone()));
                            continue;
                        }
                        Err(e) => tracing::warn!("catching up by difference failed ({e}): re-syncing everything"),
                    }
                }
                tracing::warn!("the server's history no longer reaches this replica's cursor: re-syncing everything");
                replica.start_resync(cursor_key)?;
                report.resynced = true;
                cursor = "0".into();
                next = Some(fetch(cursor.clone()));
                continue;
            }
            page => page?,
        };
        if more {
            next = Some(fetch(page_cursor.clone()));
        }
        let applied =
            replica.apply_page_removing(&rows, &refused, &removed, cursor_key, &page_cursor, &opts.resolvers)?;
        report.removed += applied.removed as u64;
        report.pulled += applied.received as u64;
        report.refused_pulls += applied.set_aside as u64;
        report.pulled_changed += applied.changed as u64;
        report.conflicts += applied.conflicts as u64;
        cursor = page_cursor;
        progress(Progress::Pulling { rows: report.pulled });
    }
    if pull {
        report.removed += replica.finish_resync(tables.as_deref())? as u64;
        replica.keep_subscriptions(&opts.subscribe, opts.subscription_ttl_ms)?;
    }
    replica.record_sync()?;
    report.bytes_received = remote.received_bytes().saturating_sub(received_before);
    report.cursor = cursor;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// A batch of pending rows read for a push: the rows, where they end in the queue, and
/// their encoding.
#[derive(Default)]
struct Batch {
    rows: Vec<PendingRow>,
    end: Option<QueuePosition>,
    json: EncodedRows,
}

/// Stamps the outbox's next chunk; `stamping` becomes `None` once the outbox is empty.
fn stamp_on(replica: &mut Replica, stamping: &mut Option<Stamping>) -> Result<()> {
    if let Some(s) = stamping.as_mut()
        && !replica.stamp_next(s)?
    {
        *stamping = None;
    }
    Ok(())
}

/// A page being fetched and decoded: its rows, its cursor, and whether more follow.
/// A page being fetched and decoded: its rows, its refused rows, the rows to remove, its
/// cursor, and whether more wait.
type Page = (Vec<PulledRow>, Vec<ferry_protocol::RefusedPull>, Vec<(String, String)>, String, bool);
struct Prefetch(tokio::task::JoinHandle<Result<Page>>);

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ferry_core::schema::Schema;
    use ferry_core::{Hlc, RowState, SiteId, Value};
    use ferry_protocol::SchemaResponse;

    use super::*;

    const NOTES: &str = "CREATE TABLE notes (id uuid PRIMARY KEY, title text);";
    const NOTES_WITH_COLOR: &str = "CREATE TABLE notes (id uuid PRIMARY KEY, title text, color text);";
    const RED: &str = "0190f5a2-7c1e-7d3a-9b1f-00000000000a";
    const PLAIN: &str = "0190f5a2-7c1e-7d3a-9b1f-00000000000b";

    /// A server that restarts with a new column while a device syncs: `/v1/schema` answers
    /// `NOTES` the first time and `NOTES_WITH_COLOR` from then on; the first page (cursor 0)
    /// holds a row with the new column, the next ones are empty. With `snapshots`, a first
    /// pull's snapshot holds that page as its one chunk; without, `/v1/snapshot` is unknown
    /// (404, as on an older server).
    fn restarting_server(snapshots: bool) -> String {
        let schemas = AtomicUsize::new(0);
        let new = Schema::parse(NOTES_WITH_COLOR, &BTreeMap::new()).unwrap();
        let t = new.table("notes").unwrap();
        let at = Hlc::new(1_700_000_000_000, 0, SiteId(9));
        let row = |title: &str, color: Option<&str>| {
            let mut cols = vec![("title".to_owned(), Value::Text(title.into()))];
            cols.extend(color.map(|c| ("color".to_owned(), Value::Text(c.into()))));
            RowState::inserted(cols, at)
        };
        let page = serde_json::json!({
            "rows": [
                ferry_protocol::encode_row(t, RED, &row("red", Some("red"))),
                ferry_protocol::encode_row(t, PLAIN, &row("plain", None)),
            ],
            "cursor": "1",
            "more": false,
        });
        let chunk = serde_json::json!({"rows": page["rows"], "cursor": "", "more": false}).to_string();
        let sha = ferry_core::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(chunk.as_bytes()));
        let bytes = chunk.len();
        let snapshot = move |state: &str, chunks: bool, cursor: Option<&str>| {
            snapshot_json(state, chunks.then_some((sha.as_str(), bytes)), cursor)
        };
        fake_server(move |head: &str| {
            let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
            if path.starts_with("/v1/me") {
                (200, serde_json::json!({"store_id": "s", "user_id": "u", "user_name": "ann", "device_id": "d", "device_name": "phone"}).to_string())
            } else if path.starts_with("/v1/schema") {
                let ddl = if schemas.fetch_add(1, Ordering::SeqCst) == 0 { NOTES } else { NOTES_WITH_COLOR };
                let schema = SchemaResponse::from_schema(&Schema::parse(ddl, &BTreeMap::new()).unwrap());
                (200, serde_json::to_string(&schema).unwrap())
            } else if path.starts_with("/v1/snapshot") && !snapshots {
                (404, r#"{"error": {"code": "not_found", "message": "no such endpoint"}}"#.to_owned())
            } else if head.starts_with("POST /v1/snapshot") {
                (202, snapshot("running", false, None))
            } else if path.starts_with("/v1/snapshot/hs-1?after=0") {
                (200, snapshot("running", true, None))
            } else if path.starts_with("/v1/snapshot/hs-1?after=1") {
                (200, snapshot("done", false, Some("1")))
            } else if path.starts_with("/v1/snapshot/hs-1/chunks/0") {
                (200, chunk.clone())
            } else if head.starts_with("DELETE /v1/snapshot/hs-1") {
                (204, String::new())
            } else if path.starts_with("/v1/pull?cursor=0") {
                (200, page.to_string())
            } else {
                (200, serde_json::json!({"rows": [], "cursor": "1", "more": false}).to_string())
            }
        })
    }

    /// Snapshot `hs-1` as `GET /v1/snapshot/{id}` answers it: `state`, chunk 0 listed (its
    /// SHA-256 and size) or none, and `cursor`.
    fn snapshot_json(state: &str, chunk: Option<(&str, usize)>, cursor: Option<&str>) -> String {
        let listed = match chunk {
            Some((sha, bytes)) => {
                serde_json::json!([{"n": 0, "table": "notes", "rows": 2, "bytes": bytes, "sha256": sha}])
            }
            None => serde_json::json!([]),
        };
        serde_json::json!({"id": "hs-1", "state": state, "chunks": listed, "written": 1, "rows": 2,
            "bytes": chunk.map_or(0, |c| c.1), "cursor": cursor, "error": null})
        .to_string()
    }

    /// A chunk whose bytes do not hash to the snapshot's list is fetched again; one that
    /// stays damaged fails the sync with nothing of it applied, and the next sync resumes at
    /// that chunk.
    #[tokio::test]
    async fn a_damaged_chunk_is_fetched_again_and_never_applied() {
        for damaged in [1, 3] {
            damaged_chunk(damaged).await;
        }
    }

    async fn damaged_chunk(damaged: usize) {
        let schema = Schema::parse(NOTES, &BTreeMap::new()).unwrap();
        let t = schema.table("notes").unwrap();
        let at = Hlc::new(1_700_000_000_000, 0, SiteId(9));
        let note = |title: &str| RowState::inserted([("title".to_owned(), Value::Text(title.into()))], at);
        let rows = serde_json::json!([
            ferry_protocol::encode_row(t, RED, &note("red")),
            ferry_protocol::encode_row(t, PLAIN, &note("plain")),
        ]);
        let chunk = serde_json::json!({"rows": rows, "cursor": "", "more": false}).to_string();
        let sha = ferry_core::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(chunk.as_bytes()));
        let fetched = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = fetched.clone();
        let url = fake_server(move |head: &str| {
            let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
            if path.starts_with("/v1/me") {
                (200, serde_json::json!({"store_id": "s", "user_id": "u", "user_name": "ann", "device_id": "d", "device_name": "phone"}).to_string())
            } else if path.starts_with("/v1/schema") {
                (200, serde_json::to_string(&SchemaResponse::from_schema(&schema)).unwrap())
            } else if head.starts_with("POST /v1/snapshot") {
                (202, snapshot_json("running", None, None))
            } else if path.starts_with("/v1/snapshot/hs-1?after=0") {
                (200, snapshot_json("running", Some((&sha, chunk.len())), None))
            } else if path.starts_with("/v1/snapshot/hs-1?after=1") {
                (200, snapshot_json("done", None, Some("1")))
            } else if path.starts_with("/v1/snapshot/hs-1/chunks/0") {
                // The same size, one letter changed, the first `damaged` times.
                let n = counted.fetch_add(1, Ordering::SeqCst);
                (200, if n < damaged { chunk.replace("red", "rex") } else { chunk.clone() })
            } else if head.starts_with("DELETE /v1/snapshot/hs-1") {
                (204, String::new())
            } else {
                (200, serde_json::json!({"rows": [], "cursor": "1", "more": false}).to_string())
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut replica = Replica::open(&dir.path().join("r.db")).unwrap();
        let remote = Remote::new(&url, "fry_test").unwrap();
        let result = sync(&mut replica, &remote, &SyncOptions::default(), &mut |_| {}).await;
        let titles: i64 =
            replica.connection().query_row("SELECT count(*) FROM notes WHERE title = 'rex'", [], |r| r.get(0)).unwrap();
        assert_eq!(titles, 0, "no damaged row applied");
        if damaged < 3 {
            let report = result.unwrap();
            assert_eq!((report.from_snapshot, report.pulled), (true, 2));
            assert_eq!(fetched.load(Ordering::SeqCst), damaged + 1, "fetched again until sound");
        } else {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("arrived damaged"), "{err}");
            assert_eq!(fetched.load(Ordering::SeqCst), 3, "three tries");
            assert_eq!(replica.meta(Key::Snapshot).unwrap().as_deref(), Some("hs-1 0 *"), "resumes at chunk 0");
        }
    }

    /// A server on a free port that answers each request (`head`: its first line) with
    /// `answer`'s status and JSON body; returns its URL.
    fn fake_server(answer: impl Fn(&str) -> (u16, String) + Send + 'static) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                // The request's head, and its body (read, so that closing does not reset).
                let mut reader = BufReader::new(&stream);
                let (mut head, mut line, mut length) = (String::new(), String::new(), 0usize);
                reader.read_line(&mut head).unwrap();
                while reader.read_line(&mut line).unwrap() > 2 {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    line.clear();
                }
                std::io::Read::read_exact(&mut reader, &mut vec![0; length]).unwrap();
                let (status, body) = answer(&head);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        url
    }

    /// A row of tables or columns newer than the schema a sync began with is not a bad row:
    /// that sync stops before the page (the cursor stays), and the next one takes the new
    /// schema and applies it, where setting it aside would have lost it until it changed.
    #[tokio::test]
    async fn a_schema_changed_during_a_sync_does_not_set_its_new_rows_aside() {
        for snapshots in [false, true] {
            schema_changed_during_a_sync(snapshots).await;
        }
    }

    async fn schema_changed_during_a_sync(snapshots: bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = Replica::open(&dir.path().join("r.db")).unwrap();
        let remote = Remote::new(&restarting_server(snapshots), "fry_test").unwrap();
        let opts = SyncOptions::default();

        let err = sync(&mut replica, &remote, &opts, &mut |_| {}).await.unwrap_err();
        assert!(matches!(&err, Error::Schema(m) if m.contains("schema changed during this sync")), "{err}");
        assert_eq!(replica.meta(Key::Cursor).unwrap(), None);
        assert!(replica.refused_pulls().unwrap().is_empty());

        let report = sync(&mut replica, &remote, &opts, &mut |_| {}).await.unwrap();
        assert_eq!((report.pulled, report.refused_pulls), (2, 0));
        assert_eq!(report.from_snapshot, snapshots);
        let color: Option<String> =
            replica.connection().query_row("SELECT color FROM notes WHERE id = ?1", [RED], |r| r.get(0)).unwrap();
        assert_eq!(color.as_deref(), Some("red"));
        assert!(replica.refused_pulls().unwrap().is_empty());
        assert_eq!(replica.meta(Key::Cursor).unwrap().as_deref(), Some("1"));
    }
}
