//! `cargo xtask bench` (or `cargo bench -p ferry --bench peering [-- --quick]`).
//!
//! Server peering (issue 17), on two throwaway PostgreSQL clusters, MAIN's and CLOUD's:
//!
//! - 100 000 changes written into MAIN's PostgreSQL by `\copy` (another application's SQL,
//!   captured by Ferry's triggers), timed from the start of the copy until CLOUD's
//!   PostgreSQL holds them all, with MAIN's `ferry serve` linked to CLOUD's
//!   (`[peers.cloud]`); beside PostgreSQL's logical replication of the same rows between
//!   the same two clusters (other databases), in the same run.
//! - One change's latency: a row inserted into MAIN's PostgreSQL by `psql` until a device on
//!   CLOUD running `ferry sync --watch` holds it (MAIN → CLOUD → device), 20 times.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

mod common;

use common::{FERRY, pg_count, wait_until};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 10_000 } else { 100_000 };
    let rounds = if quick { 5 } else { 20 };
    common::header(
        "peering",
        &format!("peering: {n} changes, {rounds} latency rounds{}", if quick { " (--quick)" } else { "" }),
    );
    let main_pg = ferry_pgtemp::PgCluster::start().unwrap();
    common::enable_logical_replication(&main_pg);
    let cloud_pg = ferry_pgtemp::PgCluster::start().unwrap();

    let pair = Pair::start(&main_pg, &cloud_pg);
    let ferry = pair.bulk(n);
    let latencies = pair.latency(rounds);
    drop(pair);
    let postgres = common::logical_replication(&main_pg, &cloud_pg, n);

    println!("| {n} changes MAIN's PostgreSQL → CLOUD's PostgreSQL | time | rows/s | Ferry's ratio to it |");
    println!("|---|---|---|---|");
    let line = |name: &str, t: Duration| common::rate_row(name, n, t, ferry);
    line("Ferry: `\\copy` into MAIN → MAIN's link → CLOUD", ferry);
    line("PostgreSQL logical replication, same clusters", postgres);
    println!();
    let mut latencies = latencies;
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = *latencies.last().unwrap();
    println!("| one change: psql into MAIN → CLOUD → a device on CLOUD (`--watch`) | median | worst of {rounds} |");
    println!("|---|---|---|");
    println!("| Ferry | {} ms | {} ms |", median.as_millis(), worst.as_millis());
    println!();
    common::record(
        "peering",
        &format!("{n} changes by SQL into MAIN's PostgreSQL visible in CLOUD's, vs logical replication"),
        &format!("{:.2} s", ferry.as_secs_f64()),
        &format!("{:.2} s", postgres.as_secs_f64()),
        &format!("{:.2}×", ferry.as_secs_f64() / postgres.as_secs_f64()),
        "–",
    );
    common::record(
        "peering",
        "one change by SQL into MAIN → CLOUD → a device on CLOUD (median of rounds)",
        &format!("{} ms", median.as_millis()),
        "–",
        "–",
        "–",
    );
}

/// MAIN and CLOUD, each `ferry serve` on its own cluster (database `ferry`), linked.
struct Pair<'a> {
    main_pg: &'a ferry_pgtemp::PgCluster,
    cloud_pg: &'a ferry_pgtemp::PgCluster,
    main: tempfile::TempDir,
    cloud: tempfile::TempDir,
    _servers: Vec<common::Server>,
    cloud_url: String,
    user: String,
}

impl<'a> Pair<'a> {
    fn start(main_pg: &'a ferry_pgtemp::PgCluster, cloud_pg: &'a ferry_pgtemp::PgCluster) -> Pair<'a> {
        let (main, cloud) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        common::server_config(cloud.path(), &cloud_pg.create_db("ferry").unwrap(), "cloud", "");
        common::ferry_ok(cloud.path(), &["user", "add", "dropzone", "-c", "ferry.toml"]);
        let token = common::ferry_ok(
            cloud.path(),
            &["token", "create", "--user", "dropzone", "--device", "main", "--role", "main", "-c", "ferry.toml"],
        );
        let user = common::ferry_ok(cloud.path(), &["user", "add", "bench", "-c", "ferry.toml"]);
        let (cloud_server, cloud_url) = common::serve(cloud.path());
        let peer = format!("\n[peers.cloud]\nurl = \"{cloud_url}\"\ntoken = \"{token}\"\ninterval = \"1s\"\n");
        common::server_config(main.path(), &main_pg.create_db("ferry").unwrap(), "main", &peer);
        let (main_server, _) = common::serve(main.path());
        let pair = Pair { main_pg, cloud_pg, main, cloud, _servers: vec![cloud_server, main_server], cloud_url, user };
        wait_until("the link to connect", || pair.link_state() == "CONNECTED");
        // The user crossed too: MAIN's rows may name them.
        wait_until("the user on MAIN", || {
            pair.main_pg
                .psql("ferry", "SELECT count(*) FROM _ferry_users WHERE name = 'bench'")
                .is_ok_and(|o| o.trim() == "1")
        });
        pair
    }

    fn link_state(&self) -> String {
        let out = Command::new(FERRY)
            .args(["peer", "status", "--json", "-c", "ferry.toml"])
            .current_dir(self.main.path())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["peers"][0]["state"].as_str().unwrap_or_default().to_owned()
    }

    /// `n` rows `\copy`ed into MAIN's PostgreSQL until CLOUD's holds them.
    fn bulk(&self, n: usize) -> Duration {
        let file = self.main_pg.dir().join("peer-rows.csv");
        std::fs::write(&file, common::csv(n, &self.user)).unwrap();
        let _ = Command::new("chmod").arg("644").arg(&file).status();
        let started = Instant::now();
        self.main_pg.psql("ferry", &format!("\\copy jump_log FROM '{}' CSV", file.display())).unwrap();
        wait_until("CLOUD's rows", || pg_count(self.cloud_pg, "ferry") >= n);
        started.elapsed()
    }

    /// One row inserted into MAIN's PostgreSQL until a `--watch`ing device on CLOUD holds it,
    /// `rounds` times.
    fn latency(&self, rounds: usize) -> Vec<Duration> {
        let d = self.cloud.path();
        let token =
            common::ferry_ok(d, &["token", "create", "--user", "bench", "--device", "laptop", "-c", "ferry.toml"]);
        common::ferry_ok(d, &["sync", "--db", "laptop.db", "--server", &self.cloud_url, "--token", &token]);
        let mut watch = Command::new(FERRY)
            .args([
                "sync",
                "--watch",
                "--db",
                "laptop.db",
                "--server",
                &self.cloud_url,
                "--token",
                &token,
                "--no-files",
            ])
            .current_dir(d)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The engine reports its state changes: CONNECTED means its stream is up.
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
        while let Some(Ok(l)) = lines.next() {
            if l.contains("CONNECTED") && !l.contains("DISCONNECTED") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let db = Connection::open(d.join("laptop.db")).unwrap();
        let mut out = Vec::new();
        for i in 0..rounds {
            let id = format!("01900000-0000-7000-9000-{i:012x}");
            let started = Instant::now();
            self.main_pg
                .psql(
                    "ferry",
                    &format!(
                        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at) VALUES ('{id}', '{}', {i}, now())",
                        self.user
                    ),
                )
                .unwrap();
            wait_until("the device's row", || {
                db.query_row("SELECT count(*) FROM jump_log WHERE id = ?1", [&id], |r| r.get::<_, i64>(0))
                    .is_ok_and(|c| c == 1)
            });
            out.push(started.elapsed());
        }
        let _ = watch.kill();
        let _ = watch.wait();
        out
    }
}
