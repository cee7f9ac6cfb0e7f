//! Pushing: the server's answer to a batch, and a refused batch split until the rows at
//! fault are found.

use std::ops::Range;

use ferry_core::RowState;
use ferry_core::strategy::RowClocks;

/// Whether a refusal with this error code is about the batch's rows (a row the server
/// cannot take: split the batch and set that row aside). Any other refusal (a proxy's 404,
/// 408, 429 …) is not the rows' fault and stops the push; it is tried again later.
pub fn refusal_about_rows(code: &str) -> bool {
    matches!(code, "bad_request" | "forbidden" | "payload_too_large")
}

/// A refused batch being split: halves are pushed, left first, until each refused row is
/// alone, and set aside with the server's answer (`E`) for it; the rest goes through.
#[derive(Debug)]
pub struct Split<E> {
    /// Ranges of the batch still to push, the next last; with the refusal when one is known.
    work: Vec<(Range<usize>, Option<E>)>,
}

/// The next step of a [`Split`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step<E> {
    /// Push these rows of the batch; report a refusal with [`Split::refused`].
    Push(Range<usize>),
    /// The row at this index is refused on its own: set it aside with the answer.
    SetAside(usize, E),
    /// Every row is pushed or set aside.
    Done,
}

impl<E> Split<E> {
    /// The batch of `len` rows was refused with `refusal`.
    pub fn new(len: usize, refusal: E) -> Split<E> {
        Split { work: vec![(0..len, Some(refusal))] }
    }

    /// What to do next.
    pub fn step(&mut self) -> Step<E> {
        while let Some((range, refusal)) = self.work.pop() {
            match refusal {
                None => return Step::Push(range),
                Some(e) if range.len() == 1 => return Step::SetAside(range.start, e),
                Some(_) if range.is_empty() => {}
                Some(_) => {
                    let mid = range.start + range.len() / 2;
                    self.work.push((mid..range.end, None));
                    self.work.push((range.start..mid, None));
                }
            }
        }
        Step::Done
    }

    /// The push of `range` (from [`Step::Push`]) was refused for its rows with `refusal`.
    pub fn refused(&mut self, range: Range<usize>, refusal: E) {
        self.work.push((range, Some(refusal)));
    }
}

/// The version kept beside a local change the server refused as stale: the server's
/// `current` one, joined by versions pulled while the push was out (`held`).
pub fn refused_current(current: &RowState, held: Option<&RowState>) -> RowState {
    let mut current = current.clone();
    if let Some(held) = held {
        current.merge(held);
    }
    current
}

/// A pushed row whose pending mark was not cleared (it changed again since it was read):
/// the later change now starts from what the server holds of the pushed one.
pub fn rebased_seen(pushed: &RowState) -> RowClocks {
    pushed.clocks()
}

/// An acknowledged row meets the version pulled while its push was out (`held`).
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    pub state: RowState,
    /// The local state holds something the pulled version lacks: push it again, as a change
    /// that has seen `seen`.
    pub push: Option<RowClocks>,
}

/// Merges a held version into the acknowledged row `local`.
pub fn merge_held(local: &RowState, held: &RowState) -> Merged {
    let mut state = local.clone();
    let report = state.merge(held);
    Merged { state, push: report.kept_newer.then(|| held.clocks()) }
}

/// Where the pull cursor goes after a push answered with `past` ("the batch was all that
/// changed the feed since `sent`"): to `past` if it is still `sent`, the cursor the push
/// carried; otherwise it stays.
pub fn cursor_after<'a>(stored: &str, sent: &str, past: Option<&'a str>) -> Option<&'a str> {
    past.filter(|_| stored == sent)
}
