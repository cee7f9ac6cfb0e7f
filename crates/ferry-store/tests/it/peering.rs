//! What server peering needs of a store: a peer's feed and pushes, shared users, the
//! versions both sides hold, link records and the sync log; and history compaction.

use ferry_core::strategy::RowClocks;
use ferry_core::{Hlc, RowState, SiteId, Value};
use ferry_store::{IncomingRow, PeerStatus, Principal, Store, StoreError, SyncLogEntry, User};

use crate::suite::{at, key, note};

async fn device<S: Store>(store: &S, user: &str, role: Option<&str>) -> Principal {
    let u = match store.add_user(user).await {
        Ok(u) => u,
        Err(_) => store.users().await.unwrap().into_iter().find(|u| u.name == user).unwrap(),
    };
    let t = store.create_device(&u.id, "dev", false, role).await.unwrap();
    store.authenticate(&t.token).await.unwrap().unwrap()
}

async fn feed<S: Store>(store: &S, who: &Principal, cursor: &str) -> (Vec<(String, RowState)>, String) {
    let (mut out, mut cursor) = (Vec::new(), cursor.to_owned());
    loop {
        let page = store.pull(who, &cursor, 2).await.unwrap();
        cursor = page.cursor;
        out.extend(page.rows.into_iter().map(|r| (r.key, r.state)));
        if !page.more {
            return (out, cursor);
        }
    }
}

fn body(s: &RowState) -> Value {
    s.cols["body"].value.clone()
}

pub async fn a_peer_reads_every_row_but_those_it_brought<S: Store>(store: &S) {
    let ann = device(store, "ann", None).await;
    let bob = device(store, "bob", None).await;
    let mut peer = device(store, "main-server", Some("main")).await;
    peer.peer = true;
    store.push(&ann, "a", None, vec![note(1, &ann.user_id, "ann's", at(1, 1))]).await.unwrap();
    store.push(&bob, "b", None, vec![note(2, &bob.user_id, "bob's", at(2, 2))]).await.unwrap();
    let (rows, cursor) = feed(store, &peer, "").await;
    assert_eq!(rows.len(), 2, "a peer reads every user's rows");

    // A peer relays other writers' changes: bob's row, written on the other side by a site
    // this store does not know.
    let relayed = note(3, &bob.user_id, "written over there", at(3, 77));
    let done = store.push(&peer, "p1", None, vec![relayed]).await.unwrap();
    assert_eq!(done.changed, 1);
    let (rows, cursor) = feed(store, &peer, &cursor).await;
    assert!(rows.is_empty(), "what the peer brought is not sent back: {rows:?}");
    let (bobs, _) = feed(store, &bob, "").await;
    assert!(bobs.iter().any(|(k, s)| *k == key(3) && body(s) == Value::Text("written over there".into())));

    // A version that loses to what is stored here is news for the peer: it is sent back.
    let mut newer = note(1, &ann.user_id, "ann's", at(1, 1));
    newer.state.update([("body".to_owned(), Value::Text("edited here".into()))], at(5, 1));
    store.push(&ann, "a2", None, vec![newer]).await.unwrap();
    let mut stale = note(1, &ann.user_id, "ann's", at(1, 1));
    stale.state.update([("n".to_owned(), Value::Integer(4))], at(4, 77));
    store.push(&peer, "p2", None, vec![stale]).await.unwrap();
    let (rows, _) = feed(store, &peer, &cursor).await;
    assert_eq!(rows.len(), 1, "the merged row goes to the peer: {rows:?}");
    assert_eq!(body(&rows[0].1), Value::Text("edited here".into()));
    assert_eq!(rows[0].1.cols["n"].value, Value::Integer(4));

    // Without the peer flag the same token is an ordinary device: its own user's rows only.
    peer.peer = false;
    let (own, _) = feed(store, &peer, "").await;
    assert!(own.is_empty(), "{own:?}");
}

pub async fn users_bases_links_and_the_sync_log_are_kept<S: Store>(store: &S) {
    let zoe = User { id: "0190f5a2-0000-7000-8000-00000000000a".into(), name: "zoe".into() };
    assert_eq!(store.adopt_users(vec![zoe.clone()]).await.unwrap(), (1, vec![]));
    assert_eq!(store.adopt_users(vec![zoe.clone()]).await.unwrap(), (0, vec![]), "adopting again changes nothing");
    let clash = User { id: "0190f5a2-0000-7000-8000-00000000000b".into(), name: "zoe".into() };
    let (added, refused) = store.adopt_users(vec![clash]).await.unwrap();
    assert_eq!(added, 0);
    assert!(refused[0].contains("'zoe'") && refused[0].contains("rename one"), "{refused:?}");
    assert!(store.users().await.unwrap().contains(&zoe));

    let clocks = RowClocks { exists: at(1, 1), cols: [("body".to_owned(), at(2, 3))].into() };
    store.save_peer_bases("d1", vec![("notes".into(), key(1), clocks.clone())]).await.unwrap();
    let bases = store.peer_bases("d1", vec![("notes".into(), key(1)), ("notes".into(), key(2))]).await.unwrap();
    assert_eq!(bases.len(), 1);
    assert_eq!(bases[&("notes".to_owned(), key(1))], clocks);
    assert!(store.peer_bases("d2", vec![("notes".into(), key(1))]).await.unwrap().is_empty());
    // Many at once, in one transaction (a full sync's snapshot): known bases updated, the
    // rest added, a key sent twice recorded once; another device's untouched.
    let newer = RowClocks { exists: at(1, 1), cols: [("body".to_owned(), at(5, 3))].into() };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let sending = async move {
        tx.send(vec![("notes".into(), key(1), newer.clone()), ("notes".into(), key(2), clocks.clone())]).await.unwrap();
        tx.send(vec![("notes".into(), key(3), clocks.clone()), ("notes".into(), key(3), clocks.clone())])
            .await
            .unwrap();
    };
    let (saved, ()) = tokio::join!(store.save_peer_bases_from("d1", rx), sending);
    assert_eq!(saved.unwrap(), 4);
    let keys = vec![("notes".into(), key(1)), ("notes".into(), key(2)), ("notes".into(), key(3))];
    let bases = store.peer_bases("d1", keys.clone()).await.unwrap();
    assert_eq!(bases.len(), 3);
    assert_eq!(bases[&("notes".to_owned(), key(1))].cols["body"], at(5, 3));
    assert_eq!(bases[&("notes".to_owned(), key(3))].cols["body"], at(2, 3));
    assert!(store.peer_bases("d2", keys).await.unwrap().is_empty());

    assert!(matches!(store.request_resync("cloud").await, Err(StoreError::NotFound(_))));
    let link = PeerStatus { name: "cloud".into(), state: "CONNECTED".into(), rows_out: 3, ..PeerStatus::default() };
    store.save_link(link.clone()).await.unwrap();
    assert_eq!(store.links().await.unwrap(), vec![link.clone()]);
    assert!(!store.take_resync("cloud").await.unwrap());
    store.request_resync("cloud").await.unwrap();
    store.save_link(PeerStatus { rows_out: 4, ..link }).await.unwrap();
    assert!(store.take_resync("cloud").await.unwrap(), "a request outlives the link's own saves");
    assert!(!store.take_resync("cloud").await.unwrap());

    let entry = |at_ms, peer: &str| SyncLogEntry {
        at_ms,
        peer: peer.into(),
        kind: "rows".into(),
        direction: "push".into(),
        status: "SUCCESS".into(),
        ..SyncLogEntry::default()
    };
    store.log_sync(entry(1_000, "cloud"), 10_000).await.unwrap();
    store.log_sync(entry(5_000, "other"), 10_000).await.unwrap();
    store.log_sync(entry(12_000, "cloud"), 10_000).await.unwrap();
    let all = store.sync_log(None, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [12_000, 5_000], "older than 10 s is pruned");
    assert_eq!(store.sync_log(Some("cloud"), 10).await.unwrap().len(), 1);
}

pub async fn compaction_removes_old_tombstones_and_refuses_cursors_it_passed<S: Store>(store: &S) {
    let ann = device(store, "ann", None).await;
    let rows = (1..=3).map(|i| note(i, &ann.user_id, "x", at(u64::from(i), 1))).collect();
    store.push(&ann, "1", None, rows).await.unwrap();
    let (_, before_deletes) = feed(store, &ann, "").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let delete = |i: u32, t: Hlc| {
        let mut s = note(i, &ann.user_id, "x", at(u64::from(i), 1)).state;
        s.delete(t);
        IncomingRow::new("notes", &key(i), s)
    };
    // Note 2 was deleted just now; note 1 long ago, and last (the feed's highest position).
    store.push(&ann, "2", None, vec![delete(2, Hlc::new(now, 0, SiteId(1)))]).await.unwrap();
    store.push(&ann, "2b", None, vec![delete(1, at(10, 1))]).await.unwrap();
    let (_, after_deletes) = feed(store, &ann, &before_deletes).await;
    // One peer last held note 1 alive (it never saw the deletion), another its tombstone.
    let alive = note(1, &ann.user_id, "x", at(1, 1)).state.clocks();
    let dead = delete(1, at(10, 1)).state.clocks();
    store.save_peer_bases("behind", vec![("notes".into(), key(1), alive.clone())]).await.unwrap();
    store.save_peer_bases("told", vec![("notes".into(), key(1), dead)]).await.unwrap();

    let done = store.compact(now - 60_000).await.unwrap();
    assert_eq!(done.tombstones, 1, "{done:?}");
    // The base of the peer that saw the deletion goes with the tombstone; the other stays,
    // for its link's catch-up to tell the deletion from a row never received.
    assert!(store.peer_bases("told", vec![("notes".into(), key(1))]).await.unwrap().is_empty());
    let kept = store.peer_bases("behind", vec![("notes".into(), key(1))]).await.unwrap();
    assert_eq!(kept.get(&("notes".to_owned(), key(1))), Some(&alive));
    assert!(done.horizon > 0);
    match store.pull(&ann, &before_deletes, 10).await {
        Err(StoreError::Expired(m)) => assert!(m.contains("compaction horizon") && m.contains("re-sync"), "{m}"),
        other => panic!("a cursor from before the removed tombstone must be refused, got {other:?}"),
    }
    store.pull(&ann, &after_deletes, 10).await.unwrap();
    let (all, _) = feed(store, &ann, "").await;
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(!keys.contains(&key(1).as_str()), "the old tombstone is gone");
    assert!(all.iter().any(|(k, s)| *k == key(2) && !s.is_alive()), "the new tombstone stays");
    assert_eq!(store.compact(now - 60_000).await.unwrap().tombstones, 0);
    // A key whose tombstone went may be written again, and a cursor from before the
    // compaction sees it: positions are never handed out twice.
    store.push(&ann, "3", None, vec![note(1, &ann.user_id, "again", at(20, 1))]).await.unwrap();
    let (news, _) = feed(store, &ann, &after_deletes).await;
    assert!(news.iter().any(|(k, s)| *k == key(1) && s.is_alive()), "{news:?}");
    // A walk from the beginning pages through positions below the horizon (two rows a page
    // here) without being taken for a cursor that missed a deletion.
    let many = (10..40).map(|i| note(i, &ann.user_id, "x", at(u64::from(i), 1))).collect();
    store.push(&ann, "4", None, many).await.unwrap();
    let mut last = note(40, &ann.user_id, "x", at(40, 1)).state;
    last.delete(at(41, 1));
    store.push(&ann, "5", None, vec![IncomingRow::new("notes", &key(40), last)]).await.unwrap();
    assert_eq!(store.compact(now - 60_000).await.unwrap().tombstones, 1);
    let (walked, _) = feed(store, &ann, "").await;
    assert_eq!(walked.len(), 33, "every row but the compacted tombstone");
}

pub async fn digests_and_states_follow_every_version_and_leave_out_compacted_tombstones<S: Store>(store: &S) {
    let ann = device(store, "ann", None).await;
    let rows = (1..=4).map(|i| note(i, &ann.user_id, "x", at(u64::from(i), 1))).collect();
    store.push(&ann, "1", None, rows).await.unwrap();
    let digests = |from: u64| async move {
        let mut d = store.row_digests("notes", from).await.unwrap();
        d.sort_by(|a, b| a.key.cmp(&b.key));
        d
    };
    let first = digests(0).await;
    assert_eq!(first.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), (1..=4).map(key).collect::<Vec<_>>());
    // The digest is the version's, as any replica computes it from the same state.
    let stored = store.states("notes", vec![key(2), key(9)]).await.unwrap();
    assert_eq!(stored.len(), 1, "a key never seen is left out");
    let (k, state) = &stored[0];
    let cols = state.cols.iter().map(|(c, s)| (c.as_str(), s.at));
    assert_eq!(first[1].digest, ferry_core::digest::row_digest(k, true, state.exists.at, cols));

    // An update changes that row's digest alone; a delete leaves a tombstone entry.
    let mut edited = note(2, &ann.user_id, "x", at(2, 1));
    edited.state.update([("body".to_owned(), Value::Text("edited".into()))], at(7, 1));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut gone = note(3, &ann.user_id, "x", at(3, 1)).state;
    gone.delete(Hlc::new(now, 0, SiteId(1)));
    let mut old = note(4, &ann.user_id, "x", at(4, 1)).state;
    old.delete(at(8, 1));
    store
        .push(
            &ann,
            "2",
            None,
            vec![edited, IncomingRow::new("notes", &key(3), gone), IncomingRow::new("notes", &key(4), old)],
        )
        .await
        .unwrap();
    let second = digests(0).await;
    assert_eq!(second.len(), 4);
    assert_eq!(second[0], first[0]);
    assert_ne!(second[1].digest, first[1].digest);
    assert!(second[2].deleted && second[3].deleted && !second[0].deleted);
    let (_, dead) = &store.states("notes", vec![key(3)]).await.unwrap()[0];
    assert!(!dead.is_alive(), "a tombstone's state is handed over too");

    // Tombstones before a bound are left out when asked (a peer may have compacted them);
    // the bound a compaction used is remembered.
    assert_eq!(store.compacted_before().await.unwrap(), 0);
    let recent = digests(now - 60_000).await;
    assert_eq!(recent.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), [key(1), key(2), key(3)]);
    store.compact(now - 60_000).await.unwrap();
    assert_eq!(store.compacted_before().await.unwrap(), now - 60_000);
    store.compact(now - 120_000).await.unwrap();
    assert_eq!(store.compacted_before().await.unwrap(), now - 60_000, "the newest bound stays");
    assert_eq!(digests(0).await.len(), 3);
    assert!(
        matches!(store.row_digests("nope", 0).await, Err(StoreError::Invalid(m)) if m.contains("unknown table 'nope'"))
    );
}

pub async fn a_peer_reading_on_from_the_feed_position_gets_every_later_change<S: Store>(store: &S) {
    let ann = device(store, "ann", None).await;
    let mut peer = device(store, "main-server", Some("main")).await;
    peer.peer = true;
    let empty = store.feed_position().await.unwrap();
    assert!(feed(store, &peer, &empty).await.0.is_empty(), "nothing after the position of an empty feed");
    store.push(&ann, "1", None, vec![note(1, &ann.user_id, "before", at(1, 1))]).await.unwrap();
    let position = store.feed_position().await.unwrap();
    assert!(feed(store, &peer, &position).await.0.is_empty(), "what came before the position is not read again");
    store.push(&ann, "2", None, vec![note(2, &ann.user_id, "after", at(2, 1))]).await.unwrap();
    let mut edit = note(1, &ann.user_id, "before", at(1, 1));
    edit.state.update([("body".to_owned(), Value::Text("edited after".into()))], at(3, 1));
    store.push(&ann, "3", None, vec![edit]).await.unwrap();
    let (rows, _) = feed(store, &peer, &position).await;
    let mut keys: Vec<String> = rows.into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, [key(1), key(2)], "every change after the position");
}

/// Reads `who`'s snapshot two rows a page, with `meanwhile` run once the first page is in
/// (the store then waits to hand over the next): the rows as sent, and the cursor.
pub async fn snapshot_of<S: Store>(
    store: &S,
    who: &Principal,
    tables: Option<Vec<String>>,
    meanwhile: impl AsyncFnOnce(),
) -> (Vec<ferry_store::FeedRow>, String) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let reading = async {
        let mut all: Vec<ferry_store::FeedRow> = rx.recv().await.unwrap_or_default();
        meanwhile().await;
        while let Some(page) = rx.recv().await {
            all.extend(page);
        }
        all
    };
    let (cursor, rows) = tokio::join!(store.feed_snapshot(who, tables, 2, tx), reading);
    (rows, cursor.unwrap())
}

pub async fn a_devices_snapshot_is_its_feed_as_of_one_moment<S: Store>(store: &S) {
    let ann = device(store, "ann", None).await;
    let bob = device(store, "bob", None).await;
    let rows = (1..=7).map(|i| note(i, &ann.user_id, "old", at(u64::from(i), 1))).collect();
    store.push(&ann, "1", None, rows).await.unwrap();
    store.push(&bob, "b", None, vec![note(8, &bob.user_id, "bob's", at(8, 2))]).await.unwrap();
    let mut gone = note(6, &ann.user_id, "old", at(6, 1)).state;
    gone.delete(at(9, 1));
    store.push(&ann, "2", None, vec![IncomingRow::new("notes", &key(6), gone)]).await.unwrap();

    // Writes while the snapshot is read are not in it (each row once, as it was) …
    let mut edit = note(1, &ann.user_id, "old", at(1, 1));
    edit.state.update([("body".to_owned(), Value::Text("edited meanwhile".into()))], at(20, 1));
    let (rows, cursor) = snapshot_of(store, &ann, None, async || {
        store.push(&ann, "3", None, vec![edit, note(9, &ann.user_id, "new", at(21, 1))]).await.unwrap();
    })
    .await;
    let mut keys: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, (1..=7).map(key).collect::<Vec<_>>(), "ann's rows, each once, tombstones too, not bob's");
    assert!(rows.iter().all(|r| r.key != key(1) || body(&r.state) == Value::Text("old".into())), "as it was");
    assert!(rows.iter().any(|r| r.key == key(6) && !r.state.is_alive()));
    // … and are read from its cursor, with nothing before it again.
    let (after, _) = feed(store, &ann, &cursor).await;
    let mut keys: Vec<String> = after.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    assert_eq!(keys, [key(1), key(9)]);
    assert!(after.iter().any(|(k, s)| *k == key(1) && body(s) == Value::Text("edited meanwhile".into())));

    // A selection of tables; a peer takes a full sync's snapshot instead.
    let (rows, _) = snapshot_of(store, &ann, Some(vec!["tags".into()]), async || {}).await;
    assert!(rows.is_empty(), "{rows:?}");
    let mut peer = device(store, "main-server", Some("main")).await;
    peer.peer = true;
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    assert!(matches!(store.feed_snapshot(&peer, None, 2, tx).await, Err(StoreError::Invalid(_))));
}

pub async fn an_export_is_one_snapshot_and_a_restore_merges_all_or_nothing<S: Store>(store: &S) {
    let ann = device(store, "ann", None).await;
    let rows = (1..=5).map(|i| note(i, &ann.user_id, "x", at(u64::from(i), 1))).collect();
    store.push(&ann, "1", None, rows).await.unwrap();
    let mut gone = note(5, &ann.user_id, "x", at(5, 1)).state;
    gone.delete(at(9, 1));
    store.push(&ann, "2", None, vec![IncomingRow::new("notes", &key(5), gone)]).await.unwrap();
    let export = |tables: Vec<String>| async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let reading = async {
            let mut all = Vec::new();
            while let Some(batch) = rx.recv().await {
                all.extend(batch);
            }
            all
        };
        let (cursor, rows) = tokio::join!(store.export(tables, tx), reading);
        (cursor.unwrap(), rows)
    };
    let (cursor, rows) = export(vec!["notes".into()]).await;
    assert_eq!(rows.len(), 5, "tombstones too");
    assert!(rows.iter().any(|r| r.key == key(5) && !r.state.is_alive()));
    // The cursor stands for the snapshot: what is written after it is read from it.
    store.push(&ann, "3", None, vec![note(6, &ann.user_id, "after", at(6, 1))]).await.unwrap();
    let (after, _) = feed(store, &ann, &cursor).await;
    assert_eq!(after.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), [key(6)]);

    // A restore by a peer: a newer version wins, an older one does not overwrite, a new row
    // arrives; nothing shows until the commit.
    let mut peer = device(store, "main-server", Some("main")).await;
    peer.peer = true;
    let mut newer = note(1, &ann.user_id, "x", at(1, 1));
    newer.state.update([("body".to_owned(), Value::Text("newer".into()))], at(20, 55));
    let older = note(2, &ann.user_id, "older", at(0, 55));
    let fresh = note(7, &ann.user_id, "fresh", at(7, 55));
    let restore = |steps: Vec<ferry_store::RestoreStep>| {
        let peer = peer.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let sending = async move {
                for s in steps {
                    tx.send(s).await.unwrap();
                }
            };
            let (done, ()) = tokio::join!(store.restore(&peer, rx), sending);
            done.unwrap()
        }
    };
    let rolled = restore(vec![ferry_store::RestoreStep::Rows(vec![newer.clone(), older.clone(), fresh.clone()])]).await;
    assert!(!rolled.committed);
    assert_eq!(store.states("notes", vec![key(7)]).await.unwrap().len(), 0, "rolled back: nothing of it stays");
    let body_of = |k: u32| async move { body(&store.states("notes", vec![key(k)]).await.unwrap()[0].1) };
    assert_eq!(body_of(1).await, Value::Text("x".into()));
    let done = restore(vec![
        ferry_store::RestoreStep::Rows(vec![newer, older]),
        ferry_store::RestoreStep::Rows(vec![fresh]),
        ferry_store::RestoreStep::Commit,
    ])
    .await;
    assert!(done.committed);
    assert_eq!((done.rows, done.changed), (3, 2));
    assert_eq!(body_of(1).await, Value::Text("newer".into()));
    assert_eq!(body_of(2).await, Value::Text("x".into()), "an older version does not overwrite");
    assert_eq!(body_of(7).await, Value::Text("fresh".into()));
    // What the peer brought is its own: not in its feed.
    let (theirs, _) = feed(store, &peer, &cursor).await;
    assert!(theirs.iter().all(|(k, _)| *k != key(7) && *k != key(1)), "{theirs:?}");
}
