//! Properties of the policy's decisions.

use std::collections::BTreeMap;

use ferry_core::strategy::{Resolver, RowClocks};
use ferry_core::{Clock, Hlc, RowState, SiteId, Stamped, Value};
use ferry_policy::pull::{self, Action, Found, Meeting, Settler};
use ferry_policy::stamp::{self, Before, Captured};
use ferry_policy::{push, settle};
use proptest::prelude::*;

fn arb_hlc() -> impl Strategy<Value = Hlc> {
    (1u64..6, 0u16..2, 1u64..4).prop_map(|(ms, c, s)| Hlc::new(ms, c, SiteId(s)))
}

fn arb_state() -> impl Strategy<Value = RowState> {
    (
        any::<bool>(),
        arb_hlc(),
        proptest::collection::btree_map("[xy]", ((0i64..3).prop_map(Value::Integer), arb_hlc()), 0..3),
    )
        .prop_map(|(alive, at, cols)| RowState {
            exists: Stamped::new(alive, at),
            cols: cols.into_iter().map(|(k, (v, t))| (k, Stamped::new(v, t))).collect(),
        })
}

fn merged(a: &RowState, b: &RowState) -> RowState {
    let mut m = a.clone();
    m.merge(b);
    m
}

proptest! {
    /// The fast path for a row inserted here gives what the general fold gives.
    #[test]
    fn a_fresh_insert_stamps_as_the_general_rule_does(x in 0i64..5, y in "[ab]{0,2}", ms in 1u64..100) {
        let at = Hlc::new(ms, 0, SiteId(3));
        let values: BTreeMap<String, Value> =
            [("x".to_owned(), Value::Integer(x)), ("y".to_owned(), Value::Text(y))].into_iter().collect();
        let general = stamp::fold(Before::default(), &values, &[(Captured::Insert, at)]);
        let (base, seen) = stamp::inserted_change(["x", "y"]);
        prop_assert_eq!(&general.state, &stamp::inserted(values.clone(), at));
        prop_assert_eq!(general.base, base);
        prop_assert_eq!(general.seen, Some(seen));
    }

    /// Whatever a pulled row meets and however it is settled, the replica ends up holding at
    /// least everything the plain merge would (no pulled write is lost unseen), and a row
    /// that must be pushed again records what it has seen.
    #[test]
    fn a_pulled_row_is_never_lost(
        pulled in arb_state(),
        local in arb_state(),
        pending in any::<bool>(),
        with_seen in any::<bool>(),
        resolver in 0u8..3,
        device in any::<bool>(),
    ) {
        let seen = with_seen.then(RowClocks::default);
        let r = [Resolver::NewestWins, Resolver::LocalWins, Resolver::RemoteWins];
        let mut clock = Clock::new(SiteId(9), Hlc::ZERO);
        let m = Meeting {
            table: "t",
            key: "k",
            pulled: &pulled,
            found: Found::Row { state: &local, pending, seen: seen.as_ref() },
            settler: if device { Settler::Device } else { Settler::Server },
            resolver: &r[resolver as usize],
            now_ms: 10,
        };
        match pull::meet(&m, &mut clock) {
            Action::Write(w) => {
                let plain = merged(&local, &pulled);
                // Every register holds the plain merge's write, the pulled one (remote-wins),
                // or a later one.
                prop_assert!(w.state.exists.at >= plain.exists.at || w.state.exists.at == pulled.exists.at);
                for (c, s) in &plain.cols {
                    let at = w.state.cols.get(c).map(|v| v.at);
                    prop_assert!(
                        at.is_some_and(|at| at >= s.at) || at == pulled.cols.get(c).map(|p| p.at),
                        "column {} lost", c
                    );
                }
                prop_assert_eq!(w.changed, w.state != local);
                // A new pending mark exactly when the row holds a write the server has not
                // seen: a resolver's new write, or (nothing pending) a local write it lacks.
                if pending {
                    let anew = with_seen && pull::written_anew(&w.state, &local, &pulled);
                    prop_assert_eq!(w.push, anew);
                } else {
                    prop_assert!(w.push || w.state.same_clocks(&pulled));
                    prop_assert_eq!(w.seen, w.push.then(|| pulled.clocks()));
                }
            }
            Action::Hold => prop_assert!(pending && with_seen && !device),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// A refused batch is split until exactly the refused rows are set aside, each once;
    /// every other row is pushed in a push the server accepts, and no more pushes are made
    /// than two per refused row per halving.
    #[test]
    fn a_split_sets_aside_exactly_the_refused_rows(n in 1usize..64, bad in proptest::collection::btree_set(0usize..64, 1..4)) {
        let bad: Vec<usize> = bad.into_iter().filter(|i| *i < n).collect();
        prop_assume!(!bad.is_empty());
        let mut split = push::Split::new(n, ());
        let (mut set_aside, mut accepted, mut pushes) = (Vec::new(), vec![false; n], 0usize);
        loop {
            match split.step() {
                push::Step::Push(r) => {
                    pushes += 1;
                    if bad.iter().any(|i| r.contains(i)) {
                        split.refused(r, ());
                    } else {
                        for i in r {
                            prop_assert!(!accepted[i]);
                            accepted[i] = true;
                        }
                    }
                }
                push::Step::SetAside(i, ()) => set_aside.push(i),
                push::Step::Done => break,
            }
        }
        set_aside.sort_unstable();
        prop_assert_eq!(&set_aside, &bad);
        for (i, ok) in accepted.iter().enumerate() {
            prop_assert_eq!(*ok, !bad.contains(&i));
        }
        let depth = (usize::BITS - n.leading_zeros()) as usize;
        prop_assert!(pushes <= 2 * bad.len() * depth, "{} pushes", pushes);
    }

    /// Keeping a local change writes its own registers on top of the server's version, newer
    /// than both, and the change then starts from the server's version.
    #[test]
    fn keeping_a_local_change_puts_its_values_on_top(local in arb_state(), current in arb_state()) {
        let seen = RowClocks::default();
        let mut clock = Clock::new(SiteId(9), local.max_clock().max(current.max_clock()));
        let (state, seen_after) = settle::keep_local(&local, &seen, &current, &mut clock, 10);
        prop_assert_eq!(seen_after, current.clocks());
        for (c, v) in &local.cols {
            prop_assert_eq!(&state.cols[c].value, &v.value);
            prop_assert!(state.cols[c].at > current.max_clock());
        }
        prop_assert_eq!(state.exists.value, local.exists.value);
    }
}

/// The cursor moves after a push only if it is still the one the push carried.
#[test]
fn the_cursor_moves_only_from_where_the_push_started() {
    assert_eq!(push::cursor_after("5", "5", Some("9")), Some("9"));
    assert_eq!(push::cursor_after("7", "5", Some("9")), None);
    assert_eq!(push::cursor_after("5", "5", None), None);
}

/// An unknown captured operation is an error naming it, not an update.
#[test]
fn an_unknown_captured_operation_is_named() {
    let e = stamp::Captured::parse("X", None).unwrap_err();
    assert!(e.contains("'X'"), "{e}");
    assert_eq!(stamp::Captured::parse("U", Some(r#"["x"]"#)).unwrap(), Captured::Update(vec!["x".into()]));
}
