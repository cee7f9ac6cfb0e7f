//! Server peering (issue 17): an on-site MAIN and a CLOUD server, each on its own PostgreSQL
//! cluster, with devices on both, linked by MAIN's `[peers.cloud]` section.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::monitoring::{sample, scrape};
use crate::proxy::{Fault, Proxy};
use crate::{Env, Server, insert_jump, jumps, uuid};

/// One server of the pair: its directory, config and process.
pub(crate) struct Site {
    pub env: Env,
    pub server: Server,
    /// An admin token of this server.
    pub admin: String,
}

impl Site {
    pub fn psql(&self, sql: &str) -> String {
        self.env.psql(sql).trim().to_owned()
    }

    fn status(&self) -> Value {
        let out = self.env.ok_all(&["peer", "status", "--json", "-c", &self.env.config()]);
        serde_json::from_str(&out).unwrap()
    }

    /// `GET path` on this server with its admin token.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.server.http().get(format!("{}{path}", self.server.url)).bearer_auth(&self.admin).send().unwrap()
    }
}

/// Waits until `f` holds, for at most 30 s; panics naming `what` otherwise.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_role(env: &Env, role: &str) {
    let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
    let config = config.replacen("[server]\n", &format!("[server]\nrole = \"{role}\"\n"), 1);
    std::fs::write(env.path("ferry.toml"), config).unwrap();
}

fn add_peer(env: &Env, url: &str, token: &str, extra: &str) {
    let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
    let section = format!(
        "\n[peers.cloud]\nurl = \"{url}\"\ntoken = \"{token}\"\ninterval = \"1s\"\nbackoff = \"200ms,500ms\"\n{extra}\n"
    );
    std::fs::write(env.path("ferry.toml"), config + &section).unwrap();
}

fn admin(env: &Env) -> String {
    env.add_user("ops");
    env.ok(&["token", "create", "--user", "ops", "--device", "console", "--admin", "-c", &env.config()])
}

/// CLOUD running, with a token for MAIN (`--role main`); then MAIN linked to `url` (CLOUD's
/// address, or a proxy's in front of it when `via` gives one).
fn pair(via: Option<&dyn Fn(&str) -> String>, main_extra: &str) -> (Site, Site) {
    pair_with(via, main_extra, &|schema| schema.to_owned())
}

/// As [`pair`], MAIN's schema changed by `main_schema` first.
fn pair_with(
    via: Option<&dyn Fn(&str) -> String>,
    main_extra: &str,
    main_schema: &dyn Fn(&str) -> String,
) -> (Site, Site) {
    pair_in(Env::postgres(), via, main_extra, main_schema)
}

/// As [`pair_with`], MAIN in `main_env` (its store: PostgreSQL or the embedded one).
pub(crate) fn pair_in(
    main_env: Env,
    via: Option<&dyn Fn(&str) -> String>,
    main_extra: &str,
    main_schema: &dyn Fn(&str) -> String,
) -> (Site, Site) {
    let cloud_env = Env::postgres_other();
    set_role(&cloud_env, "cloud");
    let cloud_admin = admin(&cloud_env);
    cloud_env.add_user("dropzone");
    let link_token = cloud_env.ok(&[
        "token",
        "create",
        "--user",
        "dropzone",
        "--device",
        "main",
        "--role",
        "main",
        "-c",
        &cloud_env.config(),
    ]);
    let cloud_server = cloud_env.serve();
    let url = via.map_or_else(|| cloud_server.url.clone(), |f| f(&cloud_server.url));
    set_role(&main_env, "main");
    add_peer(&main_env, &url, &link_token, "");
    let config = std::fs::read_to_string(main_env.path("ferry.toml")).unwrap();
    std::fs::write(main_env.path("ferry.toml"), config + main_extra).unwrap();
    let schema = std::fs::read_to_string(main_env.path("schema.sql")).unwrap();
    std::fs::write(main_env.path("schema.sql"), main_schema(&schema)).unwrap();
    let main_admin = admin(&main_env);
    let main_server = main_env.serve();
    (
        Site { env: main_env, server: main_server, admin: main_admin },
        Site { env: cloud_env, server: cloud_server, admin: cloud_admin },
    )
}

fn user_id(site: &Site, name: &str) -> String {
    site.psql(&format!("SELECT id FROM _ferry_users WHERE name = '{name}'"))
}

#[test]
fn main_and_cloud_sync_both_ways_and_nothing_travels_back() {
    let (main, cloud) = pair(None, "");
    // Users travel with their ids: ann made on MAIN, bob on CLOUD.
    let ann = main.env.add_user("ann");
    let bob = cloud.env.add_user("bob");
    wait_for("ann on CLOUD", || user_id(&cloud, "ann") == ann);
    wait_for("bob on MAIN", || user_id(&main, "bob") == bob);

    // A device of MAIN writes; CLOUD's PostgreSQL and a device of CLOUD see it.
    let ann_main = main.env.token("ann", "phone");
    let ann_cloud = cloud.env.token("ann", "laptop");
    let phone = main.env.db("phone.db");
    main.env.sync(&main.server, "phone.db", &ann_main);
    let jump = insert_jump(&phone, &ann, 1, "from the drop zone");
    main.env.sync(&main.server, "phone.db", &ann_main);
    wait_for("the jump in CLOUD's PostgreSQL", || {
        cloud.psql(&format!("SELECT notes FROM jump_log WHERE id = '{jump}'")) == "from the drop zone"
    });
    cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
    let laptop = cloud.env.db("laptop.db");
    assert_eq!(jumps(&laptop).len(), 1);

    // CLOUD's own application writes by SQL; MAIN's PostgreSQL and MAIN's device see it.
    let group = uuid();
    cloud.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES ('{group}', 'Sunset 4-way', '{bob}')"));
    wait_for("the group in MAIN's PostgreSQL", || {
        main.psql(&format!("SELECT name FROM groups WHERE id = '{group}'")) == "Sunset 4-way"
    });
    main.env.sync(&main.server, "phone.db", &ann_main);
    let name: String = phone.query_row("SELECT name FROM groups WHERE id = ?1", [&group], |r| r.get(0)).unwrap();
    assert_eq!(name, "Sunset 4-way");

    // A script writes through MAIN's REST API; a laptop on CLOUD edits the jump; MAIN's SQL
    // renames the group: each reaches the other side.
    let rest_jump = uuid();
    let made = main
        .server
        .http()
        .put(format!("{}/v1/rows/jump_log/{rest_jump}", main.server.url))
        .bearer_auth(main.env.token("ann", "script"))
        .header("If-None-Match", "*")
        .json(&json!({"values": {"user_id": ann, "jump_number": 2, "jumped_at": "2026-12-05T10:00:00Z", "notes": "by REST"}}))
        .send()
        .unwrap();
    assert_eq!(made.status(), 201, "{:?}", made.text());
    laptop.execute("UPDATE jump_log SET notes = 'edited at home' WHERE id = ?1", [&jump]).unwrap();
    cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
    main.psql(&format!("UPDATE groups SET name = 'Sunset 8-way' WHERE id = '{group}'"));
    wait_for("the REST jump on CLOUD", || {
        cloud.psql(&format!("SELECT notes FROM jump_log WHERE id = '{rest_jump}'")) == "by REST"
    });
    wait_for("the laptop's edit on MAIN", || {
        main.psql(&format!("SELECT notes FROM jump_log WHERE id = '{jump}'")) == "edited at home"
    });
    wait_for("the rename on CLOUD", || {
        cloud.psql(&format!("SELECT name FROM groups WHERE id = '{group}'")) == "Sunset 8-way"
    });
    main.env.sync(&main.server, "phone.db", &ann_main);
    let notes: String = phone.query_row("SELECT notes FROM jump_log WHERE id = ?1", [&jump], |r| r.get(0)).unwrap();
    assert_eq!(notes, "edited at home");

    // Both stores hold the same rows.
    let all = "SELECT string_agg(id::text || ':' || coalesce(notes, ''), ',' ORDER BY id) FROM jump_log";
    assert_eq!(main.psql(all), cloud.psql(all));
    let groups = "SELECT string_agg(id::text || ':' || name, ',' ORDER BY id) FROM groups";
    assert_eq!(main.psql(groups), cloud.psql(groups));

    // Settled: the link keeps beating, and no row crosses any more, either way.
    let rows = |s: &Value| (s["peers"][0]["rows_out"].as_u64().unwrap(), s["peers"][0]["rows_in"].as_u64().unwrap());
    let heartbeat = |s: &Value| s["peers"][0]["last_heartbeat_ms"].as_u64().unwrap_or(0);
    let before = main.status();
    let beat = heartbeat(&before);
    wait_for("two more runs of the link", || heartbeat(&main.status()) > beat + 1500);
    let after = main.status();
    assert_eq!(rows(&after), rows(&before), "rows kept crossing: {after}");
    let feed = "SELECT count(*) FROM _ferry_rows";
    assert_eq!(main.psql(feed), cloud.psql(feed));

    // The state, as the CLI and the admin API show it on each side.
    let link = &after["peers"][0];
    assert_eq!(after["role"], "main");
    assert_eq!(link["name"], "cloud");
    assert_eq!(link["direction"], "outgoing");
    assert_eq!(link["peer_role"], "cloud");
    assert_eq!(link["state"], "CONNECTED", "{after}");
    assert_eq!(link["lag_ms_out"], 0);
    assert_eq!(link["backoff_ms"], json!([200, 500]));
    assert!(link["last_success_ms"].as_u64().is_some());
    let seen: Value = cloud.get("/v1/admin/sync/status").json().unwrap();
    assert_eq!(seen["role"], "cloud");
    assert_eq!(seen["peers"][0]["direction"], "incoming");
    assert_eq!(seen["peers"][0]["name"], "main");
    assert_eq!(seen["peers"][0]["state"], "CONNECTED");
    let text = main.env.ok_all(&["peer", "status", "cloud", "-c", &main.env.config()]);
    assert!(text.contains("state:          CONNECTED"), "{text}");

    // The sync log: runs that moved rows, each way, successful.
    let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
    let entries = log["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["direction"] == "push" && e["status"] == "SUCCESS" && e["rows"].as_u64() > Some(0))
    );
    assert!(
        entries.iter().any(|e| e["direction"] == "pull" && e["status"] == "SUCCESS" && e["rows"].as_u64() > Some(0))
    );
    let text = main.env.ok_all(&["peer", "log", "cloud", "-c", &main.env.config()]);
    assert!(text.contains("SUCCESS"), "{text}");
    // A device token cannot read it, nor link as a peer.
    let denied = main
        .server
        .http()
        .get(format!("{}/v1/admin/sync/status", main.server.url))
        .bearer_auth(&ann_main)
        .send()
        .unwrap();
    assert_eq!(denied.status(), 403);
    let posing = cloud
        .server
        .http()
        .get(format!("{}/v1/peer/users", cloud.server.url))
        .bearer_auth(&ann_cloud)
        .header("ferry-peer", "x")
        .send()
        .unwrap();
    assert_eq!(posing.status(), 403);
    let why: Value = posing.json().unwrap();
    assert!(why["error"]["message"].as_str().unwrap().contains("--role main"), "{why}");
}

#[test]
fn a_cut_link_queues_both_sides_and_converges_with_main_authoritative_for_devices() {
    let proxy = std::cell::OnceCell::new();
    let via = |url: &str| {
        let p = Proxy::start(url);
        let u = p.url.clone();
        let _ = proxy.set(p);
        u
    };
    // Alerts come sooner than a day here (the 24 h default is tested with injected time in
    // ferry-server's unit tests), and go to a webhook that fails its first delivery.
    let (hook, deliveries) = crate::webhook_receiver(1);
    let secret = "a secret of the receiver's, 32 b";
    let alerts = format!(
        "\n[alerts]\ndisconnected_critical = \"1s\"\n[[alerts.webhook]]\nurl = \"{hook}\"\nsecret = \"{secret}\"\nevents = [\"alert\"]\n"
    );
    let (main, cloud) = pair(Some(&via), &alerts);
    let proxy = proxy.get().unwrap();
    let ann = main.env.add_user("ann");
    wait_for("ann on CLOUD", || user_id(&cloud, "ann") == ann);
    let device = uuid();
    main.psql(&format!(
        "INSERT INTO devices (id, user_id, kind, name) VALUES ('{device}', '{ann}', 'altimeter', 'Viso')"
    ));
    wait_for("the device on CLOUD", || {
        cloud.psql(&format!("SELECT name FROM devices WHERE id = '{device}'")) == "Viso"
    });
    wait_for("MAIN connected", || main.status()["peers"][0]["state"] == "CONNECTED");

    // The network goes: MAIN sees the link down; both sides keep taking writes.
    proxy.partition();
    wait_for("MAIN to see the link down", || main.status()["peers"][0]["state"] == "DISCONNECTED");
    let down = main.status();
    assert!(down["peers"][0]["last_error"].as_str().is_some(), "{down}");
    // Alerts and health: critical once down longer than the threshold; 503 naming why.
    wait_for("the critical alert", || {
        let a: Value = main.get("/v1/admin/alerts").json().unwrap();
        a["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "disconnected" && a["severity"] == "CRITICAL")
    });
    let health = main.server.http().get(format!("{}/health/sync", main.server.url)).send().unwrap();
    assert_eq!(health.status(), 503);
    // The same, as a scraper sees it.
    let text = scrape(&main.server);
    let cloud_link = [("peer", "cloud")];
    assert_eq!(sample(&text, "ferry_peer_connected", &cloud_link), Some(0.0), "{text}");
    assert!(sample(&text, "ferry_peer_down_seconds", &cloud_link) > Some(0.0), "{text}");
    let critical = [("peer", "cloud"), ("kind", "disconnected"), ("severity", "CRITICAL")];
    assert_eq!(sample(&text, "ferry_alerts", &critical), Some(1.0), "{text}");
    let why: Value = health.json().unwrap();
    assert!(why["reasons"][0].as_str().unwrap().contains("link 'cloud' is"), "{why}");
    wait_for("the alert in the sync log", || {
        let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
        log["entries"].as_array().unwrap().iter().any(|e| e["kind"] == "alert" && e["status"] == "CRITICAL")
    });
    // The webhook hears of it, signed; answered 500 once, it is sent again, the same delivery.
    let next = || deliveries.recv_timeout(Duration::from_secs(20)).expect("a webhook delivery");
    let (first, again) = (next(), next());
    assert_eq!((first.status, again.status), (500, 204));
    assert_eq!(first.headers["ferry-delivery"], again.headers["ferry-delivery"]);
    assert_eq!(first.body, again.body);
    for d in [&first, &again] {
        assert_eq!(d.headers["ferry-event"], "alert.raised");
        assert_signed(d, secret);
    }
    let raised = again.json();
    assert_eq!((raised["event"].as_str(), raised["peer"].as_str()), (Some("alert.raised"), Some("cloud")), "{raised}");
    assert_eq!(
        (raised["data"]["kind"].as_str(), raised["data"]["severity"].as_str()),
        (Some("disconnected"), Some("CRITICAL"))
    );
    wait_for("the delivery in the sync log", || {
        let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
        log["entries"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "webhook"
                && e["status"] == "SUCCESS"
                && e["error"].as_str().is_some_and(|m| m.contains("alert.raised") && m.contains("attempt 2"))
        })
    });
    let phone = main.env.db("phone.db");
    let ann_main = main.env.token("ann", "phone");
    let laptop = cloud.env.db("laptop.db");
    let ann_cloud = cloud.env.token("ann", "laptop");
    main.env.sync(&main.server, "phone.db", &ann_main);
    cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
    for n in 0..20 {
        insert_jump(&phone, &ann, 100 + n, "main");
        insert_jump(&laptop, &ann, 200 + n, "cloud");
    }
    // The same device renamed on both sides: MAIN's name must win (authoritative, main).
    cloud.psql(&format!("UPDATE devices SET name = 'renamed at home' WHERE id = '{device}'"));
    main.psql(&format!("UPDATE devices SET name = 'renamed on site' WHERE id = '{device}'"));
    main.env.sync(&main.server, "phone.db", &ann_main);
    cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
    // MAIN counts what waits for CLOUD: 20 jumps and the device.
    wait_for("the lag in changes", || main.status()["peers"][0]["lag_changes_out"] == 21);

    // Back: everything crosses once, nothing is lost or doubled.
    proxy.set(Fault::Pass);
    let count = "SELECT count(*) FROM jump_log";
    wait_for("40 jumps on both sides", || main.psql(count) == "40" && cloud.psql(count) == "40");
    let ids = "SELECT string_agg(id::text, ',' ORDER BY id) FROM jump_log";
    assert_eq!(main.psql(ids), cloud.psql(ids));
    let name = format!("SELECT name FROM devices WHERE id = '{device}'");
    wait_for("MAIN's device name on both sides", || {
        main.psql(&name) == "renamed on site" && cloud.psql(&name) == "renamed on site"
    });
    let conflicts = format!("SELECT count(*) FROM _ferry_conflicts WHERE tbl = 'devices' AND pk = '{device}'");
    let logged: i64 = main.psql(&conflicts).parse::<i64>().unwrap() + cloud.psql(&conflicts).parse::<i64>().unwrap();
    assert_eq!(logged, 1, "the conflict is logged once, on the side that decided it");
    let counted: f64 = [&main.server, &cloud.server]
        .iter()
        .map(|s| sample(&scrape(s), "ferry_conflicts", &[("table", "devices")]).unwrap_or(0.0))
        .sum();
    assert_eq!(counted, 1.0, "and counted once in the metrics");
    wait_for("MAIN connected again", || main.status()["peers"][0]["state"] == "CONNECTED");
    let health = main.server.http().get(format!("{}/health/sync", main.server.url)).send().unwrap();
    assert_eq!(health.status(), 200);
    let text = scrape(&main.server);
    assert_eq!(sample(&text, "ferry_peer_connected", &cloud_link), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ferry_peer_down_seconds", &cloud_link), Some(0.0), "{text}");
    assert_eq!(sample(&text, "ferry_alerts", &critical), Some(0.0), "{text}");
    let cleared = next();
    assert_eq!((cleared.status, cleared.headers["ferry-event"].as_str()), (204, "alert.cleared"));
    assert_signed(&cleared, secret);
    wait_for("the alert cleared", || {
        let a: Value = main.get("/v1/admin/alerts").json().unwrap();
        let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
        a["alerts"].as_array().unwrap().is_empty()
            && log["entries"].as_array().unwrap().iter().any(|e| e["kind"] == "alert" && e["status"] == "SUCCESS")
    });
    let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
    assert!(log["entries"].as_array().unwrap().iter().any(|e| e["status"] == "FAILED"), "{log}");
    main.env.sync(&main.server, "phone.db", &ann_main);
    cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
    assert_eq!(jumps(&phone).len(), 40);
    assert_eq!(jumps(&laptop).len(), 40);
}

#[test]
fn either_server_killed_mid_run_converges_after_restart() {
    let (mut main, mut cloud) = pair(None, "");
    let ann = main.env.add_user("ann");
    wait_for("ann on CLOUD", || user_id(&cloud, "ann") == ann);
    let insert = |site: &Site, from: i64, note: &str| {
        site.psql(&format!(
            "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, notes)
             SELECT gen_random_uuid(), '{ann}', n, now(), '{note}' FROM generate_series({from}, {from} + 2999) n"
        ));
    };
    let count = |site: &Site| site.psql("SELECT count(*) FROM jump_log").parse::<u64>().unwrap();

    // MAIN dies while its rows are crossing, and comes back at the same address.
    insert(&main, 0, "main");
    wait_for("rows starting to cross", || count(&cloud) > 0);
    main.server.kill();
    let listen = main.server.url.trim_start_matches("http://").to_owned();
    main.server = main.env.serve_on(&listen, &[]);
    wait_for("3000 rows on CLOUD", || count(&cloud) == 3000);

    // CLOUD dies while MAIN pulls from it, and comes back at the same address.
    insert(&cloud, 10_000, "cloud");
    wait_for("rows starting to come", || count(&main) > 3000);
    cloud.server.kill();
    let listen = cloud.server.url.trim_start_matches("http://").to_owned();
    cloud.server = cloud.env.serve_on(&listen, &[]);
    wait_for("6000 rows on both", || count(&main) == 6000 && count(&cloud) == 6000);
    let ids = "SELECT md5(string_agg(id::text || notes, ',' ORDER BY id)) FROM jump_log";
    assert_eq!(main.psql(ids), cloud.psql(ids));
}

#[test]
fn a_bad_role_stops_start_up_and_a_disabled_peer_is_shown() {
    let env = Env::new();
    set_role(&env, "edge");
    let out = env.run(&["serve", "-c", &env.config(), "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("role = \"edge\"") && err.contains("main, cloud"), "{err}");

    let env = Env::new();
    add_peer(&env, "http://127.0.0.1:9", "fry_x", "enabled = false");
    let out = env.run(&["peer", "status", "-c", &env.config()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("needs a role"), "{err}");

    set_role(&env, "main");
    let mut server = env.serve_logged(&[], "info");
    let started = Instant::now();
    let shown = loop {
        let out = env.run(&["peer", "status", "--json", "-c", &env.config()]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if s["peers"][0]["enabled"] == false && s["peers"][0]["state"] == "DISCONNECTED" {
            break None;
        }
        if started.elapsed() > Duration::from_secs(30) {
            break Some(format!("{s}\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = server.kill_for_log();
    if let Some(last) = shown {
        panic!("the disabled link's state never showed; last `peer status`: {last}\nthe server's log:\n{err}");
    }
    assert!(err.contains("peer link disabled"), "{err}");
}

/// `ferry sync --json` of a replica: the sync report.
fn sync_report(env: &Env, server: &Server, db: &str, token: &str) -> Value {
    let db = env.path(db).display().to_string();
    let out = env.ok_all(&["sync", "--db", &db, "--server", &server.url, "--token", token, "--json"]);
    serde_json::from_str(&out).unwrap()
}

fn compact(env: &Env) -> Value {
    // Deletions a moment old are older than 1 ms.
    std::thread::sleep(Duration::from_millis(5));
    let out = env.ok(&["compact", "--older-than", "1ms", "--json", "-c", &env.config()]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_device_behind_the_compaction_horizon_catches_up_by_itself_keeping_its_changes() {
    for env in [Env::new(), Env::postgres()] {
        let p = crate::Pair::in_env(env);
        let phone = p.env.db("phone.db");
        let ids: Vec<String> = (1..=3).map(|n| insert_jump(&phone, &p.user, n, "first")).collect();
        p.sync_phone();
        p.sync_laptop();
        // The phone deletes a jump; the laptop, offline, adds one and edits another.
        phone.execute("DELETE FROM jump_log WHERE id = ?1", [&ids[0]]).unwrap();
        p.sync_phone();
        let laptop = p.env.db("laptop.db");
        let added = insert_jump(&laptop, &p.user, 4, "offline");
        laptop.execute("UPDATE jump_log SET notes = 'edited offline' WHERE id = ?1", [&ids[1]]).unwrap();
        let done = compact(&p.env);
        assert!(done["tombstones"].as_u64() >= Some(1), "{done}");

        // It catches up by difference: nothing to fetch (its offline changes were pushed
        // first), the jump deleted while it was away removed.
        let report = sync_report(&p.env, &p.server, "laptop.db", &p.laptop);
        assert_eq!(
            (report["caught_up"].as_bool(), report["resynced"].as_bool()),
            (Some(true), Some(false)),
            "{report}"
        );
        assert_eq!((report["caught_up_rows"].as_u64(), report["removed"].as_u64()), (Some(0), Some(1)), "{report}");
        let have: Vec<(String, Option<String>)> = jumps(&laptop).into_iter().map(|j| (j.0, j.2)).collect();
        assert_eq!(have.len(), 3, "{have:?}");
        assert!(!have.iter().any(|(id, _)| *id == ids[0]), "the jump deleted while away is gone");
        assert!(have.contains(&(ids[1].clone(), Some("edited offline".into()))));
        assert!(have.iter().any(|(id, _)| *id == added));
        // The changes made offline reached the server; the next sync is an ordinary one.
        p.sync_phone();
        assert_eq!(jumps(&phone), jumps(&laptop));
        let again = sync_report(&p.env, &p.server, "laptop.db", &p.laptop);
        assert_eq!((again["resynced"].as_bool(), again["caught_up"].as_bool()), (Some(false), Some(false)), "{again}");
    }
}

#[test]
fn catching_up_by_difference_fetches_only_the_rows_that_changed() {
    let p = crate::Pair::in_env(Env::postgres());
    let phone = p.env.db("phone.db");
    let ids: Vec<String> =
        (1..=400).map(|n| insert_jump(&phone, &p.user, n, "a note of some length, as jumpers write")).collect();
    p.sync_phone();
    let first = p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")).len(), 400, "{first}");
    // While the laptop is away: 10 jumps edited, 5 deleted, and the history compacted.
    for id in &ids[..10] {
        phone.execute("UPDATE jump_log SET notes = 'edited' WHERE id = ?1", [id]).unwrap();
    }
    for id in &ids[390..] {
        phone.execute("DELETE FROM jump_log WHERE id = ?1", [id]).unwrap();
    }
    p.sync_phone();
    compact(&p.env);
    let report = sync_report(&p.env, &p.server, "laptop.db", &p.laptop);
    assert_eq!(report["caught_up"], true, "{report}");
    assert_eq!((report["caught_up_rows"].as_u64(), report["removed"].as_u64()), (Some(10), Some(10)), "{report}");
    // What crossed follows the 20 rows, not the 400 (a full re-sync pulls every row again).
    let bytes = report["catch_up_bytes"].as_u64().unwrap();
    assert!(bytes < 60_000, "{bytes} bytes to catch up 20 rows");
    assert_eq!(jumps(&p.env.db("laptop.db")), jumps(&phone));
}

fn catch_ups(site: &Site) -> Vec<Value> {
    let log: Value = site.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
    log["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "catch-up").cloned().collect()
}

#[test]
fn a_peer_behind_the_horizon_is_told_and_catches_up_by_difference() {
    let (mut main, mut cloud) = pair(None, "");
    let ann = main.env.add_user("ann");
    wait_for("ann on CLOUD", || user_id(&cloud, "ann") == ann);
    let ids: Vec<String> = (0..40).map(|_| uuid()).collect();
    let values: Vec<String> = ids.iter().enumerate().map(|(n, id)| format!("('{id}', '{ann}', {n}, now())")).collect();
    cloud.psql(&format!("INSERT INTO jump_log (id, user_id, jump_number, jumped_at) VALUES {}", values.join(", ")));
    let count = |s: &Site| s.psql("SELECT count(*) FROM jump_log");
    let jump =
        |s: &Site, id: &str| s.psql(&format!("SELECT coalesce(max(jump_number), -1) FROM jump_log WHERE id = '{id}'"));
    wait_for("every jump on MAIN", || count(&main) == "40");

    // MAIN is away while CLOUD deletes a jump, edits another and compacts its history past
    // MAIN's cursor; MAIN's own database changes meanwhile too.
    main.server.kill();
    cloud.psql(&format!("DELETE FROM jump_log WHERE id = '{}'", ids[0]));
    cloud.psql(&format!("UPDATE jump_log SET jump_number = 100 WHERE id = '{}'", ids[1]));
    let done = compact(&cloud.env);
    assert_eq!(done["tombstones"], 1, "{done}");
    main.psql(&format!("UPDATE jump_log SET jump_number = 200 WHERE id = '{}'", ids[2]));
    // A jump with a video added on CLOUD meanwhile: the catch-up brings its row, and its file
    // follows through the link's file queue.
    let video: Vec<u8> = (0..40_000u32).map(|i| (i * 11 % 239) as u8).collect();
    let hash = ferry_core::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&video));
    let stored = |site: &Site| site.env.path(&format!("ferry-data/files/{}/{hash}", &hash[..2]));
    std::fs::create_dir_all(stored(&cloud).parent().unwrap()).unwrap();
    std::fs::write(stored(&cloud), &video).unwrap();
    let filmed = uuid();
    cloud.psql(&format!(
        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, video_sha256) VALUES ('{filmed}', '{ann}', 7, now(), '{hash}')"
    ));
    let listen = main.server.url.trim_start_matches("http://").to_owned();
    main.server = main.env.serve_on(&listen, &[]);

    // Told so, once; then it catches up by itself at its next attempt.
    wait_for("a catch-up in MAIN's sync log", || !catch_ups(&main).is_empty());
    let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
    let critical: Vec<&Value> =
        log["entries"].as_array().unwrap().iter().filter(|e| e["status"] == "CRITICAL").collect();
    assert_eq!(critical.len(), 1, "the link behind the horizon is logged as critical once: {log}");
    assert!(critical[0]["error"].as_str().unwrap().contains("catches up by difference"), "{log}");
    let entry = &catch_ups(&main)[0];
    assert_eq!((entry["status"].as_str(), entry["direction"].as_str()), (Some("SUCCESS"), Some("pull")), "{entry}");
    let said = entry["error"].as_str().unwrap();
    wait_for("the link back", || main.status()["peers"][0]["state"] == "CONNECTED");
    assert_eq!(main.status()["peers"][0]["behind"], Value::Null);
    // The jump CLOUD deleted during the gap is gone from MAIN too (its tombstone was
    // compacted: MAIN still held it exactly as both last did), the edits crossed both ways.
    wait_for("the deletion and the edits on both sides", || {
        jump(&main, &ids[0]) == "-1" && jump(&main, &ids[1]) == "100" && jump(&cloud, &ids[2]) == "200"
    });
    assert_eq!((count(&main), count(&cloud)), ("40".into(), "40".into()));
    wait_for("the video of the jump filmed meanwhile on MAIN", || stored(&main).exists());
    assert_eq!(std::fs::read(stored(&main)).unwrap(), video);
    // Only the differences crossed: far less than the 40 rows again.
    assert!(entry["bytes"].as_u64().unwrap() < 20_000, "{entry}");
    // MAIN's own edit crossed before the link failed (it pushes first); CLOUD's edit goes both
    // ways (each side's version to the other, merged there), the filmed jump comes, the jump
    // deleted there is deleted here.
    assert!(said.contains("3 rows differed in") && said.contains("2 fetched, 1 sent, 1 deleted"), "{entry}");
    // The link reads on from where the catch-up began.
    let c = uuid();
    cloud
        .psql(&format!("INSERT INTO jump_log (id, user_id, jump_number, jumped_at) VALUES ('{c}', '{ann}', 3, now())"));
    wait_for("a new jump on MAIN", || jump(&main, &c) == "3");

    // The other way: CLOUD is away while MAIN deletes a jump and compacts past the link's
    // cursor of MAIN's own feed.
    cloud.server.kill();
    main.psql(&format!("DELETE FROM jump_log WHERE id = '{}'", ids[3]));
    let done = compact(&main.env);
    assert!(done["tombstones"].as_u64().unwrap() >= 1, "{done}");
    let listen = cloud.server.url.trim_start_matches("http://").to_owned();
    cloud.server = cloud.env.serve_on(&listen, &[]);
    wait_for("a second catch-up", || catch_ups(&main).len() == 2);
    let entry = &catch_ups(&main)[0];
    assert_eq!((entry["status"].as_str(), entry["direction"].as_str()), (Some("SUCCESS"), Some("push")), "{entry}");
    wait_for("the deletion on CLOUD", || jump(&cloud, &ids[3]) == "-1");
    assert_eq!((count(&main), count(&cloud)), ("40".into(), "40".into()));
    let report = main.env.ok_all(&["integrity", "--peer", "cloud", "--json", "-c", &main.env.config()]);
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["status"], "SUCCESS", "{report}");

    // An operator may still re-sync everything: the runbook's other way.
    main.env.ok(&["peer", "resync", "cloud", "-c", &main.env.config()]);
    wait_for("the re-sync logged", || {
        let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
        log["entries"].as_array().unwrap().iter().any(|e| e["kind"] == "resync")
    });
    wait_for("the link back after the re-sync", || main.status()["peers"][0]["state"] == "CONNECTED");
    let bad = main.env.run(&["peer", "resync", "nowhere", "-c", &main.env.config()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no link named 'nowhere'"));
}

#[test]
fn files_follow_their_rows_both_ways_verified() {
    let (main, cloud) = pair(None, "");
    let ann = main.env.add_user("ann");
    wait_for("ann on CLOUD", || user_id(&cloud, "ann") == ann);
    let (ann_main, ann_cloud) = (main.env.token("ann", "phone"), cloud.env.token("ann", "laptop"));
    main.env.sync(&main.server, "phone.db", &ann_main);
    cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
    let (phone, laptop) = (main.env.db("phone.db"), cloud.env.db("laptop.db"));

    // A video taken on site: its row and its file reach a laptop at home.
    let add = |env: &Env, db: &str, name: &str, bytes: &[u8]| {
        std::fs::write(env.path(name), bytes).unwrap();
        env.ok(&["file", "add", "--db", &env.path(db).display().to_string(), &env.path(name).display().to_string()])
    };
    let video: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let on_site = add(&main.env, "phone.db", "jump1.mp4", &video);
    let jump = insert_jump(&phone, &ann, 1, "with video");
    phone.execute("UPDATE jump_log SET video_sha256 = ?1 WHERE id = ?2", [&on_site, &jump]).unwrap();
    let file_sync = |env: &Env, db: &str, token: &str| {
        env.ok(&["file", "sync", "--db", &env.path(db).display().to_string(), "--token", token]);
    };
    main.env.sync(&main.server, "phone.db", &ann_main);
    file_sync(&main.env, "phone.db", &ann_main);
    let laptop_file = cloud.env.path(&format!("laptop.db-files/{on_site}"));
    wait_for("the video on the laptop at home", || {
        cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
        file_sync(&cloud.env, "laptop.db", &ann_cloud);
        laptop_file.exists()
    });
    assert_eq!(std::fs::read(&laptop_file).unwrap(), video);

    // And one added at home reaches the phone on site.
    let photo: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let at_home = add(&cloud.env, "laptop.db", "photo.jpg", &photo);
    let second = insert_jump(&laptop, &ann, 2, "with photo");
    laptop.execute("UPDATE jump_log SET video_sha256 = ?1 WHERE id = ?2", [&at_home, &second]).unwrap();
    cloud.env.sync(&cloud.server, "laptop.db", &ann_cloud);
    file_sync(&cloud.env, "laptop.db", &ann_cloud);
    let phone_file = main.env.path(&format!("phone.db-files/{at_home}"));
    wait_for("the photo on the phone on site", || {
        main.env.sync(&main.server, "phone.db", &ann_main);
        file_sync(&main.env, "phone.db", &ann_main);
        phone_file.exists()
    });
    assert_eq!(std::fs::read(&phone_file).unwrap(), photo);

    wait_for("the file queue empty", || main.status()["peers"][0]["file_queue"] == 0);
    // A file whose bytes on CLOUD's disk no longer have its name (damage) is not taken.
    let damaged: Vec<u8> = b"frames of a third jump".to_vec();
    let hash = ferry_core::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&damaged));
    let stored = cloud.env.path(&format!("ferry-data/files/{}/{hash}", &hash[..2]));
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    let mut bad = damaged.clone();
    bad[0] ^= 1;
    std::fs::write(&stored, &bad).unwrap();
    let third = uuid();
    cloud.psql(&format!(
        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, video_sha256) VALUES ('{third}', '{ann}', 3, now(), '{hash}')"
    ));
    wait_for("the damaged file refused in the sync log", || {
        let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
        log["entries"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "files"
                && e["status"] == "WARNING"
                && e["error"].as_str().unwrap_or("").contains("not to the file's name")
        })
    });
    let main_copy = main.env.path(&format!("ferry-data/files/{}/{hash}", &hash[..2]));
    assert!(!main_copy.exists(), "nothing is stored under a hash its bytes do not have");
    // Tried again every second, logged once.
    let tries = |log: &Value| {
        log["entries"].as_array().unwrap().iter().filter(|e| e["error"].as_str().unwrap_or("").contains(&hash)).count()
    };
    // CLOUD serves the file again at each try (it does not know its bytes are damaged).
    let served =
        || cloud.get("/v1/admin/status").json::<Value>().unwrap()["files"]["downloads_completed"].as_u64().unwrap();
    let before = served();
    wait_for("two more tries", || served() >= before + 2);
    let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
    assert_eq!(tries(&log), 1, "{log}");

    wait_for("the damaged file waiting in the queue", || main.status()["peers"][0]["file_queue"] == 1);
    let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
    let files: Vec<&Value> = log["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "files").collect();
    assert!(
        files.iter().any(|e| e["direction"] == "push" && e["status"] == "SUCCESS" && e["bytes"] == 300_000),
        "{log}"
    );
    assert!(files.iter().any(|e| e["direction"] == "pull" && e["status"] == "SUCCESS"), "{log}");
}

#[test]
fn rows_the_peer_refuses_are_logged_and_the_rest_crosses() {
    // MAIN was upgraded first: its jump_log has a column CLOUD's does not know yet.
    let newer = |schema: &str| {
        schema.replacen(
            "CREATE TABLE jump_log (\n    id uuid PRIMARY KEY,",
            "CREATE TABLE jump_log (\n    id uuid PRIMARY KEY,\n    wind_kts integer,",
            1,
        )
    };
    let (main, cloud) = pair_with(None, "", &newer);
    let ann = main.env.add_user("ann");
    wait_for("ann on CLOUD", || user_id(&cloud, "ann") == ann);
    let (jump, group) = (uuid(), uuid());
    main.psql(&format!(
        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, wind_kts) VALUES ('{jump}', '{ann}', 1, now(), 12);
         INSERT INTO groups (id, name, created_by) VALUES ('{group}', 'Upgrade day', '{ann}')"
    ));
    wait_for("the group on CLOUD", || {
        cloud.psql(&format!("SELECT name FROM groups WHERE id = '{group}'")) == "Upgrade day"
    });
    wait_for("the refusal in the sync log", || {
        let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
        log["entries"].as_array().unwrap().iter().any(|e| {
            e["direction"] == "push"
                && e["status"] == "WARNING"
                && e["error"].as_str().unwrap_or("").contains("wind_kts")
        })
    });
    assert_eq!(cloud.psql(&format!("SELECT count(*) FROM jump_log WHERE id = '{jump}'")), "0");
    // The link goes on: a later group crosses too.
    let later = uuid();
    main.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES ('{later}', 'Next day', '{ann}')"));
    wait_for("the later group on CLOUD", || {
        cloud.psql(&format!("SELECT name FROM groups WHERE id = '{later}'")) == "Next day"
    });
}

/// `d` carries a `Ferry-Signature` of its body under `secret`, made as docs/monitoring.md
/// tells a receiver to check it: HMAC-SHA256 of `"{t}.{body}"`, `t` within 5 minutes.
pub(crate) fn assert_signed(d: &crate::Delivery, secret: &str) {
    use hmac::Mac;
    let header = &d.headers["ferry-signature"];
    let (t, v1) = header.split_once(',').unwrap();
    let t: u64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(t) < 300, "{header}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&d.body);
    let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1.strip_prefix("v1=").unwrap(), want, "{header}");
}
