//! Conflict strategies: what the server does when a pushed change meets a row that changed
//! since the writer last saw it, and what a client does when a pulled change meets one of
//! its own unpushed changes.
//!
//! A writer sends, with its change, the clocks of the version it started from ([`RowClocks`],
//! "seen"). A stored register newer than that, which the change does not carry, is a write
//! the writer had not seen; a register of the change that the store does not hold yet is
//! the writer's own. Both present at once is a conflict. Per table:
//!
//! | strategy | on a conflict |
//! |---|---|
//! | `lww` | per field, the later clock wins; a delete wins over an update it had not seen |
//! | `row-lww` | the side whose newest write is later wins the whole row |
//! | `authoritative` | writes by the authority role win; otherwise `lww` |
//! | `reject-stale` | the change is refused with the current version (409) |
//! | `manual` | `lww` provisionally; the conflict stays open for a person |
//!
//! When a strategy's winner is not what the plain register merge keeps, the winning values
//! are written again with a fresh clock ([`PushContext::fresh`]): every replica then merges
//! to the same state by the ordinary rule, so convergence never depends on the strategy.
//!
//! Everything here is pure: the stores and the client run it inside their transactions, and
//! the simulation in `tests/it` runs it with simulated networks.

use std::collections::{BTreeMap, BTreeSet};

use crate::hlc::{Clock, Hlc, SiteId};
use crate::row::{RowState, Stamped};
use crate::schema::ConflictStrategy;
use crate::value::Value;

/// The register clocks of one version of a row: what a writer had seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowClocks {
    pub exists: Hlc,
    pub cols: BTreeMap<String, Hlc>,
}

impl RowState {
    /// The clocks of this state's registers.
    pub fn clocks(&self) -> RowClocks {
        RowClocks { exists: self.exists.at, cols: self.cols.iter().map(|(c, s)| (c.clone(), s.at)).collect() }
    }

    /// Whether both states hold the same writes (every register's clock equal), without
    /// building either's [`RowClocks`].
    pub fn same_clocks(&self, other: &RowState) -> bool {
        self.exists.at == other.exists.at
            && self.cols.len() == other.cols.len()
            && self.cols.iter().zip(&other.cols).all(|((a, x), (b, y))| a == b && x.at == y.at)
    }

    /// A short tag that changes whenever any register changes: the row's version for
    /// `ETag`/`If-Match`.
    pub fn version(&self) -> String {
        let mut text = self.exists.at.to_string();
        for (c, s) in &self.cols {
            text.push_str(&format!("|{c}={}", s.at));
        }
        crate::schema::fingerprint(&text)
    }
}

impl RowClocks {
    /// The clocks as stored beside a row (a replica's `seen`, a peer link's base): a JSON
    /// object of register name ([`EXISTS`] for existence) to clock text.
    pub fn to_json(&self) -> String {
        let mut map: BTreeMap<&str, String> = self.cols.iter().map(|(c, h)| (c.as_str(), h.to_string())).collect();
        map.insert(EXISTS, self.exists.to_string());
        serde_json::to_string(&map).expect("strings serialize")
    }

    /// Reads [`RowClocks::to_json`].
    ///
    /// # Errors
    /// What is wrong with the text.
    pub fn from_json(json: &str) -> Result<RowClocks, String> {
        let map: BTreeMap<String, String> = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut out = RowClocks::default();
        for (c, h) in map {
            let h: Hlc = h.parse().map_err(|e| format!("clock of '{c}': {e}"))?;
            if c == EXISTS {
                out.exists = h;
            } else {
                out.cols.insert(c, h);
            }
        }
        Ok(out)
    }

    fn col(&self, c: &str) -> Hlc {
        self.cols.get(c).copied().unwrap_or(Hlc::ZERO)
    }
}

/// The existence register's name in [`Contest::fields`] and winner maps: `*` (no column can
/// be called that).
pub const EXISTS: &str = "*";

/// Which side of a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// The version the receiver held (the server's stored row, or a client's local row).
    Ours,
    /// The arriving version (a pushed change, or a pulled one).
    Theirs,
}

/// The kind of a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// Both sides changed fields (the same ones, or under `row-lww` any).
    UpdateUpdate,
    /// The arriving side deleted a row the receiver had changed.
    DeleteUpdate,
    /// The arriving side changed a row the receiver had deleted.
    UpdateDelete,
}

impl ConflictKind {
    pub fn name(self) -> &'static str {
        match self {
            ConflictKind::UpdateUpdate => "update-update",
            ConflictKind::DeleteUpdate => "delete-update",
            ConflictKind::UpdateDelete => "update-delete",
        }
    }
}

/// A conflict found between two versions of one row.
#[derive(Clone, Debug, PartialEq)]
pub struct Contest {
    pub kind: ConflictKind,
    /// The contested registers (column names, [`EXISTS`] for existence), sorted.
    pub fields: Vec<String>,
    /// For each contested register, whose value the outcome keeps.
    pub winner: BTreeMap<String, Side>,
    /// The registers of the arriving side that the receiver did not hold: identifies the
    /// conflict, so a retried push logs it once.
    pub theirs_clocks: BTreeMap<String, Hlc>,
}

/// Who wrote what, across one arriving change.
struct Split {
    /// Registers the receiver holds that the arriving side had not seen.
    unseen: BTreeSet<String>,
    /// Registers the arriving side wrote that the receiver does not hold.
    own: BTreeSet<String>,
}

fn register<'a>(s: &'a RowState, r: &str) -> Option<(Hlc, RegValue<'a>)> {
    if r == EXISTS {
        Some((s.exists.at, RegValue::Exists(s.exists.value)))
    } else {
        s.cols.get(r).map(|v| (v.at, RegValue::Col(&v.value)))
    }
}

#[derive(Clone, Copy, Debug)]
enum RegValue<'a> {
    Exists(bool),
    Col(&'a Value),
}

impl RegValue<'_> {
    fn same(self, other: RegValue<'_>) -> bool {
        match (self, other) {
            (RegValue::Exists(a), RegValue::Exists(b)) => a == b,
            (RegValue::Col(a), RegValue::Col(b)) => a.same(b),
            _ => false,
        }
    }
}

/// `writer` is the side whose new registers are all one writer's own changes (a pushed row
/// on the server, the local row on a client); registers the other side holds from that same
/// writer (its earlier writes, say a push whose answer was lost) are not news to it. With
/// `relayed` the writer's side brings many writers' changes (a peer server's push): a site
/// in it says nothing of what the pusher had seen.
fn split(ours: &RowState, theirs: &RowState, seen: &RowClocks, writer: Side, relayed: bool) -> Split {
    let at = |s: &RowState, r: &str| register(s, r).map_or(Hlc::ZERO, |(h, _)| h);
    let seen_at = |r: &str| if r == EXISTS { seen.exists } else { seen.col(r) };
    let names: BTreeSet<String> = std::iter::once(EXISTS.to_owned())
        .chain(ours.cols.keys().cloned())
        .chain(theirs.cols.keys().cloned())
        .collect();
    let (mut newer_ours, mut newer_theirs) = (Vec::new(), Vec::new());
    for r in names {
        let (o, t, s) = (at(ours, &r), at(theirs, &r), seen_at(&r));
        if o == t {
            continue;
        }
        if o > s && o != Hlc::ZERO {
            newer_ours.push((r.clone(), o));
        }
        if t > s && t != Hlc::ZERO {
            newer_theirs.push((r, t));
        }
    }
    // One replica's writes follow each other: what the writer wrote itself, it had seen.
    let sites = |regs: &[(String, Hlc)]| {
        if relayed { BTreeSet::new() } else { regs.iter().map(|(_, h)| h.site()).collect::<BTreeSet<SiteId>>() }
    };
    let keep = |regs: Vec<(String, Hlc)>, writer_sites: &BTreeSet<SiteId>| {
        regs.into_iter().filter(|(_, h)| !writer_sites.contains(&h.site())).map(|(r, _)| r).collect()
    };
    let all = |regs: Vec<(String, Hlc)>| regs.into_iter().map(|(r, _)| r).collect();
    match writer {
        Side::Theirs => {
            let writer_sites = sites(&newer_theirs);
            Split { unseen: keep(newer_ours, &writer_sites), own: all(newer_theirs) }
        }
        Side::Ours => {
            let writer_sites = sites(&newer_ours);
            Split { unseen: all(newer_ours), own: keep(newer_theirs, &writer_sites) }
        }
    }
}

/// Finds the conflict between the receiver's version `ours` and an arriving version
/// `theirs`, one of which (`writer`) holds one writer's changes made on top of `seen`, as
/// `strategy` counts it: same-field writes with different values and delete-vs-update for
/// every strategy; under `row-lww` and `reject-stale` any concurrent writes to the row.
/// `None` when the two merge without losing a value.
pub fn detect(
    strategy: ConflictStrategy,
    ours: &RowState,
    theirs: &RowState,
    seen: &RowClocks,
    writer: Side,
) -> Option<Contest> {
    detect_as(strategy, ours, theirs, seen, writer, false)
}

/// [`detect`]; `relayed`: the writer's side brings many writers' changes (see [`split`]).
fn detect_as(
    strategy: ConflictStrategy,
    ours: &RowState,
    theirs: &RowState,
    seen: &RowClocks,
    writer: Side,
    relayed: bool,
) -> Option<Contest> {
    if ours.exists.at == Hlc::ZERO && ours.cols.is_empty() {
        return None;
    }
    let sp = split(ours, theirs, seen, writer, relayed);
    if sp.unseen.is_empty() || sp.own.is_empty() {
        return None;
    }
    let whole_row = matches!(strategy, ConflictStrategy::RowLww | ConflictStrategy::RejectStale);
    let differs = |r: &str| match (register(ours, r), register(theirs, r)) {
        (Some((_, a)), Some((_, b))) => !a.same(b),
        _ => true,
    };
    let theirs_deletes = sp.own.contains(EXISTS) && !theirs.exists.value;
    let ours_deleted = sp.unseen.contains(EXISTS) && !ours.exists.value;
    let (kind, fields): (ConflictKind, BTreeSet<String>) = if theirs_deletes && !ours_deleted {
        // The delete discards changes it had not seen.
        (ConflictKind::DeleteUpdate, std::iter::once(EXISTS.to_owned()).chain(sp.unseen.iter().cloned()).collect())
    } else if ours_deleted && !theirs_deletes {
        (ConflictKind::UpdateDelete, std::iter::once(EXISTS.to_owned()).chain(sp.own.iter().cloned()).collect())
    } else if whole_row {
        // Writes that left a value as the other side has it change nothing for it.
        let unseen: BTreeSet<String> = sp.unseen.iter().filter(|r| differs(r)).cloned().collect();
        let own: BTreeSet<String> = sp.own.iter().filter(|r| differs(r)).cloned().collect();
        if unseen.is_empty() || own.is_empty() {
            return None;
        }
        (ConflictKind::UpdateUpdate, unseen.union(&own).cloned().collect())
    } else {
        let f: BTreeSet<String> = sp.unseen.intersection(&sp.own).filter(|r| differs(r)).cloned().collect();
        (ConflictKind::UpdateUpdate, f)
    };
    if fields.is_empty() {
        return None;
    }
    let theirs_clocks = sp.own.iter().filter_map(|r| register(theirs, r).map(|(h, _)| (r.clone(), h))).collect();
    Some(Contest { kind, fields: fields.into_iter().collect(), winner: BTreeMap::new(), theirs_clocks })
}

/// The server's side of a push: its strategy, who is writing, and how to stamp a value the
/// strategy makes win.
pub struct PushContext<'a> {
    pub strategy: ConflictStrategy,
    /// The pushing device holds the table's authority role.
    pub writer_is_authority: bool,
    /// Whether a clock's site belongs to a device holding the authority role.
    pub authority_site: &'a dyn Fn(SiteId) -> bool,
    /// The site id the server stamps its own writes with.
    pub server_site: SiteId,
    /// The site id the server stamps a value it keeps on the authority's behalf with (so
    /// that later conflicts still know the value as the authority's).
    pub authority_stamp: SiteId,
    pub now_ms: u64,
    /// The push relays many writers' changes (a peer server's): no register of it is taken
    /// as seen by the pusher because of its site.
    pub relayed: bool,
}

/// What the server does with one pushed row.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Store `state`. `conflict` is the logged conflict, if any; `open` leaves it for a
    /// person (`manual`). `restamped` means the strategy kept values other than the plain
    /// merge would have, written with a fresh clock: the writer must pull them.
    Apply { state: RowState, conflict: Option<Contest>, open: bool, restamped: bool },
    /// `reject-stale`: the change was made on an older version; nothing is stored.
    Reject { conflict: Contest },
}

/// Decides a pushed row: `stored` is the server's state (`RowState::unknown()` for a new
/// row), `incoming` the device's, `seen` the version its change started from.
pub fn decide_push(stored: &RowState, incoming: &RowState, seen: &RowClocks, ctx: &PushContext<'_>) -> Decision {
    let mut state = stored.clone();
    state.merge(incoming);
    let Some(mut contest) = detect_as(ctx.strategy, stored, incoming, seen, Side::Theirs, ctx.relayed) else {
        return Decision::Apply { state, conflict: None, open: false, restamped: false };
    };
    let newest = |s: &RowState, regs: &mut dyn Iterator<Item = &String>| {
        regs.filter_map(|r| register(s, r).map(|(h, _)| h)).max().unwrap_or(Hlc::ZERO)
    };
    // The winner of each contested register.
    let winner: BTreeMap<String, Side> = match ctx.strategy {
        ConflictStrategy::RejectStale => {
            contest.winner = contest.fields.iter().map(|f| (f.clone(), Side::Ours)).collect();
            return Decision::Reject { conflict: contest };
        }
        ConflictStrategy::RowLww => {
            let sp = split(stored, incoming, seen, Side::Theirs, ctx.relayed);
            let contested = |r: &&String| contest.fields.contains(*r);
            let side = if newest(incoming, &mut sp.own.iter().filter(contested))
                > newest(stored, &mut sp.unseen.iter().filter(contested))
            {
                Side::Theirs
            } else {
                Side::Ours
            };
            contest.fields.iter().map(|f| (f.clone(), side)).collect()
        }
        ConflictStrategy::Authoritative => {
            // Only the stored writes this writer had not seen count: what it saw, it overrode.
            let unseen = split(stored, incoming, seen, Side::Theirs, ctx.relayed).unseen;
            let by_authority =
                contest.fields.iter().filter(|f| unseen.contains(*f)).any(|f| {
                    register(stored, f).is_some_and(|(h, _)| h != Hlc::ZERO && (ctx.authority_site)(h.site()))
                });
            let side = if ctx.writer_is_authority {
                Some(Side::Theirs)
            } else if by_authority {
                Some(Side::Ours)
            } else {
                None
            };
            contest
                .fields
                .iter()
                .map(|f| (f.clone(), side.unwrap_or_else(|| merged_side(&state, incoming, f))))
                .collect()
        }
        ConflictStrategy::Lww | ConflictStrategy::Manual => {
            contest.fields.iter().map(|f| (f.clone(), merged_side(&state, incoming, f))).collect()
        }
    };
    // Registers whose merged value is not the winner's: write the winner's again, later.
    let stamp_site =
        if ctx.strategy == ConflictStrategy::Authoritative { ctx.authority_stamp } else { ctx.server_site };
    let mut changes = Vec::new();
    for (f, side) in &winner {
        let src = if *side == Side::Theirs { incoming } else { stored };
        let Some((_, want)) = register(src, f) else { continue };
        if register(&state, f).is_none_or(|(_, have)| !have.same(want)) {
            changes.push((f.clone(), want.to_owned_value()));
        }
    }
    let restamped = !changes.is_empty();
    if restamped {
        let at = ctx.fresh(stored, incoming, stamp_site);
        write_registers(&mut state, changes, at);
    }
    contest.winner = winner;
    Decision::Apply { state, conflict: Some(contest), open: ctx.strategy == ConflictStrategy::Manual, restamped }
}

/// Which side's value the merged state holds for register `f`.
fn merged_side(merged: &RowState, theirs: &RowState, f: &str) -> Side {
    match (register(merged, f), register(theirs, f)) {
        (Some((a, _)), Some((b, _))) if a == b => Side::Theirs,
        _ => Side::Ours,
    }
}

/// An owned register value.
#[derive(Clone, Debug, PartialEq)]
pub enum Register {
    Exists(bool),
    Col(Value),
}

impl RegValue<'_> {
    fn to_owned_value(self) -> Register {
        match self {
            RegValue::Exists(b) => Register::Exists(b),
            RegValue::Col(v) => Register::Col(v.clone()),
        }
    }
}

/// Writes registers (column values, or existence under [`EXISTS`]) at `at`.
pub fn write_registers(state: &mut RowState, changes: Vec<(String, Register)>, at: Hlc) {
    for (name, value) in changes {
        match value {
            Register::Exists(b) => state.exists = Stamped::new(b, at),
            Register::Col(v) => {
                state.cols.insert(name, Stamped::new(v, at));
            }
        }
    }
}

impl PushContext<'_> {
    /// A clock later than every clock of both versions, with `site`.
    pub fn fresh(&self, a: &RowState, b: &RowState, site: SiteId) -> Hlc {
        Clock::new(site, a.max_clock().max(b.max_clock())).tick(self.now_ms)
    }
}

/// How a client settles a pulled change that meets one of its own unpushed changes
/// (client-side resolvers).
pub enum Resolver<'a> {
    /// The later clock wins, field by field (the plain merge). The default.
    NewestWins,
    /// The local value wins: it is written again with a fresh local clock and pushed.
    LocalWins,
    /// The pulled value wins: the local change to that field is dropped.
    RemoteWins,
    /// The application decides: given the local and the remote version and the contested
    /// fields, it returns the values to keep (written as a fresh local change; contested
    /// fields it leaves out keep the plain merge's value). When existence is contested (a
    /// delete against an update), `Some` keeps the row and `None` deletes it; otherwise
    /// `None` keeps the plain merge.
    Callback(&'a dyn Fn(&ResolveInput<'_>) -> Option<BTreeMap<String, Value>>),
}

/// What a resolver callback sees.
pub struct ResolveInput<'a> {
    pub table: &'a str,
    pub key: &'a str,
    pub local: &'a RowState,
    pub remote: &'a RowState,
    /// The contested fields ([`EXISTS`] for a delete against an update).
    pub fields: &'a [String],
}

/// The outcome of merging a pulled version into a local row with unpushed changes.
#[derive(Clone, Debug, PartialEq)]
pub struct PulledMerge {
    pub state: RowState,
    /// The conflict found, with the winner of each field.
    pub conflict: Option<Contest>,
    /// The local change now includes the pulled version: what the next push says it saw.
    pub seen: RowClocks,
}

/// Merges a pulled `remote` version into `local` (row `table`/`key`), which has unpushed
/// changes made on top of `seen`, settling same-field conflicts with `resolver`. `clock`
/// stamps values the resolver keeps against the plain merge.
pub fn merge_pulled(
    (table, key): (&str, &str),
    local: &RowState,
    seen: &RowClocks,
    remote: &RowState,
    resolver: &Resolver<'_>,
    clock: &mut Clock,
    now_ms: u64,
) -> PulledMerge {
    let mut state = local.clone();
    state.merge(remote);
    // What the local change has now seen: the pulled registers too.
    let mut next_seen = seen.clone();
    next_seen.exists = next_seen.exists.max(remote.exists.at);
    for (c, s) in &remote.cols {
        let e = next_seen.cols.entry(c.clone()).or_insert(Hlc::ZERO);
        *e = (*e).max(s.at);
    }
    // Roles swap: seen from the local change, the remote version arrives on top of what the
    // local change started from.
    let Some(mut contest) = detect(ConflictStrategy::Lww, local, remote, seen, Side::Ours) else {
        return PulledMerge { state, conflict: None, seen: next_seen };
    };
    let wanted: Vec<(String, Register)> = match resolver {
        Resolver::NewestWins => Vec::new(),
        Resolver::LocalWins => contest
            .fields
            .iter()
            .filter_map(|f| register(local, f).map(|(_, v)| (f.clone(), v.to_owned_value())))
            .collect(),
        Resolver::RemoteWins => {
            // Taken as they are: the remote value with its own clock, replacing ours.
            for f in &contest.fields {
                if let Some((h, v)) = register(remote, f) {
                    write_registers(&mut state, vec![(f.clone(), v.to_owned_value())], h);
                }
            }
            Vec::new()
        }
        Resolver::Callback(f) => {
            // The callback decides existence only when existence is contested.
            let existence = contest.fields.iter().any(|c| c == EXISTS);
            let input = ResolveInput { table, key, local, remote, fields: &contest.fields };
            match f(&input) {
                None if existence => vec![(EXISTS.to_owned(), Register::Exists(false))],
                None => Vec::new(),
                Some(values) => contest
                    .fields
                    .iter()
                    .filter_map(|c| values.get(c).map(|v| (c.clone(), Register::Col(v.clone()))))
                    .chain(existence.then(|| (EXISTS.to_owned(), Register::Exists(true))))
                    .collect(),
            }
        }
    };
    let changes: Vec<(String, Register)> = wanted
        .into_iter()
        .filter(|(f, want)| register(&state, f).is_none_or(|(_, have)| !have.same(want_ref(want))))
        .collect();
    if !changes.is_empty() {
        let _ = clock.observe(state.max_clock(), now_ms);
        let at = clock.tick(now_ms);
        write_registers(&mut state, changes, at);
    }
    contest.winner = contest
        .fields
        .iter()
        .map(|f| {
            let side = match (register(&state, f), register(remote, f)) {
                (Some((a, va)), Some((b, vb))) if a == b || va.same(vb) => Side::Theirs,
                _ => Side::Ours,
            };
            (f.clone(), side)
        })
        .collect();
    PulledMerge { state, conflict: Some(contest), seen: next_seen }
}

fn want_ref(r: &Register) -> RegValue<'_> {
    match r {
        Register::Exists(b) => RegValue::Exists(*b),
        Register::Col(v) => RegValue::Col(v),
    }
}

/// Whether any of `fields` (columns, or [`EXISTS`]) holds a different write in `now` than
/// in `then`.
pub fn changed_since(then: &RowState, now: &RowState, fields: &[String]) -> bool {
    fields.iter().any(|f| register(then, f).map(|r| r.0) != register(now, f).map(|r| r.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, site: u64) -> Hlc {
        Hlc::new(1_000 + ms, 0, SiteId(site))
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    /// The version both sides start from: `a` and `b` written at 1 by site 1.
    fn base() -> RowState {
        RowState::inserted([("a".to_owned(), text("a0")), ("b".to_owned(), text("b0"))], at(1, 1))
    }

    fn edited(col: &str, v: &str, t: Hlc) -> RowState {
        let mut s = base();
        s.update([(col.to_owned(), text(v))], t);
        s
    }

    fn ctx(
        strategy: ConflictStrategy,
        writer_is_authority: bool,
        authority: &dyn Fn(SiteId) -> bool,
    ) -> PushContext<'_> {
        PushContext {
            strategy,
            writer_is_authority,
            authority_site: authority,
            server_site: SiteId(100),
            authority_stamp: SiteId(101),
            now_ms: 5_000,
            relayed: false,
        }
    }

    fn apply(d: Decision) -> (RowState, Option<Contest>, bool) {
        match d {
            Decision::Apply { state, conflict, restamped, .. } => (state, conflict, restamped),
            Decision::Reject { .. } => panic!("refused"),
        }
    }

    #[test]
    fn lww_merges_different_fields_and_logs_the_same_field() {
        let none = |_: SiteId| false;
        let stored = edited("a", "stored", at(3, 2));
        let (state, conflict, _) = apply(decide_push(
            &stored,
            &edited("b", "mine", at(2, 3)),
            &base().clocks(),
            &ctx(ConflictStrategy::Lww, false, &none),
        ));
        assert_eq!((&state.cols["a"].value, &state.cols["b"].value), (&text("stored"), &text("mine")));
        assert!(conflict.is_none(), "different fields merge without a conflict");
        let (state, conflict, restamped) = apply(decide_push(
            &stored,
            &edited("a", "mine", at(2, 3)),
            &base().clocks(),
            &ctx(ConflictStrategy::Lww, false, &none),
        ));
        assert_eq!(state.cols["a"].value, text("stored"), "the later clock wins");
        let c = conflict.expect("same field: logged");
        assert_eq!(
            (c.kind, c.fields.as_slice(), c.winner["a"]),
            (ConflictKind::UpdateUpdate, &["a".to_owned()][..], Side::Ours)
        );
        assert!(!restamped);
    }

    #[test]
    fn row_lww_gives_the_whole_row_to_the_later_side() {
        let none = |_: SiteId| false;
        let stored = edited("a", "stored", at(2, 2));
        let incoming = edited("b", "mine", at(3, 3));
        let (state, conflict, restamped) =
            apply(decide_push(&stored, &incoming, &base().clocks(), &ctx(ConflictStrategy::RowLww, false, &none)));
        assert_eq!((&state.cols["a"].value, &state.cols["b"].value), (&text("a0"), &text("mine")));
        assert!(restamped && state.cols["a"].at > at(3, 3), "a0 is written again, later than both");
        assert_eq!(conflict.unwrap().fields, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn the_authority_wins_whatever_the_clocks() {
        let main = |s: SiteId| s == SiteId(7) || s == SiteId(101);
        // Main's write is older than the phone's stored one, and still wins.
        let stored = edited("a", "phone", at(9, 2));
        let from_main = edited("a", "main", at(3, 7));
        let (state, _, restamped) = apply(decide_push(
            &stored,
            &from_main,
            &base().clocks(),
            &ctx(ConflictStrategy::Authoritative, true, &main),
        ));
        assert_eq!(state.cols["a"].value, text("main"));
        assert!(restamped && state.cols["a"].at.site() == SiteId(101), "stamped as the authority's");
        // A phone's later write meets main's value: main's stays.
        let phone = edited("a", "phone again", at(20, 2));
        let (state, _, _) =
            apply(decide_push(&state, &phone, &base().clocks(), &ctx(ConflictStrategy::Authoritative, false, &main)));
        assert_eq!(state.cols["a"].value, text("main"));
    }

    #[test]
    fn reject_stale_refuses_a_change_made_on_an_older_version_and_accepts_one_on_the_current() {
        let none = |_: SiteId| false;
        let stored = edited("a", "stored", at(2, 2));
        let c = ctx(ConflictStrategy::RejectStale, false, &none);
        assert!(matches!(
            decide_push(&stored, &edited("b", "mine", at(3, 3)), &base().clocks(), &c),
            Decision::Reject { .. }
        ));
        let mut on_top = stored.clone();
        on_top.update([("b".to_owned(), text("mine"))], at(3, 3));
        let (state, conflict, _) = apply(decide_push(&stored, &on_top, &stored.clocks(), &c));
        assert_eq!(state.cols["b"].value, text("mine"));
        assert!(conflict.is_none());
    }

    #[test]
    fn a_delete_that_had_not_seen_an_update_is_a_delete_update_conflict() {
        let none = |_: SiteId| false;
        let stored = edited("a", "updated", at(2, 2));
        let mut deleted = base();
        deleted.delete(at(3, 3));
        let (state, conflict, _) =
            apply(decide_push(&stored, &deleted, &base().clocks(), &ctx(ConflictStrategy::Lww, false, &none)));
        assert!(!state.is_alive());
        let c = conflict.unwrap();
        assert_eq!((c.kind, c.fields.as_slice()), (ConflictKind::DeleteUpdate, &["*".to_owned(), "a".to_owned()][..]));
        assert_eq!(c.winner[EXISTS], Side::Theirs);
    }

    #[test]
    fn a_retried_push_of_what_is_already_stored_is_no_conflict() {
        let none = |_: SiteId| false;
        let mine = edited("a", "mine", at(2, 3));
        let (_, conflict, _) =
            apply(decide_push(&mine, &mine, &base().clocks(), &ctx(ConflictStrategy::RejectStale, false, &none)));
        assert!(conflict.is_none());
    }

    #[test]
    fn same_clocks_agrees_with_comparing_all_clocks() {
        let (a, b) = (base(), edited("a", "x", at(2, 1)));
        let mut deleted = base();
        deleted.delete(at(2, 1));
        for (x, y) in [(&a, &a), (&a, &b), (&a, &deleted), (&b, &deleted)] {
            assert_eq!(x.same_clocks(y), x.clocks() == y.clocks());
        }
        assert!(!a.same_clocks(&RowState::unknown()));
    }

    #[test]
    fn versions_change_with_any_register() {
        let v = base().version();
        assert_eq!(v, base().version());
        assert_ne!(v, edited("a", "x", at(2, 1)).version());
        let mut deleted = base();
        deleted.delete(at(2, 1));
        assert_ne!(v, deleted.version());
    }
}
