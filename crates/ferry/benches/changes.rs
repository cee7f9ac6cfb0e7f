//! `cargo xtask bench` (or `cargo bench -p ferry --bench changes [-- --quick]`).
//!
//! 100 000 changes from client A visible on client B (SPEC: ≤ 1.5 × PostgreSQL's native
//! logical replication of the same rows), three ways in one run, on the same rows (the
//! benchmark's `jump_log` rows, about 125 bytes of values each):
//!
//! - Ferry: A's replica holds the new rows; B runs `ferry sync --watch` (realtime stream) on
//!   an empty replica; timed from the start of A's `ferry sync` until B's table holds them all.
//! - PostgreSQL logical replication: a publisher and a subscriber cluster (throwaway, as
//!   the other PostgreSQL benchmarks); timed from the start of `\copy` of the rows into the
//!   publisher until the subscriber's table holds them all.
//! - PouchDB: `pouchdb-node` clients through an `express-pouchdb` server
//!   (`benches/pouchdb/replicate.js`, installed with npm on first use); timed from the start
//!   of A's push replication until B's live pull holds them all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

mod common;

use common::{FERRY, example, insert_rows, wait_until};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 10_000 } else { 100_000 };
    common::header("changes", &format!("changes: {n}{}", if quick { " (--quick)" } else { "" }));
    let ferry = ferry_a_to_b(n);
    let postgres = logical_replication(n);
    let pouch = pouchdb(n);
    println!("| {n} changes A → B | time | rows/s | Ferry's ratio to it |");
    println!("|---|---|---|---|");
    let line = |name: &str, t: Duration| common::rate_row(name, n, t, ferry);
    line("Ferry: A's `ferry sync` → server → B's `ferry sync --watch`", ferry);
    line("PostgreSQL logical replication, publisher → subscriber", postgres);
    match &pouch {
        Ok(t) => line("PouchDB A → express-pouchdb → PouchDB B (live pull)", *t),
        Err(why) => println!("| PouchDB | not measured: {why} | – | – |"),
    }
    println!();
    let over = ferry.as_secs_f64() / postgres.mul_f64(1.5).as_secs_f64();
    common::record(
        "changes",
        &format!("{n} changes A → server → B (`ferry sync` → `ferry sync --watch`) vs PostgreSQL logical replication"),
        &format!("{:.2} s", ferry.as_secs_f64()),
        &format!("{:.2} s", postgres.as_secs_f64()),
        &format!("{:.2}×", ferry.as_secs_f64() / postgres.as_secs_f64()),
        &if n == 100_000 { common::verdict("≤ 1.5×", over <= 1.0, over) } else { "(full run only)".into() },
    );
    common::record(
        "changes",
        &format!("{n} changes A → server → B vs PouchDB A → express-pouchdb → B"),
        &format!("{:.2} s", ferry.as_secs_f64()),
        &pouch.as_ref().map_or_else(|why| format!("not measured: {why}"), |t| format!("{:.2} s", t.as_secs_f64())),
        &pouch.as_ref().map_or_else(|_| "–".into(), |t| format!("{:.2}×", ferry.as_secs_f64() / t.as_secs_f64())),
        "–",
    );
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(FERRY).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "ferry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default().to_owned()
}

fn count(db: &Path) -> usize {
    Connection::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM jump_log", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| n as usize)
}

fn ferry_a_to_b(n: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("schema.sql"), example("schema.sql")).unwrap();
    std::fs::write(d.join("ferry.toml"), example("ferry.toml")).unwrap();
    let user = run(d, &["user", "add", "bench", "-c", "ferry.toml"]);
    let a_token = run(d, &["token", "create", "--user", "bench", "--device", "a", "-c", "ferry.toml"]);
    let b_token = run(d, &["token", "create", "--user", "bench", "--device", "b", "-c", "ferry.toml"]);
    let (mut server, url) = common::serve(d);
    run(d, &["sync", "--db", "a.db", "--server", &url, "--token", &a_token]);
    run(d, &["sync", "--db", "b.db", "--server", &url, "--token", &b_token]);
    insert_rows(&mut ferry_sqlite::open(&d.join("a.db")).unwrap(), n, &user);
    let mut watch = Command::new(FERRY)
        .args(["sync", "--watch", "--db", "b.db", "--server", &url, "--token", &b_token, "--no-files"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    run(d, &["sync", "--db", "a.db", "--token", &a_token]);
    wait_until("B's rows", || count(&d.join("b.db")) >= n);
    let took = started.elapsed();
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = server.kill();
    let _ = server.wait();
    took
}

fn logical_replication(n: usize) -> Duration {
    let publisher = ferry_pgtemp::PgCluster::start().unwrap();
    common::enable_logical_replication(&publisher);
    let subscriber = ferry_pgtemp::PgCluster::start().unwrap();
    common::logical_replication(&publisher, &subscriber, n)
}

/// `benches/pouchdb` with its npm packages installed (once, under the target directory).
fn pouchdb_tools() -> Result<PathBuf, String> {
    let tools = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-tools/pouchdb");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pouchdb/replicate.js");
    std::fs::create_dir_all(&tools).map_err(|e| e.to_string())?;
    std::fs::copy(&script, tools.join("replicate.js")).map_err(|e| e.to_string())?;
    if !tools.join("node_modules/express-pouchdb").exists() {
        eprintln!("installing pouchdb-node, express-pouchdb and express@4 with npm into {}", tools.display());
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .args(["pouchdb-node@9", "express-pouchdb@4", "express@4"])
            .current_dir(&tools)
            .output()
            .map_err(|e| format!("npm is not available ({e}); install Node.js and npm"))?;
        if !out.status.success() {
            return Err(format!("npm install failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    Ok(tools)
}

fn pouchdb(n: usize) -> Result<Duration, String> {
    let tools = pouchdb_tools()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let node = |args: &[&str]| {
        Command::new("node")
            .arg(tools.join("replicate.js"))
            .args(args)
            .current_dir(d)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("node is not available ({e})"))
    };
    let line = |child: &mut std::process::Child| -> String {
        let mut l = String::new();
        let _ = BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut l);
        l.trim().to_owned()
    };
    let server_dir = d.join("server");
    std::fs::create_dir_all(&server_dir).map_err(|e| e.to_string())?;
    let mut server = node(&["server", &port.to_string(), &server_dir.display().to_string()])?;
    if line(&mut server) != "listening" {
        return Err("the PouchDB server did not start".into());
    }
    let url = format!("http://127.0.0.1:{port}/bench");
    let made = Command::new("curl").args(["-s", "-X", "PUT", &url]).output().map_err(|e| e.to_string())?;
    if !String::from_utf8_lossy(&made.stdout).contains("\"ok\"") {
        return Err(format!("cannot create the database: {}", String::from_utf8_lossy(&made.stdout)));
    }
    let count = n.to_string();
    let mut pull = node(&["pull", &url, &d.join("b").display().to_string(), &count])?;
    if line(&mut pull) != "ready" {
        return Err("client B did not start".into());
    }
    let mut push = node(&["push", &url, &d.join("a").display().to_string(), &count])?;
    let started: u64 = line(&mut push).strip_prefix("start ").and_then(|t| t.parse().ok()).ok_or("client A failed")?;
    let complete: u64 =
        line(&mut pull).strip_prefix("complete ").and_then(|t| t.parse().ok()).ok_or("client B did not finish")?;
    let _ = push.wait();
    let _ = pull.kill();
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
    Ok(Duration::from_millis(complete.saturating_sub(started)))
}
