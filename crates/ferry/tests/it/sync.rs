//! Replicas converging through a real server.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::*;

#[test]
fn two_devices_converge_through_inserts_updates_and_deletes() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let laptop = p.env.db("laptop.db");
    let a = insert_jump(&phone, &p.user, 1, "from phone");
    let b = insert_jump(&phone, &p.user, 2, "to be deleted");
    let c = insert_jump(&laptop, &p.user, 3, "from laptop");
    p.sync_phone();
    p.sync_laptop();
    p.sync_phone();
    assert_eq!(jumps(&phone).len(), 3);
    assert_eq!(jumps(&phone), jumps(&laptop));

    laptop.execute("UPDATE jump_log SET notes = 'edited on laptop' WHERE id = ?1", [&a]).unwrap();
    phone.execute("DELETE FROM jump_log WHERE id = ?1", [&b]).unwrap();
    phone.execute("UPDATE jump_log SET jump_number = 30 WHERE id = ?1", [&c]).unwrap();
    p.sync_laptop();
    p.sync_phone();
    let status = p.sync_laptop();
    let rows = jumps(&laptop);
    assert_eq!(rows, jumps(&phone));
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().any(|r| r.0 == a && r.2.as_deref() == Some("edited on laptop")));
    assert!(rows.iter().any(|r| r.0 == c && r.1 == 30));
    assert!(!rows.iter().any(|r| r.0 == b), "the delete reached the laptop");
    assert_eq!(status["pending"], 0);
}

#[test]
fn concurrent_edits_to_different_columns_of_one_row_both_survive() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let laptop = p.env.db("laptop.db");
    let id = insert_jump(&phone, &p.user, 1, "original");
    p.sync_phone();
    p.sync_laptop();
    phone.execute("UPDATE jump_log SET notes = 'notes from phone' WHERE id = ?1", [&id]).unwrap();
    laptop.execute("UPDATE jump_log SET dropzone = 'Empuriabrava' WHERE id = ?1", [&id]).unwrap();
    p.sync_phone();
    p.sync_laptop();
    p.sync_phone();
    let expected = vec![(id, 1, Some("notes from phone".to_owned()), Some("Empuriabrava".to_owned()))];
    assert_eq!(jumps(&phone), expected);
    assert_eq!(jumps(&laptop), expected);
}

#[test]
fn the_same_column_ends_with_the_same_winner_on_both_sides() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let laptop = p.env.db("laptop.db");
    let id = insert_jump(&phone, &p.user, 1, "original");
    p.sync_phone();
    p.sync_laptop();
    laptop.execute("UPDATE jump_log SET notes = 'laptop wrote first' WHERE id = ?1", [&id]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    phone.execute("UPDATE jump_log SET notes = 'phone wrote later' WHERE id = ?1", [&id]).unwrap();
    // The earlier writer syncs last: the later write still wins everywhere.
    p.sync_phone();
    p.sync_laptop();
    p.sync_phone();
    assert_eq!(jumps(&phone), jumps(&laptop));
    assert_eq!(jumps(&phone)[0].2.as_deref(), Some("phone wrote later"));
    // The overwritten value is not lost: the server's conflict log holds both versions.
    let raw = p.env.run(&["conflicts", "list", "--json", "-c", &p.env.config()]);
    assert!(raw.status.success());
    let log: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    let c = &log[0];
    assert_eq!(c["fields"], serde_json::json!(["notes"]));
    assert_eq!(c["stored"]["values"]["notes"], "phone wrote later");
    assert_eq!(c["incoming"]["values"]["notes"], "laptop wrote first");
    assert_eq!(c["winner"]["notes"], "stored");
    assert_eq!(c["resolved_by"], "lww");
    let shown = p.env.ok(&["conflicts", "show", &c["id"].to_string(), "-c", &p.env.config()]);
    assert!(shown.contains("laptop wrote first"), "{shown}");
    let missing = p.env.run(&["conflicts", "show", "999", "-c", &p.env.config()]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no conflict with id 999"));
}

#[test]
fn a_local_value_overwritten_by_a_newer_remote_one_before_it_was_pushed_is_kept_as_a_conflict() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let laptop = p.env.db("laptop.db");
    let id = insert_jump(&phone, &p.user, 1, "original");
    p.sync_phone();
    p.sync_laptop();
    laptop.execute("UPDATE jump_log SET notes = 'laptop wrote first' WHERE id = ?1", [&id]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    phone.execute("UPDATE jump_log SET notes = 'phone wrote later' WHERE id = ?1", [&id]).unwrap();
    p.sync_phone();
    // The laptop pulls before it pushes (`--hydrate`: pull only).
    assert_eq!(p.hydrate_laptop()["conflicts"], 1);
    let kept: (String, String) = laptop
        .query_row("SELECT local_value, remote_value FROM _ferry_conflicts", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(kept, ("\"laptop wrote first\"".to_owned(), "\"phone wrote later\"".to_owned()));
    assert_eq!(p.sync_laptop()["conflicts"], 1);
    assert_eq!(jumps(&phone), jumps(&laptop));
    let db = p.env.path("laptop.db").display().to_string();
    let view: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["conflicts", "list", "--db", &db, "--json"]).stdout).unwrap();
    assert_eq!(view["settled"][0]["field"], "notes", "{view}");
    assert_eq!(view["settled"][0]["resolved_by"], "newest-wins");
}

#[test]
fn delete_wins_over_a_concurrent_update_and_a_reinsert_brings_the_key_back() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let laptop = p.env.db("laptop.db");
    let id = insert_jump(&phone, &p.user, 1, "original");
    p.sync_phone();
    p.sync_laptop();
    phone.execute("DELETE FROM jump_log WHERE id = ?1", [&id]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    laptop.execute("UPDATE jump_log SET notes = 'late edit' WHERE id = ?1", [&id]).unwrap();
    p.sync_phone();
    p.sync_laptop();
    p.sync_phone();
    assert!(jumps(&phone).is_empty() && jumps(&laptop).is_empty(), "delete wins over the concurrent update");

    laptop
        .execute(
            "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, notes) VALUES (?1, ?2, 7, '2026-11-22T09:00:00Z', 'back again')",
            [&id, &p.user],
        )
        .unwrap();
    p.sync_laptop();
    p.sync_phone();
    assert_eq!(jumps(&phone), vec![(id.clone(), 7, Some("back again".into()), None)]);
    assert_eq!(jumps(&phone), jumps(&laptop));
}

#[test]
fn writes_by_the_sqlite3_shell_while_ferry_is_not_running_are_captured() {
    let p = Pair::new();
    let id = uuid();
    let sql = format!(
        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, notes) VALUES ('{id}', '{}', 5, '2026-11-21T12:00:00Z', 'typed in the shell');",
        p.user
    );
    // Debian's sqlite3 shell (SQLite 3.40) when present, else Python's sqlite3 module (also 3.40).
    let path = p.env.path("phone.db");
    let status = match Command::new("sqlite3").arg(&path).arg(&sql).stderr(Stdio::inherit()).status() {
        Ok(s) => s,
        Err(_) => Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
            .arg(&path)
            .arg(&sql)
            .status()
            .unwrap(),
    };
    assert!(status.success());
    let before = p.env.run(&["status", "--db", &path.display().to_string(), "--json"]);
    let before: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(before["pending"], 1, "the shell's write waits in the outbox");
    p.sync_phone();
    p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")), vec![(id, 5, Some("typed in the shell".into()), None)]);
}

#[test]
fn edits_made_while_the_server_is_down_sync_after_it_restarts() {
    let mut p = Pair::new();
    let phone = p.env.db("phone.db");
    let id = insert_jump(&phone, &p.user, 1, "before outage");
    p.sync_phone();
    p.server.kill();
    phone.execute("UPDATE jump_log SET notes = 'edited offline' WHERE id = ?1", [&id]).unwrap();
    let offline = insert_jump(&phone, &p.user, 2, "inserted offline");
    let out = p.env.run(&["sync", "--db", &p.env.path("phone.db").display().to_string(), "--token", &p.phone]);
    assert!(!out.status.success(), "sync fails while the server is down");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach server"), "{err}");

    // Restart on the same data directory (new port) and sync both replicas.
    let server = p.env.serve();
    p.server = server;
    p.sync_phone();
    p.sync_laptop();
    let rows = jumps(&p.env.db("laptop.db"));
    assert_eq!(rows, jumps(&phone));
    assert!(rows.iter().any(|r| r.0 == id && r.2.as_deref() == Some("edited offline")));
    assert!(rows.iter().any(|r| r.0 == offline));
}

/// Runs `ferry sync` repeatedly, killing it with SIGKILL after a growing delay, until a run
/// finishes by itself. Returns how many runs were killed.
fn sync_under_sigkill(env: &Env, server: &Server, db: &str, token: &str, page_rows: &str) -> usize {
    let mut kills = 0;
    let mut delay_ms = 20;
    loop {
        let mut child = Command::new(FERRY)
            .args(["sync", "--db", &env.path(db).display().to_string(), "--server", &server.url, "--token", token])
            .args(["--page-rows", page_rows])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "an unkilled sync must succeed");
                return kills;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                delay_ms += 15;
            }
        }
    }
}

#[test]
fn a_client_killed_with_sigkill_mid_sync_loses_nothing_and_applies_nothing_twice() {
    let p = Pair::new();
    let n = 20_000;
    {
        let mut phone = p.env.db("phone.db");
        let tx = phone.transaction().unwrap();
        for i in 0..n {
            insert_jump(&tx, &p.user, i, "bulk");
        }
        tx.commit().unwrap();
    }
    let killed_pushing = sync_under_sigkill(&p.env, &p.server, "phone.db", &p.phone, "5000");
    let killed_pulling = sync_under_sigkill(&p.env, &p.server, "laptop.db", &p.laptop, "500");
    assert!(
        killed_pushing > 0 && killed_pulling > 0,
        "the kills must land mid-sync ({killed_pushing}, {killed_pulling})"
    );

    let phone_status = p.sync_phone();
    let laptop_status = p.sync_laptop();
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));
    assert_eq!(jumps(&phone).len(), n as usize);
    assert_eq!(jumps(&phone), jumps(&laptop), "nothing lost");
    assert_eq!(phone_status["pending"], 0);
    assert_eq!(laptop_status["pending"], 0, "applying pulled rows creates no local changes");
    // The server's feed has one entry per row: no change was applied twice, however many
    // times a killed push was repeated.
    let resp: serde_json::Value = p
        .server
        .http()
        .get(format!("{}/v1/pull?cursor=0&limit=10000", p.server.url))
        .bearer_auth(&p.laptop)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["rows"].as_array().unwrap().len(), 10_000);
    let resp: serde_json::Value = p
        .server
        .http()
        .get(format!("{}/v1/pull?cursor={}&limit=10000", p.server.url, resp["cursor"].as_str().unwrap()))
        .bearer_auth(&p.laptop)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(resp["rows"].as_array().unwrap().len(), 10_000);
    assert_eq!(resp["cursor"], n.to_string(), "feed sequence = number of rows: nothing applied twice");
}

#[test]
fn a_device_does_not_pull_back_the_rows_it_just_pushed() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    for i in 0..3 {
        insert_jump(&phone, &p.user, i, "mine");
    }
    let db = p.env.path("phone.db").display().to_string();
    let args = ["sync", "--db", &db, "--server", &p.server.url, "--token", &p.phone, "--json"];
    let out = p.env.run(&args);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pushed"], 3);
    assert_eq!(report["pulled"], 0, "{report}");
    // Once another device has written, the cursor no longer matches and rows flow again.
    insert_jump(&p.env.db("laptop.db"), &p.user, 9, "laptop's");
    p.sync_laptop();
    insert_jump(&phone, &p.user, 10, "mine again");
    let out = p.env.run(&args);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pushed"], 1);
    assert_eq!(report["pulled"], 2, "the laptop's row and this push's echo: {report}");
    p.sync_laptop();
    assert_eq!(jumps(&phone), jumps(&p.env.db("laptop.db")));
}

/// Two devices rename one group of a `manual` table while apart (the laptop first, the
/// phone later) and both sync: one open conflict. Returns the pair and the group's id.
pub(crate) fn manual_group_conflict() -> (Pair, String) {
    let (p, g) = manual_group_renames();
    p.sync_laptop();
    (p, g)
}

/// As [`manual_group_conflict`], up to the phone's sync: the laptop's rename is not pushed.
fn manual_group_renames() -> (Pair, String) {
    let env = Env::new();
    env.table_options("groups", "conflict = \"manual\"");
    let p = Pair::in_env(env);
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));
    let g = uuid();
    phone.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'Sunday 4-way', ?2)", [&g, &p.user]).unwrap();
    p.sync_phone();
    p.sync_laptop();
    laptop.execute("UPDATE groups SET name = 'Laptop name' WHERE id = ?1", [&g]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    phone.execute("UPDATE groups SET name = 'Phone name' WHERE id = ?1", [&g]).unwrap();
    p.sync_phone();
    (p, g)
}

#[test]
fn a_manual_conflict_is_resolved_from_the_cli_and_the_choice_reaches_every_device() {
    let (p, g) = manual_group_conflict();
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));
    let config = p.env.config();
    let list = p.env.run(&["conflicts", "list", "--open", "--json", "-c", &config]);
    let open: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["strategy"], "manual");
    let id = open[0]["id"].to_string();
    // Keep the laptop's version, which lost provisionally (its clock is older).
    assert_eq!(open[0]["incoming"]["values"]["name"], "Laptop name");
    let out = p.env.ok(&["conflicts", "resolve", &id, "--use", "incoming", "-c", &config]);
    assert!(out.contains("kept the incoming version of name"), "{out}");
    p.sync_phone();
    p.sync_laptop();
    for db in [&phone, &laptop] {
        let name: String = db.query_row("SELECT name FROM groups WHERE id = ?1", [&g], |r| r.get(0)).unwrap();
        assert_eq!(name, "Laptop name");
    }
    let again = p.env.run(&["conflicts", "resolve", &id, "--use", "stored", "-c", &config]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already resolved"));
}

#[test]
fn an_unknown_conflict_strategy_is_refused_by_name() {
    let env = Env::new();
    env.table_options("groups", "conflict = \"first-wins\"");
    let out = env.run(&["serve", "-c", &env.config(), "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[tables.groups] unknown conflict strategy 'first-wins'"), "{err}");
    assert!(err.contains("\"reject-stale\""), "the message lists the strategies: {err}");
}

#[test]
fn conflicts_are_listed_and_resolved_through_the_admin_api_with_an_admin_token_only() {
    let (p, g) = manual_group_conflict();
    let ops = p.env.ok(&["token", "create", "--user", "alice", "--device", "ops", "--admin", "-c", &p.env.config()]);
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));

    let http = p.server.http();
    let url = |path: &str| format!("{}/v1/admin/conflicts{path}", p.server.url);
    let resp = http.get(url("")).bearer_auth(&p.phone).send().unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: serde_json::Value = resp.json().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("ferry token create --admin"), "{body}");

    let open: serde_json::Value = http.get(url("?status=open")).bearer_auth(&ops).send().unwrap().json().unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    let id = open[0]["id"].as_i64().unwrap();
    assert_eq!(http.get(url("?status=sideways")).bearer_auth(&ops).send().unwrap().status().as_u16(), 400);
    assert_eq!(http.get(url(&format!("/{id}"))).bearer_auth(&ops).send().unwrap().status().as_u16(), 200);
    assert_eq!(http.get(url("/99999")).bearer_auth(&ops).send().unwrap().status().as_u16(), 404);

    let resolve = |body: &str| {
        let resp = http.post(url(&format!("/{id}/resolve"))).bearer_auth(&ops).body(body.to_owned()).send().unwrap();
        (resp.status().as_u16(), resp.json::<serde_json::Value>().unwrap())
    };
    assert_eq!(resolve(r#"{"use": "sideways"}"#).0, 400);
    let (status, done) = resolve(r#"{"use": "incoming"}"#);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["resolved_by"], "manual");
    let (status, again) = resolve(r#"{"use": "stored"}"#);
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("conflict")), "{again}");
    let resolved: serde_json::Value =
        http.get(url("?status=resolved")).bearer_auth(&ops).send().unwrap().json().unwrap();
    assert_eq!(resolved.as_array().unwrap().len(), 1, "kept for audit");

    p.sync_phone();
    p.sync_laptop();
    for db in [&phone, &laptop] {
        let name: String = db.query_row("SELECT name FROM groups WHERE id = ?1", [&g], |r| r.get(0)).unwrap();
        assert_eq!(name, "Laptop name");
    }
}

/// `reject-stale`: a change made on an older version is refused with 409 and the current
/// version, the rest of the batch applies, and the device keeps its change, marked
/// conflicted in `ferry status`, until someone there settles it.
#[test]
fn a_stale_change_is_refused_kept_on_its_device_and_settled_there() {
    let env = Env::new();
    env.table_options("jump_log", "conflict = \"reject-stale\"");
    let p = Pair::in_env(env);
    let id = insert_jump(&p.env.db("phone.db"), &p.user, 1, "first");
    p.sync_phone();
    p.sync_laptop();
    p.env.db("phone.db").execute("UPDATE jump_log SET notes = 'from phone' WHERE id = ?1", [&id]).unwrap();
    p.sync_phone();
    // The laptop edits the version it has, which is now stale, and adds a new jump.
    let laptop = p.env.db("laptop.db");
    laptop.execute("UPDATE jump_log SET notes = 'from laptop' WHERE id = ?1", [&id]).unwrap();
    let other = insert_jump(&laptop, &p.user, 2, "new");
    let status = p.sync_laptop();
    assert_eq!(status["conflicted"], 1, "{status}");
    let notes = |db: &str, id: &str| -> String {
        p.env.db(db).query_row("SELECT notes FROM jump_log WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    };
    assert_eq!(notes("laptop.db", &id), "from laptop", "the device keeps its change");
    p.sync_phone();
    assert_eq!(notes("phone.db", &id), "from phone", "the stale change was not applied");
    assert_eq!(notes("phone.db", &other), "new", "the rest of the batch applied");
    // The server logged it; syncing again does not push the refused change again.
    let config = p.env.config();
    let list: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["conflicts", "list", "--json", "-c", &config]).stdout).unwrap();
    assert_eq!(list[0]["strategy"], "reject-stale", "{list}");
    let status = p.sync_laptop();
    assert_eq!(status["conflicted"], 1);
    // On the laptop, a person keeps the local change: it is pushed on top of the current version.
    let db = p.env.path("laptop.db").display().to_string();
    let refused: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["conflicts", "refused", "--db", &db, "--json"]).stdout).unwrap();
    assert_eq!(refused[0]["current"]["values"]["notes"], "from phone", "{refused}");
    assert_eq!(refused[0]["local"]["values"]["notes"], "from laptop", "{refused}");
    let view: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["conflicts", "list", "--db", &db, "--json"]).stdout).unwrap();
    assert_eq!(view["open"][0]["key"], id.as_str(), "the replica's own view lists it as open: {view}");
    let rid = refused[0]["id"].to_string();
    p.env.ok(&["conflicts", "settle", "--db", &db, &rid, "--keep", "local"]);
    let status = p.sync_laptop();
    assert_eq!(status["conflicted"], 0, "{status}");
    p.sync_phone();
    assert_eq!(notes("phone.db", &id), "from laptop");
    assert_eq!(notes("laptop.db", &id), "from laptop");
}

/// `authoritative`: the on-site main (`ferry token create --role main`) wins conflicts on
/// its table whatever the clocks say (the seed's "main wins" for devices, as the example
/// configures it).
#[test]
fn the_authority_role_wins_conflicts_on_an_authoritative_table() {
    // The example's devices table is `authoritative` with authority `main`.
    let p = Pair::new();
    let main =
        p.env.ok(&["token", "create", "--user", "alice", "--device", "main", "--role", "main", "-c", &p.env.config()]);
    p.env.sync(&p.server, "main.db", &main);
    let id = uuid();
    p.env
        .db("phone.db")
        .execute(
            "INSERT INTO devices (id, user_id, kind, name) VALUES (?1, ?2, 'camera', 'rig')",
            rusqlite::params![id, p.user],
        )
        .unwrap();
    p.sync_phone();
    p.env.sync(&p.server, "main.db", &main);
    // Main renames first; the phone renames later (a later clock) without having seen it.
    p.env.db("main.db").execute("UPDATE devices SET name = 'Main name' WHERE id = ?1", [&id]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    p.env.db("phone.db").execute("UPDATE devices SET name = 'Phone name' WHERE id = ?1", [&id]).unwrap();
    p.sync_phone();
    p.env.sync(&p.server, "main.db", &main);
    p.sync_phone();
    let name = |db: &str| -> String {
        p.env.db(db).query_row("SELECT name FROM devices WHERE id = ?1", [&id], |r| r.get(0)).unwrap()
    };
    assert_eq!(name("main.db"), "Main name");
    assert_eq!(name("phone.db"), "Main name");
    let bad =
        p.env.run(&["token", "create", "--user", "alice", "--device", "x", "--role", "a b", "-c", &p.env.config()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("role 'a b'"));
}

/// On a table whose strategy the server decides (here `manual`), a pull that meets a local
/// change not yet pushed does not settle it on the device: the pulled version waits, the
/// push goes as made, and the server opens the conflict.
#[test]
fn a_pull_before_the_push_leaves_a_manual_conflict_to_the_server() {
    let (p, g) = manual_group_renames();
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));
    // The laptop pulls before it pushes (`--hydrate`: pull only).
    assert_eq!(p.hydrate_laptop()["conflicts"], 0, "not settled on the device");
    let name = |db: &rusqlite::Connection| -> String {
        db.query_row("SELECT name FROM groups WHERE id = ?1", [&g], |r| r.get(0)).unwrap()
    };
    assert_eq!(name(&laptop), "Laptop name", "the local change stays as made until the push is answered");
    p.sync_laptop();
    let open: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["conflicts", "list", "--open", "--json", "-c", &p.env.config()]).stdout)
            .unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "the server opened the conflict: {open}");
    assert_eq!(open[0]["fields"], serde_json::json!(["name"]));
    p.sync_phone();
    assert_eq!(name(&phone), name(&laptop), "both show the provisional winner");
}

/// `--seed` pushes only, `--hydrate` pulls only, `--tables` syncs only the tables named, with
/// a cursor of its own.
#[test]
fn seed_hydrate_and_selective_tables() {
    let p = Pair::new();
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));
    let run = |db: &str, token: &str, extra: &[&str]| -> serde_json::Value {
        let path = p.env.path(db).display().to_string();
        let mut args = vec!["sync", "--db", &path, "--server", &p.server.url, "--token", token, "--json"];
        args.extend_from_slice(extra);
        let out = p.env.run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    insert_jump(&laptop, &p.user, 1, "on the laptop");
    insert_jump(&phone, &p.user, 2, "on the phone");
    let g = uuid();
    phone.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'Sunday', ?2)", [&g, &p.user]).unwrap();
    // Seed: the phone's changes go up, nothing comes down.
    let r = run("phone.db", &p.phone, &["--seed"]);
    assert_eq!((r["pushed"].as_u64(), r["pulled"].as_u64()), (Some(2), Some(0)), "{r}");
    // Hydrate: the laptop's change stays local, the phone's come down.
    let r = run("laptop.db", &p.laptop, &["--hydrate"]);
    assert_eq!((r["pushed"].as_u64(), r["pulled"].as_u64()), (Some(0), Some(2)), "{r}");
    // Only groups: the laptop's pending jump stays pending; a new group comes down.
    let h = uuid();
    phone.execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'Monday', ?2)", [&h, &p.user]).unwrap();
    insert_jump(&phone, &p.user, 3, "not selected");
    run("phone.db", &p.phone, &["--seed"]);
    let r = run("laptop.db", &p.laptop, &["--tables", "groups"]);
    assert_eq!(
        (r["pushed"].as_u64(), r["pulled"].as_u64()),
        (Some(0), Some(2)),
        "both groups, from its own cursor: {r}"
    );
    assert_eq!(jumps(&laptop).len(), 2, "the third jump was not selected");
    // A full sync catches everything up.
    p.sync_laptop();
    p.sync_phone();
    assert_eq!(jumps(&laptop), jumps(&phone));
    let bad = p.env.run(&[
        "sync",
        "--db",
        &p.env.path("laptop.db").display().to_string(),
        "--server",
        &p.server.url,
        "--token",
        &p.laptop,
        "--tables",
        "nope",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("table 'nope'"));
}

/// A new device's first sync takes the server's snapshot of what it may read, in chunks
/// checked by their SHA-256. Killed (SIGKILL) mid-download, the next sync resumes at the chunk
/// it lacked, and what was written after the snapshot comes from the pull that follows it.
#[test]
fn a_new_device_hydrates_from_a_snapshot_and_resumes_where_it_was_killed() {
    let p = Pair::new();
    let n = 22_000;
    {
        let mut phone = p.env.db("phone.db");
        let tx = phone.transaction().unwrap();
        for i in 0..n {
            insert_jump(&tx, &p.user, i, "bulk");
        }
        tx.commit().unwrap();
    }
    p.sync_phone();
    let tablet = p.env.token("alice", "tablet");
    let db = p.env.path("tablet.db").display().to_string();
    let hydrate = |server: &str| {
        Command::new(FERRY)
            .args(["sync", "--hydrate", "--db", &db, "--server", server, "--token", &tablet, "--json"])
            .current_dir(p.env.path(""))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Slowed down, so that the kill lands between chunks 2 and 5 of 5.
    let proxy = crate::proxy::Proxy::start(&p.server.url);
    proxy.set(crate::proxy::Fault::Delay(Duration::from_millis(40)));
    let mut child = hydrate(&proxy.url);
    let applied = |db: &str| -> Option<(String, u64)> {
        let c = rusqlite::Connection::open(db).ok()?;
        c.busy_timeout(Duration::from_secs(5)).ok()?;
        let v: String = c.query_row("SELECT value FROM _ferry_meta WHERE key = 'snapshot'", [], |r| r.get(0)).ok()?;
        let mut parts = v.split(' ');
        Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while applied(&db).is_none_or(|(_, next)| next < 2) {
        assert!(std::time::Instant::now() < deadline, "the hydrate never applied two chunks");
        assert!(child.try_wait().unwrap().is_none(), "the hydrate ended before it was killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (id, done) = applied(&db).unwrap();
    assert!((2..5).contains(&done), "killed after {done} of 5 chunks");

    // Written after the snapshot: an edit of a row the tablet holds already, and a new row.
    let phone = p.env.db("phone.db");
    phone.execute("UPDATE jump_log SET notes = 'edited later' WHERE jump_number = 0", []).unwrap();
    insert_jump(&phone, &p.user, n, "new later");
    p.sync_phone();

    proxy.set(crate::proxy::Fault::Pass);
    let out = hydrate(&proxy.url).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["from_snapshot"], true, "{r}");
    assert_eq!(r["snapshot_chunks"], 5 - done, "only the chunks the tablet lacked: {r}");
    assert!(applied(&db).is_none(), "the snapshot is done with");
    let tablet_db = p.env.db("tablet.db");
    assert_eq!(jumps(&tablet_db), jumps(&phone), "every row, the later ones included");
    let notes: String =
        tablet_db.query_row("SELECT notes FROM jump_log WHERE jump_number = 0", [], |r| r.get(0)).unwrap();
    assert_eq!(notes, "edited later");
    // Done with it: the server removed its chunks.
    let gone = p.server.http().get(format!("{}/v1/snapshot/{id}", p.server.url)).bearer_auth(&tablet).send().unwrap();
    assert_eq!(gone.status(), 404);

    // Page by page when asked (or when the server takes no snapshot).
    let watch = p.env.token("alice", "watch");
    let w = p.env.path("watch.db").display().to_string();
    let out = p.env.run(&["sync", "--no-snapshot", "--db", &w, "--server", &p.server.url, "--token", &watch, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["from_snapshot"].as_bool(), r["pulled"].as_u64()), (Some(false), Some(n as u64 + 1)), "{r}");
}
