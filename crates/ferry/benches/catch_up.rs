//! `cargo xtask bench` (or `cargo bench -p ferry --bench catch_up [-- --quick]`).
//!
//! Catching up by difference (issue 18, point 6), embedded store (the default): a replica
//! holding 1 000 000 rows (100 000 with `--quick`) misses 1 000 changes (900 edits, 100
//! deletions) made by another device while it is away, and the server compacts its history
//! past the replica's cursor. Its next `ferry sync` compares digest trees and fetches only
//! what differs; beside it, in the same run, a fresh hydrate of the same rows into an empty
//! replica (what other sync engines' users do: delete the local database). Time and bytes of
//! the server's answers (decompressed JSON, as the sync reports them).

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::FERRY;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 100_000 } else { 1_000_000 };
    let (edits, deletes) = (900usize, 100usize);
    common::header(
        "catch_up",
        &format!(
            "catch up: {n} rows, {edits} edits and {deletes} deletions missed{}",
            if quick { " (--quick)" } else { "" }
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_example(d);
    let user = common::ferry_ok(d, &["user", "add", "bench", "-c", "ferry.toml"]);
    let token = |device: &str| {
        common::ferry_ok(d, &["token", "create", "--user", "bench", "--device", device, "-c", "ferry.toml"])
    };
    let (seed_token, away_token, fresh_token) = (token("seed"), token("away"), token("fresh"));
    let (_server, url) = common::serve(d);
    let sync = |db: &str, token: &str| -> (Duration, serde_json::Value) {
        let started = Instant::now();
        let out = Command::new(FERRY)
            .args(["sync", "--db", db, "--server", &url, "--token", token, "--json"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(out.status.success(), "sync {db}: {}", String::from_utf8_lossy(&out.stderr));
        (started.elapsed(), serde_json::from_slice(&out.stdout).unwrap())
    };
    sync("seed.db", &seed_token);
    let mut seed = ferry_sqlite::open(&d.join("seed.db")).unwrap();
    common::insert_rows(&mut seed, n, &user);
    sync("seed.db", &seed_token);
    let (_, hydrated) = sync("away.db", &away_token);
    assert_eq!(hydrated["pulled"], n, "{hydrated}");

    // While "away" is away: edits and deletions spread over the table, then compaction.
    let step = n / (edits + deletes);
    let keys: Vec<String> = (0..edits + deletes).map(|i| common::row(i * step).0).collect();
    for k in &keys[..edits] {
        seed.execute("UPDATE jump_log SET notes = 'edited while away' WHERE id = ?1", [k]).unwrap();
    }
    for k in &keys[edits..] {
        seed.execute("DELETE FROM jump_log WHERE id = ?1", [k]).unwrap();
    }
    drop(seed);
    sync("seed.db", &seed_token);
    std::thread::sleep(Duration::from_millis(5));
    common::ferry_ok(d, &["compact", "--older-than", "1ms", "--json", "-c", "ferry.toml"]);

    let (caught_time, caught) = sync("away.db", &away_token);
    assert_eq!(caught["caught_up"], true, "{caught}");
    assert_eq!(
        (caught["caught_up_rows"].as_u64(), caught["removed"].as_u64()),
        (Some(edits as u64), Some(deletes as u64)),
        "{caught}"
    );
    let (fresh_time, fresh) = sync("fresh.db", &fresh_token);
    assert_eq!(fresh["pulled"], n - deletes, "{fresh}");
    let rows_of = |db: &str| -> i64 {
        rusqlite::Connection::open(d.join(db))
            .unwrap()
            .query_row("SELECT count(*) FROM jump_log", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(rows_of("away.db"), rows_of("fresh.db"));

    let (caught_bytes, fresh_bytes) =
        (caught["bytes_received"].as_u64().unwrap(), fresh["bytes_received"].as_u64().unwrap());
    println!(
        "| replica of {n} rows that missed {} changes behind the horizon | time | bytes received |",
        edits + deletes
    );
    println!("|---|---|---|");
    println!(
        "| Ferry: `ferry sync` catching up by difference | {:.2} s | {} |",
        caught_time.as_secs_f64(),
        mib(caught_bytes)
    );
    println!(
        "| a fresh hydrate of the same rows into an empty replica | {:.2} s | {} |",
        fresh_time.as_secs_f64(),
        mib(fresh_bytes)
    );
    println!();
    common::record(
        "catch_up",
        &format!(
            "replica of {n} rows that missed {} changes behind the horizon: catch up vs fresh hydrate",
            edits + deletes
        ),
        &format!("{:.2} s, {}", caught_time.as_secs_f64(), mib(caught_bytes)),
        &format!("{:.2} s, {}", fresh_time.as_secs_f64(), mib(fresh_bytes)),
        &format!(
            "{:.2}× time, {:.3}× bytes",
            caught_time.as_secs_f64() / fresh_time.as_secs_f64(),
            caught_bytes as f64 / fresh_bytes as f64
        ),
        "–",
    );
}

fn mib(bytes: u64) -> String {
    if bytes >= 10 << 20 {
        format!("{:.1} MiB", bytes as f64 / 1048576.0)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
