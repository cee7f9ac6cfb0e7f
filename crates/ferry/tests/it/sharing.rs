//! Sharing rules end to end: devices of two users writing through `ferry sync`, on both
//! stores. A write the rules refuse is set aside on its device with the server's answer;
//! everything else syncs.

use crate::*;

const RULES: [(&str, &str); 3] = [
    (
        "groups",
        r#"write = "created_by = :user OR id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner')""#,
    ),
    (
        "group_members",
        r#"write = "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner') OR (user_id = :user AND role = 'owner' AND group_id IN (SELECT id FROM groups WHERE created_by = :user))""#,
    ),
    (
        "formations",
        r#"write = "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner')""#,
    ),
];

fn formations(db: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = db.prepare("SELECT name FROM formations ORDER BY name").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

fn a_forged_write_is_set_aside_and_the_rest_syncs(env: Env) {
    for (table, lines) in RULES {
        env.table_options(table, lines);
    }
    let p = Pair::in_env(env);
    let bob = p.env.add_user("bob");
    let tablet = p.env.token("bob", "tablet");
    // Alice makes a group, makes herself its owner and plans a formation, offline, then syncs.
    let phone = p.env.db("phone.db");
    let group = uuid();
    phone
        .execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'Sunday 4-way', ?2)", [&group, &p.user])
        .unwrap();
    phone
        .execute(
            "INSERT INTO group_members (id, group_id, user_id, role) VALUES (?1, ?2, ?3, 'owner')",
            [&uuid(), &group, &p.user],
        )
        .unwrap();
    phone.execute("INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, 'diamond')", [&uuid(), &group]).unwrap();
    let status = p.sync_phone();
    assert_eq!((status["failed"].as_u64(), status["pending"].as_u64()), (Some(0), Some(0)), "{status}");

    // Bob is in no group: his formation in Alice's group is refused, his own jump goes through.
    p.env.sync(&p.server, "tablet.db", &tablet);
    let db = p.env.db("tablet.db");
    db.execute("INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, 'forged')", [&uuid(), &group]).unwrap();
    insert_jump(&db, &bob, 1, "bob's own");
    let status = p.env.sync(&p.server, "tablet.db", &tablet);
    assert_eq!(status["failed"], 1, "{status}");
    let path = p.env.path("tablet.db").display().to_string();
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &path, "--json"]).stdout).unwrap();
    let failed = &queue["failed"][0];
    assert_eq!(failed["status"], 403, "{queue}");
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("formations") && message.contains("write rule") && message.contains("'bob'"), "{message}");

    p.sync_laptop();
    let laptop = p.env.db("laptop.db");
    assert_eq!(formations(&laptop), ["diamond"], "the forged formation reached no one");
    let other = p.env.token("bob", "phone");
    p.env.sync(&p.server, "bob-phone.db", &other);
    assert_eq!(jumps(&p.env.db("bob-phone.db")).len(), 1, "bob's own jump arrived");
}

#[test]
fn a_forged_write_is_set_aside_and_the_rest_syncs_on_the_embedded_store() {
    a_forged_write_is_set_aside_and_the_rest_syncs(Env::new());
}

#[test]
fn a_forged_write_is_set_aside_and_the_rest_syncs_on_postgres() {
    a_forged_write_is_set_aside_and_the_rest_syncs(Env::postgres());
}

#[test]
fn devices_are_listed_with_their_last_request_and_revoked_by_id() {
    let p = Pair::new();
    let config = p.env.config();
    let list = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["device", "list", "--json", "-c", &config];
        args.extend_from_slice(extra);
        serde_json::from_str(&p.env.ok_all(&args)).unwrap()
    };
    let all = list(&[]);
    let devices = all["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{all}");
    let phone = devices.iter().find(|d| d["name"] == "phone").unwrap();
    assert_eq!((phone["user_name"].as_str(), phone["admin"].as_bool()), (Some("alice"), Some(false)));
    assert!(phone["last_seen"].is_string(), "the phone synced: {phone}");
    assert!(phone["revoked_at"].is_null());
    let id = phone["id"].as_str().unwrap().to_owned();

    let out = p.env.run(&["device", "list", "--user", "nobody", "-c", &config]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user 'nobody'"));

    let revoked: serde_json::Value =
        serde_json::from_str(&p.env.ok_all(&["device", "revoke", &id, "--json", "-c", &config])).unwrap();
    assert_eq!(revoked["revoked"], serde_json::json!([id]));
    let resp = p.server.http().get(format!("{}/v1/me", p.server.url)).bearer_auth(&p.phone).send().unwrap();
    assert_eq!(resp.status(), 401, "the revoked token stops at once");
    let mine = list(&["--user", "alice"]);
    let phone = mine["devices"].as_array().unwrap().iter().find(|d| d["id"] == id.as_str()).unwrap().clone();
    assert!(phone["revoked_at"].is_string(), "{phone}");
    let text = p.env.ok_all(&["device", "list", "-c", &config]);
    assert!(text.contains("alice/phone") && text.contains("revoked 20"), "{text}");
    let again = p.env.run(&["device", "revoke", &id, "-c", &config]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("no live device with id"), "revoked already");
}

fn a_read_only_table_takes_no_device_writes(env: Env, direct: bool) {
    env.table_options("groups", "read_only = true");
    let p = Pair::in_env(env);
    let phone = p.env.db("phone.db");
    phone.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'mine', ?2)", [&uuid(), &p.user]).unwrap();
    insert_jump(&phone, &p.user, 1, "fine");
    let status = p.sync_phone();
    assert_eq!((status["failed"].as_u64(), status["pending"].as_u64()), (Some(1), Some(1)), "{status}");
    let path = p.env.path("phone.db").display().to_string();
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &path, "--json"]).stdout).unwrap();
    let message = queue["failed"][0]["message"].as_str().unwrap();
    assert!(message.contains("table 'groups' is read-only for devices (read_only = true"), "{message}");
    p.sync_laptop();
    let laptop = p.env.db("laptop.db");
    assert_eq!(jumps(&laptop).len(), 1, "the jump went through");
    if direct {
        // The server's own SQL writes it, and devices receive it.
        p.env.psql(&format!(
            "INSERT INTO groups (id, name, created_by) VALUES ('{}', 'official', '{}')",
            uuid(),
            p.user
        ));
        p.sync_laptop();
        let names: Vec<String> = laptop
            .prepare("SELECT name FROM groups")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(names, ["official"]);
    }
}

#[test]
fn a_read_only_table_takes_no_device_writes_on_the_embedded_store() {
    a_read_only_table_takes_no_device_writes(Env::new(), false);
}

#[test]
fn a_read_only_table_takes_no_device_writes_on_postgres_but_takes_its_own_sql() {
    a_read_only_table_takes_no_device_writes(Env::postgres(), true);
}

/// A device-only table: a scratch table in the schema, kept off the server.
fn a_local_only_table_never_leaves_its_device(env: Env, on_postgres: bool) {
    let schema = std::fs::read_to_string(env.path("schema.sql")).unwrap();
    let drafts = "CREATE TABLE drafts (id uuid PRIMARY KEY, body text);";
    std::fs::write(env.path("schema.sql"), format!("{schema}\n{drafts}\n")).unwrap();
    env.table_options("drafts", "local_only = true");
    let p = Pair::in_env(env);
    let phone = p.env.db("phone.db");
    phone.execute("INSERT INTO drafts (id, body) VALUES (?1, 'half a thought')", [&uuid()]).unwrap();
    insert_jump(&phone, &p.user, 1, "synced");
    let status = p.sync_phone();
    assert_eq!((status["pending"].as_u64(), status["failed"].as_u64()), (Some(0), Some(0)), "{status}");
    p.sync_laptop();
    let laptop = p.env.db("laptop.db");
    assert_eq!(jumps(&laptop).len(), 1);
    let drafts: i64 = laptop.query_row("SELECT count(*) FROM drafts", [], |r| r.get(0)).unwrap();
    assert_eq!(drafts, 0, "the laptop has the table, but not the phone's rows");
    let kept: i64 = phone.query_row("SELECT count(*) FROM drafts", [], |r| r.get(0)).unwrap();
    assert_eq!(kept, 1);
    // The server keeps no such table, and says why when asked for it.
    let resp = p
        .server
        .http()
        .get(format!("{}/v1/rows/drafts/{}", p.server.url, uuid()))
        .bearer_auth(&p.phone)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().unwrap().contains("no table 'drafts' on the server: it is local_only"));
    if on_postgres {
        assert_eq!(p.env.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'drafts'").trim(), "0");
    }
}

#[test]
fn a_local_only_table_never_leaves_its_device_on_the_embedded_store() {
    a_local_only_table_never_leaves_its_device(Env::new(), false);
}

#[test]
fn a_local_only_table_never_leaves_its_device_on_postgres() {
    a_local_only_table_never_leaves_its_device(Env::postgres(), true);
}

/// A device-only column in a synced table: kept by each device, never sent, left alone by pulls.
fn a_local_only_column_stays_on_its_device(env: Env, on_postgres: bool) {
    let schema = std::fs::read_to_string(env.path("schema.sql")).unwrap();
    let checks = "CREATE TABLE checklists (id uuid PRIMARY KEY, item text NOT NULL, done_here boolean);";
    std::fs::write(env.path("schema.sql"), format!("{schema}\n{checks}\n")).unwrap();
    env.table_options("checklists", "local_only_columns = [\"done_here\"]");
    let p = Pair::in_env(env);
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));
    let id = uuid();
    phone.execute("INSERT INTO checklists (id, item, done_here) VALUES (?1, 'reserve check', 1)", [&id]).unwrap();
    p.sync_phone();
    p.sync_laptop();
    let row = |db: &rusqlite::Connection| -> (String, Option<i64>) {
        db.query_row("SELECT item, done_here FROM checklists WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    };
    assert_eq!(row(&laptop), ("reserve check".to_owned(), None), "the item arrives, the local column does not");
    // A change to the local column alone is no change to sync.
    laptop.execute("UPDATE checklists SET done_here = 0 WHERE id = ?1", [&id]).unwrap();
    let status = p.sync_laptop();
    assert_eq!((status["pending"].as_u64(), status["pushed"].as_u64()), (Some(0), None), "{status}");
    // A newer version of the row from elsewhere leaves each device's own column as it was.
    phone.execute("UPDATE checklists SET item = 'reserve check, twice' WHERE id = ?1", [&id]).unwrap();
    let pushed = p.sync_phone();
    assert_eq!((pushed["pending"].as_u64(), pushed["failed"].as_u64()), (Some(0), Some(0)), "{pushed}");
    p.sync_laptop();
    assert_eq!(row(&laptop), ("reserve check, twice".to_owned(), Some(0)));
    assert_eq!(row(&phone), ("reserve check, twice".to_owned(), Some(1)));
    if on_postgres {
        let columns = p.env.psql(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'checklists'",
        );
        assert_eq!(columns.trim(), "id,item", "the server's table has no local-only column");
    }
}

#[test]
fn a_local_only_column_stays_on_its_device_on_the_embedded_store() {
    a_local_only_column_stays_on_its_device(Env::new(), false);
}

#[test]
fn a_local_only_column_stays_on_its_device_on_postgres() {
    a_local_only_column_stays_on_its_device(Env::postgres(), true);
}

/// Members read and write their groups' formations and see each other; a group's owners
/// manage its members.
const MEMBER_RULES: [(&str, &str); 3] = [
    ("groups", r#"read = "created_by = :user OR id IN (SELECT group_id FROM group_members WHERE user_id = :user)""#),
    (
        "group_members",
        r#"read = "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)"
write = "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner') OR (user_id = :user AND role = 'owner' AND group_id IN (SELECT id FROM groups WHERE created_by = :user))""#,
    ),
    (
        "formations",
        r#"read = "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)"
write = "group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)""#,
    ),
];

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Joining a group brings its existing rows, leaving takes them away (locally: nothing is
/// pushed back), and a change to a row that left is set aside with the reason. `direct`:
/// membership is changed by another application's SQL, straight into PostgreSQL.
fn membership_moves_rows_in_and_out(env: Env, direct: bool) {
    for (table, lines) in MEMBER_RULES {
        env.table_options(table, lines);
    }
    let p = Pair::in_env(env);
    let bob = p.env.add_user("bob");
    let tablet = p.env.token("bob", "tablet");
    let phone = p.env.db("phone.db");
    let (group, formation, membership) = (uuid(), uuid(), uuid());
    phone
        .execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'Sunday 4-way', ?2)", [&group, &p.user])
        .unwrap();
    phone
        .execute(
            "INSERT INTO group_members (id, group_id, user_id, role) VALUES (?1, ?2, ?3, 'owner')",
            [&uuid(), &group, &p.user],
        )
        .unwrap();
    phone
        .execute("INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, 'diamond')", [&formation, &group])
        .unwrap();
    let status = p.sync_phone();
    assert_eq!((status["failed"].as_u64(), status["pending"].as_u64()), (Some(0), Some(0)), "{status}");

    // Bob is in no group: he sees nothing of it.
    p.env.sync(&p.server, "tablet.db", &tablet);
    let db = p.env.db("tablet.db");
    assert!(formations(&db).is_empty());
    assert_eq!(count(&db, "SELECT count(*) FROM groups"), 0);

    // Bob joins: the group's rows, all older than his cursor, arrive at his next sync.
    if direct {
        p.env.psql(&format!(
            "INSERT INTO group_members (id, group_id, user_id, role) VALUES ('{membership}', '{group}', '{bob}', 'member')"
        ));
    } else {
        phone
            .execute(
                "INSERT INTO group_members (id, group_id, user_id, role) VALUES (?1, ?2, ?3, 'member')",
                [&membership, &group, &bob],
            )
            .unwrap();
        p.sync_phone();
    }
    p.env.sync(&p.server, "tablet.db", &tablet);
    assert_eq!(formations(&db), ["diamond"], "the group's formation moved in");
    assert_eq!(count(&db, "SELECT count(*) FROM groups"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM group_members"), 2, "members see each other");

    // Bob renames the formation offline; meanwhile he is removed from the group.
    db.execute("UPDATE formations SET name = 'bob''s diamond' WHERE id = ?1", [&formation]).unwrap();
    if direct {
        p.env.psql(&format!("DELETE FROM group_members WHERE id = '{membership}'"));
    } else {
        phone.execute("DELETE FROM group_members WHERE id = ?1", [&membership]).unwrap();
        p.sync_phone();
    }
    p.env.sync(&p.server, "tablet.db", &tablet);
    assert!(formations(&db).is_empty(), "the group's rows left Bob's replica");
    assert_eq!(count(&db, "SELECT count(*) FROM groups"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM group_members"), 0);
    let path = p.env.path("tablet.db").display().to_string();
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &path, "--json"]).stdout).unwrap();
    assert_eq!(queue["failed"].as_array().map(Vec::len), Some(1), "{queue}");
    assert_eq!(queue["failed"][0]["status"], 403, "{queue}");

    // Nothing was deleted for anyone else, and Bob's rename reached no one.
    p.sync_laptop();
    let laptop = p.env.db("laptop.db");
    assert_eq!(formations(&laptop), ["diamond"]);
    assert_eq!(count(&laptop, "SELECT count(*) FROM group_members"), 1);
    p.sync_phone();
    assert_eq!(formations(&phone), ["diamond"]);
}

#[test]
fn membership_moves_rows_in_and_out_on_the_embedded_store() {
    membership_moves_rows_in_and_out(Env::new(), false);
}

#[test]
fn membership_moves_rows_in_and_out_on_postgres() {
    membership_moves_rows_in_and_out(Env::postgres(), false);
}

#[test]
fn membership_changed_by_direct_sql_moves_rows_on_postgres() {
    membership_moves_rows_in_and_out(Env::postgres(), true);
}

fn group_names(db: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = db.prepare("SELECT name FROM groups ORDER BY name").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// `filter`: rows it holds true for stay on the server (demo data); a device may not make one.
fn a_filter_keeps_rows_on_the_server(env: Env, direct: bool) {
    env.table_options("groups", r#"filter = "name = 'demo'""#);
    let p = Pair::in_env(env);
    let phone = p.env.db("phone.db");
    phone.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'demo', ?2)", [&uuid(), &p.user]).unwrap();
    phone.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'real', ?2)", [&uuid(), &p.user]).unwrap();
    let status = p.sync_phone();
    assert_eq!(status["failed"], 1, "{status}");
    let path = p.env.path("phone.db").display().to_string();
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &path, "--json"]).stdout).unwrap();
    let message = queue["failed"][0]["message"].as_str().unwrap();
    assert!(message.contains("groups") && message.contains("filter `name = 'demo'`"), "{message}");
    p.sync_laptop();
    let laptop = p.env.db("laptop.db");
    assert_eq!(group_names(&laptop), ["real"]);
    if direct {
        // The server's own demo data stays there; its other rows reach devices.
        for name in ["demo", "official"] {
            p.env.psql(&format!(
                "INSERT INTO groups (id, name, created_by) VALUES ('{}', '{name}', '{}')",
                uuid(),
                p.user
            ));
        }
        p.sync_laptop();
        assert_eq!(group_names(&laptop), ["official", "real"]);
        // A real row renamed to demo leaves the devices that held it.
        p.env.psql("UPDATE groups SET name = 'demo' WHERE name = 'official'");
        p.sync_laptop();
        assert_eq!(group_names(&laptop), ["real"]);
    }
}

#[test]
fn a_filter_keeps_rows_on_the_server_on_the_embedded_store() {
    a_filter_keeps_rows_on_the_server(Env::new(), false);
}

#[test]
fn a_filter_keeps_rows_on_the_server_on_postgres() {
    a_filter_keeps_rows_on_the_server(Env::postgres(), true);
}

fn names(db: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// The skydiving example as configured (`examples/skydive/ferry.toml`), three jumpers in two
/// groups: joining brings a group's rows, leaving takes them away, a forged write is set
/// aside, a hidden jump stays hidden while a shared one reaches a connection, and a revoked
/// device stops syncing.
fn three_jumpers_in_two_groups(env: Env) {
    let p = Pair::in_env(env);
    let config = p.env.config();
    let alice = p.user.clone();
    let bob = p.env.add_user("bob");
    let carol = p.env.add_user("carol");
    let bob_phone = p.env.token("bob", "phone");
    let carol_tablet = p.env.token("carol", "tablet");
    let sync = |db: &str, token: &str| p.env.sync(&p.server, db, token);
    sync("bob.db", &bob_phone);
    sync("carol.db", &carol_tablet);
    let (alice_db, bob_db, carol_db) = (p.env.db("phone.db"), p.env.db("bob.db"), p.env.db("carol.db"));

    // Alice's Sunday group with a formation and a slot; Bob's Monday group with one.
    let (sunday, monday) = (uuid(), uuid());
    let add_group = |db: &rusqlite::Connection, id: &str, name: &str, by: &str| {
        db.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, ?2, ?3)", [id, name, by]).unwrap();
        db.execute(
            "INSERT INTO group_members (id, group_id, user_id, role) VALUES (?1, ?2, ?3, 'owner')",
            [&uuid(), id, by],
        )
        .unwrap();
        let formation = uuid();
        db.execute(
            "INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, ?3)",
            [&formation, id, &format!("{name} diamond")],
        )
        .unwrap();
        db.execute(
            "INSERT INTO formation_participants (id, formation_id, user_id, slot, group_id) VALUES (?1, ?2, ?3, 1, ?4)",
            [&uuid(), &formation, by, id],
        )
        .unwrap();
    };
    add_group(&alice_db, &sunday, "Sunday", &alice);
    add_group(&bob_db, &monday, "Monday", &bob);
    let member = |group: &str, user: &str| {
        alice_db
            .execute(
                "INSERT INTO group_members (id, group_id, user_id, role) VALUES (?1, ?2, ?3, 'member')",
                [&uuid(), group, user],
            )
            .unwrap();
    };
    member(&sunday, &bob);
    member(&sunday, &carol);
    // Alice logs a hidden jump and a shared one, and shares with Carol only.
    insert_jump(&alice_db, &alice, 1, "hidden");
    let shared = insert_jump(&alice_db, &alice, 2, "shared");
    alice_db.execute("UPDATE jump_log SET visible_to_connections = 1 WHERE id = ?1", [&shared]).unwrap();
    alice_db
        .execute("INSERT INTO connections (id, user_id, friend_id) VALUES (?1, ?2, ?3)", [&uuid(), &alice, &carol])
        .unwrap();
    for (db, token) in [("phone.db", &p.phone), ("bob.db", &bob_phone)] {
        let status = sync(db, token);
        assert_eq!((status["failed"].as_u64(), status["pending"].as_u64()), (Some(0), Some(0)), "{db}: {status}");
    }
    sync("carol.db", &carol_tablet);

    // Carol is in Sunday only; Bob in both.
    let formations_of = |db: &rusqlite::Connection| names(db, "SELECT name FROM formations ORDER BY name");
    assert_eq!(formations_of(&carol_db), ["Sunday diamond"]);
    assert_eq!(names(&carol_db, "SELECT name FROM groups ORDER BY name"), ["Sunday"]);
    assert_eq!(names(&carol_db, "SELECT user_id FROM group_members ORDER BY user_id").len(), 3, "Sunday's members");
    assert_eq!(names(&carol_db, "SELECT id FROM formation_participants").len(), 1);
    sync("bob.db", &bob_phone);
    assert_eq!(formations_of(&bob_db), ["Monday diamond", "Sunday diamond"]);
    // The hidden jump stays with Alice; the shared one reaches Carol, her connection, only.
    let notes = |db: &rusqlite::Connection| names(db, "SELECT notes FROM jump_log ORDER BY notes");
    assert_eq!(notes(&carol_db), ["shared"]);
    assert!(notes(&bob_db).is_empty(), "bob is not alice's connection");

    // Carol, a plain member, forges a formation into Sunday and one into Monday: both are
    // set aside on her tablet with the server's 403, and reach no one.
    for group in [&sunday, &monday] {
        carol_db
            .execute("INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, 'forged')", [&uuid(), group])
            .unwrap();
    }
    let status = sync("carol.db", &carol_tablet);
    assert_eq!(status["failed"], 2, "{status}");
    let path = p.env.path("carol.db").display().to_string();
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &path, "--json"]).stdout).unwrap();
    for failed in queue["failed"].as_array().unwrap() {
        assert_eq!(failed["status"], 403, "{queue}");
        assert!(failed["message"].as_str().unwrap().contains("write rule"), "{queue}");
    }
    sync("bob.db", &bob_phone);
    assert_eq!(formations_of(&bob_db), ["Monday diamond", "Sunday diamond"]);

    // Alice removes Carol from Sunday: its rows leave her tablet, nobody else's.
    let carols: String =
        alice_db.query_row("SELECT id FROM group_members WHERE user_id = ?1", [&carol], |r| r.get(0)).unwrap();
    alice_db.execute("DELETE FROM group_members WHERE id = ?1", [&carols]).unwrap();
    p.sync_phone();
    sync("carol.db", &carol_tablet);
    assert_eq!(formations_of(&carol_db), ["forged", "forged"], "only her own refused rows remain");
    assert!(names(&carol_db, "SELECT name FROM groups").is_empty());
    assert!(names(&carol_db, "SELECT id FROM group_members").is_empty());
    assert!(names(&carol_db, "SELECT id FROM formation_participants").is_empty());
    assert_eq!(notes(&carol_db), ["shared"], "the connection still holds");
    sync("bob.db", &bob_phone);
    assert_eq!(formations_of(&bob_db), ["Monday diamond", "Sunday diamond"]);
    assert_eq!(names(&bob_db, "SELECT id FROM group_members").len(), 3, "Sunday's two and Monday's one");

    // Carol's tablet is revoked: its next sync is refused.
    let devices: serde_json::Value =
        serde_json::from_str(&p.env.ok_all(&["device", "list", "--user", "carol", "--json", "-c", &config])).unwrap();
    let id = devices["devices"][0]["id"].as_str().unwrap().to_owned();
    p.env.ok_all(&["device", "revoke", &id, "-c", &config]);
    let out = p.env.run(&["sync", "--db", &path, "--server", &p.server.url, "--token", &carol_tablet]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unauthorized (401)"), "{err}");
}

#[test]
fn three_jumpers_in_two_groups_on_the_embedded_store() {
    three_jumpers_in_two_groups(Env::with_sharing());
}

#[test]
fn three_jumpers_in_two_groups_on_postgres() {
    three_jumpers_in_two_groups(Env::postgres_with_sharing());
}

/// `ferry sync --subscribe`: within what the rules allow, a device reads only the rows its
/// subscriptions cover; rows move in and out as subscriptions are added and as they expire
/// (`--subscription-ttl`); a bad subscription is refused naming it.
fn subscriptions_narrow_what_a_device_reads(env: Env) {
    let p = Pair::in_env(env);
    let bob = p.env.add_user("bob");
    let token = p.env.token("bob", "tablet");
    let phone = p.env.db("phone.db");
    let (sunday, monday) = (uuid(), uuid());
    for (group, name) in [(&sunday, "Sunday"), (&monday, "Monday")] {
        phone.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, ?2, ?3)", [group, name, &p.user]).unwrap();
        for (user, role) in [(&p.user, "owner"), (&bob, "member")] {
            phone
                .execute(
                    "INSERT INTO group_members (id, group_id, user_id, role) VALUES (?1, ?2, ?3, ?4)",
                    [&uuid(), group, user, role],
                )
                .unwrap();
        }
        phone
            .execute(
                "INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, ?3)",
                [&uuid(), group, &format!("{name} diamond")],
            )
            .unwrap();
    }
    let status = p.sync_phone();
    assert_eq!(status["failed"], 0, "{status}");
    let path = p.env.path("tablet.db").display().to_string();
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", "--db", &path, "--server", &p.server.url, "--token", &token];
        args.extend_from_slice(extra);
        p.env.run(&args)
    };
    let on = |group: &str| format!("formations WHERE group_id = '{group}'");
    let db = p.env.db("tablet.db");
    assert!(sync(&[]).status.success());
    assert_eq!(formations(&db), ["Monday diamond", "Sunday diamond"], "both groups without subscriptions");

    // Subscribing to Sunday's formations takes Monday's away (locally), and keeps groups whole.
    let out = sync(&["--subscribe", &on(&sunday)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(formations(&db), ["Sunday diamond"]);
    assert_eq!(names(&db, "SELECT name FROM groups ORDER BY name"), ["Monday", "Sunday"]);
    // A new formation in Monday does not come; one in Sunday does.
    for (group, name) in [(&sunday, "Sunday star"), (&monday, "Monday star")] {
        phone
            .execute("INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, ?3)", [&uuid(), group, name])
            .unwrap();
    }
    p.sync_phone();
    assert!(sync(&[]).status.success(), "the subscription stays without being named");
    assert_eq!(formations(&db), ["Sunday diamond", "Sunday star"]);

    // Adding Monday brings its rows, old and new.
    assert!(sync(&["--subscribe", &on(&monday)]).status.success());
    assert_eq!(formations(&db), ["Monday diamond", "Monday star", "Sunday diamond", "Sunday star"]);

    // Sunday's subscription expires (not named for longer than its time to live): its rows go.
    assert!(sync(&["--subscribe", &on(&monday), "--subscription-ttl", "1ms"]).status.success());
    assert_eq!(formations(&db), ["Monday diamond", "Monday star"]);

    // A subscription may hold a subquery: the groups Bob owns (a new one of his own).
    let tuesday = uuid();
    db.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'Tuesday', ?2)", [&tuesday, &bob]).unwrap();
    db.execute(
        "INSERT INTO group_members (id, group_id, user_id, role) VALUES (?1, ?2, ?3, 'owner')",
        [&uuid(), &tuesday, &bob],
    )
    .unwrap();
    db.execute("INSERT INTO formations (id, group_id, name) VALUES (?1, ?2, 'Tuesday diamond')", [&uuid(), &tuesday])
        .unwrap();
    let owned =
        "formations WHERE group_id IN (SELECT group_id FROM group_members WHERE user_id = :user AND role = 'owner')";
    let out = sync(&["--subscribe", owned, "--subscription-ttl", "1ms"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(formations(&db), ["Tuesday diamond"], "only the formations of groups bob owns");
    assert!(sync(&["--subscribe", &on(&monday)]).status.success());
    assert_eq!(formations(&db), ["Monday diamond", "Monday star", "Tuesday diamond"]);
    assert!(sync(&["--subscribe", &on(&monday), "--subscription-ttl", "1ms"]).status.success());
    assert_eq!(formations(&db), ["Monday diamond", "Monday star"]);

    // A subscription the server cannot take is refused, naming it, and changes nothing.
    let out = sync(&["--subscribe", "formations WHERE colour = 'red'"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subscription 'formations WHERE colour = 'red''") && err.contains("colour"), "{err}");
    assert_eq!(formations(&db), ["Monday diamond", "Monday star"]);
    assert!(sync(&[]).status.success(), "the refused subscription was not kept");
    assert_eq!(formations(&db), ["Monday diamond", "Monday star"]);
    // The rest of the users' replicas are whole.
    p.sync_laptop();
    assert_eq!(formations(&p.env.db("laptop.db")).len(), 4, "alice's groups' formations, not bob's own");
}

#[test]
fn subscriptions_narrow_what_a_device_reads_on_the_embedded_store() {
    subscriptions_narrow_what_a_device_reads(Env::with_sharing());
}

#[test]
fn subscriptions_narrow_what_a_device_reads_on_postgres() {
    subscriptions_narrow_what_a_device_reads(Env::postgres_with_sharing());
}
