//! Sharing rules in the stores: `write` rules decide which rows a user may change, before
//! and after the change, on both stores alike.

use std::collections::BTreeMap;

use ferry_core::schema::{Schema, TableOptions};
use ferry_core::{Hlc, RowState, SiteId, Value};
use ferry_store::{IncomingRow, Principal, Store, StoreError};

/// Groups, their members and their formations: a group's owners write its formations and
/// its membership; whoever creates a group may make themselves its first owner.
pub fn schema() -> Schema {
    let rule = |write: &str| TableOptions { write: Some(write.to_owned()), ..TableOptions::default() };
    let options = BTreeMap::from([
        (
            "groups".to_owned(),
            rule("created_by = :user OR id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner')"),
        ),
        (
            "group_members".to_owned(),
            rule(
                "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner')
                 OR (user_id = :user AND role = 'owner' AND group_id IN (SELECT id FROM groups WHERE created_by = :user))",
            ),
        ),
        ("formations".to_owned(), rule("group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner')")),
    ]);
    Schema::parse(
        "CREATE TABLE groups (id uuid PRIMARY KEY, name text, created_by uuid);
         CREATE TABLE group_members (id uuid PRIMARY KEY, group_id uuid NOT NULL, user_id uuid NOT NULL, role text);
         CREATE TABLE formations (id uuid PRIMARY KEY, group_id uuid NOT NULL, title text);",
        &options,
    )
    .unwrap()
}

fn id(n: u32) -> String {
    format!("01900000-0000-7000-8000-{n:012x}")
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn row(table: &str, key: u32, cols: &[(&str, Value)], at: u64) -> IncomingRow {
    let cols = cols.iter().map(|(c, v)| ((*c).to_owned(), v.clone()));
    IncomingRow::new(table, &id(key), RowState::inserted(cols, Hlc::new(at, 0, SiteId(at))))
}

async fn user<S: Store>(store: &S, name: &str) -> Principal {
    let user = store.add_user(name).await.unwrap();
    let token = store.create_token(&user.id, "phone").await.unwrap();
    store.authenticate(&token.token).await.unwrap().unwrap()
}

fn forbidden(result: ferry_store::Result<ferry_store::PushOutcome>, needles: &[&str]) {
    match result {
        Err(StoreError::Forbidden(m)) => {
            assert!(needles.iter().all(|n| m.contains(n)), "{needles:?} not all in: {m}");
        }
        other => panic!("expected 403 naming {needles:?}, got {other:?}"),
    }
}

pub async fn write_rules_decide_who_changes_which_rows<S: Store>(store: S) {
    let ann = user(&store, "ann").await;
    let bob = user(&store, "bob").await;
    let (g1, g2) = (1, 2);
    // One batch makes a group, its first owner and a formation, in any order: each row is let
    // in by the stored rows and the batch's other rows let in before it, never by itself.
    let group = row("groups", g1, &[("name", text("Team A")), ("created_by", text(&ann.user_id))], 1);
    let owner = row(
        "group_members",
        20,
        &[("group_id", text(&id(g1))), ("user_id", text(&ann.user_id)), ("role", text("owner"))],
        1,
    );
    let formation = row("formations", 10, &[("group_id", text(&id(g1))), ("title", text("diamond"))], 1);
    let batch = vec![formation, owner, group];
    store.push(&ann, "a1", None, batch).await.unwrap();

    // Bob is not in the group: his formation in it is refused, naming table, key and rule.
    let forged = row("formations", 11, &[("group_id", text(&id(g1))), ("title", text("forged"))], 2);
    forbidden(
        store.push(&bob, "b1", None, vec![forged]).await,
        &["formations", &id(11), "group_id IN (SELECT group_id FROM group_members", "'bob'", "as written"],
    );
    assert!(store.get_row(&ann, "formations", &id(11)).await.unwrap().is_none(), "nothing stored");
    // Nor can he make himself a member, or an owner.
    let joins = row(
        "group_members",
        21,
        &[("group_id", text(&id(g1))), ("user_id", text(&bob.user_id)), ("role", text("owner"))],
        2,
    );
    forbidden(store.push(&bob, "b2", None, vec![joins.clone()]).await, &["group_members", &id(21)]);
    // Nor can two rows let each other in.
    let twin = row(
        "group_members",
        24,
        &[("group_id", text(&id(g1))), ("user_id", text(&bob.user_id)), ("role", text("owner"))],
        2,
    );
    forbidden(store.push(&bob, "b2b", None, vec![joins, twin]).await, &["group_members", "'bob'"]);

    // Ann adds Bob as a plain member: he still may not change the group's formations.
    let member = row(
        "group_members",
        22,
        &[("group_id", text(&id(g1))), ("user_id", text(&bob.user_id)), ("role", text("member"))],
        3,
    );
    store.push(&ann, "a2", None, vec![member]).await.unwrap();
    let mut edit = row("formations", 10, &[], 4);
    edit.state = store.get_row(&ann, "formations", &id(10)).await.unwrap().unwrap();
    edit.state.update([("title".to_owned(), text("bob's"))], Hlc::new(4, 0, SiteId(4)));
    forbidden(store.push(&bob, "b3", None, vec![edit]).await, &["formations", &id(10), "as it is stored"]);

    // Bob makes a group of his own; Ann may not move her formation into it.
    let own = vec![
        row("groups", g2, &[("name", text("Team B")), ("created_by", text(&bob.user_id))], 5),
        row(
            "group_members",
            23,
            &[("group_id", text(&id(g2))), ("user_id", text(&bob.user_id)), ("role", text("owner"))],
            5,
        ),
    ];
    store.push(&bob, "b4", None, own).await.unwrap();
    let mut moved = row("formations", 10, &[], 6);
    moved.state = store.get_row(&ann, "formations", &id(10)).await.unwrap().unwrap();
    moved.state.update([("group_id".to_owned(), text(&id(g2)))], Hlc::new(6, 0, SiteId(6)));
    forbidden(store.push(&ann, "a3", None, vec![moved]).await, &["formations", &id(10), "as written"]);
    let stored = store.get_row(&ann, "formations", &id(10)).await.unwrap().unwrap();
    assert_eq!(stored.cols["group_id"].value, text(&id(g1)), "the move changed nothing");

    // Ann may still write her own group's formation, and delete it.
    let mut renamed = row("formations", 10, &[], 7);
    renamed.state = stored;
    renamed.state.update([("title".to_owned(), text("star"))], Hlc::new(7, 0, SiteId(7)));
    store.push(&ann, "a4", None, vec![renamed.clone()]).await.unwrap();
    renamed.state.delete(Hlc::new(8, 0, SiteId(8)));
    store.push(&ann, "a5", None, vec![renamed]).await.unwrap();
    let gone = store.get_row(&ann, "formations", &id(10)).await.unwrap().unwrap();
    assert!(!gone.is_alive());
}

/// [`schema`] with `read` rules: members read their groups, each other and their groups'
/// formations.
pub fn read_schema() -> Schema {
    let mut options: BTreeMap<String, TableOptions> = BTreeMap::new();
    let members = "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)";
    for table in schema().tables {
        let read = match table.name.as_str() {
            "groups" => "created_by = :user OR id IN (SELECT group_id FROM group_members WHERE user_id = :user)",
            _ => members,
        };
        let files = if table.name == "formations" { vec!["sketch".to_owned()] } else { Vec::new() };
        let options_of = TableOptions { read: Some(read.to_owned()), files, ..table.options.clone() };
        options.insert(table.name.clone(), options_of);
    }
    Schema::parse(
        "CREATE TABLE groups (id uuid PRIMARY KEY, name text, created_by uuid);
         CREATE TABLE group_members (id uuid PRIMARY KEY, group_id uuid NOT NULL, user_id uuid NOT NULL, role text);
         CREATE TABLE formations (id uuid PRIMARY KEY, group_id uuid NOT NULL, title text, sketch text);",
        &options,
    )
    .unwrap()
}

/// A whole pull from `cursor`, `limit` rows a page: the rows (table, key, alive), the
/// removals and the cursor after.
async fn pull_all<S: Store>(
    store: &S,
    who: &Principal,
    cursor: &str,
    limit: usize,
) -> (Vec<(String, String, bool)>, Vec<(String, String)>, String) {
    let (mut rows, mut removed, mut cursor) = (Vec::new(), Vec::new(), cursor.to_owned());
    for _ in 0..1000 {
        let page = store.pull(who, &cursor, limit).await.unwrap();
        rows.extend(page.rows.into_iter().map(|r| (r.table, r.key, r.state.is_alive())));
        removed.extend(page.removed);
        cursor = page.cursor;
        if !page.more {
            rows.sort();
            removed.sort();
            return (rows, removed, cursor);
        }
    }
    panic!("the pull never ended");
}

fn keyed(rows: &[(&str, u32)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rows.iter().map(|(t, k)| ((*t).to_owned(), id(*k))).collect();
    out.sort();
    out
}

fn live(rows: &[(String, String, bool)]) -> Vec<(String, String)> {
    rows.iter().filter(|r| r.2).map(|(t, k, _)| (t.clone(), k.clone())).collect()
}

/// `read` rules on a store: a user pulls only what they may read; rows move in when what the
/// rules select for them grows (whatever the rows' age) and out, as removals, when it shrinks
/// or when a row's own change takes it out of their reach; deleted rows reach whoever could
/// read them; single rows, notices and pages of one row follow the same rules.
pub async fn read_rules_decide_who_reads_which_rows<S: Store>(store: S) {
    let ann = user(&store, "ann").await;
    let bob = user(&store, "bob").await;
    let member = |key: u32, group: u32, user: &Principal, role: &str, at: u64| {
        row(
            "group_members",
            key,
            &[("group_id", text(&id(group))), ("user_id", text(&user.user_id)), ("role", text(role))],
            at,
        )
    };
    // Ann's two groups, each with a formation.
    let batch = vec![
        row("groups", 1, &[("name", text("Team A")), ("created_by", text(&ann.user_id))], 1),
        row("groups", 2, &[("name", text("Team B")), ("created_by", text(&ann.user_id))], 1),
        member(20, 1, &ann, "owner", 1),
        member(21, 2, &ann, "owner", 1),
        row("formations", 10, &[("group_id", text(&id(1))), ("title", text("diamond"))], 1),
        row("formations", 11, &[("group_id", text(&id(2))), ("title", text("star"))], 1),
    ];
    store.push(&ann, "a1", None, batch).await.unwrap();
    let (rows, removed, _) = pull_all(&store, &ann, "0", 100).await;
    assert_eq!(rows.len(), 6, "ann reads all she made: {rows:?}");
    assert!(removed.is_empty());

    // Bob is in no group: nothing.
    let (rows, removed, bob_cursor) = pull_all(&store, &bob, "0", 100).await;
    assert!(rows.is_empty() && removed.is_empty(), "{rows:?} {removed:?}");

    // A device's snapshot holds what its read rules show, and reads on from its cursor.
    let (snap, cursor) = crate::peering::snapshot_of(&store, &ann, None, async || {}).await;
    let mut snap: Vec<(String, String, bool)> =
        snap.into_iter().map(|r| (r.table, r.key, r.state.is_alive())).collect();
    snap.sort();
    assert_eq!(snap, pull_all(&store, &ann, "0", 100).await.0);
    assert_eq!(pull_all(&store, &ann, &cursor, 100).await.0, []);
    let (bobs, bob_snapshot) = crate::peering::snapshot_of(&store, &bob, None, async || {}).await;
    assert!(bobs.is_empty(), "{bobs:?}");

    // Files are as private as the rows that reference them.
    let (sketch_a, sketch_b) = ("a".repeat(64), "b".repeat(64));
    for (key, sketch) in [(10, &sketch_a), (11, &sketch_b)] {
        let mut r = row("formations", key, &[], 2);
        r.state = store.get_row(&ann, "formations", &id(key)).await.unwrap().unwrap();
        r.state.update([("sketch".to_owned(), text(sketch))], Hlc::new(2, 0, SiteId(2)));
        store.push(&ann, &format!("sketch{key}"), None, vec![r]).await.unwrap();
    }
    let both = [sketch_a.clone(), sketch_b.clone()];
    assert_eq!(store.file_refs(&ann, &both).await.unwrap().len(), 2);
    assert!(store.file_refs(&bob, &both).await.unwrap().is_empty(), "bob reads no formation yet");
    let (_, _, bob_cursor) = pull_all(&store, &bob, &bob_cursor, 100).await;

    // Notices: on PostgreSQL they come through a LISTEN connection the first subscriber opens;
    // Ann renames Team B until one arrives, so that the listener is in place before the
    // changes whose notices are looked at.
    let mut notices = store.notices();
    for attempt in 0.. {
        assert!(attempt < 100, "no notice arrived");
        let mut team_b = row("groups", 2, &[], 2);
        team_b.state = store.get_row(&ann, "groups", &id(2)).await.unwrap().unwrap();
        team_b.state.update([("name".to_owned(), text(&format!("Team B {attempt}")))], Hlc::new(2, attempt, SiteId(2)));
        store.push(&ann, &format!("warm{attempt}"), None, vec![team_b]).await.unwrap();
        if tokio::time::timeout(std::time::Duration::from_millis(200), notices.recv()).await.is_ok() {
            break;
        }
    }
    while notices.try_recv().is_ok() {}
    // The next notice of a change to `table` (a late one of the renames is passed over).
    let next = async |rx: &mut tokio::sync::broadcast::Receiver<ferry_store::Notice>, table: &str| loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv()).await.expect("a notice").unwrap();
        if n.tables.iter().any(|t| t == table) {
            break n;
        }
    };

    // Ann adds Bob to Team A: its rows, all older than his cursor, move in, a row a page.
    store.push(&ann, "a2", None, vec![member(22, 1, &bob, "member", 2)]).await.unwrap();
    let notice = next(&mut notices, "group_members").await;
    assert!(notice.moves_scopes(store.schema()), "a membership change may move rows");
    let (rows, removed, bob_cursor) = pull_all(&store, &bob, &bob_cursor, 1).await;
    assert_eq!(
        live(&rows),
        keyed(&[("formations", 10), ("group_members", 20), ("group_members", 22), ("groups", 1)]),
        "Team A's rows moved in"
    );
    assert!(removed.is_empty(), "{removed:?}");
    // The same for a device that read on from its snapshot: the scope it was taken under
    // is in its cursor.
    let (moved, _, _) = pull_all(&store, &bob, &bob_snapshot, 100).await;
    assert_eq!(moved, rows, "from the snapshot's cursor too");
    let (rows, removed, bob_cursor) = pull_all(&store, &bob, &bob_cursor, 100).await;
    assert!(rows.is_empty() && removed.is_empty(), "nothing again: {rows:?} {removed:?}");
    let refs = store.file_refs(&bob, &both).await.unwrap();
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), std::slice::from_ref(&sketch_a), "Team A's sketch only");

    // A change in Team B is no news for Bob; one in Team A is.
    let bob_scope = store.scope(&bob.user_id).await.unwrap();
    let mut star = row("formations", 11, &[], 3);
    star.state = store.get_row(&ann, "formations", &id(11)).await.unwrap().unwrap();
    star.state.update([("title".to_owned(), text("big star"))], Hlc::new(3, 0, SiteId(3)));
    store.push(&ann, "a3", None, vec![star]).await.unwrap();
    let notice = next(&mut notices, "formations").await;
    assert!(!notice.concerns(&bob.user_id, &bob.device_id, store.schema(), &bob_scope), "{notice:?}");
    assert!(notice.concerns(&ann.user_id, "another device", store.schema(), &store.scope(&ann.user_id).await.unwrap()));
    assert!(store.get_row(&bob, "formations", &id(11)).await.unwrap().is_none(), "hidden from bob");
    assert!(store.get_row(&bob, "formations", &id(10)).await.unwrap().is_some());

    // Ann moves the diamond to Team B: it leaves Bob's reach by its own change; the star
    // comes the other way.
    let mut diamond = row("formations", 10, &[], 4);
    diamond.state = store.get_row(&ann, "formations", &id(10)).await.unwrap().unwrap();
    diamond.state.update([("group_id".to_owned(), text(&id(2)))], Hlc::new(4, 0, SiteId(4)));
    let mut star = row("formations", 11, &[], 4);
    star.state = store.get_row(&ann, "formations", &id(11)).await.unwrap().unwrap();
    star.state.update([("group_id".to_owned(), text(&id(1)))], Hlc::new(4, 0, SiteId(4)));
    store.push(&ann, "a4", None, vec![diamond]).await.unwrap();
    let notice = next(&mut notices, "formations").await;
    assert!(notice.concerns(&bob.user_id, &bob.device_id, store.schema(), &bob_scope), "it left bob's reach");
    store.push(&ann, "a5", None, vec![star]).await.unwrap();
    let (rows, removed, bob_cursor) = pull_all(&store, &bob, &bob_cursor, 100).await;
    assert_eq!(live(&rows), keyed(&[("formations", 11)]), "the star moved in");
    assert_eq!(removed, keyed(&[("formations", 10)]), "the diamond moved out");

    // Ann deletes the star: Bob receives the tombstone (decided by its last values).
    let mut gone = row("formations", 11, &[], 5);
    gone.state = store.get_row(&ann, "formations", &id(11)).await.unwrap().unwrap();
    gone.state.delete(Hlc::new(5, 0, SiteId(5)));
    store.push(&ann, "a6", None, vec![gone]).await.unwrap();
    let (rows, removed, bob_cursor) = pull_all(&store, &bob, &bob_cursor, 100).await;
    assert_eq!(rows, [("formations".to_owned(), id(11), false)], "the deletion reached bob");
    assert!(removed.is_empty(), "{removed:?}");
    assert!(store.get_row(&bob, "formations", &id(11)).await.unwrap().is_some_and(|s| !s.is_alive()));

    // Ann removes Bob from Team A: everything of it leaves his reach, his own membership too.
    let mut out = member(22, 1, &bob, "member", 6);
    out.state = store.get_row(&ann, "group_members", &id(22)).await.unwrap().unwrap();
    out.state.delete(Hlc::new(6, 0, SiteId(6)));
    store.push(&ann, "a7", None, vec![out]).await.unwrap();
    let (rows, removed, _) = pull_all(&store, &bob, &bob_cursor, 1).await;
    assert!(live(&rows).is_empty(), "{rows:?}");
    let mut left: Vec<(String, String)> = removed.clone();
    left.retain(|r| r.0 != "formations" || r.1 != id(11));
    assert_eq!(
        left,
        keyed(&[("group_members", 20), ("group_members", 22), ("groups", 1)]),
        "Team A left bob's reach: {removed:?}"
    );
    // What Ann reads is untouched: her groups, her memberships and the diamond.
    let (rows, _, _) = pull_all(&store, &ann, "0", 100).await;
    assert_eq!(live(&rows).len(), 5, "{rows:?}");
}
