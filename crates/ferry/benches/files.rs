//! `cargo xtask bench` (or `cargo bench -p ferry --bench files [-- --quick]`).
//!
//! 1 000 files of 1 MB from one device to another through a real `ferry serve` (embedded
//! store, local file store) over loopback, two ways: device A uploads every file
//! (`ferry file sync`), then device B downloads every one; and B runs `ferry sync --watch`
//! while A uploads (the stream tells B of each upload), timed until B has the last file.
//! Each byte is hashed where it lands (server, then B).
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
    common::header(
        "files",
        &format!("files: {files} × {} MB{}", size / 1_000_000, if quick { " (--quick)" } else { "" }),
    );
    let total_mb = (files * size) as f64 / 1e6;
    let rate = |t: Duration| total_mb / t.as_secs_f64();
    let sequential = scenario(files, size, false);
    let watching = scenario(files, size, true);

    // Baseline: the same bytes over loopback TCP, file to file, up then down.
    let dir = tempfile::tempdir().unwrap();
    let hashes = write_files(&dir.path().join("a"), files, size);
    flush();
    let base_up = tcp_copy(&dir.path().join("a"), &dir.path().join("relay"), &hashes);
    let base_down = tcp_copy(&dir.path().join("relay"), &dir.path().join("b"), &hashes);
    let base = base_up + base_down;

    println!("| scenario | Ferry | baseline: TCP copy up + down | ratio | peak RSS server / A / B |");
    println!("|---|---|---|---|---|");
    for (name, r) in
        [("A uploads all, then B downloads all", &sequential), ("B's `--watch` downloads while A uploads", &watching)]
    {
        println!(
            "| {files} × 1 MB A → server → B: {name} | {:.2} s, {:.0} MB/s{} | {:.2} s, {:.0} MB/s ({:.2} s + {:.2} s) | {:.2}× | {} / {} / {} MB |",
            r.took.as_secs_f64(),
            rate(r.took),
            r.legs
                .map(|(u, d)| format!(" (up {:.2} s, down {:.2} s)", u.as_secs_f64(), d.as_secs_f64()))
                .unwrap_or_default(),
            base.as_secs_f64(),
            rate(base),
            base_up.as_secs_f64(),
            base_down.as_secs_f64(),
            r.took.as_secs_f64() / base.as_secs_f64(),
            r.rss_kb.0 / 1024,
            r.rss_kb.1 / 1024,
            r.rss_kb.2 / 1024,
        );
    }
    println!();
    for (name, r, target) in [
        ("A uploads all, then B downloads all", &sequential, rate(sequential.took)),
        ("B's `--watch` downloads while A uploads", &watching, rate(watching.took)),
    ] {
        common::record(
            "files",
            &format!("{files} × 1 MB files A → server → B, verified: {name} vs loopback TCP copy up + down"),
            &format!("{:.0} MB/s", rate(r.took)),
            &format!("{:.0} MB/s", rate(base)),
            &format!("{:.2}×", r.took.as_secs_f64() / base.as_secs_f64()),
            &if files == 1000 {
                common::verdict("≥ 300 MB/s", target >= 300.0, 300.0 / target)
            } else {
                "(full run only)".into()
            },
        );
    }
}

/// Each measured run starts with no dirty pages of the one before (writing 1 GB back to disk
/// would otherwise slow whichever runs next).
fn flush() {
    let _ = Command::new("sync").status();
}

/// `files` files of `size` random bytes in `dir`, named by hash; their hashes.
fn write_files(dir: &Path, files: usize, size: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..files)
        .map(|_| {
            let bytes: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let hash = ferry_core::to_hex(&sha2::Sha256::digest(&bytes));
            std::fs::write(dir.join(&hash), &bytes).unwrap();
            hash
        })
        .collect()
}

struct Run {
    took: Duration,
    /// Upload and download times, when one followed the other.
    legs: Option<(Duration, Duration)>,
    /// Peak RSS of the server, A and B, KiB.
    rss_kb: (u64, u64, u64),
}

/// A fresh server and two devices; A's files (straight into its files directory, what
/// `ferry file add` does) with one jump each, synced as rows to both; then the files moved.
fn scenario(files: usize, size: usize, watching: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_example(d);
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
    let a_files = d.join("a.db-files");
    let hashes = write_files(&a_files, files, size);
    let user = status_user(&a);
    let db = rusqlite::Connection::open(&a).unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for (i, hash) in hashes.iter().enumerate() {
        tx.execute(
            "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, video_sha256) VALUES (?1, ?2, ?3, '2026-11-21T10:00:00Z', ?4)",
            rusqlite::params![format!("01900000-0000-7000-8000-{i:012x}"), user, i as i64, hash],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(db);
    ferry(&["sync", "--db", &a, "--server", &url, "--token", &a_token]);
    ferry(&["sync", "--db", &b, "--server", &url, "--token", &b_token]);
    let b_files = d.join("b.db-files");
    let arrived =
        || std::fs::read_dir(&b_files).map_or(0, |r| r.filter_map(Result::ok).filter(|e| e.path().is_file()).count());
    flush();
    let run = if watching {
        let mut watch = Command::new(FERRY)
            .args(["sync", "--watch", "--db", &b, "--server", &url, "--token", &b_token])
            .args(["--interval", "1h", "--files-interval", "1h"])
            .current_dir(d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let up = Command::new(FERRY)
            .args(["file", "sync", "--db", &a, "--server", &url, "--token", &a_token, "--json"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
        while arrived() < files {
            assert!(started.elapsed() < Duration::from_secs(300), "B has {} of {files} files", arrived());
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = started.elapsed();
        let up: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&up.stdout).trim().lines().last().unwrap_or_default())
                .unwrap();
        let rss = (peak_rss_kb(server.id()), up["peak_rss_kb"].as_u64().unwrap_or(0), peak_rss_kb(watch.id()));
        let _ = watch.kill();
        let _ = watch.wait();
        Run { took, legs: None, rss_kb: rss }
    } else {
        let started = Instant::now();
        let up = ferry(&["file", "sync", "--db", &a, "--server", &url, "--token", &a_token, "--json"]);
        let up_took = started.elapsed();
        let down = ferry(&["file", "sync", "--db", &b, "--server", &url, "--token", &b_token, "--json"]);
        let took = started.elapsed();
        let (up, down): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&up).unwrap(), serde_json::from_str(&down).unwrap());
        assert_eq!(up["uploaded"].as_u64(), Some(files as u64), "{up}");
        assert_eq!(down["downloaded"].as_u64(), Some(files as u64), "{down}");
        let rss = (
            peak_rss_kb(server.id()),
            up["peak_rss_kb"].as_u64().unwrap_or(0),
            down["peak_rss_kb"].as_u64().unwrap_or(0),
        );
        Run { took, legs: Some((up_took, took - up_took)), rss_kb: rss }
    };
    assert_eq!(arrived(), files);
    for h in hashes.iter().step_by(97) {
        assert_eq!(std::fs::read(b_files.join(h)).unwrap(), std::fs::read(a_files.join(h)).unwrap());
    }
    let _ = server.kill();
    let _ = server.wait();
    run
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
