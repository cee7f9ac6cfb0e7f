//! Server peering: this server linked to another (`[peers.NAME]` in `ferry.toml`), both
//! ways, through the same protocol and the same rules as a device (`docs/peering.md`).
//!
//! The side with the `[peers.NAME]` section starts the link (an on-site server behind NAT
//! connects out). Each run pushes this store's changes the peer lacks, then pulls the peer's:
//!
//! - **Out**: this store's feed as the peer may read it (every row of the crossing tables
//!   but those the peer brought itself, [`Principal::peer`]), pushed with the version each
//!   row last had on both sides (`seen`): the peer decides conflicts by its tables'
//!   strategies, as it does for a device.
//! - **In**: the peer's feed, merged into this store as a push by the peer's device here
//!   (`peer NAME`), with the same `seen`: this store decides by its strategies.
//! - What each side is known to hold of a row (its *base*) is recorded after every page
//!   that crossed, so a change made on either side since is judged against the version it
//!   started from. A change never travels back where it came from: a row is marked as the
//!   peer's when the merge kept exactly what it sent.
//!
//! Batches carry ids made from their cursor and rows, so a page whose answer was lost is
//! applied once. Refused rows are found by splitting the batch (`ferry_policy::push::Split`)
//! and written to the sync log; the link moves on. Failures retry by the server backoff
//! schedule; the state (`CONNECTED`, `DEGRADED`, `DISCONNECTED`, `RECONNECTING`), the lag
//! and the counts are kept in the store, where `GET /v1/admin/sync/status` and `ferry peer
//! status` read them.

mod catch_up;
mod files;
pub mod full_sync;
pub mod integrity;
pub mod webhooks;

pub use files::LocalFiles;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_client::Remote;
use ferry_client::engine::{Backoff, ConnState};
use ferry_core::RowState;
use ferry_core::schema::Schema;
use ferry_core::strategy::RowClocks;
use ferry_policy::push::{Split, Step, refusal_about_rows};
use ferry_protocol::{PeerStatus, PeerUser, PeerUsers, RowOut, SyncLogEntry};
use ferry_store::{IncomingRow, Principal, SERVER_ROLES, Store, StoreError, User};

/// One `[peers.NAME]` link, as configured.
#[derive(Clone)]
pub struct Link {
    pub name: String,
    pub url: String,
    pub token: String,
    /// The synced tables that cross (includes and excludes applied).
    pub tables: Vec<String>,
    pub interval: Duration,
    pub backoff: Backoff,
    pub enabled: bool,
    /// How long the sync log keeps entries.
    pub log_keep: Duration,
    /// This server's file store: files rows reference cross too (`None`: rows only).
    pub files: Option<Arc<LocalFiles>>,
}

/// Rows per page each way.
const PAGE_ROWS: usize = 1000;
/// A burst of local writes is gathered this long before the link runs.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Why a run (or a check) failed.
#[derive(Debug)]
pub enum Failure {
    Remote(ferry_client::Error),
    Store(StoreError),
    /// This server's files (a full sync's chunks).
    Local(String),
    /// An operator cancelled it.
    Cancelled,
}

impl Failure {
    /// A cursor of this link is older than a compaction horizon (the peer's, or this
    /// store's own): retrying cannot mend it; the link catches up by difference.
    fn expired(&self) -> bool {
        match self {
            Failure::Remote(ferry_client::Error::Refused { code, .. }) => {
                code == ferry_protocol::ErrorCode::CursorExpired.as_str()
            }
            Failure::Store(StoreError::Expired(_)) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Remote(e) => write!(f, "{e}"),
            Failure::Store(e) => write!(f, "this server's store: {e}"),
            Failure::Local(e) => write!(f, "{e}"),
            Failure::Cancelled => write!(f, "cancelled by an operator"),
        }
    }
}

impl From<ferry_client::Error> for Failure {
    fn from(e: ferry_client::Error) -> Self {
        Failure::Remote(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// What one run moved.
#[derive(Default)]
struct Moved {
    rows_out: u64,
    rows_in: u64,
    bytes_out: u64,
    ms_out: u64,
    ms_in: u64,
    /// Rows set aside or refused, with why.
    warnings_out: Vec<String>,
    warnings_in: Vec<String>,
    /// The file hashes of rows that crossed, oldest first.
    files: Vec<String>,
}

/// The link's connection to the peer, once established.
struct Session {
    remote: Remote,
    /// The peer's device here: pulled rows are its pushes.
    local: Principal,
    /// The digest of this store's users as last sent.
    users_sent: String,
    runs: u64,
    /// The peer's realtime stream is up (else changes arrive at the interval).
    stream_up: Arc<AtomicBool>,
    stream: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stream.abort();
    }
}

/// Runs the link until `stop` turns true.
pub async fn run<S: Store + Clone>(store: S, link: Link, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut status = store
        .links()
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|l| l.name == link.name && l.direction == "outgoing"))
        .unwrap_or_default();
    status.name = link.name.clone();
    status.direction = "outgoing".into();
    status.role = store.role().unwrap_or_default().to_owned();
    status.url = Some(link.url.clone());
    status.enabled = link.enabled;
    status.backoff_ms = link.backoff.steps.iter().map(|d| d.as_millis() as u64).collect();
    if !link.enabled {
        status.state = ConnState::Disconnected.name().into();
        status.last_error = Some("disabled in ferry.toml (enabled = false)".into());
        // Written once, so written surely: a store busy at start-up must not leave the link
        // shown as it was before it was disabled.
        while let Err(e) = store.save_link(status.clone()).await {
            tracing::warn!(peer = %status.name, "cannot record the disabled link's state yet: {e}");
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
        return;
    }
    let mut news = store.notices();
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Files move on a task of their own: rows never wait for them.
    let (files_tx, waiting) = match (&link.files, Remote::new(&link.url, &link.token)) {
        (Some(local), Ok(remote)) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let queue = files::Queue::new();
            let waiting = queue.waiting.clone();
            let task = files::run(
                store.clone(),
                remote.as_peer(&link.name),
                local.clone(),
                link.name.clone(),
                link.log_keep,
                queue,
                rx,
            );
            tokio::spawn(task);
            (Some(tx), Some(waiting))
        }
        _ => (None, None),
    };
    let mut session: Option<Session> = None;
    // The peer's device here, once known: what waits for it is counted while it is away.
    let mut peer_here: Option<Principal> = None;
    loop {
        if status.failures > 0 {
            status.state = ConnState::Reconnecting.name().into();
            save(&store, &status).await;
        }
        let started = now_ms();
        let result = run_once(&store, &link, &mut session, &mut status, &wake_tx).await;
        if let Some(s) = &session {
            peer_here = Some(s.local.clone());
        }
        let ended = now_ms();
        let ok = result.is_ok();
        match result {
            Ok(mut moved) => {
                let stream_up = session.as_ref().is_some_and(|s| s.stream_up.load(Ordering::SeqCst));
                let clean = moved.warnings_out.is_empty() && moved.warnings_in.is_empty();
                status.state =
                    if stream_up && clean { ConnState::Connected } else { ConnState::Degraded }.name().into();
                status.failures = 0;
                status.next_attempt_ms = None;
                status.last_heartbeat_ms = Some(ended);
                status.last_success_ms = Some(ended);
                status.down_since_ms = None;
                status.last_error = None;
                (status.lag_ms_out, status.lag_ms_in, status.lag_changes_out, status.lag_changes_in) = (0, 0, 0, 0);
                status.rows_out += moved.rows_out;
                status.rows_in += moved.rows_in;
                if let Some(tx) = &files_tx
                    && !moved.files.is_empty()
                {
                    let _ = tx.send(std::mem::take(&mut moved.files));
                }
                log_moved(&store, &link, started, &moved).await;
            }
            Err(e) => {
                status.failures += 1;
                status.state = ConnState::Disconnected.name().into();
                status.down_since_ms.get_or_insert(started);
                let since = status.last_success_ms.unwrap_or(started);
                status.lag_ms_out = ended.saturating_sub(since);
                status.lag_ms_in = ended.saturating_sub(since);
                // What waits here for the peer; what waits there is unknown while it is away.
                if let Some(p) = &peer_here
                    && let Ok(n) = store.peer_backlog(p, &status.cursor_out, &link.tables).await
                {
                    status.lag_changes_out = n;
                }
                let mut message = e.to_string();
                let expired = e.expired();
                if expired {
                    status.behind = Some(if matches!(e, Failure::Remote(_)) { "in" } else { "out" }.into());
                    message.push_str(
                        "; the link catches up by difference at its next attempt (docs/peering.md, \"A peer behind the horizon\")",
                    );
                }
                tracing::warn!(peer = %link.name, "link failed (attempt {}): {message}", status.failures);
                // The same critical failure again is not news.
                let again = expired && status.last_error.as_deref() == Some(message.as_str());
                status.last_error = Some(message.clone());
                if matches!(e, Failure::Remote(_)) {
                    // A new connection next time: the peer may have been replaced.
                    session = None;
                }
                let entry = SyncLogEntry {
                    at_ms: started,
                    peer: link.name.clone(),
                    kind: "rows".into(),
                    direction: "both".into(),
                    status: if expired { "CRITICAL" } else { "FAILED" }.into(),
                    duration_ms: ended.saturating_sub(started),
                    error: Some(message),
                    ..SyncLogEntry::default()
                };
                if !again {
                    log(&store, &link, entry).await;
                }
            }
        }
        status.file_queue = waiting.as_ref().map_or(0, |w| w.load(Ordering::SeqCst));
        let delay = if ok { link.interval } else { link.backoff.delay(status.failures) };
        status.next_attempt_ms = (!ok).then(|| now_ms() + delay.as_millis() as u64);
        save(&store, &status).await;
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.changed() => return,
                _ = wake_rx.recv(), if ok => break,
                n = news.recv(), if ok => {
                    let local = session.as_ref().map(|s| s.local.device_id.as_str());
                    match n {
                        // The link's own writes (what the peer sent) are nothing to send back.
                        Ok(n) if n.origin.is_some() && n.origin.as_deref() == local => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(until).await;
                            break;
                        }
                        _ => {
                            tokio::time::sleep(DEBOUNCE).await;
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// One run: connect when needed, exchange users, push, pull.
async fn run_once<S: Store>(
    store: &S,
    link: &Link,
    session: &mut Option<Session>,
    status: &mut PeerStatus,
    wake: &tokio::sync::mpsc::Sender<()>,
) -> Result<Moved, Failure> {
    if session.is_none() {
        *session = Some(connect(store, link, status, wake).await?);
    }
    let s = session.as_mut().expect("connected above");
    s.runs += 1;
    let mut moved = Moved::default();
    if store.take_resync(&link.name).await? {
        // An operator asked for everything again: the way a horizon passed, else both ways
        // (merging makes repeats harmless).
        let ways = status.behind.take().unwrap_or_else(|| "both".into());
        tracing::warn!(peer = %link.name, "re-syncing everything with the peer ({ways}), as asked");
        if ways != "in" {
            status.cursor_out = String::new();
        }
        if ways != "out" {
            status.cursor_in = String::new();
        }
        let entry = SyncLogEntry {
            at_ms: now_ms(),
            peer: link.name.clone(),
            kind: "resync".into(),
            direction: "both".into(),
            status: "SUCCESS".into(),
            error: Some(format!("a full re-sync was asked for: every row crosses again ({ways})")),
            ..SyncLogEntry::default()
        };
        log(store, link, entry).await;
    }
    // A full sync moved everything up to a snapshot: the link reads on from there.
    for (way, cursor) in store.take_link_starts(&link.name).await? {
        tracing::info!(peer = %link.name, "after a full sync, the link reads {way} from the snapshot's position");
        match way.as_str() {
            "out" => status.cursor_out = cursor,
            "in" => status.cursor_in = cursor,
            _ => {}
        }
    }
    exchange_users(store, s, &mut moved).await?;
    // A horizon passed a cursor of the link: only the rows that differ cross, then it reads on.
    if let Some(way) = status.behind.clone() {
        tracing::warn!(peer = %link.name, "catching up with the peer by difference ({way})");
        let (entry, files) = catch_up::run(store, link, &s.remote, &s.local, status, &way).await?;
        status.behind = None;
        moved.files.extend(files);
        log(store, link, entry).await;
    }
    push_out(store, link, s, status, &mut moved).await?;
    pull_in(store, link, s, status, &mut moved).await?;
    status.last_heartbeat_ms = Some(now_ms());
    Ok(moved)
}

/// Opens the link: who this server is on the other side, the other side's device here, and
/// the other side's realtime stream.
async fn connect<S: Store>(
    store: &S,
    link: &Link,
    status: &mut PeerStatus,
    wake: &tokio::sync::mpsc::Sender<()>,
) -> Result<Session, Failure> {
    let remote = Remote::new(&link.url, &link.token)?.as_peer(&link.name);
    let me = remote.me().await?;
    let theirs = peer_role(store, &me);
    status.peer_role = Some(theirs.clone());
    if status.far_store_id.as_deref() != Some(me.store_id.as_str()) {
        // Another store (new, or replaced): everything crosses again; merging makes repeats
        // harmless.
        if status.far_store_id.is_some() {
            tracing::warn!(peer = %link.name, "the peer's store changed ({}): syncing everything again", me.store_id);
        }
        status.far_store_id = Some(me.store_id.clone());
        status.cursor_out = String::new();
        status.cursor_in = String::new();
    }
    let local = device_here(store, link, me, theirs).await?;
    let stream_up = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn(watch_stream(remote.clone(), stream_up.clone(), wake.clone()));
    Ok(Session { remote, local, users_sent: String::new(), runs: 0, stream_up, stream })
}

/// The peer's role: as it says, else the server role this one does not have.
fn peer_role<S: Store>(store: &S, me: &ferry_protocol::WhoAmI) -> String {
    let ours = store.role().unwrap_or("main");
    me.server_role
        .clone()
        .filter(|r| SERVER_ROLES.contains(&r.as_str()))
        .unwrap_or_else(|| SERVER_ROLES.iter().find(|r| **r != ours).copied().unwrap_or("cloud").to_owned())
}

/// The peer's device here (made the first time): what the peer's rows are merged as. The
/// token's user (`me`, as the peer knows it) exists on both sides with one id.
async fn device_here<S: Store>(
    store: &S,
    link: &Link,
    me: ferry_protocol::WhoAmI,
    theirs: String,
) -> Result<Principal, Failure> {
    let (_, refused) = store.adopt_users(vec![User { id: me.user_id.clone(), name: me.user_name.clone() }]).await?;
    if let Some(why) = refused.first() {
        return Err(Failure::Store(StoreError::Exists(why.clone())));
    }
    let device_name = format!("peer {}", link.name);
    let existing = store
        .devices(Some(&me.user_id))
        .await?
        .into_iter()
        .find(|d| d.name == device_name && d.revoked_at.is_none() && d.role.as_deref() == Some(theirs.as_str()));
    let device_id = match existing {
        Some(d) => d.id,
        None => store.create_device(&me.user_id, &device_name, false, Some(&theirs)).await?.device_id,
    };
    Ok(Principal {
        user_id: me.user_id,
        user_name: me.user_name,
        device_id,
        device_name,
        admin: false,
        role: Some(theirs),
        peer: true,
    })
}

/// Keeps the peer's realtime stream open, waking the link when the peer has news.
async fn watch_stream(remote: Remote, up: Arc<AtomicBool>, wake: tokio::sync::mpsc::Sender<()>) {
    loop {
        if let Ok(mut stream) = remote.stream().await {
            up.store(true, Ordering::SeqCst);
            while stream.changed().await.is_ok() {
                let _ = wake.try_send(());
            }
            up.store(false, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Each side adopts the users it lacks: this store's when they changed since last sent, the
/// peer's every tenth run.
async fn exchange_users<S: Store>(store: &S, s: &mut Session, moved: &mut Moved) -> Result<(), Failure> {
    let ours = store.users().await?;
    let digest = ferry_core::schema::fingerprint(
        &ours.iter().map(|u| format!("{}\u{1f}{}", u.id, u.name)).collect::<Vec<_>>().join("\u{1e}"),
    );
    if digest != s.users_sent {
        let users = ours.into_iter().map(|u| PeerUser { id: u.id, name: u.name }).collect();
        let answer = s.remote.adopt_users(&PeerUsers { users }).await?;
        moved.warnings_out.extend(answer.refused);
        s.users_sent = digest;
    }
    if s.runs % 10 == 1 {
        let theirs = s.remote.peer_users().await?;
        let users = theirs.users.into_iter().map(|u| User { id: u.id, name: u.name }).collect();
        let (_, refused) = store.adopt_users(users).await?;
        moved.warnings_in.extend(refused);
    }
    Ok(())
}

/// Pushes this store's changes the peer lacks, a page at a time.
async fn push_out<S: Store>(
    store: &S,
    link: &Link,
    s: &Session,
    status: &mut PeerStatus,
    moved: &mut Moved,
) -> Result<(), Failure> {
    let started = Instant::now();
    let schema = store.schema();
    let device = s.local.device_id.as_str();
    // A page of this store's feed with the version the peer last held of each row.
    let fetch = |cursor: String| async move {
        let page = store.pull_tables(&s.local, &cursor, PAGE_ROWS, Some(&link.tables)).await?;
        let keys = page.rows.iter().map(|r| (r.table.clone(), r.key.clone())).collect();
        let bases = if page.rows.is_empty() { Default::default() } else { store.peer_bases(device, keys).await? };
        Ok::<_, Failure>((page, bases))
    };
    // While a page is out, the next is read and the last one's versions recorded.
    let mut fetched = fetch(status.cursor_out.clone()).await?;
    let mut held: Vec<(String, String, RowClocks)> = Vec::new();
    loop {
        let (page, mut bases) = fetched;
        // A row in the page before this one: what that page left with the peer.
        for (t, k, c) in &held {
            if let Some(b) = bases.get_mut(&(t.clone(), k.clone())) {
                *b = c.clone();
            } else if page.rows.iter().any(|r| r.table == *t && r.key == *k) {
                bases.insert((t.clone(), k.clone()), c.clone());
            }
        }
        let rows: Vec<(String, String, RowState, RowClocks)> = page
            .rows
            .into_iter()
            .map(|r| {
                let seen = bases.get(&(r.table.clone(), r.key.clone())).cloned().unwrap_or_default();
                (r.table, r.key, r.state, seen)
            })
            .collect();
        let batch = batch_id("out", &status.cursor_out, &page.cursor, rows.iter().map(|r| (&r.0, &r.1, &r.2)));
        moved.files.extend(rows.iter().flat_map(|r| file_hashes(schema, &r.0, &r.2)));
        let record = std::mem::take(&mut held);
        let save = async { if record.is_empty() { Ok(()) } else { store.save_peer_bases(device, record).await } };
        let next = async { if page.more { Some(fetch(page.cursor.clone()).await) } else { None } };
        let push = async {
            if rows.is_empty() {
                Ok((Vec::new(), 0, Vec::new()))
            } else {
                push_split(&s.remote, schema, &batch, &rows).await
            }
        };
        let (pushed, saved, next) = tokio::join!(push, save, next);
        saved?;
        let (sent, bytes, warnings) = pushed?;
        moved.rows_out += sent.len() as u64;
        moved.bytes_out += bytes;
        moved.warnings_out.extend(warnings);
        held = sent.into_iter().map(|i| (rows[i].0.clone(), rows[i].1.clone(), rows[i].2.clocks())).collect();
        status.cursor_out = page.cursor;
        match next {
            Some(Ok(n)) => {
                fetched = n;
                status.lag_changes_out = PAGE_ROWS as u64;
            }
            Some(Err(e)) => {
                store.save_peer_bases(device, held).await?;
                return Err(e);
            }
            None => break,
        }
    }
    if !held.is_empty() {
        store.save_peer_bases(device, held).await?;
    }
    moved.ms_out = started.elapsed().as_millis() as u64;
    Ok(())
}

/// How one part of a batch fared: taken (with the answer), or refused for its rows.
enum Sent<T> {
    Taken(T),
    Refused(String),
}

/// Sends a batch of `len` rows with `send` (a range of it at a time), splitting a part
/// refused for its rows (`ferry_policy::push::Split`) until each refused row stands alone.
/// Returns the parts taken with their answers, and the rows set aside with their refusals.
async fn send_split<T, Fut>(
    len: usize,
    send: impl Fn(std::ops::Range<usize>) -> Fut,
) -> Result<(Vec<(std::ops::Range<usize>, T)>, Vec<(usize, String)>), Failure>
where
    Fut: std::future::Future<Output = Result<Sent<T>, Failure>>,
{
    let (mut taken, mut aside) = (Vec::new(), Vec::new());
    let mut split: Option<Split<String>> = None;
    let mut range = 0..len;
    loop {
        match send(range.clone()).await? {
            Sent::Taken(answer) => taken.push((range.clone(), answer)),
            Sent::Refused(why) => match &mut split {
                None => split = Some(Split::new(len, why)),
                Some(sp) => sp.refused(range.clone(), why),
            },
        }
        let Some(sp) = &mut split else { break };
        loop {
            match sp.step() {
                Step::Push(r) => {
                    range = r;
                    break;
                }
                Step::SetAside(i, why) => aside.push((i, why)),
                Step::Done => return Ok((taken, aside)),
            }
        }
    }
    Ok((taken, aside))
}

/// Pushes `rows` as one batch, splitting it when the peer refuses rows (each refused row is
/// left out with the peer's answer). Returns the indexes of the rows the peer took, the
/// bytes sent, and the refusals.
async fn push_split(
    remote: &Remote,
    schema: &Schema,
    batch: &str,
    rows: &[(String, String, RowState, RowClocks)],
) -> Result<(Vec<usize>, u64, Vec<String>), Failure> {
    let (taken, aside) = send_split(rows.len(), |range| async move {
        let body = push_body(schema, &format!("{batch}.{}-{}", range.start, range.end), &rows[range])?;
        let bytes = body.len() as u64;
        match remote.push_json(body).await {
            Ok(answer) => Ok(Sent::Taken((answer, bytes))),
            Err(ferry_client::Error::Refused { code, message, .. }) if refusal_about_rows(&code) => {
                Ok(Sent::Refused(message))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    let (mut sent, mut bytes, mut warnings) = (Vec::new(), 0u64, Vec::new());
    for (range, (answer, size)) in taken {
        bytes += size;
        let stale: Vec<(&str, &str)> = answer.rejected.iter().map(|r| (r.table.as_str(), r.key.as_str())).collect();
        for r in &answer.rejected {
            warnings.push(format!("{} '{}': {}", r.table, ferry_core::shown(&r.key), r.message));
        }
        sent.extend(range.filter(|i| !stale.contains(&(rows[*i].0.as_str(), rows[*i].1.as_str()))));
    }
    for (i, why) in aside {
        warnings.push(format!("{} '{}' refused by the peer: {why}", rows[i].0, ferry_core::shown(&rows[i].1)));
    }
    Ok((sent, bytes, warnings))
}

/// A push body of `rows` with their `seen` versions.
fn push_body(schema: &Schema, batch: &str, rows: &[(String, String, RowState, RowClocks)]) -> Result<Vec<u8>, Failure> {
    let out: Vec<RowOut<'_>> = rows
        .iter()
        .filter_map(|(t, k, state, seen)| {
            Some(RowOut { table: schema.table(t)?, key: k, state, base: None, seen: Some(seen) })
        })
        .collect();
    let json = serde_json::to_vec(&out)
        .map_err(|e| Failure::Store(StoreError::Internal(format!("encoding a push to the peer: {e}"))))?;
    Ok(ferry_protocol::push_body(batch, None, &json))
}

/// Pulls the peer's changes this store lacks and merges them, a page at a time.
async fn pull_in<S: Store>(
    store: &S,
    link: &Link,
    s: &Session,
    status: &mut PeerStatus,
    moved: &mut Moved,
) -> Result<(), Failure> {
    let started = Instant::now();
    let schema = store.schema();
    let device = s.local.device_id.as_str();
    let fetch = |cursor: String| async move {
        s.remote.pull_decoded(schema, &cursor, PAGE_ROWS, Some(&link.tables), &[]).await.map_err(Failure::from)
    };
    // While a page is merged here, the next one is on its way.
    let mut fetched = fetch(status.cursor_in.clone()).await?;
    loop {
        let page = fetched;
        for r in &page.refused {
            moved.warnings_in.push(format!("the peer sent a row this server refuses: {}", r.reason));
        }
        moved.files.extend(page.rows.iter().flat_map(|(t, _, st)| file_hashes(schema, t, st)));
        let batch = batch_id("in", &status.cursor_in, &page.cursor, page.rows.iter().map(|(t, k, st)| (t, k, st)));
        let warnings = &mut moved.warnings_in;
        let apply = async {
            if page.rows.is_empty() {
                return Ok(0);
            }
            let keys = page.rows.iter().map(|(t, k, _)| (t.clone(), k.clone())).collect();
            let bases = store.peer_bases(device, keys).await?;
            let rows: Vec<IncomingRow> = page
                .rows
                .iter()
                .map(|(t, k, state)| IncomingRow {
                    table: t.clone(),
                    key: k.clone(),
                    state: state.clone(),
                    seen: Some(bases.get(&(t.clone(), k.clone())).cloned().unwrap_or_default()),
                    if_version: None,
                })
                .collect();
            let taken = apply_split(store, &s.local, &batch, rows, warnings).await?;
            let n = taken.len() as u64;
            let held = taken.into_iter().map(|r| (r.table, r.key, r.state.clocks())).collect();
            store.save_peer_bases(device, held).await?;
            Ok::<_, Failure>(n)
        };
        let next = async { if page.more { Some(fetch(page.cursor.clone()).await) } else { None } };
        let (applied, next) = tokio::join!(apply, next);
        moved.rows_in += applied?;
        status.cursor_in = page.cursor;
        match next {
            Some(n) => fetched = n?,
            None => break,
        }
    }
    moved.ms_in = started.elapsed().as_millis() as u64;
    Ok(())
}

/// Merges pulled rows as the peer's push here, splitting the batch when this store refuses
/// rows (each refused row is left out, with why, in `warnings`). Returns the rows taken.
async fn apply_split<S: Store>(
    store: &S,
    local: &Principal,
    batch: &str,
    rows: Vec<IncomingRow>,
    warnings: &mut Vec<String>,
) -> Result<Vec<IncomingRow>, Failure> {
    let rows = &rows;
    let (taken, aside) = send_split(rows.len(), |range| async move {
        let part = rows[range.clone()].to_vec();
        match store.push(local, &format!("{batch}.{}-{}", range.start, range.end), None, part).await {
            Ok(outcome) => Ok(Sent::Taken(outcome)),
            Err(e @ (StoreError::Invalid(_) | StoreError::Forbidden(_))) => Ok(Sent::Refused(e.to_string())),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (range, outcome) in taken {
        for r in &outcome.refused {
            warnings.push(format!(
                "{} '{}': the peer's change was refused here ({:?}); this server keeps its version",
                r.table,
                ferry_core::shown(&r.key),
                r.reason
            ));
        }
        let refused = |r: &IncomingRow| outcome.refused.iter().any(|x| x.table == r.table && x.key == r.key);
        out.extend(rows[range].iter().filter(|r| !refused(r)).cloned());
    }
    for (i, why) in aside {
        warnings.push(format!(
            "{} '{}' from the peer refused here: {why}",
            rows[i].table,
            ferry_core::shown(&rows[i].key)
        ));
    }
    Ok(out)
}

/// The file hashes a row's file columns hold.
pub(crate) fn file_hashes(schema: &Schema, table: &str, state: &RowState) -> Vec<String> {
    let Some(t) = schema.table(table) else { return Vec::new() };
    t.options
        .files
        .iter()
        .filter_map(|c| match state.cols.get(c).map(|v| &v.value) {
            Some(ferry_core::Value::Text(h)) if ferry_core::schema::is_file_hash(h) => Some(h.clone()),
            _ => None,
        })
        .collect()
}

/// A batch id that names a page by where it starts and ends and what it holds, so a page
/// sent again (its answer lost) is applied once, and another page from the same start is
/// not taken for it.
fn batch_id<'a>(
    way: &str,
    from: &str,
    to: &str,
    rows: impl Iterator<Item = (&'a String, &'a String, &'a RowState)>,
) -> String {
    let mut text = format!("{from}\u{1e}{to}");
    for (t, k, s) in rows {
        text.push_str(&format!("\u{1e}{t}\u{1f}{k}\u{1f}{}", s.version()));
    }
    format!("peer-{way}-{}", ferry_core::schema::fingerprint(&text))
}

/// The sync log's entries for a run that moved rows (or had rows refused).
async fn log_moved<S: Store>(store: &S, link: &Link, started: u64, moved: &Moved) {
    let ways = [
        ("push", moved.rows_out, moved.bytes_out, moved.ms_out, &moved.warnings_out),
        ("pull", moved.rows_in, 0, moved.ms_in, &moved.warnings_in),
    ];
    for (direction, rows, bytes, ms, warnings) in ways {
        if rows == 0 && warnings.is_empty() {
            continue;
        }
        let entry = SyncLogEntry {
            at_ms: started,
            peer: link.name.clone(),
            kind: "rows".into(),
            direction: direction.into(),
            status: if warnings.is_empty() { "SUCCESS" } else { "WARNING" }.into(),
            rows,
            bytes,
            duration_ms: ms,
            error: (!warnings.is_empty()).then(|| warnings.join("\n")),
            ..SyncLogEntry::default()
        };
        log(store, link, entry).await;
    }
}

async fn log<S: Store>(store: &S, link: &Link, entry: SyncLogEntry) {
    if let Err(e) = store.log_sync(entry, link.log_keep.as_millis() as u64).await {
        tracing::warn!(peer = %link.name, "cannot write the sync log: {e}");
    }
}

async fn save<S: Store>(store: &S, status: &PeerStatus) {
    if let Err(e) = store.save_link(status.clone()).await {
        tracing::warn!(peer = %status.name, "cannot record the link's state: {e}");
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
