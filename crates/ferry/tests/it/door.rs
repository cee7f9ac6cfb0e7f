//! What one device sends can never break another device's sync: clocks, sites, values and
//! limits are checked at the door, the same on both stores. Each test is written as a hostile
//! or buggy client would send it (raw HTTP), then checks that nothing was stored and that
//! another device still syncs.

use serde_json::{Value, json};

use crate::*;

const ZERO: &str = "00000000000000000000000000000000";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A clock at the current time (plus `later` ms) written by `site`.
fn clock_at(site: &str, later: u64) -> String {
    format!("{:016x}{site}", (now_ms() + later) << 16)
}

/// A random site id, as a device's replica picks one.
fn site() -> String {
    uuid().replace('-', "")[..16].to_owned()
}

/// A text-keyed, shared table beside the example's, for keys and JSON of any size.
const NOTES: &str = "\nCREATE TABLE notes (id text PRIMARY KEY, body text, doc jsonb, score real);\n";

/// The example app (plus `notes`) with alice's phone and laptop, and bob's tablet.
struct Door {
    pair: Pair,
    bob: String,
    bob_token: String,
    bob_site: String,
}

impl Door {
    fn new(env: Env) -> Door {
        let schema = std::fs::read_to_string(env.path("schema.sql")).unwrap();
        std::fs::write(env.path("schema.sql"), schema + NOTES).unwrap();
        let pair = Pair::in_env(env);
        let bob = pair.env.add_user("bob");
        let bob_token = pair.env.token("bob", "tablet");
        Door { pair, bob, bob_token, bob_site: site() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.pair.server.url)
    }

    fn push(&self, token: &str, rows: Vec<Value>) -> (u16, Value) {
        let body = json!({"batch_id": uuid(), "rows": rows}).to_string();
        let resp = self
            .pair
            .server
            .http()
            .post(self.url("/v1/push"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Every row alice may read, from the start of the feed.
    fn pull_all(&self, token: &str) -> Vec<Value> {
        let resp: Value = self
            .pair
            .server
            .http()
            .get(self.url("/v1/pull?cursor=0&limit=10000"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        resp["rows"].as_array().unwrap().clone()
    }

    /// Bob pushes `rows`; asserts the answer's status and that its message holds `words`, that
    /// nothing was stored, and that a new device of alice still syncs.
    fn refused(&self, rows: Vec<Value>, status: u16, words: &str) {
        let before = self.pull_all(&self.pair.phone);
        let (s, body) = self.push(&self.bob_token, rows);
        assert_eq!(s, status, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_else(|| panic!("no JSON error: {body}"));
        assert!(message.contains(words), "message {message:?} should contain {words:?}");
        assert!(message.len() < 1000, "the message echoes too much: {} bytes", message.len());
        assert_eq!(self.pull_all(&self.pair.phone), before, "a refused push stores nothing");
        self.fresh_device_syncs();
    }

    /// A device that never synced before pulls everything alice may read, and succeeds.
    fn fresh_device_syncs(&self) {
        let name = format!("fresh-{}.db", uuid());
        let token = self.pair.env.token("alice", &name);
        self.pair.env.sync(&self.pair.server, &name, &token);
    }

    fn group(&self, id: &str, name: &str, at: &str) -> Value {
        json!({"table": "groups", "key": id, "exists": true, "exists_at": at, "clock": at,
               "values": {"name": name, "created_by": self.bob}})
    }

    fn note(&self, id: &str, values: Value) -> Value {
        let at = clock_at(&self.bob_site, 0);
        json!({"table": "notes", "key": id, "exists": true, "exists_at": at, "clock": at, "values": values})
    }
}

fn on_both_stores(test: impl Fn(Env)) {
    test(Env::new());
    test(Env::postgres());
}

#[test]
fn a_zero_clock_is_refused_and_every_other_device_keeps_syncing() {
    on_both_stores(|env| {
        let d = Door::new(env);
        let at = clock_at(&d.bob_site, 0);
        // The whole row at the zero clock (the reproduction).
        d.refused(vec![d.group(&uuid(), "poison", ZERO)], 400, "zero clock");
        // A live row's existence at the zero clock, its values at a real one.
        let mut row = d.group(&uuid(), "poison", &at);
        row["exists_at"] = ZERO.into();
        d.refused(vec![row], 400, "exists_at is the zero clock");
        // One NOT NULL column at the zero clock.
        let mut row = d.group(&uuid(), "poison", &at);
        row["clocks"] = json!({"name": ZERO});
        d.refused(vec![row], 400, "column 'name' has a value but the zero clock");
        // The owner column of the pusher's own row at the zero clock.
        let jump = json!({"table": "jump_log", "key": uuid(), "exists": true, "exists_at": at, "clock": at,
            "clocks": {"user_id": ZERO},
            "values": {"user_id": d.bob, "jump_number": 1, "jumped_at": "2026-11-21T10:00:00Z", "visible_to_connections": false}});
        d.refused(vec![jump], 400, "column 'user_id' has a value but the zero clock");
        // A good row in the same batch as a bad one is not stored either.
        let good = d.group(&uuid(), "fine", &at);
        d.refused(vec![good.clone(), d.group(&uuid(), "poison", ZERO)], 400, "zero clock");
        let (s, body) = d.push(&d.bob_token, vec![good]);
        assert_eq!(s, 200, "{body}");
        d.fresh_device_syncs();
    });
}

#[test]
fn a_live_row_that_would_lack_a_not_null_column_is_refused() {
    on_both_stores(|env| {
        let d = Door::new(env);
        let id = uuid();
        let (old, newer, newest) = (clock_at(&d.bob_site, 0), clock_at(&d.bob_site, 1000), clock_at(&d.bob_site, 2000));
        // A tombstone may hold a NULL where the schema says NOT NULL (values from before a rule).
        let tomb = json!({"table": "groups", "key": id, "exists": false, "exists_at": newer, "clock": newer,
                          "values": {"name": null, "created_by": d.bob}});
        let (s, body) = d.push(&d.bob_token, vec![tomb]);
        assert_eq!(s, 200, "{body}");
        // Brought back to life with a name older than the tombstone's NULL: the merge would
        // keep the NULL in a live row.
        let mut revive = d.group(&id, "late", &old);
        revive["exists_at"] = newest.into();
        d.refused(vec![revive], 400, "column 'name' is NOT NULL, but the row would be live");
    });
}

#[test]
fn a_device_may_not_write_under_another_devices_site_and_hide_a_conflict() {
    on_both_stores(|env| {
        let d = Door::new(env);
        let phone = d.pair.env.db("phone.db");
        let id = uuid();
        phone
            .execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'Sunday 4-way', ?2)", [&id, &d.pair.user])
            .unwrap();
        d.pair.sync_phone();
        // Alice edits the group on her phone and has not pushed yet.
        phone.execute("UPDATE groups SET name = 'Sunday 8-way' WHERE id = ?1", [&id]).unwrap();
        // Bob reads the site id of alice's phone from the row's clock, and writes with it.
        let pulled = d.pull_all(&d.bob_token);
        let row = pulled.iter().find(|r| r["key"] == id.as_str()).unwrap();
        let alice_site = &row["clock"].as_str().unwrap()[16..];
        let forged = d.group(&id, "bob's group", &clock_at(alice_site, 0));
        d.refused(vec![forged.clone()], 403, "belongs to another device");
        // Under his own site id the same write is accepted, and alice's sync logs the conflict.
        let own = d.group(&id, "bob's group", &clock_at(&d.bob_site, 0));
        let (s, body) = d.push(&d.bob_token, vec![own]);
        assert_eq!(s, 200, "{body}");
        d.pair.sync_phone();
        let admin_token = d.pair.env.ok(&[
            "token",
            "create",
            "--user",
            "alice",
            "--device",
            "ops",
            "--admin",
            "-c",
            &d.pair.env.config(),
        ]);
        let conflicts: Value = d
            .pair
            .server
            .http()
            .get(d.url("/v1/admin/conflicts"))
            .bearer_auth(&admin_token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let text = conflicts.to_string();
        assert!(text.contains(&id) && text.contains("update-update"), "{text}");
    });
}

#[test]
fn reals_mean_the_same_in_both_stores_nan_and_negative_zero_are_refused() {
    on_both_stores(|env| {
        let d = Door::new(env);
        for bad in [json!("NaN"), json!(-0.0)] {
            d.refused(vec![d.note(&uuid(), json!({"score": bad}))], 400, "column 'score'");
        }
        // Not in a tombstone either.
        let mut tomb = d.note(&uuid(), json!({"score": "NaN"}));
        tomb["exists"] = false.into();
        d.refused(vec![tomb], 400, "is NaN");
        // Infinities and ordinary reals are kept bit for bit, and reach other devices.
        let values =
            [("inf", json!("inf")), ("-inf", json!("-inf")), ("tiny", json!(5e-324)), ("third", json!(1.0 / 3.0))];
        let rows: Vec<Value> = values.iter().map(|(k, v)| d.note(k, json!({"score": v}))).collect();
        let (s, body) = d.push(&d.bob_token, rows);
        assert_eq!(s, 200, "{body}");
        d.pair.sync_laptop();
        let laptop = d.pair.env.db("laptop.db");
        for (key, want) in [("inf", f64::INFINITY), ("-inf", f64::NEG_INFINITY), ("tiny", 5e-324), ("third", 1.0 / 3.0)]
        {
            let got: f64 = laptop.query_row("SELECT score FROM notes WHERE id = ?1", [key], |r| r.get(0)).unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{key}");
        }
        let pulled = d.pull_all(&d.pair.phone);
        let inf = pulled.iter().find(|r| r["key"] == "inf").unwrap();
        assert_eq!(inf["values"]["score"], "inf");
    });
}

#[test]
fn keys_values_and_json_over_the_documented_limits_are_refused_alike() {
    on_both_stores(|env| {
        let d = Door::new(env);
        // The longest key is accepted by both stores and reaches other devices.
        let longest = "k".repeat(1024);
        let (s, body) = d.push(&d.bob_token, vec![d.note(&longest, json!({"body": "at the limit"}))]);
        assert_eq!(s, 200, "{body}");
        d.refused(vec![d.note(&"k".repeat(1025), json!({}))], 400, "at most 1024 bytes");
        d.refused(vec![d.note(&"k".repeat(1_000_000), json!({}))], 400, "(1000000 bytes in all)");
        // Values.
        let (s, body) = d.push(&d.bob_token, vec![d.note(&uuid(), json!({"body": "v".repeat(1 << 20)}))]);
        assert_eq!(s, 200, "{body}");
        d.refused(vec![d.note(&uuid(), json!({"body": "v".repeat((1 << 20) + 1)}))], 400, "at most 1048576 bytes");
        // JSON nesting.
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let (s, body) = d.push(&d.bob_token, vec![d.note(&uuid(), json!({"doc": nested(64)}))]);
        assert_eq!(s, 200, "{body}");
        d.refused(vec![d.note(&uuid(), json!({"doc": nested(65)}))], 400, "nested 65 levels deep");
        d.refused(vec![d.note(&uuid(), json!({"doc": nested(100_000)}))], 400, "the most allowed is 64");
        d.fresh_device_syncs();
        let laptop = d.pair.env.db("laptop.db");
        d.pair.sync_laptop();
        let n: i64 = laptop.query_row("SELECT count(*) FROM notes WHERE id = ?1", [&longest], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    });
}

#[test]
fn clocks_of_the_version_a_change_started_from_may_not_be_in_the_future() {
    on_both_stores(|env| {
        let d = Door::new(env);
        let mut row = d.note(&uuid(), json!({"body": "x"}));
        let year_3000 = format!("{:016x}{}", 32_503_680_000_000u64 << 16, d.bob_site);
        row["seen"] = json!({"exists_at": ZERO, "clock": year_3000});
        d.refused(vec![row], 400, "seen clock");
        let mut row = d.note(&uuid(), json!({"body": "x"}));
        row["clock"] = year_3000.clone().into();
        d.refused(vec![row], 400, "ahead of the server's");
    });
}

/// One way a row can be wrong, as a buggy or hostile client might send it.
#[derive(Clone, Debug)]
enum Harm {
    ZeroExists,
    ZeroClock,
    ZeroColumn(usize),
    /// A clock under the site of alice's phone.
    ForeignSite,
    Real(&'static str),
    DropColumn(usize),
    NullColumn(usize),
    WrongType(usize),
    LongKey(usize),
    DeepJson(usize),
    UnknownColumn,
    UnknownTable,
    FutureClock,
    FutureSeen,
    Dead,
    MalformedClock,
    NotAUuid,
    Twice,
}

fn harm() -> impl proptest::strategy::Strategy<Value = Harm> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Harm::ZeroExists),
        Just(Harm::ZeroClock),
        (0..6usize).prop_map(Harm::ZeroColumn),
        Just(Harm::ForeignSite),
        prop_oneof![Just("NaN"), Just("-0"), Just("inf"), Just("-inf"), Just("1e308")].prop_map(Harm::Real),
        (0..6usize).prop_map(Harm::DropColumn),
        (0..6usize).prop_map(Harm::NullColumn),
        (0..6usize).prop_map(Harm::WrongType),
        prop_oneof![Just(1024usize), Just(1025), Just(3000), Just(100_000)].prop_map(Harm::LongKey),
        prop_oneof![Just(64usize), Just(65), Just(5000)].prop_map(Harm::DeepJson),
        Just(Harm::UnknownColumn),
        Just(Harm::UnknownTable),
        Just(Harm::FutureClock),
        Just(Harm::FutureSeen),
        Just(Harm::Dead),
        Just(Harm::MalformedClock),
        Just(Harm::NotAUuid),
        Just(Harm::Twice),
    ]
}

/// A valid row of one of the tables bob may write (by `table`), then `harms` done to it.
fn harmed_row(d: &Door, phone_site: &str, table: usize, harms: &[Harm]) -> Vec<Value> {
    let mut row = match table % 5 {
        0 => d.group(&uuid(), "group", &clock_at(&d.bob_site, 0)),
        1 => d.note(&format!("note-{}", uuid()), json!({"body": "b", "doc": "{\"a\":1}", "score": 1.5})),
        2 => {
            let at = clock_at(&d.bob_site, 0);
            json!({"table": "formations", "key": uuid(), "exists": true, "exists_at": at, "clock": at,
                   "values": {"group_id": uuid(), "name": "star", "slots": 4}})
        }
        3 => {
            let at = clock_at(&d.bob_site, 0);
            json!({"table": "group_members", "key": uuid(), "exists": true, "exists_at": at, "clock": at,
                   "values": {"group_id": uuid(), "user_id": d.bob, "role": "member"}})
        }
        _ => {
            let at = clock_at(&d.bob_site, 0);
            json!({"table": "jump_log", "key": uuid(), "exists": true, "exists_at": at, "clock": at,
                   "values": {"user_id": d.bob, "jump_number": 1, "jumped_at": "2026-11-21T10:00:00Z",
                              "freefall_seconds": 50.5, "visible_to_connections": false}})
        }
    };
    let cols: Vec<String> = row["values"].as_object().unwrap().keys().cloned().collect();
    let col = |i: usize| cols[i % cols.len()].clone();
    let mut twice = false;
    for h in harms {
        match h {
            Harm::ZeroExists => row["exists_at"] = ZERO.into(),
            Harm::ZeroClock => row["clock"] = ZERO.into(),
            Harm::ZeroColumn(i) => row["clocks"] = json!({ col(*i): ZERO }),
            Harm::ForeignSite => {
                let at = clock_at(phone_site, 5);
                row["clock"] = at.clone().into();
                row["exists_at"] = at.into();
            }
            Harm::Real(r) => {
                let v = if *r == "-0" {
                    json!(-0.0)
                } else if *r == "1e308" {
                    json!(1e308)
                } else {
                    json!(r)
                };
                match row["table"].as_str().unwrap() {
                    "notes" => row["values"]["score"] = v,
                    "jump_log" => row["values"]["freefall_seconds"] = v,
                    _ => row["values"][col(0)] = v,
                }
            }
            Harm::DropColumn(i) => {
                row["values"].as_object_mut().unwrap().remove(&col(*i));
            }
            Harm::NullColumn(i) => row["values"][col(*i)] = Value::Null,
            Harm::WrongType(i) => {
                let c = col(*i);
                row["values"][c.clone()] = if row["values"][&c].is_string() { json!(12) } else { json!("twelve") };
            }
            Harm::LongKey(n) => row["key"] = "k".repeat(*n).into(),
            Harm::DeepJson(n) => row["values"]["doc"] = format!("{}{}", "[".repeat(*n), "]".repeat(*n)).into(),
            Harm::UnknownColumn => row["values"]["colour"] = "red".into(),
            Harm::UnknownTable => row["table"] = "jumps".into(),
            Harm::FutureClock => row["clock"] = clock_at(&d.bob_site, 3 * 86_400_000).into(),
            Harm::FutureSeen => {
                row["seen"] = json!({"exists_at": ZERO, "clock": clock_at(&d.bob_site, 3 * 86_400_000)});
            }
            Harm::Dead => row["exists"] = false.into(),
            Harm::MalformedClock => row["exists_at"] = "not a clock".into(),
            Harm::NotAUuid => row["key"] = "Not-A-UUID".into(),
            Harm::Twice => twice = true,
        }
    }
    if twice { vec![row.clone(), row] } else { vec![row] }
}

#[test]
fn random_pushes_from_one_device_never_make_another_devices_sync_fail() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    on_both_stores(|env| {
        let d = Door::new(env);
        let phone = d.pair.env.db("phone.db");
        insert_jump(&phone, &d.pair.user, 1, "alice's");
        d.pair.sync_phone();
        let phone_site: String =
            phone.query_row("SELECT value FROM _ferry_meta WHERE key = 'site'", [], |r| r.get(0)).unwrap();
        let batch = proptest::collection::vec((0..5usize, proptest::collection::vec(harm(), 0..4)), 1..4);
        let config = Config { cases: 40, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let phone_db = d.pair.env.path("phone.db").display().to_string();
        let result = runner.run(&batch, |rows| {
            let rows: Vec<Value> = rows.iter().flat_map(|(t, harms)| harmed_row(&d, &phone_site, *t, harms)).collect();
            let (status, body) = d.push(&d.bob_token, rows.clone());
            prop_assert!(status < 500, "answer {status} to {rows:?}: {body}");
            if status != 200 {
                prop_assert!(body["error"]["message"].is_string(), "no JSON error: {body}");
            }
            // Alice's phone keeps syncing, whatever bob sent.
            let out =
                d.pair.env.run(&["sync", "--db", &phone_db, "--server", &d.pair.server.url, "--token", &d.pair.phone]);
            prop_assert!(out.status.success(), "after {rows:?} ({status}): {}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        // Nothing bad got through the door: the phone set nothing aside. A device that starts
        // now gets everything, and agrees with the phone.
        assert_eq!(d.pair.sync_phone()["refused_pulls"], 0);
        let token = d.pair.env.token("alice", "fresh");
        assert_eq!(d.pair.env.sync(&d.pair.server, "fresh.db", &token)["refused_pulls"], 0);
        let all = |db: &rusqlite::Connection| -> Vec<(String, String)> {
            let mut out = Vec::new();
            for t in ["groups", "notes", "formations", "group_members", "jump_log"] {
                let mut stmt = db.prepare(&format!("SELECT id FROM {t} ORDER BY id")).unwrap();
                out.extend(stmt.query_map([], |r| Ok((t.to_owned(), r.get(0)?))).unwrap().map(Result::unwrap));
            }
            out
        };
        assert_eq!(all(&d.pair.env.db("fresh.db")), all(&phone));
    });
}

/// Pushes `rows` straight through the store's API, below the HTTP door: rows as an older
/// server (before these checks) would have stored them.
fn store_below_the_door(env: &Env, token: &str, rows: Vec<ferry_store::IncomingRow>) {
    use ferry_store::Store;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let path = env.path("ferry.toml");
        let config = ferry_server::Config::load(Some(&path), ferry_server::Overrides::default()).unwrap();
        let schema = config.schema().unwrap();
        let store = ferry_store::AnyStore::open(config.database.as_deref(), &config.data_dir, schema).await.unwrap();
        let who = store.authenticate(token).await.unwrap().unwrap();
        store.push(&who, &uuid(), None, rows).await.unwrap();
    });
}

#[test]
fn ferry_audit_names_the_stored_rows_that_break_the_rules() {
    use ferry_core::{Hlc, RowState, SiteId, Stamped};
    type V = ferry_core::Value;
    on_both_stores(|env| {
        let d = Door::new(env);
        let (good, zero_name, nan, long) = (uuid(), uuid(), uuid(), "k".repeat(2000));
        let at = Hlc::new(now_ms(), 0, SiteId(0xb0b));
        let text = |s: &str| V::Text(s.to_owned());
        let group = |name: Stamped<V>| RowState {
            exists: Stamped::new(true, at),
            cols: [("name".to_owned(), name), ("created_by".to_owned(), Stamped::new(text(&d.bob), at))].into(),
        };
        let note = |score: f64| RowState::inserted([("score".to_owned(), V::Real(score))], at);
        let rows = vec![
            ferry_store::IncomingRow::new("groups", &good, group(Stamped::new(text("fine"), at))),
            ferry_store::IncomingRow::new("groups", &zero_name, group(Stamped::new(text("poison"), Hlc::ZERO))),
            ferry_store::IncomingRow::new("notes", &nan, note(f64::NAN)),
            ferry_store::IncomingRow::new("notes", &long, note(1.0)),
        ];
        store_below_the_door(&d.pair.env, &d.bob_token, rows);
        let out = d.pair.env.run(&["audit", "--json", "-c", &d.pair.env.config()]);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let bad: Vec<(String, String)> = report["bad"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["key"].as_str().unwrap().to_owned(), b["problem"].as_str().unwrap().to_owned()))
            .collect();
        let problem = |key: &str| bad.iter().find(|(k, _)| k == key).map(|(_, p)| p.clone());
        assert_eq!(problem(&good), None, "{bad:?}");
        assert!(problem(&zero_name).is_some_and(|p| p.contains("'name' is NOT NULL but missing")), "{bad:?}");
        // SQLite keeps NaN as NULL: the embedded store holds a NULL under NaN's clock, which is
        // no rule broken; PostgreSQL keeps the NaN, which is.
        if d.pair.env.pg_db.is_some() {
            assert!(problem(&nan).is_some_and(|p| p.contains("is NaN")), "{bad:?}");
        }
        assert!(problem(&long).is_some_and(|p| p.contains("at most 1024 bytes")), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{} of ", bad.len())) && stderr.contains("break the rules"), "{stderr}");
    });
}

#[test]
fn a_device_sets_aside_a_bad_row_from_the_server_and_syncs_the_rest() {
    use ferry_core::{Hlc, RowState, SiteId, Stamped};
    type V = ferry_core::Value;
    on_both_stores(|env| {
        let d = Door::new(env);
        let (bad, good) = (uuid(), uuid());
        let at = Hlc::new(now_ms(), 0, SiteId(0xb0b));
        let group = |name: &str, name_at: Hlc, at: Hlc| RowState {
            exists: Stamped::new(true, at),
            cols: [
                ("name".to_owned(), Stamped::new(V::Text(name.to_owned()), name_at)),
                ("created_by".to_owned(), Stamped::new(V::Text(d.bob.clone()), at)),
            ]
            .into(),
        };
        // As an older server stored it: a NOT NULL value under the zero clock, left out of pulls.
        store_below_the_door(
            &d.pair.env,
            &d.bob_token,
            vec![
                ferry_store::IncomingRow::new("groups", &bad, group("poison", Hlc::ZERO, at)),
                ferry_store::IncomingRow::new("groups", &good, group("fine", at, at)),
            ],
        );
        // What the server serves: the row without its NOT NULL value (never written, to it).
        let served = d.pull_all(&d.pair.laptop);
        let row = served.iter().find(|r| r["key"] == bad.as_str()).expect("the bad row is served");
        assert!(row["values"].get("name").is_none(), "{row}");
        // A device that pulls it syncs the rest, and says what it set aside.
        let status = d.pair.sync_laptop();
        assert_eq!(status["refused_pulls"], 1, "{status}");
        let laptop = d.pair.env.db("laptop.db");
        let names = |db: &rusqlite::Connection| -> Vec<String> {
            let mut stmt = db.prepare("SELECT name FROM groups ORDER BY name").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(names(&laptop), ["fine"]);
        let db = d.pair.env.path("laptop.db").display().to_string();
        let queue: Value = serde_json::from_str(&d.pair.env.ok_all(&["queue", "--db", &db, "--json"])).unwrap();
        let refused = &queue["refused_pulls"][0];
        assert_eq!(refused["key"], bad.as_str(), "{queue}");
        assert!(refused["message"].as_str().unwrap().contains("'name' is NOT NULL but missing"), "{queue}");
        let text = d.pair.env.ok_all(&["queue", "--db", &db]);
        assert!(text.contains(&format!("groups '{bad}'")), "{text}");
        // The next sync goes on (nothing new), and the entry stays until the row is fixed.
        assert_eq!(d.pair.sync_laptop()["refused_pulls"], 1);
        // Fixed on the server (written again whole by its owner's device): the next pull
        // applies it and clears the entry.
        let later = clock_at(&d.bob_site, 10);
        let (s, body) = d.push(&d.bob_token, vec![d.group(&bad, "mended", &later)]);
        assert_eq!(s, 200, "{body}");
        let status = d.pair.sync_laptop();
        assert_eq!(status["refused_pulls"], 0, "{status}");
        assert_eq!(names(&laptop), ["fine", "mended"]);
    });
}

/// A value of the wrong type that an older server, or another program writing the embedded
/// store's file, left in a row: a device that never synced before sets that row aside with
/// the decoder's words, keeps every other row, and takes the row once it is written again.
#[test]
fn a_fresh_device_sets_aside_a_row_written_into_the_stores_file_and_takes_it_once_fixed() {
    let mut d = Door::new(Env::new());
    let (bad, good) = (uuid(), uuid());
    for (id, score) in [(&bad, 1.5), (&good, 2.5)] {
        let (s, body) = d.push(&d.bob_token, vec![d.note(id, json!({"body": "b", "score": score}))]);
        assert_eq!(s, 200, "{body}");
    }
    // Below every check: with the server stopped, text goes into a real column.
    d.pair.server.kill();
    let store = rusqlite::Connection::open(d.pair.env.path("ferry-data/ferry.db")).unwrap();
    assert_eq!(store.execute("UPDATE notes SET score = 'lots' WHERE id = ?1", [&bad]).unwrap(), 1);
    drop(store);
    d.pair.server = d.pair.env.serve();
    let served = d.pull_all(&d.pair.phone);
    let row = served.iter().find(|r| r["key"] == bad.as_str()).expect("the bad row is served");
    assert_eq!(row["values"]["score"], "lots", "{row}");

    let token = d.pair.env.token("alice", "fresh");
    let status = d.pair.env.sync(&d.pair.server, "fresh.db", &token);
    assert_eq!(status["refused_pulls"], 1, "{status}");
    let fresh = d.pair.env.db("fresh.db");
    let scores = |db: &rusqlite::Connection| -> Vec<(String, f64)> {
        let mut stmt = db.prepare("SELECT id, score FROM notes ORDER BY score").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(scores(&fresh), [(good.clone(), 2.5)]);
    let db = d.pair.env.path("fresh.db").display().to_string();
    let queue: Value = serde_json::from_str(&d.pair.env.ok_all(&["queue", "--db", &db, "--json"])).unwrap();
    let refused = &queue["refused_pulls"][0];
    assert_eq!((&refused["table"], &refused["key"]), (&json!("notes"), &json!(bad)), "{queue}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains(&format!("notes '{bad}': column 'score'")) && message.contains("lots"), "{message}");
    let text = d.pair.env.ok_all(&["queue", "--db", &db]);
    assert!(text.contains(&format!("notes '{bad}'")) && text.contains("column 'score'"), "{text}");
    let text = d.pair.env.ok_all(&["status", "--db", &db]);
    assert!(text.contains("refused      1 pulled rows that break a rule"), "{text}");

    // Fixed by its writer: the next sync applies it and clears the entry.
    let at = clock_at(&d.bob_site, 10);
    let mended = json!({"table": "notes", "key": bad, "exists": true, "exists_at": at, "clock": at,
        "values": {"body": "b", "score": 3.5}});
    let (s, body) = d.push(&d.bob_token, vec![mended]);
    assert_eq!(s, 200, "{body}");
    let status = d.pair.env.sync(&d.pair.server, "fresh.db", &token);
    assert_eq!(status["refused_pulls"], 0, "{status}");
    assert_eq!(scores(&fresh), [(good, 2.5), (bad, 3.5)]);
}
