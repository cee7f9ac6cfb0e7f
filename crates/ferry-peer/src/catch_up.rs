//! A link a compaction horizon passed catches up by difference (docs/peering.md, "A peer
//! behind the horizon"), instead of crossing every row again.
//!
//! Both feed positions are taken first (this store's here, the peer's with its answer to the
//! first digest question); then each table that crosses is compared with the peer's by the
//! integrity check's descent, and only the rows that differ move, both ways, through the
//! merge rules. A row one side no longer has at all, while the other still holds it exactly as
//! both last held it (the link's base, `_ferry_peer_bases`), was deleted on that side during
//! the gap and its tombstone compacted since: both sides get a tombstone for it. Then the link
//! reads on from the positions taken first: whatever changed while it compared comes again,
//! and merging makes that harmless.

use std::time::Instant;

use ferry_client::Remote;
use ferry_core::digest::Difference;
use ferry_core::strategy::RowClocks;
use ferry_core::{Clock, RowState, SiteId};
use ferry_protocol::{PeerRowsRequest, PeerStatus, SyncLogEntry};
use ferry_store::{IncomingRow, Principal, Store, StoreError};

use crate::integrity::{self, Traffic};
use crate::{Failure, Link, PAGE_ROWS, apply_split, now_ms, push_split};

/// What a catch-up found and moved.
#[derive(Default)]
pub(crate) struct CaughtUp {
    pub differed: u64,
    pub fetched: u64,
    pub sent: u64,
    /// Rows deleted on one side during the gap, now tombstones on both.
    pub deleted: u64,
    pub warnings: Vec<String>,
    pub traffic: Traffic,
}

/// Catches the link up with the peer by difference, and moves its cursors (`way`: `in`,
/// `out` or `both`, the ways a horizon passed) to the positions taken before comparing.
/// Returns the sync log's entry and the files the rows that moved reference.
///
/// # Errors
/// The peer cannot be reached or does not say its feed position (a Ferry without catch-up:
/// `ferry peer resync` re-syncs everything instead), or this store fails.
pub(crate) async fn run<S: Store>(
    store: &S,
    link: &Link,
    remote: &Remote,
    local: &Principal,
    status: &mut PeerStatus,
    way: &str,
) -> Result<(SyncLogEntry, Vec<String>), Failure> {
    let started_ms = now_ms();
    let started = Instant::now();
    let ours = store.feed_position().await?;
    let mut done = CaughtUp::default();
    for table in &link.tables {
        let (mut result, differences) = integrity::compare(store, remote, table, &mut done.traffic).await?;
        if differences.is_empty() {
            continue;
        }
        done.differed += differences.len() as u64;
        let rest = deletions(store, link, remote, local, table, differences, &mut done).await?;
        integrity::mend(store, remote, local, table, &rest, &mut result, &mut done.traffic).await?;
        done.fetched += result.repaired_in;
        done.sent += result.repaired_out;
        done.warnings.append(&mut result.repair_warnings);
    }
    if way != "out" {
        let theirs = done.traffic.cursor.clone().unwrap_or_default();
        if theirs.is_empty() && !link.tables.is_empty() {
            return Err(Failure::Local(format!(
                "peer '{}' did not say its feed position (a Ferry without catch-up by difference): upgrade it, or re-sync the link: `ferry peer resync {} -c ferry.toml`",
                link.name, link.name
            )));
        }
        if !theirs.is_empty() {
            status.cursor_in = theirs;
        }
    }
    if way != "in" {
        status.cursor_out = ours;
    }
    status.rows_in += done.fetched;
    status.rows_out += done.sent;
    let mut summary = format!(
        "caught up by difference ({way}): {} rows differed in {} tables; {} fetched, {} sent, {} deleted during the gap (tombstones on both sides)",
        done.differed,
        link.tables.len(),
        done.fetched,
        done.sent,
        done.deleted
    );
    for w in &done.warnings {
        summary.push('\n');
        summary.push_str(w);
    }
    let entry = SyncLogEntry {
        at_ms: started_ms,
        peer: link.name.clone(),
        kind: "catch-up".into(),
        direction: match way {
            "in" => "pull",
            "out" => "push",
            _ => "both",
        }
        .into(),
        status: if done.warnings.is_empty() { "SUCCESS" } else { "WARNING" }.into(),
        rows: done.fetched + done.sent + done.deleted,
        bytes: done.traffic.sent + done.traffic.received,
        duration_ms: started.elapsed().as_millis() as u64,
        error: Some(summary),
        ..SyncLogEntry::default()
    };
    Ok((entry, std::mem::take(&mut done.traffic.files)))
}

/// Finds the rows one side deleted during the gap (the other side's row is exactly the
/// version both last held, and this side has no record left), writes a tombstone for each on
/// both sides, and returns the other differences.
async fn deletions<S: Store>(
    store: &S,
    link: &Link,
    remote: &Remote,
    local: &Principal,
    table: &str,
    differences: Vec<Difference>,
    done: &mut CaughtUp,
) -> Result<Vec<Difference>, Failure> {
    let schema = store.schema();
    let device = local.device_id.as_str();
    let alive_only = |here: bool| -> Vec<String> {
        differences
            .iter()
            .filter_map(|d| match d {
                Difference::OnlyHere(e) if here && !e.deleted => Some(e.key.clone()),
                Difference::OnlyThere(e) if !here && !e.deleted => Some(e.key.clone()),
                _ => None,
            })
            .collect()
    };
    let at_base = |states: Vec<(String, RowState)>| async move {
        let keys = states.iter().map(|(k, _)| (table.to_owned(), k.clone())).collect();
        let bases = store.peer_bases(device, keys).await?;
        Ok::<_, StoreError>(
            states
                .into_iter()
                .filter(|(k, s)| bases.get(&(table.to_owned(), k.clone())) == Some(&s.clocks()))
                .collect::<Vec<_>>(),
        )
    };
    let mut gone: Vec<(String, RowState)> = Vec::new();
    for keys in alive_only(true).chunks(PAGE_ROWS) {
        gone.extend(at_base(store.states(table, keys.to_vec()).await?).await?);
    }
    for keys in alive_only(false).chunks(PAGE_ROWS) {
        let req = PeerRowsRequest { table: table.to_owned(), keys: keys.to_vec() };
        let (page, sent, received) = remote.peer_rows(schema, &req).await?;
        done.traffic.count(sent, received);
        gone.extend(at_base(page.rows.into_iter().map(|(_, k, s)| (k, s)).collect()).await?);
    }
    if gone.is_empty() {
        return Ok(differences);
    }
    // A tombstone after every write either side holds of the row, under a site of the link's.
    let site = SiteId::named(&format!("catch-up/{}", link.name));
    let now = now_ms();
    let rows: Vec<(String, String, RowState, RowClocks)> = gone
        .iter()
        .map(|(k, held)| {
            let mut dead = held.clone();
            dead.delete(Clock::new(site, held.max_clock()).tick(now));
            (table.to_owned(), k.clone(), dead, held.clocks())
        })
        .collect();
    let batch = format!("catch-up-{}-{table}-{now}", link.name);
    for (n, part) in rows.chunks(PAGE_ROWS).enumerate() {
        let incoming = part
            .iter()
            .map(|(t, k, state, seen)| IncomingRow {
                table: t.clone(),
                key: k.clone(),
                state: state.clone(),
                seen: Some(seen.clone()),
                if_version: None,
            })
            .collect();
        let taken = apply_split(store, local, &format!("{batch}-here-{n}"), incoming, &mut done.warnings).await?;
        let (sent, bytes, warnings) = push_split(remote, schema, &format!("{batch}-there-{n}"), part).await?;
        done.traffic.count(bytes, 0);
        done.warnings.extend(warnings);
        let mut held: Vec<(String, String, RowClocks)> =
            taken.into_iter().map(|r| (r.table, r.key, r.state.clocks())).collect();
        held.retain(|(_, k, _)| sent.iter().any(|i| part[*i].1 == *k));
        store.save_peer_bases(device, held).await?;
        done.deleted += sent.len() as u64;
    }
    let keys: std::collections::HashSet<&str> = gone.iter().map(|(k, _)| k.as_str()).collect();
    Ok(differences.into_iter().filter(|d| !keys.contains(d.key())).collect())
}
