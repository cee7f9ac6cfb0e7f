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
