//! Refused requests: each gets a clear error that names the bad value, and changes nothing.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::*;

fn clock(site: u64) -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    format!("{:016x}{site:016x}", ms << 16)
}

fn jump_row(id: &str, user: &str, values: Value) -> Value {
    let mut v = json!({"user_id": user, "jump_number": 1, "jumped_at": "2026-11-21T10:00:00Z", "visible_to_connections": false});
    for (k, x) in values.as_object().unwrap() {
        v[k] = x.clone();
    }
    json!({"table": "jump_log", "key": id, "exists": true, "exists_at": clock(7), "clock": clock(7), "values": v})
}

struct Api {
    pair: Pair,
    bob: String,
    bob_token: String,
}

impl Api {
    fn new() -> Api {
        let pair = Pair::new();
        let bob = pair.env.add_user("bob");
        let bob_token = pair.env.token("bob", "tablet");
        Api { pair, bob, bob_token }
    }

    fn push(&self, token: Option<&str>, body: String) -> (u16, Value) {
        let mut req = self.pair.server.http().post(format!("{}/v1/push", self.pair.server.url)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.header("content-type", "application/json").send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn push_rows(&self, token: &str, rows: Vec<Value>) -> (u16, Value) {
        self.push(Some(token), json!({"batch_id": uuid(), "rows": rows}).to_string())
    }

    /// The server's feed position as seen by alice: unchanged means nothing was stored.
    fn feed(&self) -> String {
        let resp: Value = self
            .pair
            .server
            .http()
            .get(format!("{}/v1/pull?cursor=0&limit=10000", self.pair.server.url))
            .bearer_auth(&self.pair.phone)
            .send()
            .unwrap()
            .json()
            .unwrap();
        resp["cursor"].as_str().unwrap().to_owned()
    }

    fn refused(&self, rows: Vec<Value>, status: u16, code: &str, message: &str) {
        let before = self.feed();
        let (s, body) = self.push_rows(&self.pair.phone, rows);
        assert_eq!(s, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let m = body["error"]["message"].as_str().unwrap();
        assert!(m.contains(message), "message {m:?} should contain {message:?}");
        assert_eq!(self.feed(), before, "a refused push stores nothing");
    }
}

#[test]
fn missing_and_bad_tokens_get_401_and_the_cli_names_the_cause() {
    let api = Api::new();
    let (s, body) = api.push(None, "{}".into());
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"].as_str().unwrap().contains("missing bearer token"));
    let (s, body) = api.push(Some("fry_not_a_real_token"), "{}".into());
    assert_eq!(s, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("bad token"));
    let resp = api.pair.server.http().get(format!("{}/v1/pull", api.pair.server.url)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let db = api.pair.env.path("new.db").display().to_string();
    let out = api.pair.env.run(&["sync", "--db", &db, "--server", &api.pair.server.url, "--token", "fry_wrong"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unauthorized (401)") && err.contains("bad token"), "{err}");
}

#[test]
fn a_write_to_another_users_row_gets_403_and_stores_nothing() {
    let api = Api::new();
    let phone = api.pair.env.db("phone.db");
    let alices = insert_jump(&phone, &api.pair.user, 1, "alice's jump");
    api.pair.sync_phone();
    let before = api.feed();

    // Bob claims a new row for alice.
    let (s, body) = api.push_rows(&api.bob_token, vec![jump_row(&uuid(), &api.pair.user, json!({}))]);
    assert_eq!(s, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not your user id"), "{body}");
    // Bob overwrites alice's existing row, even naming himself as owner.
    let (s, body) = api.push_rows(&api.bob_token, vec![jump_row(&alices, &api.bob, json!({"notes": "bob was here"}))]);
    assert_eq!(s, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("belongs to another user"), "{body}");
    assert_eq!(api.feed(), before);
    api.pair.sync_laptop();
    assert_eq!(jumps(&api.pair.env.db("laptop.db"))[0].2.as_deref(), Some("alice's jump"));
}

#[test]
fn rows_of_other_users_are_never_sent_but_shared_tables_are() {
    let api = Api::new();
    let phone = api.pair.env.db("phone.db");
    insert_jump(&phone, &api.pair.user, 1, "private");
    phone
        .execute(
            "INSERT INTO groups (id, name, created_by) VALUES (?1, 'Sunday 4-way', ?2)",
            [uuid(), api.pair.user.clone()],
        )
        .unwrap();
    api.pair.sync_phone();
    let status = api.pair.env.sync(&api.pair.server, "bob.db", &api.bob_token);
    assert_eq!(status["user_id"], api.bob.as_str());
    let bob = api.pair.env.db("bob.db");
    assert!(jumps(&bob).is_empty(), "alice's jumps never reach bob");
    let groups: i64 = bob.query_row("SELECT count(*) FROM groups", [], |r| r.get(0)).unwrap();
    assert_eq!(groups, 1, "tables without an owner are shared");
}

#[test]
fn bad_pushes_get_400_naming_the_bad_value_and_store_nothing() {
    let api = Api::new();
    let user = api.pair.user.clone();
    let id = uuid();
    let mut unknown_table = jump_row(&id, &user, json!({}));
    unknown_table["table"] = json!("jumps");
    api.refused(vec![unknown_table], 400, "bad_request", "unknown table 'jumps'; the schema has: profiles");
    api.refused(
        vec![jump_row(&id, &user, json!({"colour": "red"}))],
        400,
        "bad_request",
        &format!("jump_log '{id}': unknown column 'colour'"),
    );
    api.refused(
        vec![jump_row(&id, &user, json!({"jump_number": "twelve"}))],
        400,
        "bad_request",
        &format!("jump_log '{id}': column 'jump_number': expects integer, got \"twelve\""),
    );
    api.refused(
        vec![jump_row(&id, &user, json!({"discipline": "base"}))],
        400,
        "bad_request",
        "column 'discipline': allows only belly, freefly",
    );
    api.refused(vec![jump_row("42", &user, json!({}))], 400, "bad_request", "jump_log '42': key");
    let mut bad_clock = jump_row(&id, &user, json!({}));
    bad_clock["clock"] = json!("yesterday");
    api.refused(vec![bad_clock], 400, "bad_request", "malformed clock 'yesterday'");
    // One bad row spoils the whole batch: the good one before it is not stored either.
    api.refused(
        vec![jump_row(&uuid(), &user, json!({})), jump_row(&id, &user, json!({"jump_number": 1.5}))],
        400,
        "bad_request",
        "expects integer, got 1.5",
    );

    let before = api.feed();
    for body in ["not json", "{\"batch_id\": \"b\"}", "{\"batch_id\": \"b\", \"rows\": 5}"] {
        let (s, resp) = api.push(Some(&api.pair.phone), body.into());
        assert_eq!(s, 400, "{body}: {resp}");
        assert!(resp["error"]["message"].as_str().unwrap().starts_with("malformed push body"), "{resp}");
    }
    assert_eq!(api.feed(), before);
}

#[test]
fn a_retried_batch_applies_once() {
    let api = Api::new();
    let body = json!({"batch_id": "retry-me", "rows": [jump_row(&uuid(), &api.pair.user, json!({}))]}).to_string();
    let (s, first) = api.push(Some(&api.pair.phone), body.clone());
    assert_eq!(s, 200, "{first}");
    let after_first = api.feed();
    let (s, second) = api.push(Some(&api.pair.phone), body);
    assert_eq!(s, 200);
    assert_eq!(first["changed"], 1);
    assert_eq!(second["changed"], 1);
    assert_eq!(second["replayed"], true);
    assert_eq!(api.feed(), after_first);
}

#[test]
fn oversize_bodies_get_413_with_the_limit_named() {
    let env = Env::new();
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let server = env.serve_with(&["--max-body-bytes", "2000"]);
    let big = json!({"batch_id": "big", "rows": [], "pad": "x".repeat(5000)}).to_string();
    let resp = server.http().post(format!("{}/v1/push", server.url)).bearer_auth(&token).body(big).send().unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("limit of 2000 bytes"), "{body}");
}

#[test]
fn pull_pages_are_bounded_and_bad_parameters_are_named() {
    let api = Api::new();
    let phone = api.pair.env.db("phone.db");
    for i in 0..3 {
        insert_jump(&phone, &api.pair.user, i, "x");
    }
    api.pair.sync_phone();
    let get = |q: &str| {
        let resp = api
            .pair
            .server
            .http()
            .get(format!("{}/v1/pull?{q}", api.pair.server.url))
            .bearer_auth(&api.pair.phone)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    let (s, page) = get("cursor=0&limit=2");
    assert_eq!(s, 200);
    assert_eq!(page["rows"].as_array().unwrap().len(), 2);
    assert_eq!(page["more"], true);
    let (_, rest) = get(&format!("cursor={}&limit=2", page["cursor"].as_str().unwrap()));
    assert_eq!(rest["rows"].as_array().unwrap().len(), 1);
    assert_eq!(rest["more"], false);
    let (s, err) = get("cursor=0&limit=0");
    assert_eq!(s, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("limit '0'"));
    let (s, err) = get("cursor=abc");
    assert_eq!(s, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("cursor 'abc'"));
}

#[test]
fn health_live_answers_200() {
    let env = Env::new();
    let server = env.serve();
    let resp = server.http().get(format!("{}/health/live", server.url)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn server_keys_come_from_flags_and_environment_variables_too() {
    let env = Env::new();
    let mut child = Command::new(FERRY)
        .args(["serve", "-c", &env.config()])
        .env("FERRY_LISTEN", "127.0.0.1:0")
        .env("FERRY_DATA_DIR", env.path("elsewhere"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:") && !line.contains(":7070"), "{line}");
    assert!(env.path("elsewhere/ferry.db").exists(), "FERRY_DATA_DIR was used");
}

#[test]
fn a_bad_schema_is_refused_at_start_up_naming_the_table_and_the_fix() {
    let env = Env::new();
    let cases = [
        ("CREATE TABLE notes (body text);", "table 'notes' has no primary key"),
        ("CREATE TABLE notes (id integer PRIMARY KEY, body text);", "integer primary key 'id' is refused"),
        ("CREATE TABLE notes (id uuid PRIMARY KEY, body money);", "table 'notes', column 'body': unknown type 'money'"),
    ];
    for (sql, expected) in cases {
        std::fs::write(env.path("schema.sql"), sql).unwrap();
        let out = env.run(&["serve", "-c", &env.config(), "--listen", "127.0.0.1:0"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{sql}: {err}");
    }
    std::fs::write(env.path("schema.sql"), "CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid);").unwrap();
    std::fs::write(env.path("ferry.toml"), "[server]\nschema = \"schema.sql\"\n[tables.notes]\nowner = \"author\"\n")
        .unwrap();
    let out = env.run(&["serve", "-c", &env.config(), "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("table 'notes': owner column 'author' does not exist"), "{err}");
    // A rule is refused with its position and what rules may hold.
    std::fs::write(
        env.path("ferry.toml"),
        "[server]\nschema = \"schema.sql\"\n[tables.notes]\nwrite = \"user_id IN (SELECT id FROM members)\"\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&env.run(&["serve", "-c", &env.config()]).stderr).to_string();
    assert!(
        err.contains("table 'notes': write rule, at position 28: unknown table 'members'; the schema has: notes"),
        "{err}"
    );
    assert!(err.contains("    user_id IN (SELECT id FROM members)\n                               ^"), "{err}");
    std::fs::write(env.path("ferry.toml"), "[server]\nschema = \"schema.sql\"\nlisten_on = \"x\"\n").unwrap();
    let err = String::from_utf8_lossy(&env.run(&["serve", "-c", &env.config()]).stderr).to_string();
    assert!(err.contains("unknown field `listen_on`"), "{err}");
}
