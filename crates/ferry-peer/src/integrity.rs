//! Integrity checks: this store against a peer's, table by table (`ferry integrity`,
//! `POST /v1/admin/integrity`; `docs/integrity.md`).
//!
//! Each side reads a table's rows as digest entries (key hash, version digest) and the two
//! walk down the digest tree together (`ferry_core::digest::Descent`): the root's count and
//! digest, then the children of the nodes that differ, down to nodes small enough to list.
//! What crosses grows with the number of differing rows, not the table's size. A repair sends
//! this side's versions of the differing rows to the peer and merges the peer's here, both
//! through the merge rules (the peer's device here, as the link does), then checks again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferry_client::Remote;
use ferry_core::RowState;
use ferry_core::digest::{self, Difference, Entry, Tree};
use ferry_core::strategy::RowClocks;
use ferry_protocol::{
    DigestRequest, DigestResponse, IntegrityReport, PeerRowsRequest, RowDifference, SyncLogEntry, TableIntegrity,
};
use ferry_store::{IncomingRow, Principal, Store};

use crate::{Failure, Link, apply_split, device_here, log, now_ms, peer_role, push_split};

/// Differences named in one sync log entry (the report has them all).
const LOGGED_DIFFERENCES: usize = 50;

/// What a check asks of the peer, and the bytes that crossed.
#[derive(Default)]
pub(crate) struct Traffic {
    pub requests: u64,
    pub sent: u64,
    pub received: u64,
    /// The peer's feed position before it read the first table compared.
    pub cursor: Option<String>,
    /// The files the rows a repair moved reference (either way), for the link's file queue.
    pub files: Vec<String>,
}

impl Traffic {
    /// One more request, and its bytes.
    pub fn count(&mut self, sent: u64, received: u64) {
        self.requests += 1;
        self.sent += sent;
        self.received += received;
    }
}

/// Compares `tables` of this store with the peer's, and with `repair`, sends the newer
/// versions of differing rows both ways. `progress` hears what is being done.
///
/// # Errors
/// The peer cannot be reached or refuses (a token without a server role, an unknown table),
/// or this store fails.
pub async fn check<S: Store>(
    store: &S,
    link: &Link,
    tables: &[String],
    repair: bool,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<IntegrityReport, Failure> {
    let started_ms = now_ms();
    let started = Instant::now();
    let remote = Remote::new(&link.url, &link.token)?.as_peer(&link.name);
    let mut traffic = Traffic::default();
    let mut report = IntegrityReport { peer: link.name.clone(), started_ms, ..IntegrityReport::default() };
    let mut here: Option<Principal> = None;
    for table in tables {
        progress(&format!("comparing {table}"));
        let (mut result, differences) = compare(store, &remote, table, &mut traffic).await?;
        if repair && !differences.is_empty() {
            progress(&format!("repairing {} rows of {table}", differences.len()));
            if here.is_none() {
                let me = remote.me().await?;
                let role = peer_role(store, &me);
                here = Some(device_here(store, link, me, role).await?);
            }
            let local = here.as_ref().expect("set above");
            mend(store, &remote, local, table, &differences, &mut result, &mut traffic).await?;
            progress(&format!("checking {table} again"));
            let (after, _) = compare(store, &remote, table, &mut traffic).await?;
            result.equal = after.equal;
            result.here_rows = after.here_rows;
            result.there_rows = after.there_rows;
            if !after.equal {
                result.repair_warnings.extend(
                    after
                        .differences
                        .iter()
                        .map(|d| format!("'{}' still differs ({}) after the repair", d.key, d.kind)),
                );
            }
        }
        report.tables.push(result);
    }
    let found = report.tables.iter().any(|t| !t.differences.is_empty());
    let left = report.tables.iter().any(|t| !t.equal);
    report.status = match (found, left) {
        (false, _) => "SUCCESS",
        (true, false) => "REPAIRED",
        (true, true) => "FAILED",
    }
    .into();
    report.requests = traffic.requests;
    report.bytes_sent = traffic.sent;
    report.bytes_received = traffic.received;
    report.duration_ms = started.elapsed().as_millis() as u64;
    log_report(store, link, &report).await;
    Ok(report)
}

/// One table compared with the peer (no repair): what a full sync's verify phase reports.
///
/// # Errors
/// As [`check`].
pub async fn table_report<S: Store>(store: &S, remote: &Remote, table: &str) -> Result<TableIntegrity, Failure> {
    Ok(compare(store, remote, table, &mut Traffic::default()).await?.0)
}

/// A name for one comparison of one table: the peer reads the table once for it.
fn session() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}-{}", std::process::id(), now_ms(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Compares one table; returns its summary and the differing rows.
pub(crate) async fn compare<S: Store>(
    store: &S,
    remote: &Remote,
    table: &str,
    traffic: &mut Traffic,
) -> Result<(TableIntegrity, Vec<Difference>), Failure> {
    let session = session();
    let mut from = store.compacted_before().await?;
    let ask_root = |from: u64| DigestRequest {
        table: table.to_owned(),
        session: session.clone(),
        tombstones_from_ms: from,
        nodes: vec![String::new()],
        rows: Vec::new(),
    };
    // This side's rows are read while the peer reads its own.
    let root = ask_root(from);
    let (ours, theirs) = tokio::join!(store.row_digests(table, from), ask(remote, &root, traffic));
    let (mut ours, mut theirs) = (ours?, theirs?);
    if theirs.compacted_before_ms > from {
        // The peer compacted later: tombstones it may have removed are left out here too.
        from = theirs.compacted_before_ms;
        let root = ask_root(from);
        let (o, t) = tokio::join!(store.row_digests(table, from), ask(remote, &root, traffic));
        (ours, theirs) = (o?, t?);
    }
    let tree = Tree::new(ours);
    let root = ferry_client::descent::node_of(&theirs.nodes, "")?;
    let mine = tree.node("").unwrap_or_default();
    let traffic = std::sync::Mutex::new(traffic);
    let differences = ferry_client::descent::descend(&tree, root, |nodes, rows| {
        let req =
            DigestRequest { table: table.to_owned(), session: session.clone(), tombstones_from_ms: from, nodes, rows };
        let traffic = &traffic;
        async move {
            let (answer, sent, received) = remote.digests(&req).await?;
            traffic.lock().unwrap_or_else(|p| p.into_inner()).count(sent, received);
            Ok(ferry_client::descent::Answer { nodes: answer.nodes, rows: answer.rows })
        }
    })
    .await?;
    let result = TableIntegrity {
        table: table.to_owned(),
        here_rows: mine.count,
        there_rows: root.count,
        here_digest: digest::hex(mine.digest),
        there_digest: digest::hex(root.digest),
        equal: differences.is_empty(),
        differences: differences.iter().map(row_difference).collect(),
        ..TableIntegrity::default()
    };
    Ok((result, differences))
}

async fn ask(remote: &Remote, req: &DigestRequest, traffic: &mut Traffic) -> Result<DigestResponse, Failure> {
    let (answer, sent, received) = remote.digests(req).await?;
    traffic.count(sent, received);
    traffic.cursor.get_or_insert_with(|| answer.cursor.clone());
    Ok(answer)
}

fn row_difference(d: &Difference) -> RowDifference {
    let side = |e: Option<&Entry>| (e.map(|e| digest::hex(e.digest)), e.is_some_and(|e| e.deleted));
    let (kind, here, there) = match d {
        Difference::Changed { here, there } => ("changed", Some(here), Some(there)),
        Difference::OnlyHere(e) => ("only_here", Some(e), None),
        Difference::OnlyThere(e) => ("only_there", None, Some(e)),
    };
    let ((here, here_deleted), (there, there_deleted)) = (side(here), side(there));
    RowDifference { key: d.key().to_owned(), kind: kind.into(), here, there, here_deleted, there_deleted }
}

/// Sends this side's versions of the differing rows to the peer, then merges the peer's
/// here: each side decides by its own merge rules and strategies, as for the link.
pub(crate) async fn mend<S: Store>(
    store: &S,
    remote: &Remote,
    local: &Principal,
    table: &str,
    differences: &[Difference],
    result: &mut TableIntegrity,
    traffic: &mut Traffic,
) -> Result<(), Failure> {
    let schema = store.schema();
    let device = local.device_id.as_str();
    let ours: Vec<String> =
        differences.iter().filter(|d| !matches!(d, Difference::OnlyThere(_))).map(|d| d.key().to_owned()).collect();
    let theirs: Vec<String> =
        differences.iter().filter(|d| !matches!(d, Difference::OnlyHere(_))).map(|d| d.key().to_owned()).collect();
    let batch = format!("repair-{}", session());
    for (n, keys) in ours.chunks(crate::PAGE_ROWS).enumerate() {
        let states = store.states(table, keys.to_vec()).await?;
        let bases =
            store.peer_bases(device, states.iter().map(|(k, _)| (table.to_owned(), k.clone())).collect()).await?;
        let rows: Vec<(String, String, RowState, RowClocks)> = states
            .into_iter()
            .map(|(k, state)| {
                let seen = bases.get(&(table.to_owned(), k.clone())).cloned().unwrap_or_default();
                (table.to_owned(), k, state, seen)
            })
            .collect();
        let (sent, bytes, warnings) = push_split(remote, schema, &format!("{batch}-out-{n}"), &rows).await?;
        traffic.count(bytes, 0);
        traffic.files.extend(sent.iter().flat_map(|i| crate::file_hashes(schema, &rows[*i].0, &rows[*i].2)));
        result.repaired_out += sent.len() as u64;
        result.repair_warnings.extend(warnings);
        let held = sent.into_iter().map(|i| (rows[i].0.clone(), rows[i].1.clone(), rows[i].2.clocks())).collect();
        store.save_peer_bases(device, held).await?;
    }
    for (n, keys) in theirs.chunks(crate::PAGE_ROWS).enumerate() {
        let req = PeerRowsRequest { table: table.to_owned(), keys: keys.to_vec() };
        let (page, sent, received) = remote.peer_rows(schema, &req).await?;
        traffic.count(sent, received);
        for r in &page.refused {
            result.repair_warnings.push(format!("the peer sent a row this server refuses: {}", r.reason));
        }
        if page.rows.is_empty() {
            continue;
        }
        let keys = page.rows.iter().map(|(t, k, _)| (t.clone(), k.clone())).collect();
        let bases = store.peer_bases(device, keys).await?;
        let rows: Vec<IncomingRow> = page
            .rows
            .into_iter()
            .map(|(t, k, state)| {
                let seen = Some(bases.get(&(t.clone(), k.clone())).cloned().unwrap_or_default());
                IncomingRow { table: t, key: k, state, seen, if_version: None }
            })
            .collect();
        let taken = apply_split(store, local, &format!("{batch}-in-{n}"), rows, &mut result.repair_warnings).await?;
        traffic.files.extend(taken.iter().flat_map(|r| crate::file_hashes(schema, &r.table, &r.state)));
        result.repaired_in += taken.len() as u64;
        let held = taken.into_iter().map(|r| (r.table, r.key, r.state.clocks())).collect();
        store.save_peer_bases(device, held).await?;
    }
    Ok(())
}

/// Writes the check to the sync log: `FAILED` with the differing rows when any were found,
/// and the repair's outcome.
async fn log_report<S: Store>(store: &S, link: &Link, report: &IntegrityReport) {
    let found: Vec<&TableIntegrity> = report.tables.iter().filter(|t| !t.differences.is_empty()).collect();
    let mut details = Vec::new();
    for t in &found {
        details.push(format!(
            "{}: {} rows here, {} on the peer; {} differ",
            t.table,
            t.here_rows,
            t.there_rows,
            t.differences.len()
        ));
        for d in t.differences.iter().take(LOGGED_DIFFERENCES) {
            details.push(format!("  {} '{}': {}", t.table, ferry_core::shown(&d.key), describe(d)));
        }
        if t.differences.len() > LOGGED_DIFFERENCES {
            details.push(format!("  … and {} more", t.differences.len() - LOGGED_DIFFERENCES));
        }
    }
    let differing: u64 = found.iter().map(|t| t.differences.len() as u64).sum();
    let entry = SyncLogEntry {
        at_ms: report.started_ms,
        peer: report.peer.clone(),
        kind: "integrity".into(),
        direction: "both".into(),
        status: if found.is_empty() { "SUCCESS" } else { "FAILED" }.into(),
        rows: differing,
        bytes: report.bytes_sent + report.bytes_received,
        duration_ms: report.duration_ms,
        error: (!details.is_empty()).then(|| details.join("\n")),
        ..SyncLogEntry::default()
    };
    log(store, link, entry).await;
    let repaired: u64 = report.tables.iter().map(|t| t.repaired_out + t.repaired_in).sum();
    if repaired > 0 || report.status == "REPAIRED" {
        let warnings: Vec<&String> = report.tables.iter().flat_map(|t| &t.repair_warnings).collect();
        let entry = SyncLogEntry {
            at_ms: now_ms(),
            peer: report.peer.clone(),
            kind: "repair".into(),
            direction: "both".into(),
            status: if report.status == "REPAIRED" { "SUCCESS" } else { "WARNING" }.into(),
            rows: repaired,
            duration_ms: report.duration_ms,
            error: (!warnings.is_empty()).then(|| warnings.iter().map(|w| w.as_str()).collect::<Vec<_>>().join("\n")),
            ..SyncLogEntry::default()
        };
        log(store, link, entry).await;
    }
}

/// A difference in words.
pub fn describe(d: &RowDifference) -> String {
    let side = |deleted: bool| if deleted { "a tombstone" } else { "a row" };
    match d.kind.as_str() {
        "only_here" => format!("{} here, nothing on the peer", side(d.here_deleted)),
        "only_there" => format!("{} on the peer, nothing here", side(d.there_deleted)),
        _ if d.here_deleted != d.there_deleted => {
            format!("{} here, {} on the peer", side(d.here_deleted), side(d.there_deleted))
        }
        _ => format!(
            "another version on each side ({} here, {} on the peer)",
            d.here.as_deref().unwrap_or("-"),
            d.there.as_deref().unwrap_or("-")
        ),
    }
}
