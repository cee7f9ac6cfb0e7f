//! Store behaviour every implementation shares.

use ferry_core::{Hlc, RowState, SiteId, Stamped, Value};
use ferry_protocol::{ConflictKind, ConflictSide, Strategy};
use ferry_store::{ConflictFilter, IncomingRow, Principal, Store, StoreError};

pub use crate::peering::{
    a_devices_snapshot_is_its_feed_as_of_one_moment, a_peer_reading_on_from_the_feed_position_gets_every_later_change,
    a_peer_reads_every_row_but_those_it_brought, an_export_is_one_snapshot_and_a_restore_merges_all_or_nothing,
    compaction_removes_old_tombstones_and_refuses_cursors_it_passed,
    digests_and_states_follow_every_version_and_leave_out_compacted_tombstones,
    users_bases_links_and_the_sync_log_are_kept,
};

/// Instantiates every suite test for the store built by `$make`.
#[macro_export]
macro_rules! suite {
    ($make:expr) => {
        $crate::suite_tests!(
            $make;
            users_are_unique_by_name,
            tokens_authenticate_their_device_only,
            revoking_a_device_ends_its_tokens_and_is_seen_among_ids,
            the_admin_password_is_set_replaced_and_removed,
            pushed_rows_come_back_in_pulls_with_their_state,
            owned_rows_are_private_to_their_user,
            a_forbidden_row_spoils_the_whole_batch,
            a_replayed_batch_is_answered_from_the_record,
            pulls_are_paged_and_the_cursor_never_goes_back,
            concurrent_columns_merge_and_deletes_leave_tombstones,
            a_push_from_the_feed_end_returns_the_cursor_past_it,
            concurrent_writes_to_one_field_are_logged_and_different_fields_are_not,
            a_manual_conflict_stays_open_until_a_person_picks_a_version,
            reject_stale_refuses_a_stale_row_and_applies_the_rest_of_the_batch,
            row_lww_keeps_the_whole_later_row,
            authoritative_writes_win_whatever_their_clock,
            a_delete_against_an_unseen_update_is_logged,
            a_version_precondition_refuses_a_changed_row,
            a_device_never_conflicts_with_its_own_earlier_push,
            clocks_with_another_devices_or_the_servers_site_are_refused,
            the_authority_wins_only_conflicts_it_is_in,
            reals_are_kept_bit_for_bit_live_and_in_tombstones,
            a_scan_reads_every_row_whoever_owns_it,
            a_peer_reads_every_row_but_those_it_brought,
            a_peer_reading_on_from_the_feed_position_gets_every_later_change,
            users_bases_links_and_the_sync_log_are_kept,
            compaction_removes_old_tombstones_and_refuses_cursors_it_passed,
            digests_and_states_follow_every_version_and_leave_out_compacted_tombstones,
            an_export_is_one_snapshot_and_a_restore_merges_all_or_nothing,
            a_devices_snapshot_is_its_feed_as_of_one_moment,
        );
    };
}

#[macro_export]
macro_rules! suite_tests {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $make;
                $crate::suite::$name(&store).await;
            }
        )*
    };
}

pub fn at(ms: u64, site: u64) -> Hlc {
    Hlc::new(1_700_000_000_000 + ms, 0, SiteId(site))
}

pub fn key(i: u32) -> String {
    format!("01900000-0000-7000-8000-{i:012x}")
}

/// A new note by `owner`, all its columns written at `t`.
pub fn note(i: u32, owner: &str, body: &str, t: Hlc) -> IncomingRow {
    IncomingRow {
        table: "notes".into(),
        key: key(i),
        state: RowState::inserted(
            [("user_id".to_owned(), Value::Text(owner.into())), ("body".to_owned(), Value::Text(body.into()))],
            t,
        ),
        seen: None,
        if_version: None,
    }
}

async fn principal<S: Store>(store: &S, name: &str) -> Principal {
    let user = store.add_user(name).await.unwrap();
    let token = store.create_token(&user.id, "dev").await.unwrap();
    store.authenticate(&token.token).await.unwrap().unwrap()
}

async fn pull_all<S: Store>(store: &S, who: &Principal) -> Vec<(String, String, RowState)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = store.pull(who, &cursor, 2).await.unwrap();
        cursor = page.cursor;
        out.extend(page.rows.into_iter().map(|r| (r.table, r.key, r.state)));
        if !page.more {
            return out;
        }
    }
}

pub async fn the_admin_password_is_set_replaced_and_removed<S: Store>(store: &S) {
    assert_eq!(store.admin_password().await.unwrap(), None);
    store.set_admin_password(Some("$argon2id$first")).await.unwrap();
    store.set_admin_password(Some("$argon2id$second")).await.unwrap();
    assert_eq!(store.admin_password().await.unwrap().as_deref(), Some("$argon2id$second"));
    store.set_admin_password(None).await.unwrap();
    assert_eq!(store.admin_password().await.unwrap(), None);
}

pub async fn users_are_unique_by_name<S: Store>(store: &S) {
    let a = store.add_user("ann").await.unwrap();
    assert_eq!(a.name, "ann");
    match store.add_user("ann").await {
        Err(StoreError::Exists(m)) => assert!(m.contains("'ann'"), "{m}"),
        other => panic!("expected Exists, got {other:?}"),
    }
    match store.create_token("nobody", "phone").await {
        Err(StoreError::NotFound(m)) => assert!(m.contains("ferry user add nobody"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn tokens_authenticate_their_device_only<S: Store>(store: &S) {
    let user = store.add_user("ann").await.unwrap();
    let phone = store.create_token("ann", "phone").await.unwrap();
    let laptop = store.create_token(&user.id, "laptop").await.unwrap();
    assert_ne!(phone.token, laptop.token);
    let p = store.authenticate(&phone.token).await.unwrap().unwrap();
    assert_eq!((p.user_id.as_str(), p.device_name.as_str()), (user.id.as_str(), "phone"));
    assert_eq!(p.device_id, phone.device_id);
    assert!(store.authenticate("fry_nope").await.unwrap().is_none());
    assert!(store.authenticate("").await.unwrap().is_none());
}

pub async fn revoking_a_device_ends_its_tokens_and_is_seen_among_ids<S: Store>(store: &S) {
    let user = store.add_user("ann").await.unwrap();
    let first = store.create_token(&user.id, "phone").await.unwrap();
    let second = store.create_token("ann", "phone").await.unwrap();
    let laptop = store.create_token("ann", "laptop").await.unwrap();
    let all = [first.device_id.clone(), second.device_id.clone(), laptop.device_id.clone(), "no-such-id".to_owned()];
    assert_eq!(store.revoked_among(&all).await.unwrap(), ["no-such-id"]);
    // Every live device of that name, by the user's name.
    let mut revoked = store.revoke_devices(Some("ann"), "phone").await.unwrap();
    revoked.sort();
    let mut phones = vec![first.device_id.clone(), second.device_id.clone()];
    phones.sort();
    assert_eq!(revoked, phones);
    assert!(store.authenticate(&first.token).await.unwrap().is_none());
    assert!(store.authenticate(&second.token).await.unwrap().is_none());
    assert!(store.authenticate(&laptop.token).await.unwrap().is_some());
    let mut gone = store.revoked_among(&all).await.unwrap();
    gone.sort();
    let mut want = vec![first.device_id, second.device_id, "no-such-id".to_owned()];
    want.sort();
    assert_eq!(gone, want);
    assert!(store.revoked_among(&[]).await.unwrap().is_empty());
    // Nothing live left by that name: said by name; by id, the same.
    let err = store.revoke_devices(Some("ann"), "phone").await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m.contains("'phone'") && m.contains("'ann'")), "{err}");
    assert_eq!(store.revoke_devices(None, &laptop.device_id).await.unwrap(), [laptop.device_id.as_str()]);
    assert!(store.authenticate(&laptop.token).await.unwrap().is_none());
}

pub async fn pushed_rows_come_back_in_pulls_with_their_state<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let row = note(1, &ann.user_id, "hello", at(1, 1));
    let out = store.push(&ann, "b1", None, vec![row.clone()]).await.unwrap();
    assert_eq!((out.received, out.changed, out.replayed), (1, 1, false));
    let rows = pull_all(store, &ann).await;
    assert_eq!(rows.len(), 1);
    let (table, k, state) = &rows[0];
    assert_eq!((table.as_str(), k.as_str()), ("notes", key(1).as_str()));
    assert!(state.is_alive());
    assert_eq!(state.cols["body"], Stamped::new(Value::Text("hello".into()), at(1, 1)));
    // A column never written stays absent (it merges below any real write).
    assert!(!state.cols.contains_key("n"));
}

pub async fn owned_rows_are_private_to_their_user<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let bob = principal(store, "bob").await;
    store.push(&ann, "a", None, vec![note(1, &ann.user_id, "ann's", at(1, 1))]).await.unwrap();
    let tag = IncomingRow {
        table: "tags".into(),
        key: key(2),
        state: RowState::inserted([("name".to_owned(), Value::Text("shared".into()))], at(2, 1)),
        seen: None,
        if_version: None,
    };
    store.push(&ann, "b", None, vec![tag]).await.unwrap();
    let seen: Vec<String> = pull_all(store, &bob).await.into_iter().map(|r| r.0).collect();
    assert_eq!(seen, vec!["tags".to_owned()], "bob sees the shared tag, not ann's note");

    // Bob may not write ann's row, nor create one in her name.
    let err = store.push(&bob, "c", None, vec![note(1, &bob.user_id, "mine now", at(3, 2))]).await.unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(ref m) if m.contains("belongs to another user")), "{err}");
    let err = store.push(&bob, "d", None, vec![note(3, &ann.user_id, "for ann", at(3, 2))]).await.unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(ref m) if m.contains("not your user id")), "{err}");
}

pub async fn a_forbidden_row_spoils_the_whole_batch<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let bob = principal(store, "bob").await;
    let rows = vec![note(1, &bob.user_id, "fine", at(1, 2)), note(2, &ann.user_id, "forbidden", at(1, 2))];
    assert!(store.push(&bob, "x", None, rows).await.is_err());
    assert!(pull_all(store, &bob).await.is_empty(), "nothing of the batch was stored");
    assert!(pull_all(store, &ann).await.is_empty());
}

pub async fn a_replayed_batch_is_answered_from_the_record<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let first = store.push(&ann, "same", None, vec![note(1, &ann.user_id, "x", at(1, 1))]).await.unwrap();
    let cursor = store.pull(&ann, "", 100).await.unwrap().cursor;
    let again = store.push(&ann, "same", None, vec![note(1, &ann.user_id, "x", at(1, 1))]).await.unwrap();
    assert_eq!((again.received, again.changed, again.replayed), (first.received, first.changed, true));
    assert!(store.pull(&ann, &cursor, 100).await.unwrap().rows.is_empty(), "the feed did not move");
    // The same rows under a new batch id change nothing either: merging is idempotent.
    let third = store.push(&ann, "other", None, vec![note(1, &ann.user_id, "x", at(1, 1))]).await.unwrap();
    assert_eq!((third.changed, third.replayed), (0, false));
    assert!(store.pull(&ann, &cursor, 100).await.unwrap().rows.is_empty());
}

pub async fn pulls_are_paged_and_the_cursor_never_goes_back<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let rows: Vec<_> = (0..5).map(|i| note(i, &ann.user_id, "x", at(u64::from(i), 1))).collect();
    store.push(&ann, "p", None, rows).await.unwrap();
    let first = store.pull(&ann, "", 2).await.unwrap();
    assert_eq!((first.rows.len(), first.more), (2, true));
    let all = pull_all(store, &ann).await;
    assert_eq!(all.len(), 5);
    // An update moves the row to the end of the feed; a pull from the old end sees only it.
    let end = store.pull(&ann, "", 100).await.unwrap().cursor;
    let mut upd = note(0, &ann.user_id, "x", at(0, 1));
    upd.state.update([("body".to_owned(), Value::Text("changed".into()))], at(10, 1));
    store.push(&ann, "u", None, vec![upd]).await.unwrap();
    let page = store.pull(&ann, &end, 100).await.unwrap();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.rows[0].key, key(0));
    assert_ne!(page.cursor, end);
    assert!(store.pull(&ann, &page.cursor, 100).await.unwrap().rows.is_empty());
}

pub async fn concurrent_columns_merge_and_deletes_leave_tombstones<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let base = note(1, &ann.user_id, "base", at(1, 1));
    store.push(&ann, "1", None, vec![base.clone()]).await.unwrap();
    let mut left = base.clone();
    left.state.update([("body".to_owned(), Value::Text("left".into()))], at(2, 1));
    let mut right = base.clone();
    right.state.update([("n".to_owned(), Value::Integer(7))], at(2, 2));
    store.push(&ann, "2", None, vec![left]).await.unwrap();
    store.push(&ann, "3", None, vec![right]).await.unwrap();
    let state = pull_all(store, &ann).await.remove(0).2;
    assert_eq!(state.cols["body"].value, Value::Text("left".into()));
    assert_eq!(state.cols["n"].value, Value::Integer(7));

    let mut gone = RowState { exists: Stamped::new(false, at(3, 2)), cols: Default::default() };
    gone.merge(&state);
    gone.delete(at(3, 2));
    store.push(&ann, "4", None, vec![IncomingRow::new("notes", &key(1), gone)]).await.unwrap();
    let tomb = pull_all(store, &ann).await.remove(0).2;
    assert!(!tomb.is_alive());
    assert_eq!(tomb.cols["body"].value, Value::Text("left".into()), "the tombstone keeps the last values");
}

pub async fn a_push_from_the_feed_end_returns_the_cursor_past_it<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let end = store.pull(&ann, "", 100).await.unwrap().cursor;
    let out = store.push(&ann, "1", Some(&end), vec![note(1, &ann.user_id, "x", at(1, 1))]).await.unwrap();
    let past = out.cursor.expect("the client was at the feed's end");
    assert!(store.pull(&ann, &past, 100).await.unwrap().rows.is_empty(), "nothing after the batch");
    assert_eq!(store.pull(&ann, &end, 100).await.unwrap().rows.len(), 1, "the batch is after the old end");
    // A client behind the feed's end must pull: no cursor comes back.
    let out = store.push(&ann, "2", Some(&end), vec![note(2, &ann.user_id, "y", at(2, 1))]).await.unwrap();
    assert_eq!(out.cursor, None);
}

pub async fn concurrent_writes_to_one_field_are_logged_and_different_fields_are_not<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let laptop = store.authenticate(&store.create_token("ann", "laptop").await.unwrap().token).await.unwrap().unwrap();
    let base = note(1, &ann.user_id, "original", at(1, 1));
    store.push(&ann, "0", None, vec![base.clone()]).await.unwrap();
    let edit = |by: u64, ms: u64, col: &str, v: Value| {
        let mut r = base.clone();
        r.state.update([(col.to_owned(), v)], at(ms, by));
        r.seen = Some(base.state.clocks());
        r
    };
    // Different fields, both from the same base: merged, nothing logged.
    store.push(&ann, "1", None, vec![edit(1, 2, "n", Value::Integer(5))]).await.unwrap();
    store.push(&laptop, "2", None, vec![edit(2, 2, "body", Value::Text("laptop".into()))]).await.unwrap();
    assert!(store.conflicts(ConflictFilter::All).await.unwrap().is_empty());
    // The same field again, from the base before the laptop's write: logged, later clock kept.
    let late = edit(1, 3, "body", Value::Text("phone".into()));
    store.push(&ann, "3", None, vec![late.clone()]).await.unwrap();
    store.push(&ann, "4", None, vec![late]).await.unwrap(); // a retry under a new batch id
    let log = store.conflicts(ConflictFilter::All).await.unwrap();
    assert_eq!(log.len(), 1, "logged once: {log:?}");
    let c = &log[0];
    assert_eq!((c.table.as_str(), c.key.as_str(), c.kind), ("notes", key(1).as_str(), ConflictKind::UpdateUpdate));
    assert_eq!(c.fields, vec!["body".to_owned()]);
    assert_eq!(c.stored.values["body"], "laptop");
    assert_eq!(c.stored.origin.as_deref(), Some(laptop.device_id.as_str()));
    assert_eq!(c.incoming.values["body"], "phone");
    assert_eq!(c.incoming.origin.as_deref(), Some(ann.device_id.as_str()));
    assert_eq!(c.winner["body"], ConflictSide::Incoming, "the phone's write has the later clock");
    assert_eq!((c.strategy, c.resolved_by), (Strategy::Lww, Some(Strategy::Lww)));
    assert!(c.resolved_at.is_some());
    assert_eq!(store.conflict(c.id).await.unwrap().as_ref(), Some(c));
    assert!(store.conflict(c.id + 1000).await.unwrap().is_none());
    assert!(store.conflicts(ConflictFilter::Open).await.unwrap().is_empty());
    assert_eq!(store.conflicts(ConflictFilter::Resolved).await.unwrap().len(), 1);
}

pub async fn a_manual_conflict_stays_open_until_a_person_picks_a_version<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let bob = principal(store, "bob").await;
    let tag = |name: &str, t: Hlc| IncomingRow {
        table: "tags".into(),
        key: key(7),
        state: RowState::inserted([("name".to_owned(), Value::Text(name.into()))], t),
        seen: None,
        if_version: None,
    };
    store.push(&ann, "0", None, vec![tag("original", at(1, 1))]).await.unwrap();
    let edit = |name: &str, t: Hlc| {
        let mut r = tag("original", at(1, 1));
        r.state.update([("name".to_owned(), Value::Text(name.into()))], t);
        r.seen = Some(tag("original", at(1, 1)).state.clocks());
        r
    };
    store.push(&ann, "1", None, vec![edit("ann's name", at(3, 1))]).await.unwrap();
    store.push(&bob, "2", None, vec![edit("bob's name", at(2, 2))]).await.unwrap();
    let open = store.conflicts(ConflictFilter::Open).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    let c = &open[0];
    assert_eq!((c.strategy, c.resolved_by, c.resolved_at.as_deref()), (Strategy::Manual, None, None));
    let count =
        |open: bool| ferry_store::ConflictCount { table: c.table.clone(), strategy: "manual".into(), open, count: 1 };
    assert_eq!(store.conflict_counts().await.unwrap(), vec![count(true)]);
    // The provisional winner (the later clock) is what everyone sees meanwhile.
    let page = store.pull(&bob, "", 100).await.unwrap();
    let cursor = page.cursor.clone();
    let row = page.rows.iter().find(|r| r.key == key(7)).unwrap();
    assert_eq!(row.state.cols["name"].value, Value::Text("ann's name".into()));

    // A person keeps bob's version: written as a new change that every replica pulls.
    let done = store.resolve_conflict(c.id, ConflictSide::Incoming).await.unwrap();
    assert_eq!(done.resolved_by, Some(Strategy::Manual));
    assert!(done.resolved_at.is_some());
    assert_eq!(done.winner["name"], ConflictSide::Incoming);
    let page = store.pull(&bob, &cursor, 100).await.unwrap();
    let row = page.rows.iter().find(|r| r.key == key(7)).expect("the resolution reaches the feed");
    assert_eq!(row.state.cols["name"].value, Value::Text("bob's name".into()));
    assert!(row.state.cols["name"].at > at(3, 1), "a fresh clock, later than both versions");

    match store.resolve_conflict(c.id, ConflictSide::Stored).await {
        Err(StoreError::Exists(m)) => assert!(m.contains("already resolved (by manual"), "{m}"),
        other => panic!("resolving twice must fail, got {other:?}"),
    }
    match store.resolve_conflict(c.id + 1000, ConflictSide::Stored).await {
        Err(StoreError::NotFound(m)) => assert!(m.contains(&format!("no conflict with id {}", c.id + 1000)), "{m}"),
        other => panic!("an unknown id must fail, got {other:?}"),
    }
    assert!(store.conflicts(ConflictFilter::Open).await.unwrap().is_empty());
    assert_eq!(store.conflicts(ConflictFilter::Resolved).await.unwrap().len(), 1, "kept for audit");
    assert_eq!(store.conflict_counts().await.unwrap(), vec![count(false)]);
    // Idle, the store's connections are all free.
    let pool = store.pool_use();
    assert!(pool.max >= 1 && pool.open <= pool.max, "{pool:?}");
    assert_eq!((pool.in_use, pool.waiting), (0, 0), "{pool:?}");
}

/// A row of one of the strategy tables (`stale`, `whole`, `kit`: columns `a`, `b`), both
/// written at `t`.
fn ab(table: &str, i: u32, a: &str, b: &str, t: Hlc) -> IncomingRow {
    IncomingRow::new(
        table,
        &key(i),
        RowState::inserted([("a".to_owned(), Value::Text(a.into())), ("b".to_owned(), Value::Text(b.into()))], t),
    )
}

/// `base` with `col` set to `v` at `t`, made on top of `base`.
fn edit(base: &IncomingRow, col: &str, v: &str, t: Hlc) -> IncomingRow {
    let mut r = base.clone();
    r.state.update([(col.to_owned(), Value::Text(v.into()))], t);
    r.seen = Some(base.state.clocks());
    r
}

async fn stored<S: Store>(store: &S, who: &Principal, table: &str, i: u32) -> RowState {
    store.get_row(who, table, &key(i)).await.unwrap().expect("the row exists")
}

fn text(s: &RowState, col: &str) -> String {
    match &s.cols[col].value {
        Value::Text(t) => t.clone(),
        other => panic!("{col} is {other:?}"),
    }
}

pub async fn reject_stale_refuses_a_stale_row_and_applies_the_rest_of_the_batch<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let base = ab("stale", 1, "a0", "b0", at(1, 1));
    store.push(&ann, "0", None, vec![base.clone()]).await.unwrap();
    store.push(&ann, "1", None, vec![edit(&base, "a", "first", at(2, 1))]).await.unwrap();
    // A change made on the old version, to another column even, is stale; the new row in the
    // same batch applies.
    let batch = vec![edit(&base, "b", "late", at(3, 2)), ab("stale", 2, "new", "new", at(3, 2))];
    let out = store.push(&ann, "2", None, batch.clone()).await.unwrap();
    assert_eq!(out.refused.len(), 1, "{out:?}");
    let r = &out.refused[0];
    assert_eq!((r.table.as_str(), r.key.as_str(), r.reason), ("stale", key(1).as_str(), ferry_store::Refusal::Stale));
    assert_eq!(text(&r.current, "a"), "first");
    assert_eq!(text(&stored(store, &ann, "stale", 1).await, "b"), "b0", "nothing of the stale change is stored");
    assert_eq!(text(&stored(store, &ann, "stale", 2).await, "a"), "new");
    // A replayed batch answers the refusal again.
    let again = store.push(&ann, "2", None, batch).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.refused.len(), 1);
    assert_eq!(text(&again.refused[0].current, "a"), "first");
    let log = store.conflicts(ConflictFilter::All).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].strategy, log[0].resolved_by), (Strategy::RejectStale, Some(Strategy::RejectStale)));
    // Made on top of the current version, the same change applies.
    let current = IncomingRow::new("stale", &key(1), r.current.clone());
    store.push(&ann, "3", None, vec![edit(&current, "b", "late", at(4, 2))]).await.unwrap();
    let row = stored(store, &ann, "stale", 1).await;
    assert_eq!((text(&row, "a"), text(&row, "b")), ("first".to_owned(), "late".to_owned()));
}

pub async fn row_lww_keeps_the_whole_later_row<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let base = ab("whole", 1, "a0", "b0", at(1, 1));
    store.push(&ann, "0", None, vec![base.clone()]).await.unwrap();
    store.push(&ann, "1", None, vec![edit(&base, "a", "older", at(2, 1))]).await.unwrap();
    // Concurrent, later, to the other column: its whole row wins, so `a` goes back to a0.
    let out = store.push(&ann, "2", None, vec![edit(&base, "b", "later", at(5, 2))]).await.unwrap();
    assert_eq!(out.cursor, None);
    let row = stored(store, &ann, "whole", 1).await;
    assert_eq!((text(&row, "a"), text(&row, "b")), ("a0".to_owned(), "later".to_owned()));
    assert!(row.cols["a"].at > at(5, 2), "the winner's value is written again with a later clock");
    let log = store.conflicts(ConflictFilter::All).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].fields, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!((log[0].winner["a"], log[0].winner["b"]), (ConflictSide::Incoming, ConflictSide::Incoming));
}

pub async fn authoritative_writes_win_whatever_their_clock<S: Store>(store: &S) {
    let user = store.add_user("site").await.unwrap();
    let main = store.create_device(&user.id, "on-site main", false, Some("main")).await.unwrap();
    let main = store.authenticate(&main.token).await.unwrap().unwrap();
    assert_eq!(main.role.as_deref(), Some("main"));
    let phone = store.authenticate(&store.create_token(&user.id, "phone").await.unwrap().token).await.unwrap().unwrap();
    let base = ab("kit", 1, "a0", "b0", at(1, 1));
    store.push(&phone, "0", None, vec![base.clone()]).await.unwrap();
    // The phone's later write arrives first; main's earlier one still wins.
    store.push(&phone, "1", None, vec![edit(&base, "a", "phone", at(9, 2))]).await.unwrap();
    store.push(&main, "1", None, vec![edit(&base, "a", "main", at(3, 7))]).await.unwrap();
    assert_eq!(text(&stored(store, &phone, "kit", 1).await, "a"), "main");
    // Main's value stays the authority's: a later concurrent phone write loses to it too.
    let now = IncomingRow::new("kit", &key(1), RowState { ..stored(store, &phone, "kit", 1).await });
    store.push(&main, "2", None, vec![edit(&now, "b", "main b", at(20, 7))]).await.unwrap();
    store.push(&phone, "2", None, vec![edit(&now, "b", "phone b", at(30, 2))]).await.unwrap();
    let row = stored(store, &phone, "kit", 1).await;
    assert_eq!((text(&row, "a"), text(&row, "b")), ("main".to_owned(), "main b".to_owned()));
    let log = store.conflicts(ConflictFilter::All).await.unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter().all(|c| c.strategy == Strategy::Authoritative && c.resolved_by == Some(Strategy::Authoritative))
    );
    match store.create_device(&user.id, "bad", false, Some("no spaces please")).await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("role 'no spaces please'"), "{m}"),
        other => panic!("a bad role must be refused, got {other:?}"),
    }
}

pub async fn a_delete_against_an_unseen_update_is_logged<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let base = note(1, &ann.user_id, "original", at(1, 1));
    store.push(&ann, "0", None, vec![base.clone()]).await.unwrap();
    let mut update = base.clone();
    update.state.update([("body".to_owned(), Value::Text("edited".into()))], at(2, 1));
    update.seen = Some(base.state.clocks());
    store.push(&ann, "1", None, vec![update]).await.unwrap();
    let mut delete = base.clone();
    delete.state.delete(at(3, 2));
    delete.seen = Some(base.state.clocks());
    store.push(&ann, "2", None, vec![delete]).await.unwrap();
    let row = store.get_row(&ann, "notes", &key(1)).await.unwrap().unwrap();
    assert!(!row.is_alive(), "the delete wins under lww");
    let log = store.conflicts(ConflictFilter::All).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].kind, ConflictKind::DeleteUpdate);
    assert_eq!(log[0].fields, vec!["*".to_owned(), "body".to_owned()]);
    assert_eq!(log[0].stored.values["body"], "edited");
    assert_eq!(log[0].winner["*"], ConflictSide::Incoming);
}

pub async fn a_version_precondition_refuses_a_changed_row<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let bob = principal(store, "bob").await;
    let base = note(1, &ann.user_id, "original", at(1, 1));
    store.push(&ann, "0", None, vec![base.clone()]).await.unwrap();
    let v0 = base.state.version();
    assert_eq!(store.get_row(&ann, "notes", &key(1)).await.unwrap().unwrap().version(), v0);
    assert!(store.get_row(&bob, "notes", &key(1)).await.unwrap().is_none(), "another user's row is not found");
    assert!(store.get_row(&ann, "notes", &key(9)).await.unwrap().is_none());
    let mut next = base.clone();
    next.state.update([("body".to_owned(), Value::Text("one".into()))], at(2, 1));
    next.if_version = Some(v0.clone());
    let out = store.push(&ann, "1", None, vec![next.clone()]).await.unwrap();
    assert!(out.refused.is_empty());
    let mut late = base.clone();
    late.state.update([("body".to_owned(), Value::Text("two".into()))], at(3, 1));
    late.if_version = Some(v0);
    let out = store.push(&ann, "2", None, vec![late]).await.unwrap();
    assert_eq!(out.refused.len(), 1);
    assert_eq!(out.refused[0].reason, ferry_store::Refusal::VersionChanged);
    assert_eq!(text(&out.refused[0].current, "body"), "one");
}

pub async fn a_device_never_conflicts_with_its_own_earlier_push<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let base = ab("stale", 1, "a0", "b0", at(1, 1));
    store.push(&ann, "0", None, vec![base.clone()]).await.unwrap();
    // The device changes `a`; the push applies but its answer is lost, so the row stays
    // pending with the old version as `seen`. The device changes `a` again and pushes the
    // row under a new batch id: its own earlier write is no conflict, nor stale.
    let first = edit(&base, "a", "first", at(2, 1));
    store.push(&ann, "1", None, vec![first.clone()]).await.unwrap();
    let mut second = first.clone();
    second.state.update([("a".to_owned(), Value::Text("second".into()))], at(3, 1));
    let out = store.push(&ann, "2", None, vec![second]).await.unwrap();
    assert!(out.refused.is_empty(), "{out:?}");
    assert_eq!(text(&stored(store, &ann, "stale", 1).await, "a"), "second");
    assert!(store.conflicts(ConflictFilter::All).await.unwrap().is_empty());
}

pub async fn clocks_with_another_devices_or_the_servers_site_are_refused<S: Store>(store: &S) {
    let user = store.add_user("site").await.unwrap();
    let main = store.create_device(&user.id, "main", false, Some("main")).await.unwrap();
    let main = store.authenticate(&main.token).await.unwrap().unwrap();
    let phone = store.authenticate(&store.create_token(&user.id, "phone").await.unwrap().token).await.unwrap().unwrap();
    // Main writes with its site (7): that site is now main's.
    store.push(&main, "0", None, vec![ab("kit", 1, "a0", "b0", at(1, 7))]).await.unwrap();
    // A phone whose new write carries main's site would pass it off as the authority's.
    match store.push(&phone, "0", None, vec![ab("kit", 2, "x", "y", at(2, 7))]).await {
        Err(StoreError::Forbidden(m)) => assert!(m.contains("belongs to another device"), "{m}"),
        other => panic!("a forged site must be refused, got {other:?}"),
    }
    assert!(store.get_row(&phone, "kit", &key(2)).await.unwrap().is_none(), "nothing stored");
    // Its own site is fine, and so is main's value it pulled and sends back unchanged.
    let mut row = ab("kit", 1, "a0", "b0", at(1, 7));
    row.state.update([("b".to_owned(), Value::Text("phone".into()))], at(3, 2));
    store.push(&phone, "1", None, vec![row.clone()]).await.unwrap();
    assert_eq!(text(&stored(store, &phone, "kit", 1).await, "b"), "phone");
    // The phone's site (2) is now the phone's: no other device may write with it, role or
    // none, this user's or another's (it would hide a conflict from the phone).
    let tablet =
        store.authenticate(&store.create_token(&user.id, "tablet").await.unwrap().token).await.unwrap().unwrap();
    let other = store.add_user("other").await.unwrap();
    let stranger =
        store.authenticate(&store.create_token(&other.id, "phone").await.unwrap().token).await.unwrap().unwrap();
    for who in [&tablet, &stranger, &main] {
        let mut forged = row.clone();
        forged.state.update([("a".to_owned(), Value::Text("forged".into()))], at(4, 2));
        match store.push(who, "2", None, vec![forged]).await {
            Err(StoreError::Forbidden(m)) => assert!(m.contains("site 0000000000000002"), "{m}"),
            other => panic!("{} wrote with the phone's site: {other:?}", who.device_name),
        }
    }
    assert_eq!(text(&stored(store, &phone, "kit", 1).await, "a"), "a0", "nothing stored");
    // The same device under a new token (same user and name) keeps its site.
    let again = store.authenticate(&store.create_token(&user.id, "phone").await.unwrap().token).await.unwrap().unwrap();
    row.state.update([("a".to_owned(), Value::Text("new token".into()))], at(5, 2));
    store.push(&again, "3", None, vec![row]).await.unwrap();
    assert_eq!(text(&stored(store, &phone, "kit", 1).await, "a"), "new token");
}

pub async fn the_authority_wins_only_conflicts_it_is_in<S: Store>(store: &S) {
    let user = store.add_user("site").await.unwrap();
    let main = store.create_device(&user.id, "main", false, Some("main")).await.unwrap();
    let main = store.authenticate(&main.token).await.unwrap().unwrap();
    let one = store.authenticate(&store.create_token(&user.id, "one").await.unwrap().token).await.unwrap().unwrap();
    let two = store.authenticate(&store.create_token(&user.id, "two").await.unwrap().token).await.unwrap().unwrap();
    // Main creates the row; phone one changes it; phone two, which saw only main's version,
    // deletes it. Main is in neither write: lww, where a delete wins.
    let base = ab("kit", 1, "a0", "b0", at(1, 7));
    store.push(&main, "0", None, vec![base.clone()]).await.unwrap();
    store.push(&one, "0", None, vec![edit(&base, "a", "one", at(2, 2))]).await.unwrap();
    let mut gone = base.clone();
    gone.state.delete(at(3, 3));
    gone.seen = Some(base.state.clocks());
    store.push(&two, "0", None, vec![gone]).await.unwrap();
    assert!(!stored(store, &one, "kit", 1).await.is_alive(), "main's insert does not make the row main's");
}

pub async fn reals_are_kept_bit_for_bit_live_and_in_tombstones<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let reals = [f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE / 4.0, f64::MAX, f64::MIN, 1.0 / 3.0, 0.0, 1e-300];
    let row = |i: usize, t: Hlc| {
        IncomingRow::new("gauge", &key(i as u32), RowState::inserted([("r".to_owned(), Value::Real(reals[i]))], t))
    };
    let rows: Vec<IncomingRow> = (0..reals.len()).map(|i| row(i, at(1, 1))).collect();
    store.push(&ann, "reals", None, rows).await.unwrap();
    let bits = |rows: &[(String, String, RowState)]| -> Vec<u64> {
        let mut out: Vec<(String, u64)> = rows
            .iter()
            .map(|(_, k, s)| match s.cols["r"].value {
                Value::Real(r) => (k.clone(), r.to_bits()),
                ref other => panic!("{k}: {other:?}"),
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, b)| b).collect()
    };
    let want: Vec<u64> = reals.iter().map(|r| r.to_bits()).collect();
    assert_eq!(bits(&pull_all(store, &ann).await), want);
    // Deleted, the tombstones keep the values, bit for bit.
    let gone: Vec<IncomingRow> = (0..reals.len())
        .map(|i| {
            let mut r = row(i, at(1, 1));
            r.state.delete(at(2, 1));
            r
        })
        .collect();
    store.push(&ann, "gone", None, gone).await.unwrap();
    let rows = pull_all(store, &ann).await;
    assert!(rows.iter().all(|(_, _, s)| !s.is_alive()));
    assert_eq!(bits(&rows), want);
}

pub async fn a_scan_reads_every_row_whoever_owns_it<S: Store>(store: &S) {
    let ann = principal(store, "ann").await;
    let bob = principal(store, "bob").await;
    store.push(&ann, "a", None, vec![note(1, &ann.user_id, "ann's", at(1, 1))]).await.unwrap();
    store.push(&bob, "b", None, vec![note(2, &bob.user_id, "bob's", at(1, 2))]).await.unwrap();
    let shared =
        IncomingRow::new("kit", &key(3), RowState::inserted([("a".to_owned(), Value::Text("x".into()))], at(1, 2)));
    store.push(&bob, "c", None, vec![shared]).await.unwrap();
    assert_eq!(pull_all(store, &ann).await.len(), 2, "ann pulls her note and the shared row");
    let (mut cursor, mut seen) = ("0".to_owned(), Vec::new());
    loop {
        let page = store.scan(&cursor, 1).await.unwrap();
        seen.extend(page.rows.into_iter().map(|r| (r.table, r.key)));
        if !page.more {
            break;
        }
        cursor = page.cursor;
    }
    seen.sort();
    let want = vec![("kit".to_owned(), key(3)), ("notes".to_owned(), key(1)), ("notes".to_owned(), key(2))];
    assert_eq!(seen, want);
}
