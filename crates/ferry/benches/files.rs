//! `cargo xtask bench` (or `cargo bench -p ferry --bench files [-- --quick]`).
//!
//! 1 000 files of 1 MB from one device to another through a real `ferry serve` (embedded
//! store, local file store) over loopback: device A uploads every file (`ferry file sync`),
//! then device B downloads every one; each byte is hashed where it lands (server, then B).
//! The baseline, in the same run: the same bytes read from A's directory, sent over one
//! loopback TCP connection and written to files on the other side, twice (up and down, as
//! through a server), with no hashing and no HTTP.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::Digest;

mod common;

use common::FERRY;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (files, size) = if quick { (100, 1_000_000) } else { (1000, 1_000_000) };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores; files: {files} × {} MB{}",
        size / 1_000_000,
        if quick { " (--quick)" } else { "" }
    );
    println!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/skydive");
    for f in ["schema.sql", "ferry.toml"] {
        std::fs::copy(example.join(f), d.join(f)).unwrap();
    }
    let ferry = |args: &[&str]| -> String {
        let out = Command::new(FERRY).args(args).current_dir(d).output().unwrap();
        assert!(out.status.success(), "ferry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default().to_owned()
    };
    ferry(&["user", "add", "alice", "-c", "ferry.toml"]);
    let a_token = ferry(&["token", "create", "--user", "alice", "--device", "a", "-c", "ferry.toml"]);
    let b_token = ferry(&["token", "create", "--user", "alice", "--device", "b", "-c", "ferry.toml"]);
    let (mut server, url) = common::serve(d);
    let (a, b) = (d.join("a.db").display().to_string(), d.join("b.db").display().to_string());
    ferry(&["sync", "--db", &a, "--server", &url, "--token", &a_token]);
    ferry(&["sync", "--db", &b, "--server", &url, "--token", &b_token]);

    // A's files, straight into its files directory (what `ferry file add` does), and one
    // jump per file referencing it.
    let a_files = d.join("a.db-files");
    std::fs::create_dir_all(&a_files).unwrap();
    let user = status_user(&a);
    let db = rusqlite::Connection::open(&a).unwrap();
    let tx = db.unchecked_transaction().unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut hashes = Vec::new();
    for i in 0..files {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let hash = ferry_core::to_hex(&sha2::Sha256::digest(&bytes));
        std::fs::write(a_files.join(&hash), &bytes).unwrap();
        tx.execute(
            "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, video_sha256) VALUES (?1, ?2, ?3, '2026-11-21T10:00:00Z', ?4)",
            rusqlite::params![format!("01900000-0000-7000-8000-{i:012x}"), user, i as i64, hash],
        )
        .unwrap();
        hashes.push(hash);
    }
    tx.commit().unwrap();
    drop(db);
    ferry(&["sync", "--db", &a, "--server", &url, "--token", &a_token]);
    ferry(&["sync", "--db", &b, "--server", &url, "--token", &b_token]);
    let total_mb = (files * size) as f64 / 1e6;

    // Each measured run starts with no dirty pages of the one before (writing 1 GB back to
    // disk would otherwise slow whichever runs second).
    let flush = || {
        let _ = Command::new("sync").status();
    };
    flush();
    // Ferry: A → server → B.
    let started = Instant::now();
    let up = ferry(&["file", "sync", "--db", &a, "--server", &url, "--token", &a_token, "--json"]);
    let up_took = started.elapsed();
    let down_started = Instant::now();
    let down = ferry(&["file", "sync", "--db", &b, "--server", &url, "--token", &b_token, "--json"]);
    let down_took = down_started.elapsed();
    let took = started.elapsed();
    let (up, down): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&up).unwrap(), serde_json::from_str(&down).unwrap());
    assert_eq!(up["uploaded"].as_u64(), Some(files as u64), "{up}");
    assert_eq!(down["downloaded"].as_u64(), Some(files as u64), "{down}");
    for h in hashes.iter().step_by(97) {
        assert_eq!(std::fs::read(d.join("b.db-files").join(h)).unwrap(), std::fs::read(a_files.join(h)).unwrap());
    }
    let server_rss = peak_rss_kb(server.id());
    let _ = server.kill();
    let _ = server.wait();

    // Baseline: the same bytes over loopback TCP, file to file, up then down.
    flush();
    let base_up = tcp_copy(&a_files, &d.join("relay"), &hashes);
    let base_down = tcp_copy(&d.join("relay"), &d.join("plain-b"), &hashes);
    let base = base_up + base_down;

    let rate = |t: Duration| total_mb / t.as_secs_f64();
    println!("| scenario | Ferry | baseline | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| {files} × 1 MB A → server → B | {:.2} s, {:.0} MB/s (up {:.2} s, down {:.2} s) | {:.2} s, {:.0} MB/s (TCP copy up {:.2} s, down {:.2} s) | {:.2}× |",
        took.as_secs_f64(),
        rate(took),
        up_took.as_secs_f64(),
        down_took.as_secs_f64(),
        base.as_secs_f64(),
        rate(base),
        base_up.as_secs_f64(),
        base_down.as_secs_f64(),
        took.as_secs_f64() / base.as_secs_f64()
    );
    println!();
    println!(
        "peak RSS: server {} MB, uploading device {} MB, downloading device {} MB",
        server_rss / 1024,
        up["peak_rss_kb"].as_u64().unwrap_or(0) / 1024,
        down["peak_rss_kb"].as_u64().unwrap_or(0) / 1024
    );
    println!("SPEC target: ≥ 300 MB/s through the server → {}", if rate(took) >= 300.0 { "met" } else { "NOT met" });
}

fn status_user(db: &str) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT value FROM _ferry_meta WHERE key = 'user_id'", [], |r| r.get(0)).unwrap()
}

/// Peak resident memory of a running process, in KiB (VmHWM).
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Sends every file of `from` named in `names` over one loopback TCP connection (length,
/// then bytes) to a receiver that writes each to `to`; returns the wall time.
fn tcp_copy(from: &Path, to: &Path, names: &[String]) -> Duration {
    std::fs::create_dir_all(to).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (to, names_rx): (PathBuf, Vec<String>) = (to.to_owned(), names.to_vec());
    let started = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for name in &names_rx {
            let mut len = [0u8; 8];
            sock.read_exact(&mut len).unwrap();
            let mut left = u64::from_le_bytes(len) as usize;
            let mut out = std::fs::File::create(to.join(name)).unwrap();
            while left > 0 {
                let n = sock.read(&mut buf[..left.min(1 << 20)]).unwrap();
                out.write_all(&buf[..n]).unwrap();
                left -= n;
            }
        }
    });
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    for name in names {
        let bytes = std::fs::read(from.join(name)).unwrap();
        sock.write_all(&(bytes.len() as u64).to_le_bytes()).unwrap();
        sock.write_all(&bytes).unwrap();
    }
    receiver.join().unwrap();
    started.elapsed()
}
