//! A deterministic simulation of the whole sync loop for every conflict strategy.
//!
//! Three replicas and a server, or (peered) two servers, MAIN and CLOUD, linked as
//! `ferry-peer` links them, with replicas 0 and 1 on MAIN and replica 2 on CLOUD. Modelled
//! as the real ones work: a replica's local writes
//! wait as pending changes with the version they started from; a push carries them in a
//! batch that the server applies once (a retried batch is answered from its record); a pull
//! brings every row changed since the replica's cursor and merges it with the replica's
//! client-side resolver. The network loses requests and answers and delivers some twice;
//! replicas act in random order. Replica 0 holds the `authority` role (the role MAIN holds
//! itself when peered). People resolve `manual` conflicts on the servers and `reject-stale`
//! refusals on the replicas.
//!
//! The link pushes MAIN's rows changed since its cursor (but those CLOUD brought exactly)
//! with the version both sides last held (`seen`), which CLOUD decides as a push; and pulls
//! CLOUD's rows (but those MAIN brought exactly), which MAIN decides as a push by CLOUD. On
//! CLOUD, MAIN's writes are the authority's; on MAIN, against what CLOUD brings, so are
//! MAIN's own. Between servers `reject-stale` decides as `manual`.
//!
//! The server decides with `ferry_core::strategy` and the replicas with `ferry_policy`, the
//! code the stores and the client run. After quiescence it checks that every replica holds exactly its server's
//! rows, that linked servers hold the same rows, and that every write overwritten by a write
//! that had not seen it is in a conflict log (a server's, or a replica's own).
//!
//! `FERRY_SIM_SEED=N` replays one seed (for every strategy); `FERRY_SIM_RUNS` sets how many
//! seeds run per strategy (default 600, so about 3 000 in all; the long mode sets more).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ferry_core::schema::ConflictStrategy;
use ferry_core::strategy::{self, Decision, EXISTS, PushContext, Register, ResolveInput, Resolver, RowClocks, Side};
use ferry_core::{Clock, Hlc, RowState, SiteId, Value};
use ferry_policy::pull::{self, Action, Found, Meeting, Settler};
use ferry_policy::{push, settle};

use crate::Rng;

type WriteId = u32;

/// One register write, with every write of the same row its writer had seen.
struct Write {
    key: u8,
    reg: String,
    at: Hlc,
    value: Register,
    /// A device's write (not a value the server wrote again for a strategy or a person):
    /// its loss must be logged.
    device: bool,
    /// Made by someone looking at the row (not by a resolver or strategy settling a
    /// conflict): what it saw, it overwrote knowingly.
    knowing: bool,
    saw: BTreeSet<WriteId>,
}

/// A logged conflict: row, and each version's register of each field.
struct Logged {
    key: u8,
    regs: Vec<(String, Hlc, Register)>,
}

fn logged(key: u8, fields: &[String], versions: &[&RowState]) -> Logged {
    let mut regs = Vec::new();
    for v in versions {
        for f in fields {
            if f == EXISTS {
                regs.push((f.clone(), v.exists.at, Register::Exists(v.exists.value)));
            } else if let Some(s) = v.cols.get(f) {
                regs.push((f.clone(), s.at, Register::Col(s.value.clone())));
            }
        }
    }
    Logged { key, regs }
}

/// A row with the write ids its state has seen.
#[derive(Clone, Default)]
struct Known {
    state: RowState,
    hist: BTreeSet<WriteId>,
}

struct Pending {
    seen: RowClocks,
    stamp: u64,
}

struct Replica {
    clock: Clock,
    rows: BTreeMap<u8, Known>,
    pending: BTreeMap<u8, Pending>,
    /// `reject-stale`: pulled versions of rows with pending changes, held until the push
    /// is answered; then the refused rows with the server's current version.
    held: BTreeMap<u8, Known>,
    refused: BTreeMap<u8, Known>,
    cursor: u64,
    next_batch: u64,
    next_stamp: u64,
    /// The last batch sent and not answered: its id and rows (key, stamp).
    unanswered: Option<(u64, Vec<(u8, u64)>)>,
    resolver: u8,
    log: Vec<Logged>,
}

struct Answer {
    refused: Vec<(u8, Known)>,
}

struct Server {
    site: SiteId,
    authority_stamp: SiteId,
    /// Each row, its feed position, and whether the peer brought it exactly (left out of
    /// the peer's feed).
    rows: BTreeMap<u8, (Known, u64, bool)>,
    seq: u64,
    batches: HashMap<(usize, u64), Vec<u8>>,
    log: Vec<Logged>,
    /// Open `manual` conflicts: row, fields, both versions, and the provisional state.
    open: Vec<(u8, Vec<String>, RowState, RowState, RowState)>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    strategy: ConflictStrategy,
    wall: u64,
    writes: Vec<Write>,
    replicas: Vec<Replica>,
    /// MAIN, and CLOUD when peered.
    servers: Vec<Server>,
    link: Link,
}

/// MAIN's link to CLOUD: how far each feed has crossed, the version of each row both sides
/// last held, and the batch out whose answer was lost.
#[derive(Default)]
struct Link {
    cursor_out: u64,
    cursor_in: u64,
    bases: BTreeMap<u8, RowClocks>,
    next_batch: u64,
    unanswered: Option<(u64, u64)>,
}

/// The batch records' client of the link (not a replica index).
const LINK: usize = usize::MAX;

const AUTHORITY: usize = 0;

impl Sim {
    fn new(seed: u64, strategy: ConflictStrategy, peered: bool) -> Sim {
        let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
        let replicas = (0..3)
            .map(|i| Replica {
                clock: Clock::new(SiteId(10 + i as u64), Hlc::ZERO),
                rows: BTreeMap::new(),
                pending: BTreeMap::new(),
                held: BTreeMap::new(),
                refused: BTreeMap::new(),
                cursor: 0,
                next_batch: 0,
                next_stamp: 1,
                unanswered: None,
                resolver: rng.below(4) as u8,
                log: Vec::new(),
            })
            .collect();
        let server = |n: u64| Server {
            site: SiteId(n),
            authority_stamp: SiteId(n + 1),
            rows: BTreeMap::new(),
            seq: 0,
            batches: HashMap::new(),
            log: Vec::new(),
            open: Vec::new(),
        };
        let servers = if peered { vec![server(1), server(3)] } else { vec![server(1)] };
        Sim { seed, rng, strategy, wall: 1_000, writes: Vec::new(), replicas, servers, link: Link::default() }
    }

    /// The server replica `r` syncs with: CLOUD for replica 2 when peered, else MAIN.
    fn home(&self, r: usize) -> usize {
        if self.servers.len() > 1 && r == 2 { 1 } else { 0 }
    }

    /// Whether a site writes on MAIN's side: MAIN itself or a replica syncing with it.
    fn main_side(&self, site: SiteId) -> bool {
        site == self.servers[0].site
            || site == self.servers[0].authority_stamp
            || (0..3).any(|r| self.home(r) == 0 && self.replicas[r].clock.site() == site)
    }

    /// Whether server `h` counts a stored value by `site` as the authority's, deciding a
    /// push by a device or (`link`) by the peer.
    fn authority_site(&self, h: usize, link: bool, site: SiteId) -> bool {
        let stamp = self.servers[h].authority_stamp;
        match h {
            // MAIN: the role's holder; against the peer, also MAIN's own side.
            0 => site == stamp || site == self.replicas[AUTHORITY].clock.site() || (link && self.main_side(site)),
            // CLOUD: what MAIN's link brought is the role's (its token holds it).
            _ => site == stamp || self.main_side(site),
        }
    }

    /// Server `h` decides one pushed row, as a store does: stores it (marked as the peer's
    /// when `link` and kept exactly), logs its conflict; `Err` when refused as stale.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        h: usize,
        key: u8,
        incoming: &Known,
        seen: &RowClocks,
        writer_is_authority: bool,
        link: bool,
        r: Option<usize>,
    ) -> Result<(), ()> {
        let stored = self.servers[h].rows.get(&key).map(|(k, _, _)| k.clone()).unwrap_or_default();
        let sites: Vec<SiteId> = [stored.state.exists.at]
            .into_iter()
            .chain(stored.state.cols.values().map(|c| c.at))
            .map(|at| at.site())
            .collect();
        let authority: Vec<SiteId> = sites.into_iter().filter(|s| self.authority_site(h, link, *s)).collect();
        let strategy = match self.strategy {
            ConflictStrategy::RejectStale if link => ConflictStrategy::Manual,
            s => s,
        };
        let ctx = PushContext {
            strategy,
            writer_is_authority,
            authority_site: &|s| authority.contains(&s),
            server_site: self.servers[h].site,
            authority_stamp: self.servers[h].authority_stamp,
            now_ms: self.wall,
            relayed: link,
        };
        let decision = strategy::decide_push(&stored.state, &incoming.state, seen, &ctx);
        debug(|| {
            format!(
                "push to {h} (from {r:?}, link {link}) row {key}: stored {:?}\n  incoming {:?}\n  seen {seen:?}\n  -> {decision:?}",
                stored.state, incoming.state
            )
        });
        match decision {
            Decision::Reject { conflict } => {
                if let Some(r) = r {
                    self.assert_not_self_conflict(r, key, &conflict, &stored.state);
                }
                Err(())
            }
            Decision::Apply { state, conflict, open, restamped } => {
                if let Some(c) = &conflict {
                    if let Some(r) = r {
                        self.assert_not_self_conflict(r, key, c, &stored.state);
                    }
                    self.servers[h].log.push(logged(key, &c.fields, &[&stored.state, &incoming.state]));
                    if open {
                        let provisional =
                            (key, c.fields.clone(), stored.state.clone(), incoming.state.clone(), state.clone());
                        self.servers[h].open.push(provisional);
                    }
                }
                let mut hist: BTreeSet<WriteId> = stored.hist.union(&incoming.hist).copied().collect();
                if restamped {
                    let mut merged = stored.state.clone();
                    merged.merge(&incoming.state);
                    self.record(key, &merged, &state, (false, false), &mut hist);
                }
                let exact = link && state.same_clocks(&incoming.state);
                let server = &mut self.servers[h];
                if state != stored.state {
                    server.seq += 1;
                    server.rows.insert(key, (Known { state, hist }, server.seq, exact));
                } else if let Some((k, _, _)) = server.rows.get_mut(&key) {
                    k.hist = hist;
                }
                Ok(())
            }
        }
    }

    /// Records the writes `after` holds that `before` did not (registers whose clock changed).
    fn record(
        &mut self,
        key: u8,
        before: &RowState,
        after: &RowState,
        (device, knowing): (bool, bool),
        hist: &mut BTreeSet<WriteId>,
    ) {
        let saw = hist.clone();
        let mut regs: Vec<(String, Hlc, Register)> = Vec::new();
        if after.exists.at != before.exists.at {
            regs.push((EXISTS.to_owned(), after.exists.at, Register::Exists(after.exists.value)));
        }
        for (c, s) in &after.cols {
            if before.cols.get(c).map(|b| b.at) != Some(s.at) {
                regs.push((c.clone(), s.at, Register::Col(s.value.clone())));
            }
        }
        for (reg, at, value) in regs {
            let id = self.writes.len() as WriteId;
            self.writes.push(Write { key, reg, at, value, device, knowing, saw: saw.clone() });
            hist.insert(id);
        }
    }

    fn local_write(&mut self, r: usize) {
        self.wall += self.rng.below(3);
        let key = self.rng.below(3) as u8;
        let v = Value::Integer(self.rng.below(50) as i64);
        let col = if self.rng.below(2) == 0 { "x" } else { "y" };
        let op = self.rng.below(4);
        let wall = self.wall;
        let rep = &mut self.replicas[r];
        if rep.refused.contains_key(&key) && self.rng.below(2) == 0 {
            return;
        }
        let at = rep.clock.tick(wall);
        let mut known = rep.rows.get(&key).cloned().unwrap_or_default();
        let before = known.state.clone();
        match (known.state.is_alive(), op) {
            (false, _) => known.state.insert([("x".to_owned(), v.clone()), ("y".to_owned(), v)], at),
            (true, 0) => known.state.delete(at),
            (true, _) => known.state.update([(col.to_owned(), v)], at),
        }
        let stamp = rep.next_stamp;
        rep.next_stamp += 1;
        rep.pending.entry(key).or_insert_with(|| Pending { seen: before.clocks(), stamp: 0 }).stamp = stamp;
        let mut hist = known.hist.clone();
        let after = known.state.clone();
        self.record(key, &before, &after, (true, true), &mut hist);
        known.hist = hist;
        self.replicas[r].rows.insert(key, known);
    }

    /// One push attempt, as the client makes it: a batch of every pending row not refused;
    /// the id of the last unanswered batch again when its rows are unchanged (so the server
    /// answers a retry from its record), else a new one.
    fn push(&mut self, r: usize, faults: bool) {
        let rep = &mut self.replicas[r];
        let rows: Vec<_> = rep
            .pending
            .iter()
            .filter(|(k, _)| !rep.refused.contains_key(k))
            .map(|(k, p)| (*k, rep.rows[k].clone(), p.seen.clone(), p.stamp))
            .collect();
        if rows.is_empty() {
            return;
        }
        let stamps: Vec<(u8, u64)> = rows.iter().map(|r| (r.0, r.3)).collect();
        let batch = match &rep.unanswered {
            Some((id, same)) if *same == stamps => *id,
            _ => {
                rep.next_batch += 1;
                rep.next_batch
            }
        };
        rep.unanswered = Some((batch, stamps));
        if faults && self.rng.below(6) == 0 {
            return; // the request is lost
        }
        let mut answer = self.serve_push(r, batch, &rows);
        if faults && self.rng.below(6) == 0 {
            answer = self.serve_push(r, batch, &rows); // delivered twice
        }
        if faults && self.rng.below(6) == 0 {
            return; // the answer is lost: the rows stay pending
        }
        let rep = &mut self.replicas[r];
        rep.unanswered = None;
        let refused: BTreeMap<u8, Known> = answer.refused.into_iter().collect();
        for (key, pushed, _, stamp) in rows {
            if let Some(current) = refused.get(&key) {
                let mut held = rep.held.remove(&key).unwrap_or_default();
                held.state = push::refused_current(&current.state, Some(&held.state));
                held.hist.extend(current.hist.iter().copied());
                let local = &rep.rows[&key].state;
                let contest = strategy::detect(
                    ConflictStrategy::RejectStale,
                    &held.state,
                    local,
                    &rep.pending[&key].seen,
                    Side::Theirs,
                );
                if let Some(c) = contest {
                    rep.log.push(logged(key, &c.fields, &[&held.state, local]));
                }
                rep.refused.insert(key, held);
            } else if rep.pending.get(&key).is_some_and(|p| p.stamp == stamp) {
                rep.pending.remove(&key);
                if let Some(held) = rep.held.remove(&key) {
                    // Pulled while the push was out: merged now.
                    let k = rep.rows.entry(key).or_default();
                    let merged = push::merge_held(&k.state, &held.state);
                    k.state = merged.state;
                    k.hist.extend(held.hist);
                    if let Some(seen) = merged.push {
                        let stamp = rep.next_stamp;
                        rep.next_stamp += 1;
                        rep.pending.insert(key, Pending { seen, stamp });
                    }
                }
            } else if let Some(p) = rep.pending.get_mut(&key) {
                // Changed again since.
                p.seen = push::rebased_seen(&pushed.state);
            }
        }
    }

    fn serve_push(&mut self, r: usize, batch: u64, rows: &[(u8, Known, RowClocks, u64)]) -> Answer {
        let h = self.home(r);
        let current = |s: &Server, k: u8| s.rows.get(&k).map(|(k, _, _)| k.clone()).unwrap_or_default();
        if let Some(refused) = self.servers[h].batches.get(&(r, batch)) {
            let refused = refused.iter().map(|k| (*k, current(&self.servers[h], *k))).collect();
            return Answer { refused };
        }
        let mut refused = Vec::new();
        for (key, incoming, seen, _) in rows {
            self.wall += 1;
            if self.decide(h, *key, incoming, seen, r == AUTHORITY, false, Some(r)).is_err() {
                refused.push(*key);
            }
        }
        self.servers[h].batches.insert((r, batch), refused.clone());
        Answer { refused: refused.into_iter().map(|k| (k, current(&self.servers[h], k))).collect() }
    }

    /// The link pushes MAIN's rows changed since its cursor out (but those CLOUD brought
    /// exactly) to CLOUD, with the version both last held; a batch whose answer was lost is
    /// sent again under its id.
    fn link_push(&mut self, faults: bool) {
        if self.servers.len() < 2 {
            return;
        }
        let upto = self.servers[0].seq;
        let rows: Vec<(u8, Known, RowClocks)> = self.servers[0]
            .rows
            .iter()
            .filter(|(_, (_, seq, from_peer))| *seq > self.link.cursor_out && !from_peer)
            .map(|(k, (known, _, _))| (*k, known.clone(), self.link.bases.get(k).cloned().unwrap_or_default()))
            .collect();
        if rows.is_empty() {
            self.link.cursor_out = upto;
            return;
        }
        let batch = match self.link.unanswered {
            Some((id, same)) if same == upto => id,
            _ => {
                self.link.next_batch += 1;
                self.link.next_batch
            }
        };
        self.link.unanswered = Some((batch, upto));
        if faults && self.rng.below(6) == 0 {
            return; // the request is lost
        }
        let times = if faults && self.rng.below(6) == 0 { 2 } else { 1 };
        for _ in 0..times {
            if self.servers[1].batches.contains_key(&(LINK, batch)) {
                continue; // answered from the record
            }
            for (key, incoming, seen) in &rows {
                self.wall += 1;
                // Between servers nothing is refused (`reject-stale` decides as `manual`).
                let _ = self.decide(1, *key, incoming, seen, true, true, None);
            }
            self.servers[1].batches.insert((LINK, batch), Vec::new());
        }
        if faults && self.rng.below(6) == 0 {
            return; // the answer is lost
        }
        self.link.unanswered = None;
        for (key, pushed, _) in rows {
            self.link.bases.insert(key, pushed.state.clocks());
        }
        self.link.cursor_out = upto;
    }

    /// The link pulls CLOUD's rows changed since its cursor in (but those MAIN brought
    /// exactly), which MAIN decides as a push by CLOUD with the version both last held.
    fn link_pull(&mut self, faults: bool) {
        if self.servers.len() < 2 {
            return;
        }
        let upto = self.servers[1].seq;
        let rows: Vec<(u8, Known)> = self.servers[1]
            .rows
            .iter()
            .filter(|(_, (_, seq, from_peer))| *seq > self.link.cursor_in && !from_peer)
            .map(|(k, (known, _, _))| (*k, known.clone()))
            .collect();
        if faults && self.rng.below(6) == 0 {
            return; // lost
        }
        let times = if faults && self.rng.below(6) == 0 { 2 } else { 1 };
        for _ in 0..times {
            for (key, pulled) in &rows {
                self.wall += 1;
                let seen = self.link.bases.get(key).cloned().unwrap_or_default();
                let _ = self.decide(0, *key, pulled, &seen, false, true, None);
                self.link.bases.insert(*key, pulled.state.clocks());
            }
        }
        self.link.cursor_in = upto;
    }

    /// A device's own earlier writes never make a conflict with its later ones: some contested
    /// stored register must come from someone else.
    fn assert_not_self_conflict(&self, r: usize, key: u8, c: &strategy::Contest, stored: &RowState) {
        let me = self.replicas[r].clock.site();
        let foreign = c.fields.iter().any(|f| {
            let at = if f == EXISTS { stored.exists.at } else { stored.cols.get(f).map_or(Hlc::ZERO, |s| s.at) };
            at.site() != me
        });
        assert!(
            foreign,
            "strategy {}, seed {} (replay with FERRY_SIM_SEED={}): replica {r} conflicts with its own writes on row {key}: {c:?}",
            self.strategy.name(),
            self.seed,
            self.seed
        );
    }

    fn pull(&mut self, r: usize, faults: bool) {
        let server = &self.servers[self.home(r)];
        let rows: Vec<(u8, Known)> = server
            .rows
            .iter()
            .filter(|(_, (_, seq, _))| *seq > self.replicas[r].cursor)
            .map(|(k, (known, _, _))| (*k, known.clone()))
            .collect();
        let cursor = server.seq;
        if faults && self.rng.below(6) == 0 {
            return; // lost
        }
        self.wall += 1;
        let wall = self.wall;
        for (key, remote) in rows {
            let strategy = self.strategy;
            let rep = &mut self.replicas[r];
            pull::admit(&mut rep.clock, "t", &key.to_string(), &remote.state, wall).unwrap();
            let local = rep.rows.get(&key).cloned();
            let found = match (&local, rep.refused.get(&key), rep.pending.get(&key)) {
                (_, Some(refused), _) => Found::Refused { current: &refused.state },
                (None, ..) => Found::Nothing,
                (Some(l), None, p) => Found::Row { state: &l.state, pending: p.is_some(), seen: p.map(|p| &p.seen) },
            };
            let callback = |i: &ResolveInput<'_>| -> Option<BTreeMap<String, Value>> {
                // Keeps the larger value of each field; deletes when either side deleted.
                if !i.local.is_alive() || !i.remote.is_alive() {
                    return None;
                }
                Some(
                    i.fields
                        .iter()
                        .filter_map(|f| {
                            let a = i.local.cols.get(f)?.value.clone();
                            let b = i.remote.cols.get(f)?.value.clone();
                            Some((f.clone(), if a.total_cmp(&b).is_ge() { a } else { b }))
                        })
                        .collect(),
                )
            };
            let resolver = match rep.resolver {
                0 => Resolver::NewestWins,
                1 => Resolver::LocalWins,
                2 => Resolver::RemoteWins,
                _ => Resolver::Callback(&callback),
            };
            let key_text = key.to_string();
            let meeting = Meeting {
                table: "t",
                key: &key_text,
                pulled: &remote.state,
                found,
                settler: Settler::of(strategy),
                resolver: &resolver,
                now_ms: wall,
            };
            let action = pull::meet(&meeting, &mut rep.clock);
            debug(|| {
                format!(
                    "pull on {r} row {key}: local {:?}\n  remote {:?}\n  -> {action:?}",
                    local.as_ref().map(|l| &l.state),
                    remote.state
                )
            });
            match action {
                Action::Insert => {
                    rep.rows.insert(key, remote);
                }
                Action::JoinRefused { current } => {
                    let refused = rep.refused.get_mut(&key).expect("refused");
                    refused.state = current;
                    refused.hist.extend(remote.hist.iter().copied());
                }
                Action::Hold => {
                    let held = rep.held.entry(key).or_default();
                    held.state.merge(&remote.state);
                    held.hist.extend(remote.hist);
                }
                Action::Write(w) => {
                    let local = local.expect("a write meets a local row");
                    if let Some(c) = &w.conflict {
                        rep.log.push(logged(key, &c.fields, &[&local.state, &remote.state]));
                    }
                    let mut hist: BTreeSet<WriteId> = local.hist.union(&remote.hist).copied().collect();
                    let mut merged = local.state.clone();
                    merged.merge(&remote.state);
                    // A value the resolver wrote again is a new device write that saw both sides.
                    self.record(key, &merged, &w.state, (true, false), &mut hist);
                    let rep = &mut self.replicas[r];
                    if w.push {
                        let stamp = rep.next_stamp;
                        rep.next_stamp += 1;
                        rep.pending
                            .insert(key, Pending { seen: w.seen.clone().expect("a pushed row has seen"), stamp });
                    } else if let (Some(p), Some(seen)) = (rep.pending.get_mut(&key), w.seen) {
                        p.seen = seen;
                    }
                    rep.rows.insert(key, Known { state: w.state, hist });
                }
            }
        }
        self.replicas[r].cursor = cursor;
    }

    /// A person on replica `r` settles a refused change: keep theirs, or take the server's.
    fn settle_refused(&mut self, r: usize) {
        let Some(key) = self.replicas[r].refused.keys().next().copied() else { return };
        let keep_local = self.rng.below(2) == 0;
        self.wall += 1;
        let wall = self.wall;
        let rep = &mut self.replicas[r];
        let current = rep.refused.remove(&key).expect("refused");
        let local = rep.rows[&key].clone();
        rep.clock.observe(current.state.max_clock(), wall).unwrap();
        // The refusal's record holds both versions as they are when the person decides.
        let fields: Vec<String> =
            settle::own_registers(&local.state, &rep.pending[&key].seen).into_iter().map(|r| r.0).collect();
        rep.log.push(logged(key, &fields, &[&current.state, &local.state]));
        if keep_local {
            // The local values are written again on top of the current version.
            let (state, seen) =
                settle::keep_local(&local.state, &rep.pending[&key].seen, &current.state, &mut rep.clock, wall);
            let before = merged(&current.state, &local.state);
            let mut hist: BTreeSet<WriteId> = current.hist.union(&local.hist).copied().collect();
            let stamp = rep.next_stamp;
            rep.next_stamp += 1;
            rep.pending.insert(key, Pending { seen, stamp });
            self.record(key, &before, &state, (true, false), &mut hist);
            self.replicas[r].rows.insert(key, Known { state, hist });
        } else {
            rep.pending.remove(&key);
            rep.rows.insert(key, current);
        }
    }

    /// A person resolves the oldest open `manual` conflict on server `h`.
    fn settle_manual(&mut self, h: usize) {
        if self.servers[h].open.is_empty() {
            return;
        }
        let (key, fields, stored, incoming, provisional) = self.servers[h].open.remove(0);
        let keep = if self.rng.below(2) == 0 { &stored } else { &incoming };
        let changes: Vec<(String, Register)> = fields
            .iter()
            .filter_map(|f| {
                if f == EXISTS {
                    Some((f.clone(), Register::Exists(keep.exists.value)))
                } else {
                    keep.cols.get(f).map(|s| (f.clone(), Register::Col(s.value.clone())))
                }
            })
            .collect();
        self.wall += 1;
        let (known, _, _) = self.servers[h].rows.get(&key).cloned().expect("a conflicted row exists");
        let at = Clock::new(self.servers[h].site, known.state.max_clock()).tick(self.wall);
        // Fields changed again since the conflict was logged: the resolution overwrites those
        // changes too, so it is logged as a conflict of its own.
        if strategy::changed_since(&provisional, &known.state, &fields) {
            self.servers[h].log.push(logged(key, &fields, &[&known.state]));
        }
        let mut state = known.state.clone();
        strategy::write_registers(&mut state, changes, at);
        let mut hist = known.hist.clone();
        self.record(key, &known.state, &state, (false, false), &mut hist);
        if state != known.state {
            let server = &mut self.servers[h];
            server.seq += 1;
            server.rows.insert(key, (Known { state, hist }, server.seq, false));
        }
    }

    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            let r = self.rng.below(3) as usize;
            match self.rng.below(12) {
                0..=3 => self.local_write(r),
                4..=5 => self.push(r, true),
                6..=7 => self.pull(r, true),
                8 => self.settle_refused(r),
                9 => self.settle_manual(self.home(r)),
                10 => self.link_push(true),
                _ => self.link_pull(true),
            }
        }
        // Quiescence: no more local writes; the network works; people settle what is open.
        for _ in 0..20 {
            for r in 0..3 {
                while !self.replicas[r].refused.is_empty() {
                    self.settle_refused(r);
                }
                self.push(r, false);
                self.push(r, false);
            }
            for h in 0..self.servers.len() {
                while !self.servers[h].open.is_empty() {
                    self.settle_manual(h);
                }
            }
            self.link_push(false);
            self.link_pull(false);
            self.link_push(false);
            for r in 0..3 {
                self.pull(r, false);
            }
            let quiet = self.replicas.iter().all(|r| r.pending.is_empty() && r.refused.is_empty())
                && self.servers.iter().all(|s| s.open.is_empty());
            if quiet {
                for r in 0..3 {
                    self.pull(r, false);
                }
                return;
            }
        }
        panic!("no quiescence after 20 rounds");
    }

    fn check(&self, seed: u64) {
        let here = format!("strategy {}, seed {seed} (replay with FERRY_SIM_SEED={seed})", self.strategy.name());
        let rows = |s: &Server| -> BTreeMap<u8, RowState> {
            s.rows.iter().map(|(k, (v, _, _))| (*k, v.state.clone())).collect()
        };
        let server = rows(&self.servers[0]);
        for (h, other) in self.servers.iter().enumerate().skip(1) {
            assert_eq!(rows(other), server, "{here}: server {h} differs from MAIN");
        }
        for (i, rep) in self.replicas.iter().enumerate() {
            let local: BTreeMap<u8, RowState> = rep.rows.iter().map(|(k, v)| (*k, v.state.clone())).collect();
            assert_eq!(local, server, "{here}: replica {i} differs from its server");
        }
        // Every write that lost to a write that had not seen it is in a conflict log.
        let kept = |w: &Write| -> bool {
            let s = &server[&w.key];
            match &w.value {
                Register::Exists(b) => s.exists.at == w.at || s.exists.value == *b,
                Register::Col(v) => s.cols.get(&w.reg).is_some_and(|c| c.at == w.at || c.value.same(v)),
            }
        };
        // The writes each register's knowing writers had seen of that same register: a write
        // is excused only when one that replaced its register had seen it (or its value later).
        let mut seen_by: BTreeMap<(u8, &str), BTreeSet<WriteId>> = BTreeMap::new();
        for k in self.writes.iter().filter(|k| k.knowing) {
            let ids = seen_by.entry((k.key, k.reg.as_str())).or_default();
            ids.extend(k.saw.iter().copied().filter(|s| self.writes[*s as usize].reg == k.reg));
        }
        let logs: Vec<&Logged> = self
            .servers
            .iter()
            .flat_map(|s| s.log.iter())
            .chain(self.replicas.iter().flat_map(|r| r.log.iter()))
            .collect();
        for (id, w) in self.writes.iter().enumerate() {
            // Seen: by a write made looking at the row, or the same value later in the same
            // register was (two deletes of one row, say).
            let seen = seen_by.get(&(w.key, w.reg.as_str())).is_some_and(|ids| {
                ids.iter().map(|s| &self.writes[*s as usize]).any(|s| s.at >= w.at && same_register(&s.value, &w.value))
            });
            if !w.device || kept(w) || seen {
                continue;
            }
            // Logged: this write, or the same value later in the same register.
            let in_log = logs.iter().any(|l| {
                l.key == w.key
                    && l.regs
                        .iter()
                        .any(|(r, at, v)| *r == w.reg && (*at == w.at || (*at > w.at && same_register(v, &w.value))))
            });
            if !in_log && std::env::var("FERRY_SIM_DEBUG").is_ok() {
                for (j, x) in self.writes.iter().enumerate().filter(|(_, x)| x.key == w.key) {
                    eprintln!(
                        "write {j}: {} at {} device={} knowing={} saw={:?}",
                        x.reg, x.at, x.device, x.knowing, x.saw
                    );
                }
                eprintln!("final: {:?}", server[&w.key]);
                for l in logs.iter().filter(|l| l.key == w.key) {
                    eprintln!("logged: {:?}", l.regs);
                }
            }
            assert!(
                in_log,
                "{here}: write {id} ({} of row {} at {}) was overwritten unseen and never logged",
                w.reg, w.key, w.at
            );
        }
    }
}

fn debug(f: impl FnOnce() -> String) {
    if std::env::var("FERRY_SIM_DEBUG").is_ok() {
        eprintln!("{}", f());
    }
}

fn merged(a: &RowState, b: &RowState) -> RowState {
    let mut m = a.clone();
    m.merge(b);
    m
}

fn simulate(seed: u64, strategy: ConflictStrategy, peered: bool) {
    let mut sim = Sim::new(seed, strategy, peered);
    sim.run(80);
    sim.check(seed);
}

#[test]
fn every_strategy_converges_and_logs_every_overwritten_concurrent_value() {
    if let Ok(seed) = std::env::var("FERRY_SIM_SEED") {
        let seed = seed.parse().expect("FERRY_SIM_SEED must be a number");
        for s in ConflictStrategy::ALL {
            simulate(seed, s, false);
        }
        return;
    }
    let runs: u64 = std::env::var("FERRY_SIM_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(600);
    for s in ConflictStrategy::ALL {
        for seed in 0..runs {
            simulate(seed, s, false);
        }
    }
}

#[test]
fn two_linked_servers_converge_with_their_replicas_and_log_every_overwritten_concurrent_value() {
    if let Ok(seed) = std::env::var("FERRY_SIM_SEED") {
        let seed = seed.parse().expect("FERRY_SIM_SEED must be a number");
        for s in ConflictStrategy::ALL {
            simulate(seed, s, true);
        }
        return;
    }
    let runs: u64 = std::env::var("FERRY_SIM_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(600);
    for s in ConflictStrategy::ALL {
        for seed in 0..runs {
            simulate(seed, s, true);
        }
    }
}

fn same_register(a: &Register, b: &Register) -> bool {
    match (a, b) {
        (Register::Exists(a), Register::Exists(b)) => a == b,
        (Register::Col(a), Register::Col(b)) => a.same(b),
        _ => false,
    }
}
