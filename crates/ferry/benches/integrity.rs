//! `cargo xtask bench` (or `cargo bench -p ferry --bench integrity [-- --quick]`).
//!
//! Integrity checks (issue 18, point 5), on two throwaway PostgreSQL clusters, MAIN's and
//! CLOUD's: 1 000 000 rows (100 000 with `--quick`) held equally by both servers (written into
//! MAIN by `\copy`, captured by Ferry's triggers, and copied with their bookkeeping into CLOUD),
//! then 10 of them changed on CLOUD by SQL. Measured: `ferry integrity --peer cloud` on MAIN
//! (the digest tree descent), its time and the bytes exchanged; beside a full comparison (the
//! peer sends every row's key and version, as a check without the tree must), in the same
//! run; and the repair of the 10 rows. Ferry's times are the check's own (its report's
//! `duration_ms`, as `POST /v1/admin/integrity` inside a running server takes); the command's
//! wall time adds opening the store (PostgreSQL's start-up checks read every table).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::FERRY;

/// Rows changed on CLOUD after both sides were equal.
const CHANGED: usize = 10;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 100_000 } else { 1_000_000 };
    common::header(
        "integrity",
        &format!("integrity: {n} rows, {CHANGED} differences{}", if quick { " (--quick)" } else { "" }),
    );
    let main_pg = ferry_pgtemp::PgCluster::start().unwrap();
    let cloud_pg = ferry_pgtemp::PgCluster::start().unwrap();
    // The link stays off: only the check moves anything.
    let pair = common::UnlinkedPair::start(&main_pg, &cloud_pg);
    let (main, cloud_url, main_url, token) = (&pair.main, &pair.cloud_url, &pair.main_url, &pair.token);
    common::ferry_ok(main.path(), &["user", "add", "checker", "-c", "ferry.toml"]);
    let main_token = common::ferry_ok(
        main.path(),
        &["token", "create", "--user", "checker", "--device", "cloud", "--role", "cloud", "-c", "ferry.toml"],
    );

    // n rows into MAIN, captured; then the same rows and their bookkeeping into CLOUD.
    let user = "01900000-0000-7000-8000-00000000a11c";
    let rows = main_pg.dir().join("integrity-rows.csv");
    std::fs::write(&rows, common::csv(n, user)).unwrap();
    let _ = Command::new("chmod").arg("644").arg(&rows).status();
    main_pg.psql("ferry", &format!("\\copy jump_log FROM '{}' CSV", rows.display())).unwrap();
    let meta = main_pg.dir().join("integrity-meta.csv");
    let columns = "tbl, pk, alive, alive_at, clock, clocks, dead, owner, origin, texts, reach";
    main_pg
        .psql(
            "ferry",
            &format!("\\copy (SELECT {columns} FROM _ferry_rows WHERE tbl = 'jump_log') TO '{}' CSV", meta.display()),
        )
        .unwrap();
    cloud_pg.psql("ferry", "ALTER TABLE jump_log DISABLE TRIGGER USER").unwrap();
    cloud_pg.psql("ferry", &format!("\\copy jump_log FROM '{}' CSV", rows.display())).unwrap();
    cloud_pg.psql("ferry", &format!("\\copy _ferry_rows ({columns}) FROM '{}' CSV", meta.display())).unwrap();
    cloud_pg.psql("ferry", "ALTER TABLE jump_log ENABLE TRIGGER USER").unwrap();
    for c in [&main_pg, &cloud_pg] {
        c.psql("ferry", "VACUUM ANALYZE").unwrap();
    }

    let (equal, _) = check(main.path(), &[]);
    assert_eq!(equal["status"], "SUCCESS", "both sides start equal: {equal}");
    // Ten rows spread over the table, changed on CLOUD by another application's SQL.
    let step = n / CHANGED;
    let keys: Vec<String> = (0..CHANGED).map(|i| common::row(i * step + step / 2).0).collect();
    let list: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    cloud_pg
        .psql("ferry", &format!("UPDATE jump_log SET notes = 'changed on cloud' WHERE id IN ({})", list.join(", ")))
        .unwrap();

    let (found, command) = check(main.path(), &[]);
    let descent = Duration::from_millis(found["duration_ms"].as_u64().unwrap());
    assert_eq!(found["status"], "FAILED");
    let differing: Vec<&str> = found["tables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["differences"].as_array().unwrap())
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(differing.len(), CHANGED, "{found}");
    assert!(keys.iter().all(|k| differing.contains(&k.as_str())));
    let descent_bytes = found["bytes_sent"].as_u64().unwrap() + found["bytes_received"].as_u64().unwrap();
    let requests = found["requests"].as_u64().unwrap();

    let (full, full_bytes) = full_comparison((main_url, &main_token), (cloud_url, token));

    let (repaired, _) = check(main.path(), &["--repair"]);
    let repair = Duration::from_millis(repaired["duration_ms"].as_u64().unwrap());
    assert_eq!(repaired["status"], "REPAIRED", "{repaired}");
    let changed_on_main = main_pg
        .psql(
            "ferry",
            &format!("SELECT count(*) FROM jump_log WHERE notes = 'changed on cloud' AND id IN ({})", list.join(", ")),
        )
        .unwrap();
    assert!(changed_on_main.contains(&CHANGED.to_string()), "{changed_on_main}");

    println!("| {n} rows, {CHANGED} differing, PostgreSQL ↔ PostgreSQL | time | bytes exchanged | requests |");
    println!("|---|---|---|---|");
    println!(
        "| Ferry: `ferry integrity` (digest tree descent) | {:.2} s | {} | {requests} |",
        descent.as_secs_f64(),
        kb(descent_bytes)
    );
    println!("| the same command's wall time, opening the store included | {:.2} s | | |", command.as_secs_f64());
    println!(
        "| full comparison: every key and version from the peer | {:.2} s | {} | 1 |",
        full.as_secs_f64(),
        kb(full_bytes)
    );
    println!(
        "| Ferry: `ferry integrity --repair` (find, mend both ways, check again) | {:.2} s | – | – |",
        repair.as_secs_f64()
    );
    println!();
    common::record(
        "integrity",
        &format!("integrity check of {n} rows with {CHANGED} differences (bytes exchanged)"),
        &format!("{:.2} s, {}", descent.as_secs_f64(), kb(descent_bytes)),
        &format!("full comparison {:.2} s, {}", full.as_secs_f64(), kb(full_bytes)),
        &format!("{:.4}× bytes", descent_bytes as f64 / full_bytes as f64),
        "–",
    );
}

fn kb(bytes: u64) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `ferry integrity --peer cloud --tables jump_log --json` in MAIN's directory: the report
/// and the command's wall time.
fn check(dir: &Path, extra: &[&str]) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let out = Command::new(FERRY)
        .args(["integrity", "--peer", "cloud", "--tables", "jump_log", "--json", "-c", "ferry.toml"])
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    let took = started.elapsed();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (report, took)
}

/// What a check without the tree does: each side lists every row's key and version (one
/// request each, at once: MAIN's own list stands for reading its rows here), and the lists
/// are compared. The bytes are those that cross from the peer.
fn full_comparison(main: (&str, &str), cloud: (&str, &str)) -> (Duration, u64) {
    let started = Instant::now();
    let body = serde_json::json!({"table": "jump_log", "session": "full-comparison", "rows": [""]});
    let list = |(url, token): (&str, &str)| {
        let answer = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap()
            .post(format!("{url}/v1/peer/digests"))
            .bearer_auth(token)
            .header("ferry-peer", "bench")
            .json(&body)
            .send()
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
        let bytes = answer.bytes().unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let rows: std::collections::HashMap<String, String> = listed["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["key"].as_str().unwrap().to_owned(), r["version"].as_str().unwrap().to_owned()))
            .collect();
        (rows, bytes.len() as u64 + body.to_string().len() as u64)
    };
    let (here, (there, bytes)) = std::thread::scope(|s| {
        let here = s.spawn(|| list(main));
        let there = list(cloud);
        (here.join().unwrap().0, there)
    });
    let differing = there.iter().filter(|(k, v)| here.get(*k) != Some(v)).count();
    assert_eq!(differing, CHANGED);
    (started.elapsed(), bytes)
}
