//! A person settles a local change the server refused as stale (`reject-stale`).

use ferry_core::strategy::{self, EXISTS, Register, RowClocks};
use ferry_core::{Clock, Hlc, RowState};

/// The registers a local change wrote on top of the version it started from (`seen`).
pub fn own_registers(local: &RowState, seen: &RowClocks) -> Vec<(String, Register)> {
    let mut own = Vec::new();
    if local.exists.at > seen.exists {
        own.push((EXISTS.to_owned(), Register::Exists(local.exists.value)));
    }
    for (c, v) in &local.cols {
        if v.at > seen.cols.get(c).copied().unwrap_or(Hlc::ZERO) {
            own.push((c.clone(), Register::Col(v.value.clone())));
        }
    }
    own
}

/// The local change is kept: its own registers are written again, with a fresh clock, on top
/// of the server's `current` version. Returns the row's state, to push as a change that has
/// seen `current` (the second value).
pub fn keep_local(
    local: &RowState,
    seen: &RowClocks,
    current: &RowState,
    clock: &mut Clock,
    now_ms: u64,
) -> (RowState, RowClocks) {
    let own = own_registers(local, seen);
    let mut state = current.clone();
    state.merge(local);
    let at = clock.tick(now_ms);
    strategy::write_registers(&mut state, own, at);
    (state, current.clocks())
}
