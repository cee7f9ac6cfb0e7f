//! A pulled row meets what the replica holds of it.
//!
//! The executor first asks [`admit`] (a row whose clocks are too far ahead of this device's
//! is set aside, kept, and tried again later), then reads what it holds of the row and asks
//! [`meet`] what to do.

use ferry_core::schema::ConflictStrategy;
use ferry_core::strategy::{self, Contest, Resolver, RowClocks};
use ferry_core::{Clock, RowState};

/// Whether this replica may take the pulled `state` at wall time `now_ms`: its clocks are
/// observed (this replica's clock moves past them).
///
/// # Errors
/// The reason to set the row aside, keeping it: its clock is beyond the drift limit ahead
/// of this device's time. Applied at a later sync, once this device's time allows.
pub fn admit(clock: &mut Clock, table: &str, key: &str, state: &RowState, now_ms: u64) -> Result<(), String> {
    clock.observe(state.max_clock(), now_ms).map_err(|e| {
        format!(
            "{table} '{}': {e} (or this device's); kept, and applied at a later sync once this device's time allows",
            ferry_core::shown(key)
        )
    })
}

/// Who settles a pulled change that meets a local change not pushed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settler {
    /// The device, with the table's client-side resolver (`lww` tables).
    Device,
    /// The server, by the table's strategy, when it answers the push: the pulled version
    /// waits beside the local change until then.
    Server,
}

impl Settler {
    pub fn of(strategy: ConflictStrategy) -> Settler {
        if strategy == ConflictStrategy::Lww { Settler::Device } else { Settler::Server }
    }
}

/// What the replica holds of a pulled row.
#[derive(Clone, Copy, Debug)]
pub enum Found<'a> {
    /// Nothing: the row is new here.
    Nothing,
    /// A local change the server refused as stale, kept beside the server's `current`
    /// version until someone settles it.
    Refused { current: &'a RowState },
    /// The row; `pending` when it has a change not acknowledged yet, and then `seen`, the
    /// version that change started from, when recorded.
    Row { state: &'a RowState, pending: bool, seen: Option<&'a RowClocks> },
}

/// What to do with a pulled row.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Store the pulled state as it is, with nothing pending.
    Insert,
    /// The refused change stays as it is; the server's version beside it becomes `current`.
    JoinRefused { current: RowState },
    /// Keep the pulled version beside the pending change (joined with any held already)
    /// until the server answers its push ([`crate::push::merge_held`]).
    Hold,
    /// Write the row.
    Write(Write),
}

/// A row to write after a pull.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub state: RowState,
    /// The row's state changed (counts as a pulled change).
    pub changed: bool,
    /// The row holds a write the server has not seen: give it a fresh pending mark (it is
    /// pushed again). Otherwise its mark stays as it is.
    pub push: bool,
    /// What its pending change has now seen, to record.
    pub seen: Option<RowClocks>,
    /// A conflict the client-side resolver settled, to log with both versions.
    pub conflict: Option<Contest>,
}

impl Write {
    /// Whether the row's stored state or pending mark changes.
    pub fn stores(&self) -> bool {
        self.changed || self.push
    }
}

/// How a pulled row meets what the replica holds of it.
pub struct Meeting<'a> {
    pub table: &'a str,
    pub key: &'a str,
    pub pulled: &'a RowState,
    pub found: Found<'a>,
    pub settler: Settler,
    pub resolver: &'a Resolver<'a>,
    pub now_ms: u64,
}

/// Decides what a pulled row does to the replica. `clock` stamps values a resolver keeps
/// against the plain merge.
pub fn meet(m: &Meeting<'_>, clock: &mut Clock) -> Action {
    let (local, pending, seen) = match m.found {
        Found::Nothing => return Action::Insert,
        Found::Refused { current } => {
            let mut current = current.clone();
            current.merge(m.pulled);
            return Action::JoinRefused { current };
        }
        Found::Row { state, pending, seen } => (state, pending, seen.filter(|_| pending)),
    };
    if seen.is_some() && m.settler == Settler::Server {
        return Action::Hold;
    }
    let write = match seen {
        Some(seen) => {
            // A local change not pushed yet meets a pulled one: the resolver settles the fields
            // both changed.
            let out = strategy::merge_pulled((m.table, m.key), local, seen, m.pulled, m.resolver, clock, m.now_ms);
            Write {
                changed: out.state != *local,
                // Values the resolver wrote again are a new change: under a new pending mark, a
                // push of the earlier one whose answer was lost is not taken for this one.
                push: written_anew(&out.state, local, m.pulled),
                state: out.state,
                seen: Some(out.seen),
                conflict: out.conflict,
            }
        }
        None => {
            let mut state = local.clone();
            let report = state.merge(m.pulled);
            // The local state has something the server's lacks: pushed again, on top of the
            // version just pulled.
            let push = report.kept_newer && !pending;
            Write { state, changed: report.changed, push, seen: push.then(|| m.pulled.clocks()), conflict: None }
        }
    };
    Action::Write(write)
}

/// Whether `state` holds a register written by neither `local` nor `pulled` (a value a
/// resolver wrote again with a fresh clock).
pub fn written_anew(state: &RowState, local: &RowState, pulled: &RowState) -> bool {
    let neither = |at, a: Option<ferry_core::Hlc>, b: Option<ferry_core::Hlc>| Some(at) != a && Some(at) != b;
    neither(state.exists.at, Some(local.exists.at), Some(pulled.exists.at))
        || state
            .cols
            .iter()
            .any(|(c, s)| neither(s.at, local.cols.get(c).map(|v| v.at), pulled.cols.get(c).map(|v| v.at)))
}
