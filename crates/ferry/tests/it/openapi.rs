//! `docs/openapi.json` against the real server: every documented operation is called over
//! HTTP, and each answer's status, media type, headers and body must be the documented ones.
//! The document and the router in `crates/ferry-server/src/lib.rs` must name the same routes,
//! every documented answer must have been seen (except 500 and 503, which a healthy server
//! does not give on demand), and every other method on a documented path, and a path nobody
//! documents, must get the documented refusal (405, 404). The WebSocket of `GET /v1/stream`
//! is also opened on a plain socket, and its messages checked against the 101 answer's
//! `x-messages` schema. File bytes (`application/octet-stream`) go both ways; their answers
//! are checked by status, media type and headers, and `Content-Length` against the body. A
//! `HEAD` case is checked against the document's GET operation (axum answers it from the GET
//! route): the same status, media type and headers, and no body.
//!
//! The document's schemas use a small JSON Schema subset, checked by the validator below. A
//! keyword outside it makes the test panic, so the document cannot rely on a rule that nobody
//! checks.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::proxy::{Fault, Proxy};
use crate::*;

/// The HTTP methods an OpenAPI path item (and an axum method router) may name.
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// Documented statuses no request can provoke from a healthy server.
const UNPROVOKED: &[&str] = &["500", "503"];

/// The methods whose absence from a path the server answers with 405.
const WRONG_METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

#[test]
fn the_document_and_the_servers_router_name_the_same_routes() {
    let doc = document();
    let documented: BTreeSet<(String, String)> =
        operations(&doc).map(|(m, p, _)| (m.to_owned(), p.to_owned())).collect();
    assert_eq!(documented, server_routes(), "docs/openapi.json (left) and the router in ferry-server (right) differ");
}

#[test]
fn every_documented_operation_answers_as_the_document_says() {
    let doc = document();
    let env = Env::new();
    // A conflict on `groups` stays open for the resolve endpoint; a stale change to
    // `formations` is refused row by row, and REST writes to it need a precondition.
    env.table_options("groups", "conflict = \"manual\"");
    env.table_options("formations", "conflict = \"reject-stale\"");
    // A server with a role (`cloud`) that a peer (`main`) links to: the peer's token holds a
    // server role and sends the `ferry-peer` header.
    let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
    std::fs::write(env.path("ferry.toml"), config.replacen("[server]\n", "[server]\nrole = \"cloud\"\n", 1)).unwrap();
    let alice = env.add_user("alice");
    let bob = env.add_user("bob");
    env.add_user("link");
    let (phone, laptop, tablet) =
        (env.token("alice", "phone"), env.token("alice", "laptop"), env.token("bob", "tablet"));
    let ops = env.ok(&["token", "create", "--user", "alice", "--device", "ops", "--admin", "-c", &env.config()]);
    let peer =
        env.ok(&["token", "create", "--user", "link", "--device", "main", "--role", "main", "-c", &env.config()]);
    // The peers `POST /v1/admin/integrity` checks against, their links off: `far`, a server of
    // its own that holds none of these rows, and `stranger`, the same server with a token it
    // does not know; and `slow`, the same server behind a proxy that can hold its requests,
    // for a full sync that stays running (`POST /v1/admin/full-sync`). `far`'s token is of a
    // user named otherwise than this server's `link`: a full sync adopts it here (else the two
    // names clash).
    let far_env = Env::new();
    far_env.add_user("relay");
    let far_config = far_env.config();
    let far_token =
        far_env.ok(&["token", "create", "--user", "relay", "--device", "cloud", "--role", "cloud", "-c", &far_config]);
    let far = far_env.serve();
    let slow = Proxy::start(&far.url);
    let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
    let peers = format!(
        "\n[peers.far]\nurl = \"{url}\"\ntoken = \"{far_token}\"\nenabled = false\n\n\
         [peers.stranger]\nurl = \"{url}\"\ntoken = \"fry_not_a_token\"\nenabled = false\n\n\
         [peers.slow]\nurl = \"{slow}\"\ntoken = \"{far_token}\"\nenabled = false\n",
        url = far.url,
        slow = slow.url
    );
    std::fs::write(env.path("ferry.toml"), config + &peers).unwrap();
    let server = env.serve_with(&["--max-body-bytes", "65536"]);
    let mut checker = Checker::new(&doc, &server.url);
    let (phone, laptop, tablet, ops, peer) = (Some(&*phone), Some(&*laptop), Some(&*tablet), Some(&*ops), Some(&*peer));

    let (group, t) = (uuid(), now_ms());
    let created = json!([group_row(&group, &alice, t, "Sunday 4-way", None)]);
    // Both devices rename the group from the name created at `t`; the laptop has not seen the
    // phone's rename, so its push leaves an open conflict.
    let phone_name = json!([group_row(&group, &alice, t, "Phone name", Some((t + 2, 1)))]);
    let laptop_name = json!([group_row(&group, &alice, t, "Laptop name", Some((t + 1, 2)))]);
    let formation = uuid();
    let planned = json!([formation_row(&group, &formation, t, "Star", None)]);
    let phone_plan = json!([formation_row(&group, &formation, t, "Phone star", Some((t + 2, 1)))]);
    // Both devices change a jump's freefall time (`lww`): a conflict settled at once, whose
    // versions show a boolean and a real.
    let jump = uuid();
    let logged = json!([jump_version(&jump, &alice, t, 45.5, None)]);
    let phone_time = json!([jump_version(&jump, &alice, t, 47.25, Some((t + 2, 1)))]);
    let laptop_time = json!([jump_version(&jump, &alice, t, 50.0, Some((t + 1, 2)))]);
    let mut unknown_table = jump_row(&alice, t, 1);
    unknown_table["table"] = json!("jumps");
    let too_big = "x".repeat(70_000);
    let cases = [
        get("/health/live", None, 200),
        get("/metrics", None, 200),
        get("/v1/schema", phone, 200),
        get("/v1/schema", None, 401),
        get("/v1/me", phone, 200),
        get("/v1/me", Some("fry_not_a_token"), 401),
        post("/v1/push", phone, push_body("created", Some("0"), &created), 200),
        // The same batch again: answered from the record (`replayed`, no `cursor`).
        post("/v1/push", phone, push_body("created", Some("0"), &created), 200),
        post("/v1/push", phone, push_body("phone-rename", None, &phone_name), 200),
        post("/v1/push", laptop, push_body("laptop-rename", None, &laptop_name), 200),
        post("/v1/push", phone, push_body("jump", None, &json!([jump_row(&alice, t, 1)])), 200),
        post("/v1/push", phone, push_body("logged", None, &logged), 200),
        post("/v1/push", phone, push_body("phone-time", None, &phone_time), 200),
        post("/v1/push", laptop, push_body("laptop-time", None, &laptop_time), 200),
        post("/v1/push", phone, push_body("formation", None, &planned), 200),
        post("/v1/push", phone, push_body("phone-plan", None, &phone_plan), 200),
        post("/v1/push", phone, push_body("unknown-table", None, &json!([unknown_table])), 400),
        post("/v1/push", phone, "not json", 400),
        post("/v1/push", phone, push_body("", None, &json!([])), 400),
        post("/v1/push", None, push_body("anonymous", None, &json!([])), 401),
        post("/v1/push", tablet, push_body("bob-writes-alices", None, &json!([jump_row(&alice, t, 3)])), 403),
        post("/v1/push", phone, &too_big, 413),
        get("/v1/pull?cursor=0&limit=1", phone, 200),
        get("/v1/pull", laptop, 200),
        get("/v1/pull?cursor=nonsense", phone, 400),
        get("/v1/pull?limit=0", phone, 400),
        get("/v1/pull?colour=red", phone, 400),
        get("/v1/pull", Some("fry_not_a_token"), 401),
        get("/v1/admin/conflicts?status=sideways", ops, 400),
        get("/v1/admin/conflicts", None, 401),
        get("/v1/admin/conflicts", phone, 403),
        // A plain GET, and a handshake short of its key.
        get("/v1/stream", phone, 400),
        get("/v1/stream", phone, 400).with("connection", "Upgrade").with("upgrade", "websocket"),
        handshake(get("/v1/stream", None, 401)),
        handshake(get("/v1/stream", Some("fry_not_a_token"), 401)),
    ];
    for case in &cases {
        checker.check(case);
    }
    // reqwest hands back the 101 (but cannot speak WebSocket after it); `open_stream` below
    // reads the messages on a socket of its own.
    let (_, headers) = checker.answer(&handshake(get("/v1/stream", phone, 101)));
    assert_eq!(headers["sec-websocket-accept"], WS_ACCEPT, "the accept key of RFC 6455's sample key");
    // The laptop changes the formation as it was before the phone's change: refused.
    let stale = json!([formation_row(&group, &formation, t, "Laptop star", Some((t + 1, 2)))]);
    let answer = checker.check(&post("/v1/push", laptop, push_body("laptop-plan", None, &stale), 200));
    assert_eq!(answer["rejected"][0]["current"]["values"]["name"], "Phone star", "{answer}");

    // The log keeps both versions of the jump in the wire form, as pushes carry them.
    let log = checker.check(&get("/v1/admin/conflicts", ops, 200));
    let timed = log.as_array().into_iter().flatten().find(|c| c["key"] == jump.as_str());
    let timed = timed.unwrap_or_else(|| panic!("no conflict logged for the jump: {log}"));
    assert_eq!(timed["fields"], json!(["freefall_seconds"]), "{timed}");
    assert_eq!(timed["stored"]["values"]["freefall_seconds"], json!(47.25), "{timed}");
    assert_eq!(timed["incoming"]["values"]["freefall_seconds"], json!(50.0), "{timed}");
    assert_eq!(timed["stored"]["values"]["visible_to_connections"], json!(false), "{timed}");

    let open = checker.check(&get("/v1/admin/conflicts?status=open", ops, 200));
    assert_eq!(open.as_array().map(Vec::len), Some(1), "one open conflict: {open}");
    let one = format!("/v1/admin/conflicts/{}", open[0]["id"]);
    let resolve = format!("{one}/resolve");
    let (incoming, stored) = (r#"{"use": "incoming"}"#, r#"{"use": "stored"}"#);
    let cases = [
        get(&one, ops, 200),
        get("/v1/admin/conflicts/abc", ops, 400),
        // An id that is not UTF-8 is refused like any other bad id, after the admin check.
        get("/v1/admin/conflicts/%FF", ops, 400),
        get("/v1/admin/conflicts/%FF", phone, 403),
        get(&one, None, 401),
        get(&one, phone, 403),
        get("/v1/admin/conflicts/99999", ops, 404),
        post(&resolve, ops, r#"{"use": "sideways"}"#, 400),
        post("/v1/admin/conflicts/abc/resolve", ops, incoming, 400),
        post("/v1/admin/conflicts/%FF/resolve", ops, incoming, 400),
        post(&resolve, ops, "not gzip", 400).with("content-encoding", "gzip"),
        post(&resolve, None, incoming, 401),
        post(&resolve, phone, incoming, 403),
        post("/v1/admin/conflicts/99999/resolve", ops, incoming, 404),
        post(&resolve, ops, &too_big, 413),
        post(&resolve, ops, incoming, 200),
        post(&resolve, ops, stored, 409),
        get("/v1/admin/conflicts?status=resolved", ops, 200),
        get("/v1/pull?cursor=0&limit=10000", phone, 200),
    ];
    for case in &cases {
        checker.check(case);
    }

    // The REST data API: one of alice's jumps, read and written with its version.
    let row = format!("/v1/rows/jump_log/{}", uuid());
    let new_jump = json!({"values": {
        "user_id": alice, "jump_number": 7, "jumped_at": "2026-11-22T09:00:00Z",
        "freefall_seconds": 45.5, "visible_to_connections": true
    }})
    .to_string();
    let notes = |n: &str| json!({"values": {"notes": n}}).to_string();
    let versioned = |n: &str, v: &Value| json!({"values": {"notes": n}, "version": v}).to_string();
    let quoted = |v: &Value| format!("\"{}\"", v.as_str().unwrap());
    checker.check(&get(&row, phone, 404));
    let made = checker.check(&put(&row, phone, &new_jump, 201));
    assert_eq!(made["values"]["visible_to_connections"], true, "{made}");
    assert_eq!(made["values"]["freefall_seconds"], 45.5, "{made}");
    let v1 = made["version"].clone();
    let bobs_claim = json!({"values": {"user_id": bob, "jump_number": 1, "jumped_at": "2026-11-22T09:00:00Z"}});
    let cases = [
        get(&row, phone, 200),
        get(&row, laptop, 200),
        get(&row, None, 401),
        // Bob cannot see alice's jump: as if there were none.
        get(&row, tablet, 404),
        get(format!("/v1/rows/jumps/{}", uuid()), phone, 404),
        get("/v1/rows/jump_log/%FF", phone, 400),
        put(&row, phone, notes("again"), 412).with("if-none-match", "*"),
        put(&row, phone, "not json", 400),
        put(&row, phone, r#"{"values": {}, "colour": "red"}"#, 400),
        put(&row, phone, r#"{"values": {"colour": "red"}}"#, 400),
        put(&row, phone, r#"{"values": {"jump_number": "many"}}"#, 400),
        put(&row, phone, r#"{"values": {"id": "not-this-key"}}"#, 400),
        put(&row, phone, notes("no"), 400).with("if-none-match", "\"abc\""),
        put(&row, phone, notes("no"), 400).with("content-encoding", "gzip"),
        put("/v1/rows/jump_log/not-a-uuid", phone, &new_jump, 400),
        put("/v1/rows/jump_log/%FF", phone, &new_jump, 400),
        // A new row needs the NOT NULL columns that have no default.
        put(format!("/v1/rows/jump_log/{}", uuid()), phone, notes("no jump"), 400),
        put(&row, None, notes("anonymous"), 401),
        put(&row, tablet, bobs_claim.to_string(), 403),
        put(format!("/v1/rows/jump_log/{}", uuid()), tablet, &new_jump, 403),
        put(format!("/v1/rows/jumps/{}", uuid()), phone, notes("x"), 404),
        put(&row, phone, &too_big, 413),
        // No precondition: fine on an `lww` table.
        put(&row, laptop, notes("laptop"), 200),
    ];
    for case in &cases {
        checker.check(case);
    }
    let current = checker.check(&get(&row, phone, 200))["version"].clone();
    assert_ne!(current, v1);
    for refused in [
        put(&row, phone, notes("late"), 412).with("if-match", quoted(&v1)),
        put(&row, phone, versioned("late", &v1), 409),
        delete(&row, phone, 412).with("if-match", quoted(&v1)),
        delete(&row, phone, 412).with("if-none-match", "*"),
    ] {
        let answer = checker.check(&refused);
        assert_eq!(answer["current"]["version"], current, "{answer}");
    }
    // Preconditions on a row that does not exist: no `current`.
    let missing = format!("/v1/rows/jump_log/{}", uuid());
    for refused in [
        put(&missing, phone, notes("x"), 412).with("if-match", quoted(&v1)),
        put(&missing, phone, versioned("x", &v1), 409),
    ] {
        let answer = checker.check(&refused);
        assert_eq!(answer.get("current"), None, "{answer}");
    }
    let changed = checker.check(&put(&row, phone, notes("phone"), 200).with("if-match", quoted(&current)));
    let changed = checker.check(&put(&row, phone, versioned("phone again", &changed["version"]), 200));
    let cases = [
        delete(&row, None, 401),
        delete(&row, phone, 400).with("if-none-match", "\"abc\""),
        delete("/v1/rows/jump_log/%FF", phone, 400),
        delete(&row, tablet, 404),
        delete(format!("/v1/rows/jumps/{}", uuid()), phone, 404),
        delete(&missing, phone, 404),
    ];
    for case in &cases {
        checker.check(case);
    }
    let (_, headers) = checker.answer(&delete(&row, phone, 204).with("if-match", quoted(&changed["version"])));
    let tombstone = headers["etag"].to_str().unwrap().to_owned();
    checker.check(&get(&row, phone, 404));
    checker.check(&delete(&row, phone, 404));
    // The changes feed shows the tombstone with the version the delete answered.
    let feed = checker.check(&get("/v1/changes", phone, 200));
    let key = row.rsplit('/').next().unwrap();
    let gone = feed["changes"].as_array().into_iter().flatten().find(|c| c["key"] == key);
    let gone = gone.unwrap_or_else(|| panic!("no tombstone in {feed}"));
    assert_eq!((&gone["deleted"], quoted(&gone["version"])), (&json!(true), tombstone), "{gone}");
    // Created again, as an SQL INSERT would: the columns not given get their default, or NULL.
    let bare = json!({"values": {"user_id": alice, "jump_number": 7, "jumped_at": "2026-11-22T09:00:00Z"}});
    let again = checker.check(&put(&row, phone, bare.to_string(), 201).with("if-none-match", "*"));
    assert_eq!((&again["values"]["visible_to_connections"], &again["values"]["notes"]), (&json!(false), &Value::Null));
    let cases = [
        get("/v1/changes?since=0&limit=1", phone, 200),
        get(format!("/v1/changes?since={}", feed["cursor"].as_str().unwrap()), laptop, 200),
        get("/v1/changes?since=nonsense", phone, 400),
        get("/v1/changes?limit=0", phone, 400),
        get("/v1/changes?cursor=0", phone, 400),
        get("/v1/changes", None, 401),
    ];
    for case in &cases {
        checker.check(case);
    }

    // A `reject-stale` table: every write says which version it was made on.
    let plan = format!("/v1/rows/formations/{}", uuid());
    let diamond = json!({"values": {"group_id": group, "name": "Diamond", "slots": 4}}).to_string();
    checker.check(&put(&plan, phone, &diamond, 428));
    let made = checker.check(&put(&plan, phone, &diamond, 201).with("if-none-match", "*"));
    let box_ = json!({"values": {"name": "Box"}}).to_string();
    checker.check(&put(&plan, laptop, &box_, 428));
    let boxed = checker.check(&put(&plan, laptop, &box_, 200).with("if-match", quoted(&made["version"])));
    checker.check(&delete(&plan, phone, 428));
    checker.check(&delete(&plan, phone, 204).with("if-match", quoted(&boxed["version"])));

    check_files(&mut checker, (&alice, &bob), (phone, laptop, tablet, ops));

    // The stream's messages: the hello, then a notification of the laptop's push.
    let (head, mut socket) = open_stream(&server.url, phone.unwrap());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let accept =
        head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-accept")));
    assert_eq!(accept.map(|(_, v)| v.trim()), Some(WS_ACCEPT), "{head}");
    let hello = next_message(&mut socket);
    assert_eq!(hello["type"], "hello", "{hello}");
    checker.check(&post("/v1/push", laptop, push_body("streamed", None, &json!([jump_row(&alice, t, 2)])), 200));
    let changed = next_message(&mut socket);
    // A file the laptop uploads for a row of alice's: the phone hears of it.
    let streamed = "streamed video";
    let values = json!({"user_id": alice, "jump_number": 10, "jumped_at": "2026-11-23T10:00:00Z", "video_sha256": sha256(streamed)});
    checker.check(&put(format!("/v1/rows/jump_log/{}", uuid()), laptop, json!({ "values": values }).to_string(), 201));
    assert_eq!(next_message(&mut socket)["type"], "changed", "the row first");
    checker.check(&upload(&sha256(streamed), laptop, streamed, streamed.len(), 201));
    let files = next_message(&mut socket);
    assert_eq!(files["type"], "files", "{files}");
    checker.check_messages("/v1/stream", &[hello, changed, files]);

    // The devices, all or one user's.
    let listed = checker.check(&get("/v1/admin/devices", ops, 200));
    assert!(listed["devices"].as_array().unwrap().len() >= 4, "{listed}");
    checker.check(&get("/v1/admin/devices?user=bob", ops, 200));
    checker.check(&get("/v1/admin/devices?user=nobody", ops, 404));
    checker.check(&get("/v1/admin/devices?owner=bob", ops, 400));
    checker.check(&get("/v1/admin/devices", phone, 403));
    checker.check(&get("/v1/admin/devices", None, 401));
    // A device revoked by id; then nothing is left to revoke under that id.
    let spare = env.token("alice", "spare");
    let me: Value =
        server.http().get(format!("{}/v1/me", server.url)).bearer_auth(&spare).send().unwrap().json().unwrap();
    let revoke = format!("/v1/admin/devices/{}/revoke", me["device_id"].as_str().unwrap());
    let revoke_as = |token, status| Case::new("post", revoke.clone(), token, None, status);
    checker.check(&revoke_as(phone, 403));
    checker.check(&revoke_as(None, 401));
    checker.check(&revoke_as(ops, 200));
    checker.check(&revoke_as(ops, 404));

    check_peering(&mut checker, (&alice, t, &too_big), (phone, tablet, ops, peer));
    check_integrity(&mut checker, &too_big, (phone, ops, peer));
    check_full_sync(&mut checker, (&too_big, &far.url, &slow), (phone, ops, peer));
    check_snapshot(&mut checker, &too_big, (phone, tablet, peer));
    // Last: the compaction makes every cursor taken so far too old; the phone then catches up
    // by difference.
    check_compaction(&env, &mut checker, &alice, (phone, laptop, peer));
    check_catch_up(&mut checker, (&alice, &too_big), (phone, tablet));

    checker.assert_every_answer_was_seen();
    checker.assert_other_methods_and_paths_are_refused();
}

/// The files `jump_log.video_sha256` references: checked, uploaded whole, refused, broken off
/// and resumed, uploaded twice at once, downloaded whole and from an offset; and the admin
/// status that counts them.
fn check_files(
    checker: &mut Checker,
    (alice, bob): (&str, &str),
    (phone, laptop, tablet, ops): (Option<&str>, Option<&str>, Option<&str>, Option<&str>),
) {
    // The video is larger than the server's max_body_bytes (65 536): that limit is not for files.
    let video: String = (0..150_000u32).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    let clip = "a 4-way exit, 12 seconds of freefall".to_owned();
    let bobs = "bob's tracking dive".to_owned();
    let (v, c, b) = (sha256(&video), sha256(&clip), sha256(&bobs));
    // One hash no row references, one a row references but nobody uploads.
    let (nobodys, never) = (sha256("nobody's file"), sha256("never uploaded"));
    let jump = |user: &str, hash: &str| {
        let values =
            json!({"user_id": user, "jump_number": 9, "jumped_at": "2026-11-23T10:00:00Z", "video_sha256": hash});
        json!({ "values": values }).to_string()
    };
    let file = |hash: &str| format!("/v1/files/{hash}");
    let ask = |hashes: &[&str]| json!({ "hashes": hashes }).to_string();
    let code = |answer: &Value| answer["error"]["code"].as_str().unwrap_or_default().to_owned();
    let header = |headers: &reqwest::header::HeaderMap, name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    for (token, user, hash) in [(phone, alice, &v), (phone, alice, &c), (phone, alice, &never), (tablet, bob, &b)] {
        checker.check(&put(format!("/v1/rows/jump_log/{}", uuid()), token, jump(user, hash), 201));
    }

    let asked = checker.check(&post("/v1/files/check", phone, ask(&[&v, &b, &nobodys]), 200));
    let expected = json!([
        {"hash": v, "state": "missing"}, {"hash": b, "state": "unreferenced"}, {"hash": nobodys, "state": "unreferenced"}
    ]);
    assert_eq!(asked["files"], expected, "in the order asked");
    let too_many = json!({ "hashes": vec!["x"; 1001] }).to_string();
    let (len, half) = (video.len(), video.len() / 2);
    let mut altered = video.clone();
    altered.replace_range(..1, "!");
    // An answer given before the body is read leaves it unread, and reqwest reports an error
    // instead of the answer when the server stops reading a large body: refusals get a short one.
    let start = &video[..100];
    let cases = [
        post("/v1/files/check", phone, "not json", 400),
        post("/v1/files/check", phone, ask(&[&v.to_uppercase()]), 400),
        post("/v1/files/check", phone, &too_many, 400),
        post("/v1/files/check", None, ask(&[&v]), 401),
        // Referenced but not uploaded, and another user's file: both as if there were none.
        get(file(&v), phone, 404),
        head(file(&v), phone, 404),
        get(file(&b), phone, 404),
        get(file("not-a-hash"), phone, 400),
        get(file(&v), None, 401),
        upload(&v, None, start, len, 401),
        upload("not-a-hash", phone, start, len, 400),
        octets(put(file(&v), phone, start, 400)),
        upload(&v, phone, start, "all of it", 400),
        upload(&v, phone, start, len, 400).with("upload-offset", (len + 1).to_string()),
        upload(&b, phone, &bobs, bobs.len(), 403),
        upload(&nobodys, phone, "nobody's file", 13, 403),
        // More bytes than declared: nothing is kept.
        upload(&v, phone, &format!("{video}!"), len, 400),
    ];
    for case in &cases {
        checker.check(case);
    }
    let refused = checker.check(&upload(&v, phone, "", 1_073_741_825, 413));
    assert!(refused["error"]["message"].as_str().unwrap_or_default().contains("1073741824"), "{refused}");
    // The server holds nothing of the video: an upload from byte 5 is told to start at 0.
    let (answer, headers) = checker.answer(&upload(&v, phone, &video[5..105], len, 409).with("upload-offset", "5"));
    assert_eq!(code(&answer), "upload_offset", "{answer}");
    assert_eq!((&answer["offset"], header(&headers, "upload-offset")), (&json!(0), "0".to_owned()), "{answer}");
    let answer = checker.check(&upload(&v, phone, &altered, len, 422));
    assert_eq!(code(&answer), "hash_mismatch", "{answer}");
    let asked = checker.check(&post("/v1/files/check", phone, ask(&[&v]), 200));
    assert_eq!(asked["files"], json!([{"hash": v, "state": "missing"}]), "nothing kept of a refused upload");

    // Half of the video, then the body ends: the half is kept, and the upload resumes there.
    checker.check(&upload(&v, phone, &video[..half], len, 400));
    let asked = checker.check(&post("/v1/files/check", phone, ask(&[&v]), 200));
    assert_eq!(asked["files"], json!([{"hash": v, "state": "partial", "offset": half}]));
    let (answer, headers) = checker.answer(&upload(&v, phone, start, len, 409));
    assert_eq!((&answer["offset"], header(&headers, "upload-offset")), (&json!(half), half.to_string()), "{answer}");
    let stored = checker.check(&upload(&v, phone, &video[half..], len, 201).with("upload-offset", half.to_string()));
    assert_eq!(stored, json!({"hash": v, "size": len}));
    let again = checker.check(&upload(&v, laptop, start, len, 200));
    assert_eq!(again, json!({"hash": v, "size": len}));
    checker.check(&upload(&b, tablet, &bobs, bobs.len(), 201));

    // While one request uploads the clip (its first bytes sent, the rest not yet), another is
    // refused; the first then completes.
    let (first, rest) = clip.split_at(10);
    let mut uploading = start_upload(&checker.url, phone.unwrap(), &c, clip.len(), first);
    let partial = json!([{"hash": c, "state": "partial", "offset": first.len()}]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let asked = checker.check(&post("/v1/files/check", laptop, ask(&[&c]), 200));
        if asked["files"] == partial {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the clip's first bytes never arrived: {asked}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let answer = checker.check(&upload(&c, laptop, &clip, clip.len(), 409));
    assert_eq!((code(&answer), answer.get("offset")), ("upload_in_progress".to_owned(), None), "{answer}");
    let status = checker.check(&get("/v1/admin/status", ops, 200));
    let running = &status["files"];
    let pending = json!(rest.len());
    assert_eq!(
        [&running["in_flight"], &running["uploading"], &running["uploading_bytes_pending"]],
        [&json!(1), &json!(1), &pending]
    );
    let answer = finish_upload(&mut uploading, rest);
    assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");

    let asked = checker.check(&post("/v1/files/check", phone, ask(&[&v, &c, &never, &b]), 200));
    let expected = json!([
        {"hash": v, "state": "stored", "size": len},
        {"hash": c, "state": "stored", "size": clip.len()},
        {"hash": never, "state": "missing"},
        {"hash": b, "state": "unreferenced"}
    ]);
    assert_eq!(asked["files"], expected);

    // Downloads: whole, from an offset, past the end; HEAD for the size.
    let (body, headers) = checker.answer(&get(file(&v), phone, 200));
    assert_eq!(body.as_str(), Some(&*video));
    assert_eq!(header(&headers, "etag"), format!("\"{v}\""));
    let (body, headers) = checker.answer(&get(file(&v), laptop, 206).with("range", "bytes=1-"));
    assert_eq!(body.as_str(), Some(&video[1..]));
    assert_eq!(header(&headers, "content-range"), format!("bytes 1-{}/{len}", len - 1));
    let (_, headers) = checker.answer(&head(file(&v), phone, 200));
    assert_eq!(header(&headers, "content-length"), len.to_string());
    let (_, headers) = checker.answer(&head(file(&v), phone, 206).with("range", format!("bytes={half}-")));
    assert_eq!(header(&headers, "content-length"), (len - half).to_string());
    let past = format!("bytes={}-", len + 1);
    let (answer, headers) = checker.answer(&get(file(&v), phone, 416).with("range", &past));
    assert_eq!(code(&answer), "range_not_satisfiable", "{answer}");
    assert_eq!(header(&headers, "content-range"), format!("bytes */{len}"));
    let (body, _) = checker.answer(&get(file(&c), laptop, 200));
    assert_eq!(body.as_str(), Some(&*clip));
    checker.check(&get(file(&b), tablet, 200));
    // Bob's file is stored now, and still as if there were none for alice.
    checker.check(&get(file(&b), phone, 404));
    checker.check(&get(file(&never), phone, 404));

    checker.check(&get("/v1/admin/status", None, 401));
    checker.check(&get("/v1/admin/status", phone, 403));
    let status = checker.check(&get("/v1/admin/status", ops, 200));
    let files = &status["files"];
    let counts = |names: &[&str]| names.iter().map(|n| files[*n].as_u64().unwrap_or(u64::MAX)).collect::<Vec<_>>();
    let names = ["stored", "referenced", "missing", "uploading", "uploads_completed", "uploads_refused"];
    assert_eq!(counts(&names), [3, 4, 1, 0, 3, 1], "{names:?}: {status}");
    let stored_bytes = (len + clip.len() + bobs.len()) as u64;
    let names = ["stored_bytes", "uploading_bytes_pending", "max_upload_bytes"];
    assert_eq!(counts(&names), [stored_bytes, 0, 1 << 30], "{names:?}: {status}");
    assert!(files["peak_in_flight"].as_u64() >= Some(1), "{status}");
    // The whole and the ranged download of the video, the clip's and bob's file's.
    assert!(files["downloads_completed"].as_u64() >= Some(4), "{status}");
}

/// Server peering: the `ferry-peer` header on the endpoints a peer uses, the users two peers
/// share (`/v1/peer/users`), and the links' status and sync log for admins. `peer` is a token
/// whose device (`main`) has a server role; the server's own role is `cloud`.
fn check_peering(
    checker: &mut Checker,
    (alice, t, too_big): (&str, u64, &str),
    (phone, tablet, ops, peer): (Option<&str>, Option<&str>, Option<&str>, Option<&str>),
) {
    let as_peer = |case: Case| case.with("ferry-peer", "cloud");
    let long = "x".repeat(201);
    // Both roles show in `GET /v1/me`: the device's, and the server's.
    let me = checker.check(&as_peer(get("/v1/me", peer, 200)));
    assert_eq!((&me["role"], &me["server_role"]), (&json!("main"), &json!("cloud")), "{me}");
    let me = checker.check(&get("/v1/me", phone, 200));
    assert_eq!((me.get("role"), &me["server_role"]), (None, &json!("cloud")), "{me}");
    // A peer reads every row, alice's included, whatever its user.
    let page = checker.check(&as_peer(get("/v1/pull?limit=10000", peer, 200)));
    let rows = page["rows"].as_array().map_or(0, Vec::len);
    let own = checker.check(&get("/v1/pull?limit=10000", phone, 200))["rows"].as_array().map_or(0, Vec::len);
    assert!(rows >= own && own > 0, "the peer reads {rows} rows, alice's phone {own}");
    // Its pushes relay other writers' rows: a jump of alice's, written on site 9.
    let relayed = json!([jump_row(alice, t, 9)]);
    let cases = [
        get("/v1/me", peer, 400).with("ferry-peer", ""),
        as_peer(get("/v1/me", phone, 403)),
        get("/v1/pull", peer, 400).with("ferry-peer", &long),
        as_peer(get("/v1/pull", phone, 403)),
        as_peer(post("/v1/push", peer, push_body("relayed", None, &relayed), 200)),
        post("/v1/push", peer, push_body("empty-link", None, &relayed), 400).with("ferry-peer", ""),
        as_peer(post("/v1/push", tablet, push_body("not-a-peer", None, &relayed), 403)),
        handshake(get("/v1/stream", peer, 400).with("ferry-peer", "")),
        handshake(as_peer(get("/v1/stream", phone, 403))),
    ];
    for case in &cases {
        checker.check(case);
    }
    checker.answer(&handshake(as_peer(get("/v1/stream", peer, 101))));

    // Users travel with their ids: carol is new here; a user named bob exists with another id.
    let carol = uuid();
    let users =
        json!({"users": [{"id": alice, "name": "alice"}, {"id": carol, "name": "carol"}, {"id": uuid(), "name": "bob"}]})
            .to_string();
    let cases = [
        get("/v1/peer/users", peer, 400).with("ferry-peer", ""),
        as_peer(get("/v1/peer/users", None, 401)),
        get("/v1/peer/users", peer, 403),
        as_peer(get("/v1/peer/users", phone, 403)),
        as_peer(post("/v1/peer/users", peer, "not json", 400)),
        as_peer(post("/v1/peer/users", peer, r#"{"users": [], "colour": "red"}"#, 400)),
        as_peer(post("/v1/peer/users", peer, r#"{"users": [{"id": "", "name": "dan"}]}"#, 400)),
        post("/v1/peer/users", peer, &users, 400).with("ferry-peer", &long),
        as_peer(post("/v1/peer/users", None, &users, 401)),
        post("/v1/peer/users", peer, &users, 403),
        as_peer(post("/v1/peer/users", phone, &users, 403)),
        as_peer(post("/v1/peer/users", peer, too_big, 413)),
    ];
    for case in &cases {
        checker.check(case);
    }
    let adopted = checker.check(&as_peer(post("/v1/peer/users", peer, &users, 200)));
    assert_eq!(adopted["added"], 1, "{adopted}");
    let refused = adopted["refused"].as_array().unwrap();
    assert!(refused.len() == 1 && refused[0].as_str().unwrap().contains("bob"), "{adopted}");
    let all = checker.check(&as_peer(get("/v1/peer/users", peer, 200)));
    let listed = all["users"].as_array().unwrap();
    assert!(listed.contains(&json!({"id": carol, "name": "carol"})), "{all}");
    assert!(listed.contains(&json!({"id": alice, "name": "alice"})), "{all}");

    // The peer's calls are its incoming link's heartbeat.
    let status = checker.check(&get("/v1/admin/sync/status", ops, 200));
    assert_eq!(status["role"], "cloud", "{status}");
    let link = status["peers"].as_array().into_iter().flatten().find(|p| p["name"] == "main");
    let link = link.unwrap_or_else(|| panic!("no link named after the peer's device: {status}"));
    let seen = [&link["direction"], &link["peer_role"], &link["state"]];
    assert_eq!(seen, [&json!("incoming"), &json!("main"), &json!("CONNECTED")], "{link}");
    let log = checker.check(&get("/v1/admin/sync/log?peer=main&limit=1000", ops, 200));
    assert_eq!(log["entries"], json!([]), "an incoming link runs nothing here: {log}");
    // The link is up and nothing waits: healthy, and no alert.
    let health = checker.check(&get("/health/sync", None, 200));
    assert_eq!(health, json!({"status": "ok", "reasons": []}));
    let alerts = checker.check(&get("/v1/admin/alerts", ops, 200));
    assert_eq!(alerts, json!({"alerts": []}));
    let cases = [
        get("/v1/admin/sync/status", None, 401),
        get("/v1/admin/sync/status", phone, 403),
        get("/v1/admin/sync/status", peer, 403),
        get("/v1/admin/sync/log", ops, 200),
        get("/v1/admin/sync/log?limit=1", ops, 200),
        get("/v1/admin/sync/log?limit=0", ops, 400),
        get("/v1/admin/sync/log?limit=1001", ops, 400),
        get("/v1/admin/sync/log?limit=many", ops, 400),
        get("/v1/admin/sync/log?colour=red", ops, 400),
        get("/v1/admin/sync/log", None, 401),
        get("/v1/admin/sync/log", phone, 403),
        get("/v1/admin/alerts", None, 401),
        get("/v1/admin/alerts", phone, 403),
    ];
    for case in &cases {
        checker.check(case);
    }
}

/// Integrity checks between peers: the digest tree a peer asks about
/// (`/v1/peer/digests`), the rows it fetches for a repair (`/v1/peer/rows`), and an admin's
/// check against the peers `far` (a server holding none of these rows) and `stranger` (the
/// same server, with a token it does not know).
fn check_integrity(
    checker: &mut Checker,
    too_big: &str,
    (phone, ops, peer): (Option<&str>, Option<&str>, Option<&str>),
) {
    let as_peer = |case: Case| case.with("ferry-peer", "cloud");
    let ask = |table: &str, nodes: &[&str], rows: &[&str]| {
        json!({"table": table, "session": "openapi", "tombstones_from_ms": 0, "nodes": nodes, "rows": rows}).to_string()
    };
    // The root and one child of it summarised, and every row of the table listed.
    let digests = checker.check(&as_peer(post("/v1/peer/digests", peer, ask("formations", &["", "a"], &[""]), 200)));
    let listed = digests["rows"].as_array().unwrap();
    let root = &digests["nodes"][0];
    assert_eq!((&root["prefix"], &digests["nodes"][1]["prefix"]), (&json!(""), &json!("a")), "{digests}");
    assert_eq!(root["count"].as_u64(), Some(listed.len() as u64), "{digests}");
    assert!(listed.iter().any(|r| r["deleted"] == true), "the deleted formation's tombstone: {digests}");
    // A node's digest is the wrapping sum of its rows'.
    let sum = listed
        .iter()
        .map(|r| u64::from_str_radix(r["version"].as_str().unwrap(), 16).unwrap())
        .fold(0u64, u64::wrapping_add);
    assert_eq!(root["digest"], json!(format!("{sum:016x}")), "{digests}");
    let keys: Vec<&str> = listed.iter().map(|r| r["key"].as_str().unwrap()).collect();
    let fetch = json!({"table": "formations", "keys": keys}).to_string();
    let page = checker.check(&as_peer(post("/v1/peer/rows", peer, fetch, 200)));
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(keys.len()), "{page}");
    assert!(page["rows"].as_array().unwrap().iter().any(|r| r["exists"] == false), "{page}");
    assert_eq!((&page["cursor"], &page["more"]), (&json!(""), &json!(false)), "{page}");

    let some = ask("jump_log", &[""], &[]);
    let rows = json!({"table": "formations", "keys": [keys[0]]}).to_string();
    let cases = [
        as_peer(post("/v1/peer/digests", peer, "not json", 400)),
        as_peer(post("/v1/peer/digests", peer, r#"{"table": "jump_log", "session": "s", "colour": "red"}"#, 400)),
        as_peer(post("/v1/peer/digests", peer, r#"{"table": "jump_log", "session": ""}"#, 400)),
        as_peer(post("/v1/peer/digests", peer, ask("jump_log", &["G"], &[]), 400)),
        as_peer(post("/v1/peer/digests", peer, ask("jump_log", &[""; 4097], &[]), 400)),
        post("/v1/peer/digests", peer, &some, 400).with("ferry-peer", ""),
        as_peer(post("/v1/peer/digests", None, &some, 401)),
        post("/v1/peer/digests", peer, &some, 403),
        as_peer(post("/v1/peer/digests", phone, &some, 403)),
        as_peer(post("/v1/peer/digests", peer, ask("jumps", &[""], &[]), 400)),
        as_peer(post("/v1/peer/digests", peer, too_big, 413)),
        as_peer(post("/v1/peer/rows", peer, "not json", 400)),
        as_peer(post("/v1/peer/rows", peer, json!({"table": "jump_log", "keys": vec!["k"; 10_001]}).to_string(), 400)),
        post("/v1/peer/rows", peer, &rows, 400).with("ferry-peer", ""),
        as_peer(post("/v1/peer/rows", None, &rows, 401)),
        post("/v1/peer/rows", peer, &rows, 403),
        as_peer(post("/v1/peer/rows", phone, &rows, 403)),
        as_peer(post("/v1/peer/rows", peer, json!({"table": "jumps", "keys": [keys[0]]}).to_string(), 404)),
        as_peer(post("/v1/peer/rows", peer, too_big, 413)),
    ];
    for case in &cases {
        checker.check(case);
    }

    // `far` holds none of this server's rows: each one is only here.
    let report = checker.check(&post("/v1/admin/integrity", ops, r#"{"peer": "far"}"#, 200));
    assert_eq!(report["status"], "FAILED", "{report}");
    let tables = report["tables"].as_array().unwrap();
    let plans = tables.iter().find(|t| t["table"] == "formations").unwrap_or_else(|| panic!("{report}"));
    assert_eq!((&plans["here_rows"], &plans["there_rows"]), (&json!(keys.len()), &json!(0)), "{plans}");
    assert_eq!(plans["here_digest"], root["digest"], "{plans}");
    let kinds: BTreeSet<&str> =
        tables.iter().flat_map(|t| t["differences"].as_array().unwrap()).map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, BTreeSet::from(["only_here"]), "{report}");
    let one = r#"{"peer": "far", "tables": ["groups"], "repair": false}"#;
    let report = checker.check(&post("/v1/admin/integrity", ops, one, 200));
    assert_eq!(report["tables"].as_array().map(Vec::len), Some(1), "{report}");
    let log = checker.check(&get("/v1/admin/sync/log?peer=far", ops, 200));
    let latest = &log["entries"][0];
    assert_eq!((&latest["kind"], &latest["status"]), (&json!("integrity"), &json!("FAILED")), "{log}");
    // The peer refuses the token: 502, its message shown.
    let failed = checker.check(&post("/v1/admin/integrity", ops, r#"{"peer": "stranger"}"#, 502));
    assert!(failed["error"]["message"].as_str().unwrap_or_default().contains("'stranger'"), "{failed}");
    let cases = [
        post("/v1/admin/integrity", ops, "not json", 400),
        post("/v1/admin/integrity", ops, r#"{"peer": "far", "colour": "red"}"#, 400),
        post("/v1/admin/integrity", ops, r#"{"peer": "far", "tables": []}"#, 400),
        post("/v1/admin/integrity", ops, r#"{"peer": "far", "tables": ["jumps"]}"#, 400),
        post("/v1/admin/integrity", None, one, 401),
        post("/v1/admin/integrity", phone, one, 403),
        post("/v1/admin/integrity", peer, one, 403),
        post("/v1/admin/integrity", ops, r#"{"peer": "nowhere"}"#, 404),
        post("/v1/admin/integrity", ops, too_big, 413),
    ];
    for case in &cases {
        checker.check(case);
    }
}

/// Full syncs between peers: this server's side of a peer's run (`/v1/peer/full-sync/…`): a
/// snapshot taken for the peer's pull and fetched chunk by chunk, and those chunks pushed
/// back, checked and restored; then an admin's runs: one to `slow`, whose proxy holds its
/// requests, so that it stays running while a second is refused (409 `busy`) and it is
/// cancelled, and a push to `far` (`far_url`) followed to its end.
fn check_full_sync(
    checker: &mut Checker,
    (too_big, far_url, slow): (&str, &str, &Proxy),
    (phone, ops, peer): (Option<&str>, Option<&str>, Option<&str>),
) {
    let as_peer = |case: Case| case.with("ferry-peer", "cloud");
    let code = |answer: &Value| answer["error"]["code"].as_str().unwrap_or_default().to_owned();
    let message = |answer: &Value| answer["error"]["message"].as_str().unwrap_or_default().to_owned();

    // A pull: this server takes a snapshot of two tables for the peer, which fetches each
    // chunk: a pull page of one table's rows, whose SHA-256 the header and the manifest give.
    let pulled = "/v1/peer/full-sync/openapi-pull";
    let two = json!({"tables": ["formations", "groups"], "compress": false}).to_string();
    let taking = checker.check(&as_peer(post(format!("{pulled}/snapshot"), peer, &two, 202)));
    assert_eq!(taking["id"], "openapi-pull", "{taking}");
    let ready = poll(checker, || as_peer(get(pulled, peer, 200)), |s| s["state"] != "SNAPSHOT");
    assert_eq!(ready["state"], "READY", "{ready}");
    let manifest = ready["manifest"].clone();
    assert_eq!((&manifest["tables"], &manifest["compressed"]), (&json!(["formations", "groups"]), &json!(false)));
    let chunks = manifest["chunks"].as_array().unwrap().clone();
    assert_eq!(chunks.len(), 2, "a chunk per table: {manifest}");
    let page_schema = json!({"$ref": "#/components/schemas/PullResponse"});
    let mut bodies = Vec::new();
    for c in &chunks {
        let (body, headers) = checker.answer(&as_peer(get(format!("{pulled}/chunks/{}", c["n"]), peer, 200)));
        let body = body.as_str().unwrap().to_owned();
        let hash = c["sha256"].as_str().unwrap();
        assert_eq!((headers["ferry-chunk-sha256"].to_str().unwrap(), &*sha256(&body)), (hash, hash), "{c}");
        let page: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("chunk {c}: {e}"));
        if let Err(m) = validate(checker.doc, &page_schema, &page, "$") {
            panic!("chunk {c} is not a pull page: {m}\n{page}");
        }
        let rows = page["rows"].as_array().unwrap();
        assert!(rows.iter().all(|r| r["table"] == c["table"]), "rows of one table: {page}");
        assert_eq!(
            (rows.len() as u64, &page["cursor"], &page["more"]),
            (c["rows"].as_u64().unwrap(), &json!(""), &json!(false))
        );
        bodies.push(body);
    }
    let cases = [
        // Asked again: the snapshot taken, nothing started.
        as_peer(post(format!("{pulled}/snapshot"), peer, &two, 202)),
        as_peer(post(format!("{pulled}/snapshot"), peer, "not json", 400)),
        as_peer(post(format!("{pulled}/snapshot"), peer, r#"{"tables": []}"#, 400)),
        as_peer(post(format!("{pulled}/snapshot"), peer, r#"{"tables": ["jumps"]}"#, 400)),
        as_peer(post(format!("{pulled}/snapshot"), peer, r#"{"tables": ["groups"], "colour": "red"}"#, 400)),
        as_peer(post("/v1/peer/full-sync/not_an_id/snapshot", peer, &two, 400)),
        post(format!("{pulled}/snapshot"), peer, &two, 400).with("ferry-peer", ""),
        as_peer(post(format!("{pulled}/snapshot"), None, &two, 401)),
        post(format!("{pulled}/snapshot"), peer, &two, 403),
        as_peer(post(format!("{pulled}/snapshot"), phone, &two, 403)),
        as_peer(post(format!("{pulled}/snapshot"), peer, too_big, 413)),
        as_peer(get(format!("{pulled}/chunks/2"), peer, 404)),
        as_peer(get("/v1/peer/full-sync/openapi-nothing/chunks/0", peer, 404)),
        as_peer(get("/v1/peer/full-sync/not_an_id/chunks/0", peer, 400)),
        as_peer(get(format!("{pulled}/chunks/first"), peer, 400)),
        as_peer(get(format!("{pulled}/chunks/0"), None, 401)),
        get(format!("{pulled}/chunks/0"), peer, 403),
        as_peer(get(format!("{pulled}/chunks/0"), phone, 403)),
        // Its chunks are to be fetched, not sent.
        as_peer(octets(put(format!("{pulled}/chunks/0"), peer, &bodies[0], 409)))
            .with("ferry-chunk-sha256", sha256(&bodies[0])),
    ];
    for case in &cases {
        checker.check(case);
    }

    // A push: the peer sends those chunks back under another id; each is kept only if its
    // bytes hash to its header, and the restore waits for every one.
    let pushed = "/v1/peer/full-sync/openapi-push";
    let chunk = |i: usize| format!("{pushed}/chunks/{}", chunks[i]["n"]);
    let send = |i: usize, bytes: &str, hash: &str, status| {
        as_peer(octets(put(chunk(i), peer, bytes, status))).with("ferry-chunk-sha256", hash)
    };
    let mut restore = manifest.clone();
    restore["id"] = json!("openapi-push");
    let restore = restore.to_string();
    checker.check(&as_peer(get(pushed, peer, 404)));
    let refused = checker.check(&as_peer(post(format!("{pushed}/restore"), peer, &restore, 409)));
    assert!(message(&refused).contains("has not arrived"), "{refused}");
    let damaged = checker.check(&send(0, &format!("{} ", bodies[0]), &sha256(&bodies[0]), 422));
    assert_eq!(code(&damaged), "hash_mismatch", "{damaged}");
    let cases = [
        as_peer(octets(put(chunk(0), peer, &bodies[0], 400))),
        as_peer(octets(put("/v1/peer/full-sync/not_an_id/chunks/0", peer, &bodies[0], 400)))
            .with("ferry-chunk-sha256", sha256(&bodies[0])),
        as_peer(octets(put(format!("{pushed}/chunks/first"), peer, &bodies[0], 400)))
            .with("ferry-chunk-sha256", sha256(&bodies[0])),
        octets(put(chunk(0), peer, &bodies[0], 400))
            .with("ferry-peer", "")
            .with("ferry-chunk-sha256", sha256(&bodies[0])),
        as_peer(octets(put(chunk(0), None, &bodies[0], 401))).with("ferry-chunk-sha256", sha256(&bodies[0])),
        octets(put(chunk(0), peer, &bodies[0], 403)).with("ferry-chunk-sha256", sha256(&bodies[0])),
        as_peer(octets(put(chunk(0), phone, &bodies[0], 403))).with("ferry-chunk-sha256", sha256(&bodies[0])),
        send(0, too_big, &sha256(too_big), 413),
    ];
    for case in &cases {
        checker.check(case);
    }
    // Nothing kept of the refused chunks: nothing here of the run yet.
    checker.check(&as_peer(get(pushed, peer, 404)));
    for (i, body) in bodies.iter().enumerate() {
        checker.check(&send(i, body, &sha256(body), 204));
    }
    let held = checker.check(&as_peer(get(pushed, peer, 200)));
    let numbers: Vec<&Value> = chunks.iter().map(|c| &c["n"]).collect();
    assert_eq!((&held["state"], &held["held"]), (&json!("RECEIVING"), &json!(numbers)), "{held}");
    let mut other = manifest.clone();
    other["id"] = json!("openapi-other");
    let mut unknown = manifest.clone();
    unknown["id"] = json!("openapi-push");
    unknown["tables"] = json!(["jumps"]);
    let cases = [
        as_peer(post(format!("{pushed}/restore"), peer, "not json", 400)),
        as_peer(post(format!("{pushed}/restore"), peer, r#"{"id": "openapi-push"}"#, 400)),
        as_peer(post(format!("{pushed}/restore"), peer, other.to_string(), 400)),
        as_peer(post(format!("{pushed}/restore"), peer, unknown.to_string(), 400)),
        as_peer(post("/v1/peer/full-sync/not_an_id/restore", peer, &restore, 400)),
        post(format!("{pushed}/restore"), peer, &restore, 400).with("ferry-peer", ""),
        as_peer(post(format!("{pushed}/restore"), None, &restore, 401)),
        post(format!("{pushed}/restore"), peer, &restore, 403),
        as_peer(post(format!("{pushed}/restore"), phone, &restore, 403)),
        as_peer(post(format!("{pushed}/restore"), peer, too_big, 413)),
    ];
    for case in &cases {
        checker.check(case);
    }
    // Restored as the peer's push, through the merge: this server's own rows change nothing.
    checker.check(&as_peer(post(format!("{pushed}/restore"), peer, &restore, 202)));
    let restored = poll(checker, || as_peer(get(pushed, peer, 200)), |s| s["state"] != "RESTORING");
    assert_eq!(restored["state"], "RESTORED", "{restored}");
    assert_eq!((&restored["rows_done"], &restored["changed"]), (&manifest["rows"], &json!(0)), "{restored}");
    // Past receiving; and the restored chunks are gone.
    checker.check(&send(0, &bodies[0], &sha256(&bodies[0]), 409));
    checker.check(&as_peer(post(format!("{pushed}/restore"), peer, &restore, 409)));
    let cases = [
        as_peer(get("/v1/peer/full-sync/not_an_id", peer, 400)),
        get(pushed, peer, 400).with("ferry-peer", ""),
        as_peer(get(pushed, None, 401)),
        get(pushed, peer, 403),
        as_peer(get(pushed, phone, 403)),
        as_peer(delete("/v1/peer/full-sync/not_an_id", peer, 400)),
        as_peer(delete(pushed, None, 401)),
        delete(pushed, peer, 403),
        as_peer(delete(pushed, phone, 403)),
        as_peer(delete(pushed, peer, 204)),
        as_peer(get(pushed, peer, 404)),
        // The peer ends its pull: the snapshot and its chunks go.
        as_peer(delete(pulled, peer, 204)),
        as_peer(get(pulled, peer, 404)),
        as_peer(get(format!("{pulled}/chunks/0"), peer, 404)),
        // Nothing here of it: ended all the same.
        as_peer(delete("/v1/peer/full-sync/openapi-nothing", peer, 204)),
    ];
    for case in &cases {
        checker.check(case);
    }

    // An admin's run to `slow`: its snapshot taken, its transfer waits on the proxy, which
    // holds every request. While it runs, another is refused.
    let start = |peer: &str, options: Value| json!({"direction": "push", "peer": peer, "options": options}).to_string();
    let bodiless = |path: &str, token, status| Case::new("post", path, token, None, status);
    slow.set(Fault::BlackHole);
    let held = checker.check(&post("/v1/admin/full-sync", ops, start("slow", json!({"tables": ["formations"]})), 202));
    assert_eq!((&held["state"], &held["phase"]), (&json!("RUNNING"), &json!("snapshot")), "{held}");
    let id = held["id"].as_str().unwrap().to_owned();
    let busy = checker.check(&post("/v1/admin/full-sync", ops, start("far", json!({})), 409));
    assert_eq!(code(&busy), "busy", "{busy}");
    assert!(message(&busy).contains(&id), "it names the run in progress: {busy}");
    let run = format!("/v1/admin/full-sync/{id}");
    let asked = checker.check(&bodiless(&format!("{run}/cancel"), ops, 200));
    assert_eq!((&asked["state"], &asked["cancel_requested"]), (&json!("RUNNING"), &json!(true)), "{asked}");
    // It sees the cancel at its next report (twice a second); then its held request is cut,
    // and the transfer, resuming, stops before it sends a chunk.
    let asked_ms = now_ms();
    poll(checker, || get(&run, ops, 200), |r| r["heartbeat_ms"].as_u64() > Some(asked_ms));
    slow.partition();
    slow.set(Fault::Pass);
    let ended = poll(checker, || get(&run, ops, 200), |r| r["state"] != "RUNNING");
    assert_eq!((&ended["state"], &ended["cancel_requested"]), (&json!("CANCELLED"), &json!(true)), "{ended}");
    assert!(ended["finished_ms"].is_u64(), "{ended}");

    // A push to `far`, compressed and verified, followed to its end; `far` answers the
    // notification 405 (its `/health/live` takes GET only).
    let notify = format!("{far_url}/health/live");
    let options = json!({"compress": true, "verify": true, "notify": notify});
    let started = checker.check(&post("/v1/admin/full-sync", ops, start("far", options), 202));
    let pushed_id = started["id"].as_str().unwrap().to_owned();
    let run = format!("/v1/admin/full-sync/{pushed_id}");
    let done = poll(checker, || get(&run, ops, 200), |r| r["state"] != "RUNNING");
    assert_eq!((&done["state"], &done["phase"]), (&json!("SUCCESS"), &json!("done")), "{done}");
    assert!(done["phases"].as_array().unwrap().iter().all(|p| p["state"] == "done"), "{done}");
    assert!(done["rows"].as_u64() > Some(0) && done["bytes_sent"] == done["bytes"], "{done}");
    assert_eq!((&done["attempts"], &done["verified_equal"]), (&json!(1), &json!(true)), "{done}");
    assert_eq!(done["notified"], "answered 405", "{done}");

    let listed = checker.check(&get("/v1/admin/full-sync", ops, 200));
    let ids: Vec<&str> = listed["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&*pushed_id, &*id], "newest first");
    let one = checker.check(&get("/v1/admin/full-sync?limit=1", ops, 200));
    assert_eq!(one["runs"].as_array().map(Vec::len), Some(1), "{one}");
    let over = checker.check(&bodiless(&format!("{run}/cancel"), ops, 409));
    assert!(message(&over).contains("SUCCESS"), "{over}");
    // Nothing is stuck: nothing to clear.
    let cleared = checker.check(&bodiless("/v1/admin/full-sync/clear", ops, 200));
    assert_eq!(cleared, json!({"runs": []}));
    let cases = [
        post("/v1/admin/full-sync", ops, "not json", 400),
        post("/v1/admin/full-sync", ops, r#"{"direction": "sideways", "peer": "far"}"#, 400),
        post("/v1/admin/full-sync", ops, r#"{"direction": "push", "peer": "far", "colour": "red"}"#, 400),
        post("/v1/admin/full-sync", ops, start("far", json!({"colour": "red"})), 400),
        post("/v1/admin/full-sync", ops, start("far", json!({"tables": []})), 400),
        post("/v1/admin/full-sync", ops, start("far", json!({"tables": ["jumps"]})), 400),
        post("/v1/admin/full-sync", ops, start("far", json!({"notify": "ftp://ops.example.com/"})), 400),
        post("/v1/admin/full-sync", None, start("far", json!({})), 401),
        post("/v1/admin/full-sync", phone, start("far", json!({})), 403),
        post("/v1/admin/full-sync", peer, start("far", json!({})), 403),
        post("/v1/admin/full-sync", ops, start("nowhere", json!({})), 404),
        post("/v1/admin/full-sync", ops, too_big, 413),
        get("/v1/admin/full-sync?limit=0", ops, 400),
        get("/v1/admin/full-sync?limit=1001", ops, 400),
        get("/v1/admin/full-sync?limit=many", ops, 400),
        get("/v1/admin/full-sync", None, 401),
        get("/v1/admin/full-sync", phone, 403),
        get("/v1/admin/full-sync/%FF", ops, 400),
        get(&run, None, 401),
        get(&run, phone, 403),
        get("/v1/admin/full-sync/fs-nothing", ops, 404),
        bodiless("/v1/admin/full-sync/%FF/cancel", ops, 400),
        bodiless(&format!("{run}/cancel"), None, 401),
        bodiless(&format!("{run}/cancel"), phone, 403),
        bodiless("/v1/admin/full-sync/fs-nothing/cancel", ops, 404),
        bodiless("/v1/admin/full-sync/clear", None, 401),
        bodiless("/v1/admin/full-sync/clear", phone, 403),
    ];
    for case in &cases {
        checker.check(case);
    }
}

/// Sends the case `make` gives until `done` holds of the answer (within 30 s); returns that
/// answer.
fn poll(checker: &mut Checker, make: impl Fn() -> Case, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = checker.check(&make());
        if done(&answer) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "still not so after 30 s: {answer}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The compaction horizon: cursors taken before a row was deleted, once `ferry compact`
/// removed its tombstone (the server keeps running; the embedded store is shared), get 410
/// `cursor_expired` from `GET /v1/pull` (a peer's too) and `GET /v1/changes`; the start and
/// cursors taken since are served.
fn check_compaction(
    env: &Env,
    checker: &mut Checker,
    alice: &str,
    (phone, laptop, peer): (Option<&str>, Option<&str>, Option<&str>),
) {
    let row = format!("/v1/rows/jump_log/{}", uuid());
    let values = json!({"values": {"user_id": alice, "jump_number": 99, "jumped_at": "2026-11-24T09:00:00Z"}});
    let made = checker.check(&put(&row, phone, values.to_string(), 201));
    // The cursors of the feed's end, with the row in it.
    let end = |answer: Value| answer["cursor"].as_str().unwrap_or_else(|| panic!("no cursor: {answer}")).to_owned();
    let pulled = end(checker.check(&get("/v1/pull?limit=10000", phone, 200)));
    let since = end(checker.check(&get("/v1/changes?limit=10000", laptop, 200)));
    let peer_pulled = end(checker.check(&get("/v1/pull?limit=10000", peer, 200).with("ferry-peer", "cloud")));
    let version = made["version"].as_str().unwrap();
    checker.check(&delete(&row, phone, 204).with("if-match", format!("\"{version}\"")));
    // Deletions a moment old are older than 1 ms.
    std::thread::sleep(std::time::Duration::from_millis(10));
    let out = env.ok(&["compact", "--older-than", "1ms", "--json", "-c", &env.config()]);
    let compacted: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(compacted["tombstones"].as_u64() >= Some(1), "{compacted}");
    let cases = [
        get(format!("/v1/pull?cursor={pulled}"), phone, 410),
        get(format!("/v1/pull?cursor={peer_pulled}&limit=10000"), peer, 410).with("ferry-peer", "cloud"),
        get(format!("/v1/changes?since={since}"), laptop, 410),
    ];
    for case in &cases {
        let answer = checker.check(case);
        assert_eq!(answer["error"]["code"], "cursor_expired", "{answer}");
    }
    // From the start again: served, and the tombstone is gone from the feed.
    let key = row.rsplit('/').next().unwrap();
    let pulled = checker.check(&get("/v1/pull?cursor=0&limit=10000", phone, 200));
    assert!(pulled["rows"].as_array().unwrap().iter().all(|r| r["key"] != key), "{pulled}");
    let changes = checker.check(&get("/v1/changes?since=0&limit=10000", laptop, 200));
    assert!(changes["changes"].as_array().unwrap().iter().all(|r| r["key"] != key), "{changes}");
    checker.check(&get(format!("/v1/pull?cursor={}", end(pulled)), phone, 200));
    checker.check(&get(format!("/v1/changes?since={}", end(changes)), laptop, 200));
}

/// A device's first hydrate from a snapshot: asked for, listed as it is written, its chunks
/// fetched and checked against their SHA-256, the pull on from its cursor, and its end.
fn check_snapshot(
    checker: &mut Checker,
    too_big: &str,
    (phone, tablet, peer): (Option<&str>, Option<&str>, Option<&str>),
) {
    let started = checker.check(&post("/v1/snapshot", phone, "{}", 202));
    let id = started["id"].as_str().unwrap().to_owned();
    let mut now = checker.check(&get(format!("/v1/snapshot/{id}"), phone, 200));
    while now["state"] == "running" {
        now = checker.check(&get(format!("/v1/snapshot/{id}?after={}", now["written"]), phone, 200));
    }
    assert_eq!(now["state"], "done", "{now}");
    let all = checker.check(&get(format!("/v1/snapshot/{id}?after=0"), phone, 200));
    let chunks = all["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty(), "{all}");
    // What the phone's pull from the start gives, in the chunks.
    let (mut rows, mut pulled) = (Vec::new(), Vec::new());
    for c in chunks {
        let (page, headers) = checker.answer(&get(format!("/v1/snapshot/{id}/chunks/{}", c["n"]), phone, 200));
        assert_eq!(headers.get("ferry-chunk-sha256").and_then(|v| v.to_str().ok()), c["sha256"].as_str(), "{c}");
        rows.extend(page["rows"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_owned()));
    }
    let mut cursor = "0".to_owned();
    loop {
        let page = checker.check(&get(format!("/v1/pull?cursor={cursor}&limit=10000"), phone, 200));
        pulled.extend(page["rows"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_owned()));
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if page["more"] == false {
            break;
        }
    }
    rows.sort();
    pulled.sort();
    assert_eq!(rows, pulled, "the snapshot holds what the pull from the start gives");
    let next = checker.check(&get(format!("/v1/pull?cursor={}", now["cursor"].as_str().unwrap()), phone, 200));
    assert_eq!(next["rows"], json!([]), "nothing after the snapshot: {next}");
    let one = checker.check(&post("/v1/snapshot", phone, json!({"tables": ["groups"]}).to_string(), 202));
    let other = one["id"].as_str().unwrap();
    let cases = [
        get(format!("/v1/snapshot/{id}?after=x"), phone, 400),
        get(format!("/v1/snapshot/{id}?before=1"), phone, 400),
        get(format!("/v1/snapshot/{id}"), None, 401),
        get(format!("/v1/snapshot/{other}"), tablet, 404),
        get(format!("/v1/snapshot/{id}"), phone, 404),
        get(format!("/v1/snapshot/{other}/chunks/x"), phone, 400),
        get(format!("/v1/snapshot/{other}/chunks/0"), None, 401),
        get(format!("/v1/snapshot/{other}/chunks/99"), phone, 404),
        delete(format!("/v1/snapshot/{other}"), None, 401),
        delete(format!("/v1/snapshot/{other}"), tablet, 404),
        delete(format!("/v1/snapshot/{other}"), phone, 204),
        delete(format!("/v1/snapshot/{other}"), phone, 404),
        post("/v1/snapshot", phone, "not json", 400),
        post("/v1/snapshot", phone, r#"{"colour": "red"}"#, 400),
        post("/v1/snapshot", phone, r#"{"tables": []}"#, 400),
        post("/v1/snapshot", None, "{}", 401),
        post("/v1/snapshot", peer, "{}", 403).with("ferry-peer", "cloud"),
        post("/v1/snapshot", phone, r#"{"tables": ["jumps"]}"#, 404),
        post("/v1/snapshot", phone, too_big, 413),
    ];
    for case in &cases {
        checker.check(case);
    }
}

/// Catching up by difference: a device whose cursor the compaction horizon passed (as the
/// phone's did in [`check_compaction`]) walks down the digest tree of the rows it may read
/// (`/v1/catch-up`), fetches the rows that differ (`/v1/catch-up/rows`), and pulls on from the
/// cursor the tree's answer gives.
fn check_catch_up(
    checker: &mut Checker,
    (alice, too_big): (&str, &str),
    (phone, tablet): (Option<&str>, Option<&str>),
) {
    let ask = |session: &str, table: &str, nodes: &[&str], rows: &[&str]| {
        json!({"session": session, "table": table, "nodes": nodes, "rows": rows}).to_string()
    };
    // A jump deleted since the compaction: its tombstone is one of the rows the phone may read.
    let gone = format!("/v1/rows/jump_log/{}", uuid());
    let values = json!({"values": {"user_id": alice, "jump_number": 100, "jumped_at": "2026-11-24T10:00:00Z"}});
    checker.check(&put(&gone, phone, values.to_string(), 201));
    checker.check(&delete(&gone, phone, 204));
    // What the phone may read of `jump_log`, tombstones included: what its pull from the start
    // gives.
    let pulled = checker.check(&get("/v1/pull?cursor=0&limit=10000", phone, 200));
    let readable: BTreeSet<&str> = pulled["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["table"] == "jump_log")
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    // The root and one child of it summarised, and every row of the table listed.
    let tree = checker.check(&post("/v1/catch-up", phone, ask("openapi", "jump_log", &["", "a"], &[""]), 200));
    let cursor = tree["cursor"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "a cursor to pull on from: {tree}");
    let listed = tree["rows"].as_array().unwrap();
    let root = &tree["nodes"][0];
    assert_eq!((&root["prefix"], &tree["nodes"][1]["prefix"]), (&json!(""), &json!("a")), "{tree}");
    assert_eq!(root["count"].as_u64(), Some(readable.len() as u64), "{tree}");
    let keys: BTreeSet<&str> = listed.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, readable, "the rows the phone may read, and no other: {tree}");
    assert!(listed.iter().any(|r| r["key"] == gone.rsplit('/').next().unwrap() && r["deleted"] == true), "{tree}");
    // A node's digest is the wrapping sum of its rows'.
    let sum = listed
        .iter()
        .map(|r| u64::from_str_radix(r["version"].as_str().unwrap(), 16).unwrap())
        .fold(0u64, u64::wrapping_add);
    assert_eq!(root["digest"], json!(format!("{sum:016x}")), "{tree}");
    // Another table of the same session: answered from the same walk, with the same cursor.
    let groups = checker.check(&post("/v1/catch-up", phone, ask("openapi", "groups", &[""], &[]), 200));
    assert_eq!(groups["cursor"], json!(cursor), "{groups}");
    // Nothing changed since the walk: the pull goes on from its cursor, with nothing new.
    let next = checker.check(&get(format!("/v1/pull?cursor={cursor}"), phone, 200));
    assert_eq!(next["rows"], json!([]), "{next}");

    // The rows by key, tombstones included; a key nobody wrote is left out, and so are rows
    // the device may not read (alice's, asked for by bob's tablet).
    let mut asked: Vec<&str> = keys.iter().copied().collect();
    let nobodys = uuid();
    asked.push(&nobodys);
    let fetch = json!({"table": "jump_log", "keys": asked}).to_string();
    let page = checker.check(&post("/v1/catch-up/rows", phone, &fetch, 200));
    let rows = page["rows"].as_array().unwrap();
    let fetched: BTreeSet<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(fetched, keys, "{page}");
    assert!(rows.iter().any(|r| r["exists"] == false), "{page}");
    assert_eq!((&page["cursor"], &page["more"]), (&json!(""), &json!(false)), "{page}");
    let bobs = checker.check(&post("/v1/catch-up/rows", tablet, &fetch, 200));
    assert_eq!(bobs["rows"], json!([]), "{bobs}");

    let some = ask("openapi", "jump_log", &[""], &[]);
    let rows = json!({"table": "jump_log", "keys": [nobodys]}).to_string();
    let cases = [
        post("/v1/catch-up", phone, "not json", 400),
        post("/v1/catch-up", phone, r#"{"session": "s", "table": "jump_log", "colour": "red"}"#, 400),
        post("/v1/catch-up", phone, r#"{"session": "", "table": "jump_log", "nodes": [""]}"#, 400),
        post("/v1/catch-up", phone, ask("openapi", "jump_log", &["G"], &[]), 400),
        post("/v1/catch-up", phone, ask("openapi", "jump_log", &[""; 4097], &[]), 400),
        post("/v1/catch-up", phone, json!({"session": "s", "table": "jump_log", "tables": ["jumps"]}).to_string(), 400),
        post("/v1/catch-up", None, &some, 401),
        post("/v1/catch-up", phone, ask("openapi", "jumps", &[""], &[]), 404),
        post("/v1/catch-up", phone, too_big, 413),
        post("/v1/catch-up/rows", phone, "not json", 400),
        post("/v1/catch-up/rows", phone, r#"{"table": "jump_log", "keys": [], "colour": "red"}"#, 400),
        post("/v1/catch-up/rows", phone, json!({"table": "jump_log", "keys": vec!["k"; 10_001]}).to_string(), 400),
        post("/v1/catch-up/rows", None, &rows, 401),
        post("/v1/catch-up/rows", phone, json!({"table": "jumps", "keys": [nobodys]}).to_string(), 404),
        post("/v1/catch-up/rows", phone, too_big, 413),
    ];
    for case in &cases {
        checker.check(case);
    }
}

/// Starts `PUT /v1/files/{hash}` of a file `length` bytes long on a socket of its own,
/// sending only `first` of its bytes.
fn start_upload(url: &str, token: &str, hash: &str, length: usize, first: &str) -> std::net::TcpStream {
    use std::io::Write;
    let host = url.strip_prefix("http://").unwrap_or(url);
    let mut socket = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("{host}: {e}"));
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let request = format!(
        "PUT /v1/files/{hash} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {length}\r\nUpload-Length: {length}\r\n\r\n{first}"
    );
    socket.write_all(request.as_bytes()).unwrap();
    socket
}

/// Sends the rest of an upload [`start_upload`] began; returns the whole answer.
fn finish_upload(socket: &mut std::net::TcpStream, rest: &str) -> String {
    use std::io::{Read, Write};
    socket.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap_or_else(|e| panic!("the upload's answer so far: {answer}: {e}"));
    answer
}

/// The SHA-256 of `content`, as a file column holds it.
fn sha256(content: &str) -> String {
    use sha2::Digest;
    ferry_core::to_hex(&sha2::Sha256::digest(content.as_bytes()))
}

/// `docs/protocol.md`, as text.
fn protocol_md() -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn the_documents_name_every_error_code_with_its_status_and_no_other() {
    use ferry_protocol::ErrorCode;
    let doc = document();
    let md = protocol_md();
    // protocol.md's errors table: `| 409 | `stale` | when |`.
    let section = md.split("\n## Errors").nth(1).expect("protocol.md has an Errors section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let table: BTreeSet<(u16, String)> = section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let status = cells.get(1)?.parse().ok()?;
            Some((status, cells.get(2)?.trim_matches('`').to_owned()))
        })
        .collect();
    let codes: BTreeSet<(u16, String)> = ErrorCode::ALL.iter().map(|c| (c.status(), c.as_str().to_owned())).collect();
    assert_eq!(table, codes, "protocol.md's errors table (left) and ferry_protocol::ErrorCode (right) differ");
    let listed: BTreeSet<String> = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
        .as_array()
        .expect("ErrorDetail.code has an enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let names: BTreeSet<String> = codes.into_iter().map(|(_, c)| c).collect();
    assert_eq!(listed, names, "openapi.json's ErrorDetail.code enum (left) and ErrorCode (right) differ");
}

#[test]
fn every_stream_message_is_documented_as_it_is_sent() {
    use ferry_protocol::StreamMessage;
    let doc = document();
    let md = protocol_md();
    let schema = json!({"$ref": "#/components/schemas/StreamMessage"});
    for message in [StreamMessage::Hello { ping_interval_ms: 15000 }, StreamMessage::Changed, StreamMessage::Files] {
        let value: Value = serde_json::from_str(&message.to_text()).unwrap();
        if let Err(m) = validate(&doc, &schema, &value, "$") {
            panic!("stream message {value} breaks openapi.json's StreamMessage at {m}");
        }
        let kind = value["type"].as_str().unwrap();
        assert!(md.contains(&format!("{{\"type\": \"{kind}\"")), "protocol.md does not show the '{kind}' message");
        assert_eq!(StreamMessage::parse(&value.to_string()), Some(message));
    }
}

/// An instance of each wire type of `ferry-protocol`, serialized, with the component schema
/// of `docs/openapi.json` it must match.
fn wire_examples() -> Vec<(&'static str, Value)> {
    use std::collections::BTreeMap;

    use ferry_core::{Hlc, RowState, SiteId, Value as V};
    use ferry_protocol as p;
    let schema = ferry_core::schema::Schema::parse(
        "CREATE TABLE notes (id uuid PRIMARY KEY, body text NOT NULL, n integer, ok boolean, pic bytea, h real);",
        &BTreeMap::new(),
    )
    .unwrap();
    let table = schema.table("notes").unwrap();
    let key = "0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b";
    let at = Hlc::new(1_800_000_000_000, 0, SiteId(7));
    let mut state = RowState::inserted(
        [
            ("body".to_owned(), V::Text("hi".into())),
            ("n".to_owned(), V::Integer(3)),
            ("ok".to_owned(), V::Integer(1)),
            ("pic".to_owned(), V::Blob(vec![1, 2, 3])),
            ("h".to_owned(), V::Real(f64::INFINITY)),
        ],
        at,
    );
    state.update([("n".to_owned(), V::Integer(4))], Hlc::new(1_800_000_000_001, 0, SiteId(8)));
    let mut dead = state.clone();
    dead.delete(Hlc::new(1_800_000_000_002, 0, SiteId(7)));
    let row = p::encode_row(table, key, &state);
    let mut pushed = row.clone();
    pushed.base = [("n".to_owned(), at.to_string())].into();
    pushed.seen = Some(p::encode_clocks(table, &state.clocks()));
    let version = |origin: Option<&str>, st: &RowState| p::ConflictVersion {
        origin: origin.map(str::to_owned),
        exists: st.is_alive(),
        values: p::encode_row(table, key, st).values,
        clocks: st.cols.iter().map(|(c, s)| (c.clone(), s.at.to_string())).collect(),
    };
    let mut examples: Vec<(&'static str, Value)> = Vec::new();
    let mut add = |name: &'static str, v: Value| examples.push((name, v));
    add("WireRow", to(&pushed));
    add("PulledRow", to(&row));
    add("PulledRow", to(&p::encode_row(table, key, &dead)));
    add("WireClocks", to(&p::encode_clocks(table, &state.clocks())));
    let request = p::PushRequest { batch_id: "b1".into(), cursor: Some("12".into()), rows: vec![pushed.clone()] };
    add("PushRequest", to(&request));
    let rows_json = serde_json::to_vec(&request.rows).unwrap();
    add("PushRequest", serde_json::from_slice(&p::push_body("b1", None, &rows_json)).unwrap());
    let rejected = p::RejectedRow {
        table: "notes".into(),
        key: key.into(),
        status: 409,
        code: p::ErrorCode::Stale.as_str().into(),
        message: "stale".into(),
        current: row.clone(),
    };
    add("RejectedRow", to(&rejected));
    let response = p::PushResponse {
        batch_id: "b1".into(),
        received: 2,
        changed: 1,
        replayed: false,
        cursor: Some("13".into()),
        rejected: vec![rejected],
    };
    add("PushResponse", to(&response));
    add(
        "PullResponse",
        to(&p::PullResponse {
            rows: vec![row.clone()],
            cursor: "13".into(),
            more: false,
            removed: vec![p::RemovedRow { table: table.name.clone(), key: key.into() }],
        }),
    );
    add("SchemaResponse", to(&p::SchemaResponse::from_schema(&schema)));
    let options = BTreeMap::from([(
        "notes".to_owned(),
        ferry_core::schema::TableOptions {
            owner: Some("who".into()),
            files: vec!["body".into()],
            read_only: true,
            conflict: ferry_core::schema::ConflictStrategy::Manual,
            ..Default::default()
        },
    )]);
    let mut options = options;
    let local = ferry_core::schema::TableOptions { local_only: true, ..Default::default() };
    options.insert("drafts".to_owned(), local);
    options.get_mut("notes").unwrap().local_only_columns = vec!["scratch".into()];
    let optioned = ferry_core::schema::Schema::parse(
        "CREATE TABLE notes (id uuid PRIMARY KEY, who uuid, body text, scratch text); CREATE TABLE drafts (id uuid PRIMARY KEY, body text);",
        &options,
    );
    add("SchemaResponse", to(&p::SchemaResponse::from_schema(&optioned.unwrap())));
    let who = p::WhoAmI {
        store_id: "s".into(),
        user_id: "u".into(),
        user_name: "ann".into(),
        device_id: "d".into(),
        device_name: "phone".into(),
        role: Some("main".into()),
        server_role: Some("cloud".into()),
    };
    add("WhoAmI", to(&who));
    add("WhoAmI", to(&p::WhoAmI { role: None, server_role: None, ..who }));
    add("RowDoc", to(&p::RowDoc::new(table, key, &state)));
    let changes = p::ChangesResponse {
        changes: vec![p::RowDoc::new(table, key, &state), p::RowDoc::new(table, key, &dead)],
        cursor: "13".into(),
        more: true,
        removed: vec![p::RemovedRow { table: table.name.clone(), key: key.into() }],
    };
    add("ChangesResponse", to(&changes));
    add("RemovedRow", to(&p::RemovedRow { table: table.name.clone(), key: key.into() }));
    add("PutRowRequest", to(&p::PutRowRequest { values: row.values.clone(), version: Some(state.version()) }));
    add("PutRowRequest", to(&p::PutRowRequest { values: row.values.clone(), version: None }));
    for &code in p::ErrorCode::ALL {
        add("ErrorBody", to(&p::ErrorBody::new(code, "a message")));
    }
    let mut stale = p::ErrorBody::new(p::ErrorCode::Stale, "stale");
    stale.current = Some(serde_json::to_value(p::RowDoc::new(table, key, &state)).unwrap());
    add("StaleError", to(&stale));
    let mut offset = p::ErrorBody::new(p::ErrorCode::UploadOffset, "resume at 10");
    offset.offset = Some(10);
    add("UploadOffsetError", to(&offset));
    let hash = "ab".repeat(32);
    add("FileCheckRequest", to(&p::FileCheckRequest { hashes: vec![hash.clone()] }));
    let files = [
        (p::FileStateKind::Stored, Some(5), None),
        (p::FileStateKind::Partial, None, Some(2)),
        (p::FileStateKind::Missing, None, None),
        (p::FileStateKind::Unreferenced, None, None),
    ]
    .map(|(state, size, offset)| p::FileState { hash: hash.clone(), state, size, offset });
    add("FileCheckResponse", to(&p::FileCheckResponse { files: files.to_vec(), max_upload_bytes: Some(1 << 30) }));
    add("FileStored", to(&p::FileStored { hash: hash.clone(), size: 5 }));
    add("ServerStatus", to(&p::ServerStatus { files: p::FilesStatus { store: "local".into(), ..Default::default() } }));
    for keep in [p::ConflictSide::Stored, p::ConflictSide::Incoming] {
        add("ResolveRequest", to(&p::ResolveRequest { keep }));
    }
    add("RevokeResponse", to(&p::RevokeResponse { revoked: vec!["d".into()] }));
    let ms = 1_800_000_000_000;
    let outgoing = p::PeerStatus {
        name: "cloud".into(),
        direction: "outgoing".into(),
        role: "main".into(),
        peer_role: Some("cloud".into()),
        url: Some("https://cloud.example.com".into()),
        enabled: true,
        state: "DISCONNECTED".into(),
        backoff_ms: vec![1000, 5000, 30_000],
        failures: 2,
        next_attempt_ms: Some(ms + 5000),
        last_heartbeat_ms: Some(ms - 60_000),
        last_success_ms: Some(ms - 60_000),
        down_since_ms: Some(ms - 30_000),
        lag_ms_out: 60_000,
        lag_ms_in: 60_000,
        lag_changes_out: 40,
        lag_changes_in: 0,
        rows_out: 3000,
        rows_in: 12,
        file_queue: 1,
        last_error: Some("cannot reach server at https://cloud.example.com".into()),
        far_store_id: Some("s2".into()),
        cursor_out: "1234".into(),
        cursor_in: "99".into(),
        behind: Some("in".into()),
    };
    let incoming = p::PeerStatus {
        name: "main".into(),
        direction: "incoming".into(),
        role: "cloud".into(),
        peer_role: Some("main".into()),
        enabled: true,
        state: "CONNECTED".into(),
        last_heartbeat_ms: Some(ms),
        last_success_ms: Some(ms),
        ..p::PeerStatus::default()
    };
    add(
        "SyncStatusResponse",
        to(&p::SyncStatusResponse { role: Some("main".into()), peers: vec![outgoing, incoming] }),
    );
    add("SyncStatusResponse", to(&p::SyncStatusResponse { role: None, peers: vec![] }));
    let pushed = p::SyncLogEntry {
        id: 2,
        at_ms: ms,
        peer: "cloud".into(),
        kind: "rows".into(),
        direction: "push".into(),
        status: "WARNING".into(),
        rows: 40,
        bytes: 12_000,
        duration_ms: 85,
        error: Some("jump_log '0190…' refused by the peer".into()),
    };
    let failed = p::SyncLogEntry {
        id: 1,
        direction: "both".into(),
        status: "FAILED".into(),
        rows: 0,
        bytes: 0,
        error: Some("cannot reach server".into()),
        ..pushed.clone()
    };
    let pulled =
        p::SyncLogEntry { id: 3, direction: "pull".into(), status: "SUCCESS".into(), error: None, ..pushed.clone() };
    let cleared = p::SyncLogEntry {
        id: 4,
        kind: "alert".into(),
        direction: "both".into(),
        status: "SUCCESS".into(),
        rows: 0,
        bytes: 0,
        duration_ms: 0,
        error: Some("cleared: link 'cloud' has been DISCONNECTED for 24 h 0 min".into()),
        ..pushed.clone()
    };
    let checked = p::SyncLogEntry {
        id: 5,
        kind: "integrity".into(),
        direction: "both".into(),
        status: "FAILED".into(),
        rows: 1,
        error: Some("notes: 301 rows here, 300 on the peer; 1 differ".into()),
        ..pushed.clone()
    };
    let mended = p::SyncLogEntry {
        id: 6,
        kind: "repair".into(),
        status: "SUCCESS".into(),
        bytes: 0,
        error: None,
        ..checked.clone()
    };
    let entries = vec![mended, checked, cleared, pulled, pushed, failed];
    add("SyncLogResponse", to(&p::SyncLogResponse { entries }));
    let alert = |kind: &str, severity: &str| p::Alert {
        peer: "cloud".into(),
        kind: kind.into(),
        severity: severity.into(),
        message: format!("link 'cloud': {kind}"),
        since_ms: ms,
    };
    let alerts = vec![alert("disconnected", "CRITICAL"), alert("file_queue", "WARNING"), alert("lag", "WARNING")];
    add("AlertsResponse", to(&p::AlertsResponse { alerts }));
    add("SyncHealth", to(&p::SyncHealth { status: "ok".into(), reasons: vec![] }));
    let reasons = vec!["link 'cloud' is DISCONNECTED: cannot reach server".into()];
    add("SyncHealth", to(&p::SyncHealth { status: "unhealthy".into(), reasons }));
    let users = vec![p::PeerUser { id: "u".into(), name: "ann".into() }];
    add("PeerUsers", to(&p::PeerUsers { users }));
    let refused = vec!["user 'bob' (id u2): the name belongs to another user here".to_owned()];
    add("AdoptUsersResponse", to(&p::AdoptUsersResponse { added: 1, refused }));
    let hex = ferry_core::digest::hex;
    let ask = p::DigestRequest {
        table: "notes".into(),
        session: "4242-1800000000000-0".into(),
        tombstones_from_ms: ms,
        nodes: vec![String::new(), "a".into()],
        rows: vec!["a3".into()],
    };
    add("DigestRequest", to(&ask));
    let node = |prefix: &str, count, digest| p::DigestNode { prefix: prefix.into(), count, digest: hex(digest) };
    let listed = vec![
        p::DigestRow { key: key.into(), version: hex(0x9c1f_0e2a_7b3d_4c51), deleted: false },
        p::DigestRow { key: "0190f5a2-0000-7d3a-9b1f-2c3d4e5f6a7b".into(), version: hex(7), deleted: true },
    ];
    let digests = p::DigestResponse {
        nodes: vec![node("", 300, 0x1234_5678_9abc_def0), node("a", 0, 0)],
        rows: listed,
        compacted_before_ms: ms - 86_400_000,
        cursor: "1234".into(),
    };
    add("DigestResponse", to(&digests));
    add("DigestResponse", to(&p::DigestResponse::default()));
    add("PeerRowsRequest", to(&p::PeerRowsRequest { table: "notes".into(), keys: vec![key.into()] }));
    let catch_up = p::CatchUpRequest {
        session: "9f0c4e2a7b3d4c51".into(),
        table: "notes".into(),
        tables: Some(vec!["notes".into()]),
        nodes: vec![String::new(), "a".into()],
        rows: vec!["a3".into()],
    };
    add("CatchUpRequest", to(&catch_up));
    add("CatchUpRequest", to(&p::CatchUpRequest { tables: None, ..catch_up }));
    let caught = p::CatchUpResponse { cursor: "1234".into(), nodes: digests.nodes.clone(), rows: digests.rows.clone() };
    add("CatchUpResponse", to(&caught));
    add("CatchUpResponse", to(&p::CatchUpResponse::default()));
    add("IntegrityRequest", to(&p::IntegrityRequest { peer: "cloud".into(), tables: None, repair: false }));
    let only = Some(vec!["notes".to_owned()]);
    add("IntegrityRequest", to(&p::IntegrityRequest { peer: "cloud".into(), tables: only, repair: true }));
    let differences = vec![
        p::RowDifference {
            key: key.into(),
            kind: "changed".into(),
            here: Some(hex(1)),
            there: Some(hex(2)),
            here_deleted: true,
            there_deleted: false,
        },
        p::RowDifference { key: "k2".into(), kind: "only_here".into(), here: Some(hex(3)), ..Default::default() },
        p::RowDifference {
            key: "k3".into(),
            kind: "only_there".into(),
            there: Some(hex(4)),
            there_deleted: true,
            ..Default::default()
        },
    ];
    let differing = p::TableIntegrity {
        table: "notes".into(),
        here_rows: 301,
        there_rows: 300,
        here_digest: hex(10),
        there_digest: hex(11),
        equal: false,
        differences,
        ..Default::default()
    };
    let equal = p::TableIntegrity {
        table: "drafts".into(),
        here_rows: 2,
        there_rows: 2,
        here_digest: hex(12),
        there_digest: hex(12),
        equal: true,
        ..Default::default()
    };
    let report = p::IntegrityReport {
        peer: "cloud".into(),
        started_ms: ms,
        duration_ms: 120,
        status: "FAILED".into(),
        tables: vec![differing.clone(), equal],
        requests: 5,
        bytes_sent: 900,
        bytes_received: 4000,
    };
    add("IntegrityReport", to(&report));
    let warnings = vec!["'k3' still differs (only_there) after the repair".to_owned()];
    let repaired = p::TableIntegrity { repaired_out: 2, repaired_in: 1, repair_warnings: warnings, ..differing };
    add("IntegrityReport", to(&p::IntegrityReport { status: "REPAIRED".into(), tables: vec![repaired], ..report }));
    let id = "fs-1800000000000-4242-0";
    add(
        "FullSyncRequest",
        to(&p::FullSyncRequest { direction: "push".into(), peer: "cloud".into(), ..Default::default() }),
    );
    let options = p::FullSyncOptions {
        tables: Some(vec!["notes".into()]),
        compress: true,
        verify: true,
        notify: Some("https://ops.example.com/hooks/full-sync".into()),
    };
    add("FullSyncRequest", to(&p::FullSyncRequest { direction: "pull".into(), peer: "cloud".into(), options }));
    let phase = |name: &str, state: &str, done: u64| p::PhaseProgress {
        name: name.into(),
        state: state.into(),
        percent: if state == "done" { 100.0 } else { done as f64 * 100.0 / 2500.0 },
        rows_done: done,
        rows_total: 2500,
        bytes_done: done * 40,
        bytes_total: 100_000,
        speed: 4000.0,
        eta_ms: (state == "running").then_some(500),
        started_ms: (state != "pending").then_some(ms),
        finished_ms: (state == "done").then_some(ms + 900),
    };
    let running = p::FullSyncRun {
        id: id.into(),
        direction: "push".into(),
        peer: "cloud".into(),
        method: "snapshot".into(),
        tables: vec!["notes".into()],
        state: "RUNNING".into(),
        phase: "transfer".into(),
        phases: vec![
            phase("snapshot", "done", 2500),
            phase("transfer", "running", 500),
            phase("restore", "pending", 0),
            p::PhaseProgress { name: "verify".into(), state: "skipped".into(), ..Default::default() },
        ],
        started_ms: ms,
        heartbeat_ms: ms + 1500,
        rows: 2500,
        bytes: 100_000,
        bytes_sent: 20_000,
        attempts: 1,
        cursor: Some("1234".into()),
        ..Default::default()
    };
    add("FullSyncRun", to(&running));
    let done = ["snapshot", "transfer", "restore", "verify"].map(|n| phase(n, "done", 2500));
    let finished = p::FullSyncRun {
        compress: true,
        verify: true,
        state: "SUCCESS".into(),
        phase: "done".into(),
        phases: done.to_vec(),
        finished_ms: Some(ms + 4000),
        heartbeat_ms: ms + 4000,
        changed: 2499,
        excluded: 40,
        bytes_sent: 120_000,
        attempts: 2,
        resumed_chunks: 1,
        speed: 25_000.0,
        verified_equal: Some(false),
        differences: Some(1),
        notify: Some("https://ops.example.com/hooks/full-sync".into()),
        notified: Some("answered 200".into()),
        ..running.clone()
    };
    let cancelled = p::FullSyncRun {
        id: "fs-1799999999000-4242-1".into(),
        direction: "pull".into(),
        state: "CANCELLED".into(),
        phase: "restore".into(),
        cancel_requested: true,
        finished_ms: Some(ms + 2000),
        error: Some("cancelled".into()),
        ..running.clone()
    };
    add("FullSyncList", to(&p::FullSyncList { runs: vec![finished, cancelled] }));
    add("FullSyncList", to(&p::FullSyncList::default()));
    let chunk = p::ChunkInfo { n: 0, table: "notes".into(), rows: 2000, bytes: 80_000, sha256: "ab".repeat(32) };
    let manifest = p::SnapshotManifest {
        id: id.into(),
        tables: vec!["notes".into()],
        cursor: "1234".into(),
        compressed: true,
        chunks: vec![chunk.clone(), p::ChunkInfo { n: 1, rows: 500, bytes: 20_000, ..chunk }],
        rows: 2500,
        bytes: 100_000,
    };
    add("SnapshotManifest", to(&manifest));
    add("PeerSnapshotRequest", to(&p::PeerSnapshotRequest { tables: vec!["notes".into()], compress: true }));
    add("DeviceSnapshotRequest", to(&p::DeviceSnapshotRequest::default()));
    add("DeviceSnapshotRequest", to(&p::DeviceSnapshotRequest { tables: Some(vec!["notes".into()]) }));
    let running = p::DeviceSnapshot {
        id: "hs-0190f5a27c1e7d3a9b1f00000000000a".into(),
        state: "running".into(),
        chunks: manifest.chunks.clone(),
        written: 2,
        rows: 2500,
        bytes: 900_000,
        ..Default::default()
    };
    add("DeviceSnapshot", to(&running));
    add(
        "DeviceSnapshot",
        to(&p::DeviceSnapshot { state: "done".into(), cursor: Some("12".into()), ..running.clone() }),
    );
    let failed = Some("writing the snapshot failed on the server; ask for a new one".to_owned());
    add("DeviceSnapshot", to(&p::DeviceSnapshot { state: "failed".into(), error: failed, ..running }));
    let receiving = p::PeerFullSync { id: id.into(), state: "RECEIVING".into(), held: vec![0], ..Default::default() };
    add("PeerFullSync", to(&receiving));
    let ready = p::PeerFullSync { state: "READY".into(), rows_done: 2500, rows_total: 2500, ..receiving.clone() };
    add("PeerFullSync", to(&p::PeerFullSync { held: vec![0, 1], manifest: Some(manifest), ..ready }));
    let restored =
        p::PeerFullSync { state: "RESTORED".into(), held: vec![], rows_done: 2500, changed: 12, ..receiving };
    add("PeerFullSync", to(&restored));
    let error = Some("chunk 1 changed on disk since it arrived; run the full sync again".to_owned());
    add("PeerFullSync", to(&p::PeerFullSync { state: "FAILED".into(), error, ..restored }));
    let device = p::DeviceRecord {
        id: "d".into(),
        name: "phone".into(),
        user_id: "u".into(),
        user_name: "ann".into(),
        admin: false,
        role: Some("main".into()),
        created_at: "2027-01-15T08:00:00.000Z".into(),
        last_seen: None,
        revoked_at: Some("2027-01-15T09:00:00.000Z".into()),
    };
    add("DevicesResponse", to(&p::DevicesResponse { devices: vec![device] }));
    let kinds = [p::ConflictKind::UpdateUpdate, p::ConflictKind::DeleteUpdate, p::ConflictKind::UpdateDelete];
    let strategies = [
        p::Strategy::Lww,
        p::Strategy::RowLww,
        p::Strategy::Authoritative,
        p::Strategy::RejectStale,
        p::Strategy::Manual,
    ];
    for (i, strategy) in strategies.into_iter().enumerate() {
        let record = p::ConflictRecord {
            id: i as i64 + 1,
            table: "notes".into(),
            key: key.into(),
            kind: kinds[i % kinds.len()],
            fields: vec!["n".into(), "*".into()],
            strategy,
            stored: version(Some("d1"), &state),
            incoming: version(None, &dead),
            winner: [("n".to_owned(), p::ConflictSide::Stored), ("*".to_owned(), p::ConflictSide::Incoming)].into(),
            resolved_by: (strategy != p::Strategy::Manual).then_some(strategy),
            resolved_at: (strategy != p::Strategy::Manual).then(|| "2027-01-15T08:00:00.000Z".to_owned()),
            detected_at: "2027-01-15T08:00:00.000Z".into(),
        };
        add("ConflictRecord", to(&record));
    }
    examples
}

/// A wire value as JSON.
fn to<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("wire types serialize")
}

/// Schemas that describe no body of their own (parts of others, or bytes), and so have no
/// example.
const PARTS: &[&str] = &[
    "Clock",
    "Clocks",
    "WireValue",
    "ConflictVersion",
    "DeviceRecord",
    "ErrorDetail",
    "FileState",
    "FilesStatus",
    "PeerStatus",
    "SyncLogEntry",
    "PeerUser",
    "DigestNode",
    "DigestRow",
    "TableIntegrity",
    "RowDifference",
    "FullSyncOptions",
    "PhaseProgress",
    "ChunkInfo",
    "Alert",
    "TableInfo",
    "StreamMessage",
    "StreamHello",
    "StreamChanged",
    "StreamFiles",
    "PreconditionFailedError",
    "UploadConflictError",
    "UploadInProgressError",
    "FileBytes",
    "ChunkBytes",
];

#[test]
fn every_wire_type_serializes_as_its_documented_schema() {
    let doc = document();
    let examples = wire_examples();
    for (name, value) in &examples {
        let schema = json!({"$ref": format!("#/components/schemas/{name}")});
        if let Err(m) = validate(&doc, &schema, value, "$") {
            panic!("a {name} breaks openapi.json's schema at {m}\n{value}");
        }
    }
    let covered: BTreeSet<&str> = examples.iter().map(|(n, _)| *n).chain(PARTS.iter().copied()).collect();
    let documented: BTreeSet<&str> =
        doc["components"]["schemas"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(documented, covered, "openapi.json's schemas (left) and the examples here (right) differ");
}

#[test]
fn the_validator_names_the_first_mismatch_by_its_json_path() {
    let doc = json!({"components": {"schemas": {"Row": {
        "type": "object",
        "required": ["id", "kind"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "integer", "minimum": 1, "description": "ignored"},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "note": {"type": ["string", "null"]},
            "tags": {"type": "object", "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}
        }
    }}}});
    let schema = json!({"type": "array", "items": {"$ref": "#/components/schemas/Row"}});
    check_schema(&doc, &schema, "test");
    let check = |v: Value| validate(&doc, &schema, &v, "$").map_err(|m| m.to_string());
    assert_eq!(check(json!([{"id": 1, "kind": "a", "note": null, "tags": {"x": "y", "n": 2}}])), Ok(()));
    assert_eq!(check(json!({"id": 1})), Err("$: expected array, got {\"id\":1}".into()));
    assert_eq!(check(json!([{"id": "1", "kind": "a"}])), Err("$[0].id: expected integer, got \"1\"".into()));
    assert_eq!(check(json!([{"id": 1.5, "kind": "a"}])), Err("$[0].id: expected integer, got 1.5".into()));
    assert_eq!(
        check(json!([{"id": 1, "kind": "a", "note": 3}])),
        Err("$[0].note: expected string or null, got 3".into())
    );
    assert_eq!(check(json!([{"id": 1}])), Err("$[0]: missing required property 'kind'".into()));
    assert_eq!(
        check(json!([{"id": 1, "kind": "a"}, {"id": 2, "kind": "b", "colour": "red"}])),
        Err("$[1].colour: property not allowed (additionalProperties: false)".into())
    );
    assert_eq!(check(json!([{"id": 1, "kind": "c"}])), Err("$[0].kind: \"c\" is not one of [\"a\",\"b\"]".into()));
    assert_eq!(check(json!([{"id": 0, "kind": "a"}])), Err("$[0].id: 0 is below the minimum 1".into()));
    assert_eq!(
        check(json!([{"id": 1, "kind": "a", "tags": {"x": true}}])),
        Err("$[0].tags.x: matches 0 of the 2 oneOf schemas, not exactly one".into())
    );
}

#[test]
#[should_panic(expected = "keyword 'pattern' at $ is outside the subset")]
fn the_validator_refuses_a_keyword_it_does_not_check() {
    let _ = validate(&json!({}), &json!({"type": "string", "pattern": "^a"}), &json!("a"), "$");
}

#[test]
#[should_panic(expected = "keyword 'maxLength' at doc/properties/name is outside the subset")]
fn an_unchecked_keyword_is_refused_even_where_no_answer_reaches() {
    check_schema(&json!({}), &json!({"type": "object", "properties": {"name": {"maxLength": 3}}}), "doc");
}

// The cases.

/// One request and the status it must get.
struct Case {
    method: &'static str,
    /// Path and query, as sent.
    path: String,
    token: Option<String>,
    /// Request headers besides `Authorization` and `Content-Type`.
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    /// The body's media type.
    content_type: &'static str,
    status: u16,
}

impl Case {
    fn new(
        method: &'static str,
        path: impl Into<String>,
        token: Option<&str>,
        body: Option<String>,
        status: u16,
    ) -> Case {
        let (path, token, headers) = (path.into(), token.map(str::to_owned), Vec::new());
        Case { method, path, token, headers, body, content_type: "application/json", status }
    }

    /// The same request with header `name: value`.
    fn with(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }
}

fn get(path: impl Into<String>, token: Option<&str>, status: u16) -> Case {
    Case::new("get", path, token, None, status)
}

fn post(path: impl Into<String>, token: Option<&str>, body: impl Into<String>, status: u16) -> Case {
    Case::new("post", path, token, Some(body.into()), status)
}

fn put(path: impl Into<String>, token: Option<&str>, body: impl Into<String>, status: u16) -> Case {
    Case::new("put", path, token, Some(body.into()), status)
}

fn delete(path: impl Into<String>, token: Option<&str>, status: u16) -> Case {
    Case::new("delete", path, token, None, status)
}

fn head(path: impl Into<String>, token: Option<&str>, status: u16) -> Case {
    Case::new("head", path, token, None, status)
}

/// `PUT /v1/files/{hash}` of `bytes` (the file from `Upload-Offset` on), declaring the whole
/// file `length` bytes long.
fn upload(hash: &str, token: Option<&str>, bytes: &str, length: impl ToString, status: u16) -> Case {
    octets(put(format!("/v1/files/{hash}"), token, bytes, status)).with("upload-length", length.to_string())
}

/// `case` with its body sent as raw bytes.
fn octets(case: Case) -> Case {
    Case { content_type: "application/octet-stream", ..case }
}

/// `case` with the headers of a WebSocket opening handshake (RFC 6455's sample key).
fn handshake(case: Case) -> Case {
    case.with("connection", "Upgrade")
        .with("upgrade", "websocket")
        .with("sec-websocket-version", "13")
        .with("sec-websocket-key", WS_KEY)
}

/// The sample `Sec-WebSocket-Key` of RFC 6455 and the `Sec-WebSocket-Accept` it gets.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opens `GET /v1/stream` on a socket of its own: the answer's head (status line and
/// headers) and the socket, positioned at the first WebSocket frame.
pub fn open_stream(url: &str, token: &str) -> (String, std::net::TcpStream) {
    use std::io::{Read, Write};
    let host = url.strip_prefix("http://").unwrap_or(url);
    let mut socket = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("{host}: {e}"));
    socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let request = format!(
        "GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).unwrap();
    // Byte by byte, so that nothing after the head is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        socket.read_exact(&mut byte).unwrap_or_else(|e| panic!("the answer's head so far: {head:?}: {e}"));
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap(), socket)
}

/// The next text message from the server on a WebSocket, as JSON; pings are skipped.
fn next_message(socket: &mut std::net::TcpStream) -> Value {
    use std::io::Read;
    let mut read = |n: usize| {
        let mut buf = vec![0; n];
        socket.read_exact(&mut buf).unwrap_or_else(|e| panic!("no WebSocket message within 10 s: {e}"));
        buf
    };
    loop {
        let start = read(2);
        let (opcode, masked) = (start[0] & 0x0f, start[1] & 0x80 != 0);
        assert!(start[0] & 0x80 != 0 && !masked, "a fragmented or masked frame from the server: {start:?}");
        let len = match start[1] & 0x7f {
            126 => read(2).iter().fold(0, |n, b| n << 8 | usize::from(*b)),
            127 => read(8).iter().fold(0, |n, b| n << 8 | usize::from(*b)),
            n => usize::from(n),
        };
        let payload = read(len);
        match opcode {
            0x1 => {
                return serde_json::from_slice(&payload).unwrap_or_else(|e| panic!("a message that is not JSON ({e})"));
            }
            0x9 => {}
            other => panic!("a frame of opcode {other:#x} where a text message was due: {payload:?}"),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A wire clock at `ms` on site `site`.
fn clock(ms: u64, site: u64) -> String {
    format!("{:016x}{site:016x}", ms << 16)
}

fn push_body(batch_id: &str, cursor: Option<&str>, rows: &Value) -> String {
    let mut body = json!({"batch_id": batch_id, "rows": rows});
    if let Some(c) = cursor {
        body["cursor"] = json!(c);
    }
    body.to_string()
}

/// Group `id` as created by site 1 at `t`; with `renamed_at`, renamed to `name` then by a
/// device that had seen the name written at `t`.
fn group_row(id: &str, user: &str, t: u64, name: &str, renamed_at: Option<(u64, u64)>) -> Value {
    let mut row = json!({
        "table": "groups", "key": id, "exists": true, "exists_at": clock(t, 1), "clock": clock(t, 1),
        "values": {"name": name, "created_by": user}
    });
    if let Some((ms, site)) = renamed_at {
        row["clocks"] = json!({"name": clock(ms, site)});
        row["base"] = json!({"name": clock(t, 1)});
    }
    row
}

/// Formation `id` of `group` as created by site 1 at `t`; with `renamed_at`, renamed to
/// `name` then by a device whose change started from the version created at `t`.
fn formation_row(group: &str, id: &str, t: u64, name: &str, renamed_at: Option<(u64, u64)>) -> Value {
    let mut row = json!({
        "table": "formations", "key": id, "exists": true, "exists_at": clock(t, 1), "clock": clock(t, 1),
        "values": {"group_id": group, "name": name, "slots": 4}
    });
    if let Some((ms, site)) = renamed_at {
        row["clocks"] = json!({"name": clock(ms, site)});
        row["seen"] = json!({"exists_at": clock(t, 1), "clock": clock(t, 1)});
    }
    row
}

/// A new jump of `user`, logged by site `site` (each device writes with its own).
fn jump_row(user: &str, t: u64, site: u64) -> Value {
    json!({
        "table": "jump_log", "key": uuid(), "exists": true, "exists_at": clock(t, site), "clock": clock(t, site),
        "values": {"user_id": user, "jump_number": 1, "jumped_at": "2026-11-21T10:00:00Z", "visible_to_connections": false}
    })
}

/// Jump `id` of `user` as logged by site 1 at `t`, `freefall` seconds long; with
/// `timed_at`, its freefall time set to `freefall` then by a device that had seen the jump as
/// logged at `t`.
fn jump_version(id: &str, user: &str, t: u64, freefall: f64, timed_at: Option<(u64, u64)>) -> Value {
    let mut row = json!({
        "table": "jump_log", "key": id, "exists": true, "exists_at": clock(t, 1), "clock": clock(t, 1),
        "values": {
            "user_id": user, "jump_number": 2, "jumped_at": "2026-11-21T11:00:00Z",
            "freefall_seconds": freefall, "visible_to_connections": false
        }
    });
    if let Some((ms, site)) = timed_at {
        row["clocks"] = json!({"freefall_seconds": clock(ms, site)});
        row["seen"] = json!({"exists_at": clock(t, 1), "clock": clock(t, 1)});
    }
    row
}

// Checking answers against the document.

/// Sends cases to a server and checks each answer against the document, remembering which
/// documented answers it saw.
struct Checker<'d> {
    doc: &'d Value,
    url: String,
    http: reqwest::blocking::Client,
    /// Method, path template, status and media type of every checked answer.
    seen: BTreeSet<(String, String, String, String)>,
}

impl<'d> Checker<'d> {
    fn new(doc: &'d Value, url: &str) -> Checker<'d> {
        Checker { doc, url: url.to_owned(), http: reqwest::blocking::Client::new(), seen: BTreeSet::new() }
    }

    /// Sends `case` and checks the answer; returns its body (a JSON string for text, null
    /// for none).
    fn check(&mut self, case: &Case) -> Value {
        self.answer(case).0
    }

    /// [`Checker::check`], also returning the answer's headers.
    fn answer(&mut self, case: &Case) -> (Value, reqwest::header::HeaderMap) {
        let doc = self.doc;
        let what = format!("{} {} (expecting {})", case.method.to_uppercase(), case.path, case.status);
        let path = case.path.split('?').next().unwrap_or_default();
        let Some(Route { template: route, params: path_params, .. }) = route_of(doc, path) else {
            panic!("{what}: no path in docs/openapi.json matches");
        };
        // HEAD is GET without the body (RFC 9110 §9.3.2); the GET operation documents both.
        let documented_as = if case.method == "head" { "get" } else { case.method };
        let op = &doc["paths"][&route][documented_as];
        assert!(op.is_object(), "{what}: docs/openapi.json has no {documented_as} operation at {route}");
        if (200..300).contains(&case.status) || case.status == 101 {
            self.check_request(&what, &route, op, &path_params, case);
        }

        let method = reqwest::Method::from_bytes(case.method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{}", self.url, case.path));
        if let Some(t) = &case.token {
            req = req.bearer_auth(t);
        }
        for (name, value) in &case.headers {
            req = req.header(*name, value);
        }
        if let Some(b) = &case.body {
            req = req.header("content-type", case.content_type).body(b.clone());
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().unwrap_or_else(|e| panic!("{what}: the body: {e}"));
        // The test's files are text, so a body shows as text.
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert_eq!(status, case.status, "{what}: {text}");
        if case.method == "head" {
            assert!(bytes.is_empty(), "{what}: a HEAD answer with a body: {text}");
        } else if let Some(length) = headers.get("content-length") {
            // reqwest drops the header of an answer it decompressed.
            assert_eq!(length.to_str().ok(), Some(&*bytes.len().to_string()), "{what}: Content-Length");
        }

        let documented = resolve(doc, &op["responses"][status.to_string()]);
        assert!(documented.is_object(), "{what}: status {status} is not documented for {route}");
        let text = (case.method != "head").then_some(text);
        let (media, body) = check_answer(doc, documented, status, &headers, text, &what);
        if let (Some(etag), Some(version)) = (headers.get("etag"), body.get("version").and_then(Value::as_str)) {
            assert_eq!(etag.to_str().ok(), Some(&*format!("\"{version}\"")), "{what}: the ETag is the quoted version");
        }
        self.seen.insert((case.method.to_owned(), route, status.to_string(), media));
        (body, headers)
    }

    /// The WebSocket messages of `GET {route}`, in order: each must match the 101 answer's
    /// `x-messages` schema, and each of that schema's `oneOf` choices must have been seen.
    fn check_messages(&self, route: &str, messages: &[Value]) {
        let documented = &self.doc["paths"][route]["get"]["responses"]["101"]["x-messages"]["schema"];
        assert!(documented.is_object(), "GET {route}: the 101 answer documents no x-messages schema");
        for (i, m) in messages.iter().enumerate() {
            if let Err(e) = validate(self.doc, documented, m, &format!("message {i}")) {
                panic!("GET {route}: a message breaks the documented schema at {e}\n{m}");
            }
        }
        for (i, choice) in resolve(self.doc, documented)["oneOf"].as_array().into_iter().flatten().enumerate() {
            let seen = messages.iter().any(|m| validate(self.doc, choice, m, "$").is_ok());
            assert!(seen, "GET {route}: no message was of the documented kind oneOf/{i}: {choice}");
        }
    }

    /// A request meant to succeed must use only documented parameters, with documented
    /// values, and a body of the documented schema.
    fn check_request(&self, what: &str, route: &str, op: &Value, path_params: &[(String, String)], case: &Case) {
        let params: Vec<&Value> = self.doc["paths"][route]["parameters"]
            .as_array()
            .into_iter()
            .chain(op["parameters"].as_array())
            .flatten()
            .map(|p| resolve(self.doc, p))
            .collect();
        // Header names are case-insensitive.
        let named = |p: &Value, place: &str, name: &str| {
            p["in"] == place
                && p["name"]
                    .as_str()
                    .is_some_and(|n| if place == "header" { n.eq_ignore_ascii_case(name) } else { n == name })
        };
        let param = |place: &str, name: &str| {
            params.iter().find(|p| named(p, place, name)).copied().unwrap_or_else(|| {
                panic!("{what}: the {place} parameter '{name}' is not documented");
            })
        };
        let url = reqwest::Url::parse(&format!("http://h{}", case.path)).unwrap();
        let query: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let headers: Vec<(String, String)> = case.headers.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
        let given = path_params
            .iter()
            .map(|p| ("path", p))
            .chain(query.iter().map(|p| ("query", p)))
            .chain(headers.iter().map(|p| ("header", p)));
        for (place, (name, raw)) in given {
            let schema = &param(place, name)["schema"];
            let value = typed(self.doc, schema, raw);
            if let Err(m) = validate(self.doc, schema, &value, name) {
                panic!("{what}: the {place} parameter breaks its documented schema at {m}");
            }
        }
        for p in params.iter().filter(|p| p["required"] == true) {
            let given = match p["in"].as_str() {
                Some("query") => query.iter().any(|(k, _)| p["name"] == k.as_str()),
                Some("header") => headers.iter().any(|(k, _)| named(p, "header", k)),
                _ => true,
            };
            assert!(given, "{what}: required {} parameter {} missing", p["in"], p["name"]);
        }
        let request_body = resolve(self.doc, &op["requestBody"]);
        match &case.body {
            Some(b) => {
                let media = case.content_type;
                let schema = &request_body["content"][media]["schema"];
                assert!(schema.is_object(), "{what}: the operation documents no {media} request body");
                let body: Value = match media {
                    "application/json" => {
                        serde_json::from_str(b).unwrap_or_else(|e| panic!("{what}: the request is not JSON: {e}"))
                    }
                    _ => Value::String(b.clone()),
                };
                if let Err(m) = validate(self.doc, schema, &body, "$") {
                    panic!("{what}: the request body breaks the documented schema at {m}");
                }
            }
            None => assert_ne!(request_body["required"], true, "{what}: the request body is required"),
        }
    }

    /// Every documented path answers every method it does not document (of [`WRONG_METHODS`])
    /// with `#/components/responses/MethodNotAllowed`, naming its documented methods in
    /// `Allow`, even without a token; an undocumented path answers with
    /// `#/components/responses/NoEndpoint`.
    fn assert_other_methods_and_paths_are_refused(&self) {
        let answer = |method: &str, path: &str| {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = self.http.request(m, format!("{}{path}", self.url)).send().unwrap();
            (resp.status().as_u16(), resp.headers().clone(), resp.text().unwrap())
        };
        let refusal = resolve(self.doc, &self.doc["components"]["responses"]["MethodNotAllowed"]);
        for (route, item) in self.doc["paths"].as_object().into_iter().flatten() {
            let path = route
                .replace("{table}", "jump_log")
                .replace("{key}", &uuid())
                .replace("{id}", "1")
                .replace("{n}", "0")
                .replace("{hash}", &sha256("a file"));
            let documented: BTreeSet<String> =
                WRONG_METHODS.iter().filter(|m| item[**m].is_object()).map(|m| m.to_uppercase()).collect();
            for method in WRONG_METHODS.iter().filter(|m| !item[**m].is_object()) {
                let what = format!("{} {path} (expecting 405)", method.to_uppercase());
                let (status, headers, text) = answer(method, &path);
                assert_eq!(status, 405, "{what}: {text}");
                check_answer(self.doc, refusal, status, &headers, Some(text), &what);
                let allow = headers["allow"].to_str().unwrap();
                let allowed: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
                let mut expected = documented.clone();
                if expected.contains("GET") {
                    expected.insert("HEAD".to_owned());
                }
                assert_eq!(allowed, expected, "{what}: Allow: {allow}");
            }
        }
        let missing = resolve(self.doc, &self.doc["components"]["responses"]["NoEndpoint"]);
        for (method, path) in [("get", "/v1/nothing"), ("post", "/v1/rows/jump_log"), ("delete", "/")] {
            let what = format!("{} {path} (expecting 404)", method.to_uppercase());
            let (status, headers, text) = answer(method, path);
            assert_eq!(status, 404, "{what}: {text}");
            check_answer(self.doc, missing, status, &headers, Some(text), &what);
        }
    }

    /// Every operation, status and media type the document promises, except [`UNPROVOKED`]
    /// statuses, was seen.
    fn assert_every_answer_was_seen(&self) {
        let mut missing = Vec::new();
        for (method, route, op) in operations(self.doc) {
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                if UNPROVOKED.contains(&status.as_str()) {
                    continue;
                }
                for media in media_types(resolve(self.doc, response)) {
                    let key = (method.to_owned(), route.to_owned(), status.clone(), media.clone());
                    if !self.seen.contains(&key) {
                        missing.push(format!("{} {route} {status} {media}", method.to_uppercase()));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented answers no case produced; add a case for each:\n{}",
            missing.join("\n")
        );
    }
}

/// Checks an answer (its status, headers and body `text`; `None` for the answer to a HEAD,
/// which has the GET's headers and no body) against the documented response object: media
/// type, body schema, headers, and the error code of an error status. Returns the media type
/// (empty for a response documented without a body) and the body as checked (null for HEAD).
fn check_answer(
    doc: &Value,
    documented: &Value,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    text: Option<String>,
    what: &str,
) -> (String, Value) {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim().to_owned();
    let body = match (documented.get("content"), text) {
        (None, text) => {
            let text = text.unwrap_or_default();
            assert!(media.is_empty() && text.is_empty(), "{what}: documented without a body, got '{media}': {text}");
            Value::Null
        }
        (Some(content), text) => {
            let schema = &content[&media]["schema"];
            let shown = text.as_deref().unwrap_or("(HEAD)");
            assert!(schema.is_object(), "{what}: media type '{media}' is not documented for this answer: {shown}");
            let Some(text) = text else {
                check_headers(doc, documented, headers, what);
                return (media, Value::Null);
            };
            let body = if media == "application/json" {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
            } else {
                Value::String(text)
            };
            if let Err(m) = validate(doc, schema, &body, "$") {
                panic!("{what}: the body breaks the documented schema at {m}\n{body}");
            }
            body
        }
    };
    if status >= 400 && media == "application/json" {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let known = ferry_protocol::ErrorCode::parse(code);
        assert!(known.is_some_and(|c| c.status() == status), "{what}: '{code}' is not an error code of {status}");
    }
    check_headers(doc, documented, headers, what);
    (media, body)
}

/// Checks an answer's headers against the documented response's.
fn check_headers(doc: &Value, documented: &Value, headers: &reqwest::header::HeaderMap, what: &str) {
    for (name, header) in documented["headers"].as_object().into_iter().flatten() {
        let header = resolve(doc, header);
        match headers.get(name) {
            Some(v) => {
                let v = typed(doc, &header["schema"], v.to_str().unwrap());
                if let Err(m) = validate(doc, &header["schema"], &v, name) {
                    panic!("{what}: header {m}");
                }
            }
            None => assert_ne!(header["required"], true, "{what}: no {name} header"),
        }
    }
}

/// A parameter's or header's text as the JSON value its schema describes: a number when the
/// schema's type is numeric and the text is one, else the string.
fn typed(doc: &Value, schema: &Value, raw: &str) -> Value {
    match resolve(doc, schema)["type"].as_str() {
        Some("integer" | "number") => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
        _ => Value::String(raw.to_owned()),
    }
}

/// The media types of a documented response; `""` for one without a body.
fn media_types(response: &Value) -> Vec<String> {
    match response.get("content").and_then(Value::as_object) {
        Some(content) => content.keys().cloned().collect(),
        None => vec![String::new()],
    }
}

/// A concrete path matched to one of the document's path templates.
struct Route {
    template: String,
    /// The path parameters' names and values.
    params: Vec<(String, String)>,
    /// How many segments matched literally.
    literal: usize,
}

/// The document's path template matching `path`; a literal segment beats a parameter.
fn route_of(doc: &Value, path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<Route> = None;
    for template in doc["paths"].as_object()?.keys() {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let mut literal = 0;
        let matches = parts.iter().zip(&segments).all(|(part, seg)| {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => params.push((name.to_owned(), (*seg).to_owned())),
                None if part == seg => literal += 1,
                None => return false,
            }
            true
        });
        if matches && best.as_ref().is_none_or(|b| literal > b.literal) {
            best = Some(Route { template: template.clone(), params, literal });
        }
    }
    best
}

/// Every operation of the document: method, path template, operation object.
fn operations(doc: &Value) -> impl Iterator<Item = (&str, &str, &Value)> {
    doc["paths"].as_object().into_iter().flatten().flat_map(|(path, item)| {
        item.as_object()
            .into_iter()
            .flatten()
            .filter(|(m, _)| METHODS.contains(&m.as_str()))
            .map(move |(m, op)| (m.as_str(), path.as_str(), op))
    })
}

/// The `(method, path)` of every `.route("…", get(…).post(…))` in the server's router, read
/// from its source.
fn server_routes() -> BTreeSet<(String, String)> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ferry-server/src/lib.rs");
    let src = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    // The dashboard's HTML pages are not the JSON API (docs/dashboard.md documents them).
    let src = src.replacen(".merge(dashboard::routes())", "", 1);
    for other in [".nest(", ".nest_service(", ".merge(", ".route_service("] {
        assert!(!src.contains(other), "{}: this test reads only `.route(…)`; teach it {other}", file.display());
    }
    let mut routes = BTreeSet::new();
    for call in src.split(".route(").skip(1) {
        let bad = || -> ! { panic!("{}: cannot read `.route({}`", file.display(), &call[..call.len().min(60)]) };
        let Some((path, rest)) = call.strip_prefix('"').and_then(|c| c.split_once('"')) else { bad() };
        let Some(mut rest) = rest.trim_start().strip_prefix(',').map(str::trim_start) else { bad() };
        // A method router: `get(handler)`, optionally chained as `.post(handler)`.
        loop {
            let Some(open) = rest.find('(') else { bad() };
            let method = &rest[..open];
            assert!(METHODS.contains(&method), "{}: route {path} uses '{method}', not a method", file.display());
            routes.insert((method.to_owned(), path.to_owned()));
            let mut depth = 0;
            let Some(close) = rest[open..].find(|c| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            }) else {
                bad()
            };
            rest = rest[open + close + 1..].trim_start();
            match rest.strip_prefix('.') {
                Some(more) => rest = more,
                None => break,
            }
        }
    }
    routes
}

/// `docs/openapi.json`, with every schema in it checked for keywords outside the subset.
fn document() -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(doc["openapi"], "3.1.0");
    for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
        check_schema(&doc, schema, &format!("#/components/schemas/{name}"));
    }
    // Elsewhere schemas sit under a "schema" key (parameters, media types, headers).
    fn walk(doc: &Value, v: &Value, at: &str) {
        for (k, child) in v.as_object().into_iter().flatten() {
            match k.as_str() {
                "schema" => check_schema(doc, child, &format!("{at}/schema")),
                _ => walk(doc, child, &format!("{at}/{k}")),
            }
        }
        for (i, child) in v.as_array().into_iter().flatten().enumerate() {
            walk(doc, child, &format!("{at}/{i}"));
        }
    }
    walk(&doc, &doc["paths"], "#/paths");
    walk(&doc, &doc["components"]["parameters"], "#/components/parameters");
    walk(&doc, &doc["components"]["responses"], "#/components/responses");
    walk(&doc, &doc["components"]["headers"], "#/components/headers");
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let what = format!("{} {path}", method.to_uppercase());
        assert!(ids.insert(op["operationId"].as_str().unwrap_or_else(|| panic!("{what}: no operationId"))));
        let secured = op.get("security").unwrap_or(&doc["security"]).as_array().is_some_and(|s| !s.is_empty());
        assert!(!secured || op["responses"]["401"].is_object(), "{what} needs a token but documents no 401");
    }
    doc
}

// The JSON Schema subset.

/// Keywords that change whether a value validates; [`validate`] checks each of them.
const KEYWORDS: &[&str] =
    &["type", "properties", "required", "additionalProperties", "items", "enum", "$ref", "oneOf", "minimum", "maximum"];

/// Keywords that only document.
const ANNOTATIONS: &[&str] = &["description", "format", "example", "title", "default"];

const TYPES: &[&str] = &["null", "boolean", "string", "number", "integer", "object", "array"];

/// Where a value first breaks a schema, and how.
#[derive(Debug)]
struct Mismatch {
    /// The JSON path of the offending value, as `$.rows[0].clock`.
    path: String,
    why: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

/// Checks `value` (at JSON path `at`) against `schema`, resolving `$ref`s in `doc`.
///
/// # Errors
/// The first mismatch: `type` before the other keywords, then properties in name order.
///
/// # Panics
/// On a keyword outside [`KEYWORDS`] and [`ANNOTATIONS`], a `$ref` that does not resolve, or
/// a malformed keyword.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), Mismatch> {
    let fail = |path: &str, why: String| Err(Mismatch { path: path.to_owned(), why });
    let Some(keywords) = schema.as_object() else { panic!("the schema at {at} is not an object: {schema}") };
    if let Some(t) = keywords.get("type") {
        let names = type_names(t, at);
        if !names.iter().any(|n| has_type(value, n)) {
            return fail(at, format!("expected {}, got {}", names.join(" or "), shown(value)));
        }
    }
    for (keyword, arg) in keywords {
        match keyword.as_str() {
            "type" => {}
            "$ref" => validate(doc, resolve(doc, schema), value, at)?,
            "enum" => {
                let allowed = arg.as_array().unwrap_or_else(|| panic!("enum at {at} is not an array"));
                if !allowed.contains(value) {
                    return fail(at, format!("{} is not one of {arg}", shown(value)));
                }
            }
            "properties" => {
                for (name, sub) in arg.as_object().unwrap_or_else(|| panic!("properties at {at}")) {
                    if let Some(v) = value.get(name).filter(|_| value.is_object()) {
                        validate(doc, sub, v, &format!("{at}.{name}"))?;
                    }
                }
            }
            "required" => {
                for name in arg.as_array().unwrap_or_else(|| panic!("required at {at}")) {
                    let name = name.as_str().unwrap_or_else(|| panic!("required at {at}"));
                    if value.as_object().is_some_and(|o| !o.contains_key(name)) {
                        return fail(at, format!("missing required property '{name}'"));
                    }
                }
            }
            "additionalProperties" => {
                let known = keywords.get("properties").and_then(Value::as_object);
                for (name, v) in value.as_object().into_iter().flatten() {
                    if known.is_some_and(|k| k.contains_key(name)) {
                        continue;
                    }
                    let child = format!("{at}.{name}");
                    match arg {
                        Value::Bool(true) => {}
                        Value::Bool(false) => {
                            return fail(&child, "property not allowed (additionalProperties: false)".into());
                        }
                        sub => validate(doc, sub, v, &child)?,
                    }
                }
            }
            "items" => {
                for (i, v) in value.as_array().into_iter().flatten().enumerate() {
                    validate(doc, arg, v, &format!("{at}[{i}]"))?;
                }
            }
            "oneOf" => {
                let choices = arg.as_array().unwrap_or_else(|| panic!("oneOf at {at} is not an array"));
                let matching = choices.iter().filter(|s| validate(doc, s, value, at).is_ok()).count();
                if matching != 1 {
                    let n = choices.len();
                    return fail(at, format!("matches {matching} of the {n} oneOf schemas, not exactly one"));
                }
            }
            "minimum" | "maximum" => {
                let bound = arg.as_f64().unwrap_or_else(|| panic!("{keyword} at {at} is not a number"));
                if let Some(n) = value.as_f64() {
                    if keyword == "minimum" && n < bound {
                        return fail(at, format!("{value} is below the minimum {arg}"));
                    }
                    if keyword == "maximum" && n > bound {
                        return fail(at, format!("{value} is above the maximum {arg}"));
                    }
                }
            }
            k if ANNOTATIONS.contains(&k) => {}
            other => panic!("keyword '{other}' at {at} is outside the subset this validator checks"),
        }
    }
    Ok(())
}

/// Checks that `schema` (at document location `at`), and every schema inside it, uses only
/// the subset and that its `$ref`s resolve, whether or not a value ever reaches it.
///
/// # Panics
/// On the first keyword outside the subset or malformed keyword.
fn check_schema(doc: &Value, schema: &Value, at: &str) {
    let Some(keywords) = schema.as_object() else { panic!("the schema at {at} is not an object: {schema}") };
    for (keyword, arg) in keywords {
        let sub = |name: &str, s: &Value| check_schema(doc, s, &format!("{at}/{name}"));
        match keyword.as_str() {
            "$ref" => {
                resolve(doc, schema);
            }
            "type" => {
                type_names(arg, at);
            }
            "properties" => {
                for (name, s) in arg.as_object().unwrap_or_else(|| panic!("properties at {at}")) {
                    sub(&format!("properties/{name}"), s);
                }
            }
            "additionalProperties" if !arg.is_boolean() => sub(keyword, arg),
            "items" => sub(keyword, arg),
            "oneOf" => {
                for (i, s) in arg.as_array().unwrap_or_else(|| panic!("oneOf at {at}")).iter().enumerate() {
                    sub(&format!("oneOf/{i}"), s);
                }
            }
            "required" => assert!(
                arg.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                "required at {at} is not a list of names"
            ),
            "enum" => assert!(arg.is_array(), "enum at {at} is not an array"),
            "minimum" | "maximum" => assert!(arg.is_number(), "{keyword} at {at} is not a number"),
            k if KEYWORDS.contains(&k) || ANNOTATIONS.contains(&k) => {}
            other => panic!("keyword '{other}' at {at} is outside the subset this validator checks"),
        }
    }
}

fn type_names<'v>(t: &'v Value, at: &str) -> Vec<&'v str> {
    let names: Vec<&str> = match t {
        Value::String(n) => vec![n.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => panic!("type at {at} is neither a name nor a list of names"),
    };
    for n in &names {
        assert!(TYPES.contains(n), "type '{n}' at {at} is not a JSON Schema type");
    }
    names
}

fn has_type(v: &Value, name: &str) -> bool {
    match name {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        // JSON Schema counts 2.0 as an integer too.
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "object" => v.is_object(),
        "array" => v.is_array(),
        other => panic!("type '{other}' is not a JSON Schema type"),
    }
}

/// `v`, or what its `$ref` (`#/…` in `doc`) points at, transitively.
///
/// # Panics
/// When a `$ref` does not resolve.
fn resolve<'d>(doc: &'d Value, v: &'d Value) -> &'d Value {
    match v.get("$ref") {
        None => v,
        Some(r) => {
            let pointer = r.as_str().and_then(|r| r.strip_prefix('#')).unwrap_or_else(|| panic!("$ref {r}"));
            let target = doc.pointer(pointer).unwrap_or_else(|| panic!("$ref {r} points at nothing"));
            resolve(doc, target)
        }
    }
}

/// A value for a message, cut to a readable length.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s }
}
