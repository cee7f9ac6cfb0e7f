//! Integrity checks between two servers (issue 18, point 5): `ferry integrity` and
//! `POST /v1/admin/integrity` find planted differences (a changed value, a missing row, an
//! extra row, tombstones on one side only, a row removed behind Ferry's back), list exactly
//! those rows, and `--repair` mends them both ways; the link itself is off throughout, so
//! nothing but the check and its repair moves rows.

use serde_json::{Value, json};

use crate::peering::Site;
use crate::{Env, uuid};

/// CLOUD on its own PostgreSQL; MAIN (PostgreSQL, or the embedded store when `embedded`)
/// with a `[peers.cloud]` section whose link is disabled.
pub(crate) fn unlinked_pair(embedded: bool) -> (Site, Site) {
    unlinked_pair_via(embedded, &|url| url.to_owned())
}

/// As [`unlinked_pair`], MAIN reaching CLOUD at `via(CLOUD's address)` (a proxy's).
pub(crate) fn unlinked_pair_via(embedded: bool, via: &dyn Fn(&str) -> String) -> (Site, Site) {
    let main_env = if embedded { Env::new() } else { Env::postgres() };
    crate::peering::pair_in(main_env, Some(via), "enabled = false\n", &|schema| schema.to_owned())
}

/// `ferry integrity --peer cloud --json [extra]` on MAIN: the report, and whether it exited 0.
fn integrity(main: &Site, extra: &[&str]) -> (Value, bool) {
    let config = main.env.config();
    let mut args = vec!["integrity", "--peer", "cloud", "--json", "-c", config.as_str()];
    args.extend_from_slice(extra);
    let out = main.env.run(&args);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (report, out.status.success())
}

/// The differences the report lists for `table`, as (kind, key, here deleted, there deleted).
fn differences(report: &Value, table: &str) -> Vec<(String, String, bool, bool)> {
    let t = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == table).unwrap();
    let mut out: Vec<_> = t["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["key"].as_str().unwrap().to_owned(),
                d["here_deleted"].as_bool().unwrap(),
                d["there_deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn group_name(site: &Site, id: &str) -> String {
    site.psql(&format!("SELECT name FROM groups WHERE id = '{id}'"))
}

#[test]
fn integrity_finds_exactly_the_planted_differences_and_repairs_them_both_ways() {
    let (main, cloud) = unlinked_pair(false);
    let creator = uuid();
    let ids: Vec<String> = (0..300).map(|_| uuid()).collect();
    let values: Vec<String> = ids.iter().map(|id| format!("('{id}', 'group {id}', '{creator}')")).collect();
    main.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES {}", values.join(", ")));

    // Nothing crossed (the link is off): every row is MAIN's alone; a repair sends them.
    let (report, ok) = integrity(&main, &[]);
    assert!(!ok, "differences exit 1");
    assert_eq!(report["status"], "FAILED");
    assert_eq!(differences(&report, "groups").len(), 300);
    let (report, ok) = integrity(&main, &["--repair"]);
    assert!(ok, "{report}");
    assert_eq!(report["status"], "REPAIRED");
    let groups = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "groups").unwrap();
    assert_eq!(groups["repaired_out"], 300);
    assert_eq!(cloud.psql("SELECT count(*) FROM groups"), "300");
    let (report, ok) = integrity(&main, &[]);
    assert!(ok && report["status"] == "SUCCESS", "{report}");
    let equal = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == "groups").unwrap();
    assert_eq!((equal["here_rows"].as_u64(), equal["there_rows"].as_u64()), (Some(300), Some(300)));
    assert_eq!(equal["here_digest"], equal["there_digest"]);
    let settled_bytes = report["bytes_received"].as_u64().unwrap();

    // Planted: a value changed on CLOUD; a row only MAIN has; a row only CLOUD has; a row
    // deleted on MAIN (a tombstone against CLOUD's live row); a row created and deleted on
    // CLOUD (a tombstone MAIN never heard of); and a row removed from CLOUD's database behind
    // Ferry's back, its bookkeeping too (what no feed would ever carry again).
    let changed = &ids[0];
    cloud.psql(&format!("UPDATE groups SET name = 'renamed on cloud' WHERE id = '{changed}'"));
    let only_main = uuid();
    main.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES ('{only_main}', 'main only', '{creator}')"));
    let only_cloud = uuid();
    cloud
        .psql(&format!("INSERT INTO groups (id, name, created_by) VALUES ('{only_cloud}', 'cloud only', '{creator}')"));
    let deleted = &ids[1];
    main.psql(&format!("DELETE FROM groups WHERE id = '{deleted}'"));
    let ghost = uuid();
    cloud.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES ('{ghost}', 'short-lived', '{creator}')"));
    cloud.psql(&format!("DELETE FROM groups WHERE id = '{ghost}'"));
    let lost = &ids[2];
    cloud.psql(&format!(
        "SET session_replication_role = replica; DELETE FROM groups WHERE id = '{lost}'; DELETE FROM _ferry_rows WHERE tbl = 'groups' AND pk = '{lost}'"
    ));

    let (report, ok) = integrity(&main, &[]);
    assert!(!ok);
    assert_eq!(report["status"], "FAILED");
    let mut expected = vec![
        ("changed".to_owned(), changed.clone(), false, false),
        ("only_here".to_owned(), only_main.clone(), false, false),
        ("only_there".to_owned(), only_cloud.clone(), false, false),
        ("changed".to_owned(), deleted.clone(), true, false),
        ("only_there".to_owned(), ghost.clone(), false, true),
        ("only_here".to_owned(), lost.clone(), false, false),
    ];
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(differences(&report, "groups"), expected);
    for t in report["tables"].as_array().unwrap().iter().filter(|t| t["table"] != "groups") {
        assert_eq!(t["equal"], true, "{t}");
    }
    // What crossed follows the six rows, not the 300: a few levels of summaries.
    let bytes = report["bytes_received"].as_u64().unwrap();
    assert!(bytes < settled_bytes + 60_000, "{bytes} bytes received for six differences");

    // The mismatch is in the sync log as FAILED, naming the rows.
    let log: Value =
        serde_json::from_str(&main.env.ok_all(&["peer", "log", "cloud", "--json", "-c", &main.env.config()])).unwrap();
    let entry = log["entries"].as_array().unwrap().iter().find(|e| e["kind"] == "integrity").unwrap().clone();
    assert_eq!(entry["status"], "FAILED", "{entry}");
    let text = entry["error"].as_str().unwrap();
    assert!(
        text.contains("groups: 301 rows here")
            && text.contains(lost.as_str())
            && text.contains("a tombstone on the peer, nothing here"),
        "{text}"
    );

    // The repair sends the newer version of each row both ways, through the merge rules.
    let (report, ok) = integrity(&main, &["--repair"]);
    assert!(ok, "{report}");
    assert_eq!(report["status"], "REPAIRED");
    for site in [&main, &cloud] {
        assert_eq!(group_name(site, changed), "renamed on cloud");
        assert_eq!(group_name(site, &only_main), "main only");
        assert_eq!(group_name(site, &only_cloud), "cloud only");
        assert_eq!(group_name(site, deleted), "");
        assert_eq!(group_name(site, &ghost), "");
        assert_eq!(group_name(site, lost), format!("group {lost}"));
    }
    assert_eq!(main.psql("SELECT count(*) FROM groups"), cloud.psql("SELECT count(*) FROM groups"));
    let (report, ok) = integrity(&main, &[]);
    assert!(ok && report["status"] == "SUCCESS", "{report}");

    // The same through the API, for one table.
    let http = main.server.http();
    let answer: Value = http
        .post(format!("{}/v1/admin/integrity", main.server.url))
        .bearer_auth(&main.admin)
        .json(&json!({"peer": "cloud", "tables": ["groups"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["status"], "SUCCESS", "{answer}");
    assert_eq!(answer["tables"].as_array().unwrap().len(), 1);
    let unknown = http
        .post(format!("{}/v1/admin/integrity", main.server.url))
        .bearer_auth(&main.admin)
        .json(&json!({"peer": "nope"}))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("its peers are: cloud"), "{body}");
    let table = http
        .post(format!("{}/v1/admin/integrity", main.server.url))
        .bearer_auth(&main.admin)
        .json(&json!({"peer": "cloud", "tables": ["jumps"]}))
        .send()
        .unwrap();
    assert_eq!(table.status(), 400);
    // A device's token may not ask for digests as a peer.
    let device = cloud.env.token("dropzone", "tablet");
    let refused = http
        .post(format!("{}/v1/peer/digests", cloud.server.url))
        .bearer_auth(&device)
        .header("ferry-peer", "x")
        .json(&json!({"table": "groups", "session": "s", "nodes": [""]}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[test]
fn the_embedded_store_and_postgresql_agree_on_digests() {
    let (main, cloud) = unlinked_pair(true);
    let ann = main.env.add_user("ann");
    let phone_token = main.env.token("ann", "phone");
    main.env.sync(&main.server, "phone.db", &phone_token);
    let phone = main.env.db("phone.db");
    let ids: Vec<String> = (0..50).map(|_| uuid()).collect();
    for id in &ids {
        phone
            .execute(
                "INSERT INTO groups (id, name, created_by) VALUES (?1, ?2, ?3)",
                rusqlite::params![id, format!("g {id}"), ann],
            )
            .unwrap();
    }
    phone.execute("DELETE FROM groups WHERE id = ?1", [&ids[49]]).unwrap();
    main.env.sync(&main.server, "phone.db", &phone_token);

    let (report, _) = integrity(&main, &["--repair"]);
    assert_eq!(report["status"], "REPAIRED", "{report}");
    // Equal states digest equally in both stores (the tombstone included).
    let (report, ok) = integrity(&main, &[]);
    assert!(ok && report["status"] == "SUCCESS", "{report}");
    assert_eq!(cloud.psql("SELECT count(*) FROM groups"), "49");
    cloud.psql(&format!("UPDATE groups SET name = 'changed in PostgreSQL' WHERE id = '{}'", ids[3]));
    let (report, _) = integrity(&main, &[]);
    assert_eq!(differences(&report, "groups"), [("changed".to_owned(), ids[3].clone(), false, false)]);
    let (report, ok) = integrity(&main, &["--repair"]);
    assert!(ok && report["status"] == "REPAIRED", "{report}");
    main.env.sync(&main.server, "phone.db", &phone_token);
    let name: String = phone.query_row("SELECT name FROM groups WHERE id = ?1", [&ids[3]], |r| r.get(0)).unwrap();
    assert_eq!(name, "changed in PostgreSQL");
}
