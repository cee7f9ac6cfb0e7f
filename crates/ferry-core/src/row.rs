//! The state of one synced row and the rule that merges two of them.
//!
//! A row is a set of registers, each holding a value and the [`Hlc`] of the change that
//! wrote it:
//!
//! - one register per column (column-level last-writer-wins: concurrent edits to
//!   different columns both survive);
//! - an *existence* register, written `true` by an insert and `false` by a delete.
//!
//! Merging keeps, register by register, the one with the greater clock (the site id inside
//! the clock breaks ties). That makes [`RowState::merge`] commutative, associative and
//! idempotent, so replicas that saw the same changes in any order, with duplicates, hold
//! the same state.
//!
//! Deletes, defined:
//! - a delete writes only the existence register, so it leaves a tombstone that keeps the
//!   column registers (their values are needed if the key comes back);
//! - an update does not write existence: a delete and a concurrent update of the same row
//!   end with the row deleted, whichever clock is greater (the update's values stay in
//!   the tombstone);
//! - an insert writes existence and every column: re-inserting a deleted key brings the row
//!   back when the insert's clock is greater than the delete's, with the inserted values
//!   (a column written later than the insert keeps that later value).

use std::collections::BTreeMap;

use crate::hlc::Hlc;
use crate::value::Value;

/// A value with the clock of the change that wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stamped<T> {
    pub value: T,
    pub at: Hlc,
}

impl<T> Stamped<T> {
    pub fn new(value: T, at: Hlc) -> Self {
        Stamped { value, at }
    }
}

/// The mergeable state of one row (primary key not included; it names the row).
#[derive(Clone, Debug, PartialEq)]
pub struct RowState {
    pub exists: Stamped<bool>,
    /// Columns other than the primary key. A column absent here was never written.
    pub cols: BTreeMap<String, Stamped<Value>>,
}

/// What a merge did to the receiving state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// The receiving state changed.
    pub changed: bool,
    /// The receiving state holds a register newer than the incoming one, so the incoming
    /// side has not seen everything the receiver has.
    pub kept_newer: bool,
    /// Columns whose value the incoming state replaced.
    pub overwritten: Vec<String>,
}

impl Default for RowState {
    fn default() -> Self {
        RowState::unknown()
    }
}

impl RowState {
    /// A row nobody has written: the identity of merge.
    pub fn unknown() -> RowState {
        RowState { exists: Stamped::new(false, Hlc::ZERO), cols: BTreeMap::new() }
    }

    /// The state an insert of `values` at `at` produces.
    pub fn inserted(values: impl IntoIterator<Item = (String, Value)>, at: Hlc) -> RowState {
        RowState {
            exists: Stamped::new(true, at),
            cols: values.into_iter().map(|(c, v)| (c, Stamped::new(v, at))).collect(),
        }
    }

    /// Records a local insert at `at`: existence and every column in `values`.
    pub fn insert(&mut self, values: impl IntoIterator<Item = (String, Value)>, at: Hlc) {
        self.merge(&RowState::inserted(values, at));
    }

    /// Records a local update of some columns at `at`.
    pub fn update(&mut self, values: impl IntoIterator<Item = (String, Value)>, at: Hlc) {
        let change = RowState {
            exists: Stamped::new(false, Hlc::ZERO),
            cols: values.into_iter().map(|(c, v)| (c, Stamped::new(v, at))).collect(),
        };
        self.merge(&change);
    }

    /// Records a local delete at `at`.
    pub fn delete(&mut self, at: Hlc) {
        self.merge(&RowState { exists: Stamped::new(false, at), cols: BTreeMap::new() });
    }

    pub fn is_alive(&self) -> bool {
        self.exists.value
    }

    /// The clock most columns share (the greatest among equally common ones), or the
    /// existence clock when no column is written. Stored and wire forms keep this clock once
    /// and list only the columns that differ.
    pub fn common_clock(&self) -> Hlc {
        // Usually every column shares one clock (a row inserted or updated whole).
        let mut clocks = self.cols.values().map(|s| s.at);
        match clocks.next() {
            None => return self.exists.at,
            Some(first) if clocks.all(|c| c == first) => return first,
            Some(_) => {}
        }
        let mut counts: BTreeMap<Hlc, usize> = BTreeMap::new();
        for s in self.cols.values() {
            *counts.entry(s.at).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(h, n)| (*n, *h)).map_or(self.exists.at, |(h, _)| h)
    }

    /// The greatest clock in this state.
    pub fn max_clock(&self) -> Hlc {
        self.cols.values().map(|s| s.at).fold(self.exists.at, Hlc::max)
    }

    /// Merges `incoming` into `self`, register by register, greater clock wins.
    pub fn merge(&mut self, incoming: &RowState) -> MergeReport {
        let mut report = MergeReport::default();
        match wins(&incoming.exists, &self.exists, |a, b| a.cmp(b)) {
            Winner::Incoming => {
                self.exists = incoming.exists.clone();
                report.changed = true;
            }
            Winner::Receiver => report.kept_newer = true,
            Winner::Same => {}
        }
        for (col, theirs) in &incoming.cols {
            match self.cols.get_mut(col) {
                None => {
                    self.cols.insert(col.clone(), theirs.clone());
                    report.changed = true;
                }
                Some(ours) => match wins(theirs, ours, Value::total_cmp) {
                    Winner::Incoming => {
                        if !ours.value.same(&theirs.value) {
                            report.overwritten.push(col.clone());
                        }
                        *ours = theirs.clone();
                        report.changed = true;
                    }
                    Winner::Receiver => report.kept_newer = true,
                    Winner::Same => {}
                },
            }
        }
        if self.cols.keys().any(|c| !incoming.cols.contains_key(c)) {
            report.kept_newer = true;
        }
        report
    }
}

/// A column that two replicas wrote concurrently: neither writer had seen the other's value.
/// Merge still decides the winner (the greater clock); this records that a value lost.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnConflict {
    pub column: String,
    /// The receiving replica's value before the merge.
    pub ours: Stamped<Value>,
    /// The incoming value.
    pub theirs: Stamped<Value>,
}

impl ColumnConflict {
    /// Whether the incoming value is the one the merge keeps.
    pub fn theirs_wins(&self) -> bool {
        matches!(wins(&self.theirs, &self.ours, Value::total_cmp), Winner::Incoming)
    }
}

impl RowState {
    /// The columns where `incoming` carries a write made without seeing `self`'s value.
    ///
    /// `base` holds, for each column the incoming writer changed, the clock of the value it
    /// replaced (what it had seen). A column conflicts when we hold a newer write than that
    /// base, not the incoming one itself, with a different value. Columns not in `base` were
    /// not written by the incoming side and never conflict; a write that saw ours does not
    /// either. Pure: no state changes.
    pub fn concurrent_columns(&self, incoming: &RowState, base: &BTreeMap<String, crate::Hlc>) -> Vec<ColumnConflict> {
        let mut out = Vec::new();
        for (col, seen) in base {
            let (Some(ours), Some(theirs)) = (self.cols.get(col), incoming.cols.get(col)) else { continue };
            if ours.at > *seen && ours.at != theirs.at && !ours.value.same(&theirs.value) {
                out.push(ColumnConflict { column: col.clone(), ours: ours.clone(), theirs: theirs.clone() });
            }
        }
        out
    }
}

enum Winner {
    Incoming,
    Receiver,
    Same,
}

fn wins<T>(incoming: &Stamped<T>, ours: &Stamped<T>, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Winner {
    use std::cmp::Ordering::*;
    match incoming.at.cmp(&ours.at).then_with(|| cmp(&incoming.value, &ours.value)) {
        Greater => Winner::Incoming,
        Less => Winner::Receiver,
        Equal => Winner::Same,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::SiteId;

    fn at(ms: u64, site: u64) -> Hlc {
        Hlc::new(ms, 0, SiteId(site))
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn row(cols: &[(&str, &str)], t: Hlc) -> RowState {
        RowState::inserted(cols.iter().map(|(c, v)| (c.to_string(), text(v))), t)
    }

    #[test]
    fn concurrent_edits_to_different_columns_both_survive() {
        let base = row(&[("a", "a0"), ("b", "b0")], at(1, 1));
        let mut left = base.clone();
        left.update([("a".into(), text("a1"))], at(2, 1));
        let mut right = base.clone();
        right.update([("b".into(), text("b1"))], at(2, 2));
        let mut l = left.clone();
        l.merge(&right);
        let mut r = right.clone();
        r.merge(&left);
        assert_eq!(l, r);
        assert_eq!(l.cols["a"].value, text("a1"));
        assert_eq!(l.cols["b"].value, text("b1"));
    }

    #[test]
    fn same_column_same_clock_time_is_won_by_the_greater_site() {
        let base = row(&[("a", "a0")], at(1, 1));
        let mut left = base.clone();
        left.update([("a".into(), text("from-site-3"))], at(2, 3));
        let mut right = base;
        right.update([("a".into(), text("from-site-2"))], at(2, 2));
        let losing = right.clone();
        let report = right.merge(&left);
        assert_eq!(right.cols["a"].value, text("from-site-3"));
        assert_eq!(report.overwritten, vec!["a".to_string()]);
        let report = left.merge(&losing);
        assert!(!report.changed && report.kept_newer);
    }

    #[test]
    fn delete_wins_over_a_concurrent_update_even_a_later_one() {
        let base = row(&[("a", "a0")], at(1, 1));
        let mut deleted = base.clone();
        deleted.delete(at(2, 1));
        let mut updated = base;
        updated.update([("a".into(), text("a1"))], at(3, 2));
        deleted.merge(&updated);
        assert!(!deleted.is_alive());
        assert_eq!(deleted.cols["a"].value, text("a1"), "the tombstone keeps the update");
    }

    #[test]
    fn reinsert_after_delete_brings_the_row_back_with_the_new_values() {
        let mut r = row(&[("a", "old"), ("b", "old")], at(1, 1));
        r.delete(at(2, 1));
        r.insert([("a".into(), text("new")), ("b".into(), text("new"))], at(3, 2));
        assert!(r.is_alive());
        assert_eq!(r.cols["a"].value, text("new"));
        // A delete older than the re-insert, arriving late, changes nothing.
        let report = r.merge(&RowState { exists: Stamped::new(false, at(2, 5)), ..RowState::unknown() });
        assert!(!report.changed && r.is_alive());
    }

    #[test]
    fn a_duplicate_changes_nothing() {
        let mut r = row(&[("a", "x")], at(1, 1));
        let copy = r.clone();
        let report = r.merge(&copy);
        assert_eq!(report, MergeReport::default());
    }
}

#[cfg(test)]
mod conflict_tests {
    use super::*;
    use crate::hlc::SiteId;

    fn at(ms: u64, site: u64) -> Hlc {
        Hlc::new(ms, 0, SiteId(site))
    }

    #[test]
    fn a_write_that_did_not_see_ours_conflicts_and_one_that_did_does_not() {
        let base = RowState::inserted([("a".to_owned(), Value::Text("0".into()))], at(1, 1));
        let mut server = base.clone();
        server.update([("a".to_owned(), Value::Text("from A".into()))], at(5, 2));
        // B changed `a` having seen only the insert (clock 1).
        let mut from_b = base.clone();
        from_b.update([("a".to_owned(), Value::Text("from B".into()))], at(4, 3));
        let seen = BTreeMap::from([("a".to_owned(), at(1, 1))]);
        let conflicts = server.concurrent_columns(&from_b, &seen);
        assert_eq!(conflicts.len(), 1);
        assert!(!conflicts[0].theirs_wins(), "A's later clock keeps the column");
        // C changed `a` after seeing A's value: sequential, no conflict.
        let mut from_c = server.clone();
        from_c.update([("a".to_owned(), Value::Text("from C".into()))], at(6, 4));
        assert!(server.concurrent_columns(&from_c, &BTreeMap::from([("a".to_owned(), at(5, 2))])).is_empty());
        // B's write delivered again (a retried push) reports the same conflict, with the same
        // clocks: a conflict log keyed by table, row, column and incoming clock keeps it once.
        let mut merged = server.clone();
        merged.merge(&from_b);
        assert_eq!(merged.concurrent_columns(&from_b, &seen), conflicts);
    }

    #[test]
    fn equal_values_written_concurrently_are_no_conflict() {
        let mut server = RowState::inserted([("a".to_owned(), Value::Integer(1))], at(1, 1));
        server.update([("a".to_owned(), Value::Integer(2))], at(5, 2));
        let mut other = RowState::inserted([("a".to_owned(), Value::Integer(1))], at(1, 1));
        other.update([("a".to_owned(), Value::Integer(2))], at(4, 3));
        assert!(server.concurrent_columns(&other, &BTreeMap::from([("a".to_owned(), at(1, 1))])).is_empty());
    }
}
