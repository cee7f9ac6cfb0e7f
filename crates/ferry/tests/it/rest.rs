//! The REST data API over real HTTP: one row at a time with its version, and the change
//! feed, beside devices that sync the same rows.

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::*;

struct Api<'a> {
    http: Client,
    url: &'a str,
    token: String,
}

impl Api<'_> {
    fn auth(&self, r: RequestBuilder) -> RequestBuilder {
        r.bearer_auth(&self.token)
    }

    fn get(&self, path: &str) -> Response {
        self.auth(self.http.get(format!("{}{path}", self.url))).send().unwrap()
    }

    fn put(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Response {
        let mut r = self.auth(self.http.put(format!("{}{path}", self.url))).json(&body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().unwrap()
    }

    fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut r = self.auth(self.http.delete(format!("{}{path}", self.url)));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().unwrap()
    }
}

fn etag(r: &Response) -> String {
    r.headers()["etag"].to_str().unwrap().to_owned()
}

fn body(r: Response) -> Value {
    r.json().unwrap()
}

fn jump(user: &str, n: i64, notes: &str) -> Value {
    json!({"values": {"user_id": user, "jump_number": n, "jumped_at": "2026-11-22T09:00:00Z", "notes": notes}})
}

#[test]
fn rows_are_read_and_written_with_their_version_and_devices_see_the_same_rows() {
    rows_with_versions(Env::new());
}

#[test]
fn rows_are_read_and_written_with_their_version_on_postgres_too() {
    rows_with_versions(Env::postgres());
}

fn rows_with_versions(env: Env) {
    let p = Pair::in_env(env);
    let api = Api { http: Client::new(), url: &p.server.url, token: p.env.token("alice", "script") };
    let id = uuid();
    let path = format!("/v1/rows/jump_log/{id}");

    // Create only: 201 with the version as ETag; a second create-only is refused with 412.
    let created = api.put(&path, jump(&p.user, 1, "made by a script"), &[("If-None-Match", "*")]);
    assert_eq!(created.status(), StatusCode::CREATED, "{:?}", created.text());
    let v1 = etag(&created);
    let doc = body(created);
    assert_eq!(doc["values"]["notes"], "made by a script");
    assert_eq!(doc["deleted"], false);
    assert_eq!(format!("\"{}\"", doc["version"].as_str().unwrap()), v1);
    let again = api.put(&path, jump(&p.user, 1, "twice"), &[("If-None-Match", "*")]);
    assert_eq!(again.status(), StatusCode::PRECONDITION_FAILED);

    // GET answers the same version; a device syncs the row and changes it.
    let got = api.get(&path);
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(etag(&got), v1);
    p.sync_phone();
    p.env.db("phone.db").execute("UPDATE jump_log SET notes = 'from the phone' WHERE id = ?1", [&id]).unwrap();
    p.sync_phone();

    // A write conditional on the old version is refused, with the current row: 412 for
    // If-Match, 409 `stale` for a version in the body (the journaling seed's form).
    let stale = api.put(&path, json!({"values": {"notes": "stale"}}), &[("If-Match", &v1)]);
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let stale = body(stale);
    assert_eq!(stale["error"]["code"], "precondition_failed");
    assert_eq!(stale["current"]["values"]["notes"], "from the phone");
    let v1_plain = v1.trim_matches('"');
    let stale = api.put(&path, json!({"values": {"notes": "stale"}, "version": v1_plain}), &[]);
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert_eq!(body(stale)["error"]["code"], "stale");

    // On top of the current version it applies, changing only the given column.
    let v2 = etag(&api.get(&path));
    assert_ne!(v2, v1);
    let updated = api.put(&path, json!({"values": {"dropzone": "Skydive Spa"}}), &[("If-Match", &v2)]);
    assert_eq!(updated.status(), StatusCode::OK);
    let v3 = etag(&updated);
    let doc = body(updated);
    assert_eq!(doc["values"]["notes"], "from the phone");
    assert_eq!(doc["values"]["dropzone"], "Skydive Spa");
    p.sync_laptop();
    let laptop: (String, String) = p
        .env
        .db("laptop.db")
        .query_row("SELECT notes, dropzone FROM jump_log WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(laptop, ("from the phone".to_owned(), "Skydive Spa".to_owned()));

    // Bad input changes nothing and names the problem.
    let bad = api.put(&path, json!({"values": {"jump_number": "twelve"}}), &[]);
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(body(bad)["error"]["message"].as_str().unwrap().contains("jump_number"));
    let bad = api.put(&path, json!({"values": {"altitude": 4000}}), &[]);
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(body(bad)["error"]["message"].as_str().unwrap().contains("unknown column 'altitude'"));
    let missing = api.put(&format!("/v1/rows/jump_log/{}", uuid()), json!({"values": {"notes": "x"}}), &[]);
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST, "a new row needs its NOT NULL columns");
    assert_eq!(etag(&api.get(&path)), v3);

    // Delete with the version; then the row is gone, and the change feed has the tombstone.
    let deleted = api.delete(&path, &[("If-Match", &v3)]);
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.get(&path).status(), StatusCode::NOT_FOUND);
    assert_eq!(api.delete(&path, &[]).status(), StatusCode::NOT_FOUND);
    let mut since = String::new();
    let mut tombstone = None;
    loop {
        let page = body(api.get(&format!("/v1/changes?since={since}&limit=2")));
        for c in page["changes"].as_array().unwrap() {
            if c["key"] == id.as_str() {
                tombstone = Some(c.clone());
            }
        }
        since = page["cursor"].as_str().unwrap().to_owned();
        if page["more"] == false {
            break;
        }
    }
    let tombstone = tombstone.expect("the change feed carries the deleted row");
    assert_eq!(tombstone["deleted"], true);
    assert_eq!(tombstone["values"]["dropzone"], "Skydive Spa", "a tombstone keeps the last values");
    p.sync_phone();
    let left: i64 =
        p.env.db("phone.db").query_row("SELECT count(*) FROM jump_log WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(left, 0);
}

#[test]
fn rows_of_another_user_are_not_found_and_cannot_be_written() {
    let p = Pair::new();
    let bob_id = p.env.add_user("bob");
    let bob = p.env.token("bob", "script");
    let alice = Api { http: Client::new(), url: &p.server.url, token: p.phone.clone() };
    let bob_api = Api { http: Client::new(), url: &p.server.url, token: bob };
    let id = uuid();
    let path = format!("/v1/rows/jump_log/{id}");
    assert_eq!(alice.put(&path, jump(&p.user, 1, "alice's"), &[]).status(), StatusCode::CREATED);
    assert_eq!(bob_api.get(&path).status(), StatusCode::NOT_FOUND, "bob cannot tell the row exists");
    // Bob cannot see the row, so his write is a create; the store refuses it as alice's row.
    let write = bob_api.put(&path, jump(&bob_id, 1, "bob was here"), &[]);
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
    assert_eq!(body(alice.get(&path))["values"]["notes"], "alice's");
    assert_eq!(alice.get("/v1/rows/no_such_table/x").status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_reject_stale_table_requires_a_version_to_write() {
    let env = Env::new();
    env.table_options("jump_log", "conflict = \"reject-stale\"");
    let p = Pair::in_env(env);
    let api = Api { http: Client::new(), url: &p.server.url, token: p.phone.clone() };
    let path = format!("/v1/rows/jump_log/{}", uuid());
    let blind = api.put(&path, jump(&p.user, 1, "blind"), &[]);
    assert_eq!(blind.status(), StatusCode::PRECONDITION_REQUIRED);
    assert!(body(blind)["error"]["message"].as_str().unwrap().contains("If-Match"));
    let created = api.put(&path, jump(&p.user, 1, "created"), &[("If-None-Match", "*")]);
    assert_eq!(created.status(), StatusCode::CREATED);
    let v = etag(&created);
    assert_eq!(api.put(&path, json!({"values": {"notes": "edited"}}), &[("If-Match", &v)]).status(), StatusCode::OK);
    // `If-Match: *` holds for any existing row, and for no missing one.
    assert_eq!(api.put(&path, json!({"values": {"notes": "any"}}), &[("If-Match", "*")]).status(), StatusCode::OK);
    let nowhere = format!("/v1/rows/jump_log/{}", uuid());
    assert_eq!(
        api.put(&nowhere, jump(&p.user, 2, "x"), &[("If-Match", "*")]).status(),
        StatusCode::PRECONDITION_FAILED
    );
    let blind_delete = api.delete(&path, &[]);
    assert_eq!(blind_delete.status(), StatusCode::PRECONDITION_REQUIRED);
    assert!(!body(blind_delete)["error"]["message"].as_str().unwrap().contains("to create"));
}
