//! `cargo xtask bench` (or `cargo bench -p ferry --bench realtime [-- --quick]`): the
//! realtime stream, against a real `ferry serve` (embedded store) over loopback.
//!
//! - latency: one change from device A to device B, 1 000 times in a row: A writes a row to
//!   its replica and syncs; B, told by the stream, syncs and has the row. Reported as
//!   p50/p99/max of the whole path, and up to B's stream message (from the start of A's sync).
//!   Both call `sync` directly: a device running the engine adds its look for local writes
//!   (every 100 ms) and the push debounce (300 ms by default) on A's side, by design.
//! - fan-out: N devices hold a stream open to one server process while a device changes a
//!   shared row 20 times; how long each device waits for its message (p99) as N grows,
//!   up to the SPEC's 5 000.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_client::{Direction, Remote, Replica, SyncOptions};

mod common;

use common::FERRY;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_example(d);
    let ferry = |args: &[&str]| -> String {
        let out = Command::new(FERRY).args(args).current_dir(d).output().unwrap();
        assert!(out.status.success(), "ferry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned()
    };
    let user = ferry(&["user", "add", "bench", "-c", "ferry.toml"]);
    let token_a = ferry(&["token", "create", "--user", "bench", "--device", "a", "-c", "ferry.toml"]);
    let token_b = ferry(&["token", "create", "--user", "bench", "--device", "b", "-c", "ferry.toml"]);
    let (mut server, url) = common::serve(d);
    let server_pid = server.id();

    common::header("realtime", "server: embedded store, release build, loopback");
    println!("| scenario | p50 | p99 | max |");
    println!("|---|---|---|---|");
    rt.block_on(latency(&url, &user, &token_a, &token_b, d, if quick { 100 } else { 1000 }));
    println!();
    println!("| stream clients on one server process | deliveries | p50 | p99 | max | server RSS |");
    println!("|---|---|---|---|---|---|");
    let sizes: &[usize] = if quick { &[10, 100] } else { &[100, 500, 1000, 2000, 5000] };
    let mut curve = Vec::new();
    for &n in sizes {
        let p99 = rt.block_on(fan_out(&url, &user, &token_a, &token_b, n, server_pid));
        curve.push((n as f64, p99.as_secs_f64() * 1000.0));
        if p99 > Duration::from_millis(200) {
            println!("(p99 passed 200 ms at {n} clients; stopping)");
            break;
        }
    }
    common::save(
        "realtime-fan-out.svg",
        &common::svg_chart(
            "Stream delivery p99 against clients on one server process",
            "stream clients",
            "p99 delivery (ms)",
            &[common::Series { name: "p99".into(), points: curve }],
            false,
        ),
    );
    let _ = server.kill();
    let _ = server.wait();
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), *v.last().unwrap())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn latency(url: &str, user: &str, token_a: &str, token_b: &str, d: &std::path::Path, n: usize) {
    let (ra, rb) = (Remote::new(url, token_a).unwrap(), Remote::new(url, token_b).unwrap());
    let mut a = Replica::open(&d.join("a.db")).unwrap();
    let mut b = Replica::open(&d.join("b.db")).unwrap();
    let up = SyncOptions { direction: Direction::Up, ..SyncOptions::default() };
    let down = SyncOptions { direction: Direction::Down, ..SyncOptions::default() };
    ferry_client::sync(&mut a, &ra, &SyncOptions::default(), &mut |_| {}).await.unwrap();
    ferry_client::sync(&mut b, &rb, &SyncOptions::default(), &mut |_| {}).await.unwrap();
    let mut stream = rb.stream().await.unwrap();
    let (mut whole, mut notify) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let id = format!("01900000-0000-7000-8000-{i:012x}");
        let t0 = Instant::now();
        a.connection()
            .execute(
                "INSERT INTO jump_log (id, user_id, jump_number, jumped_at) VALUES (?1, ?2, ?3, '2026-11-22T10:00:00Z')",
                rusqlite::params![id, user, i as i64],
            )
            .unwrap();
        let sync_start = Instant::now();
        ferry_client::sync(&mut a, &ra, &up, &mut |_| {}).await.unwrap();
        stream.changed().await.unwrap();
        notify.push(sync_start.elapsed());
        ferry_client::sync(&mut b, &rb, &down, &mut |_| {}).await.unwrap();
        let have: i64 =
            b.connection().query_row("SELECT count(*) FROM jump_log WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
        assert_eq!(have, 1, "B has the row");
        whole.push(t0.elapsed());
    }
    let cdf = |v: &[Duration]| -> Vec<(f64, f64)> {
        let mut v = v.to_vec();
        v.sort();
        v.iter().enumerate().map(|(i, d)| (d.as_secs_f64() * 1000.0, 100.0 * (i + 1) as f64 / v.len() as f64)).collect()
    };
    common::save(
        "realtime-latency.svg",
        &common::svg_chart(
            &format!("One change A → B over the realtime stream ({n} changes, loopback)"),
            "latency (ms)",
            "% of changes at or under",
            &[
                common::Series { name: "A writes → B has it".into(), points: cdf(&whole) },
                common::Series { name: "A syncs → B told".into(), points: cdf(&notify) },
            ],
            false,
        ),
    );
    let (p50, p99, max) = percentiles(whole);
    common::record(
        "realtime",
        &format!("one change A → B over the realtime stream ({n} changes; p50 {}, max {})", ms(p50), ms(max)),
        &format!("p99 {}", ms(p99)),
        "–",
        "–",
        &common::verdict("p99 ≤ 50 ms", p99 <= Duration::from_millis(50), p99.as_secs_f64() / 0.05),
    );
    println!(
        "| one change A → B: A writes and syncs, B told by the stream syncs ({n} changes) | {} | {} | {} |",
        ms(p50),
        ms(p99),
        ms(max)
    );
    let (p50, p99, max) = percentiles(notify);
    println!("| … of which: A starts its sync → B's stream message | {} | {} | {} |", ms(p50), ms(p99), ms(max));
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// N stream clients; a device changes a shared row (a group) 20 times, 100 ms apart; each
/// client's wait from the push's start to its message.
async fn fan_out(url: &str, user: &str, token_a: &str, token_b: &str, n: usize, server_pid: u32) -> Duration {
    let rb = Remote::new(url, token_b).unwrap();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(rb.stream().await.unwrap());
    }
    let rounds = 20;
    let starts: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::new();
    for mut s in streams {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                if s.changed().await.is_err() {
                    return;
                }
                let _ = tx.send(Instant::now());
            }
        }));
    }
    drop(tx);
    let ra = Remote::new(url, token_a).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Replica::open(&dir.path().join("a.db")).unwrap();
    ferry_client::sync(&mut a, &ra, &SyncOptions::default(), &mut |_| {}).await.unwrap();
    let group = format!("01900000-0000-7000-9000-{n:012x}");
    a.connection()
        .execute("INSERT INTO groups (id, name, created_by) VALUES (?1, 'fan-out', ?2)", [&group, user])
        .unwrap();
    let up = SyncOptions { direction: Direction::Up, ..SyncOptions::default() };
    let mut waits = Vec::with_capacity(n * rounds);
    for round in 0..rounds {
        a.connection()
            .execute("UPDATE groups SET name = ?1 WHERE id = ?2", [format!("round {round}"), group.clone()])
            .unwrap();
        let start = Instant::now();
        starts.lock().unwrap().push(start);
        ferry_client::sync(&mut a, &ra, &up, &mut |_| {}).await.unwrap();
        // Collect this round's messages (every client gets one per round, 100 ms apart).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(t)) => {
                    waits.push(t.saturating_duration_since(start));
                    got += 1;
                }
                _ => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.abort();
    }
    let delivered = waits.len();
    let (p50, p99, max) = percentiles(waits);
    common::record(
        "realtime",
        &format!("{n} stream clients on one server process: {delivered} of {} deliveries", n * rounds),
        &format!("p99 {} (server RSS {} MB)", ms(p99), rss_kb(server_pid) / 1024),
        "–",
        "–",
        &if n >= 5000 {
            common::verdict(
                "5 000 clients, p99 ≤ 200 ms",
                p99 <= Duration::from_millis(200) && delivered == n * rounds,
                p99.as_secs_f64() / 0.2,
            )
        } else {
            "–".into()
        },
    );
    println!(
        "| {n} | {delivered} of {} | {} | {} | {} | {} MB |",
        n * rounds,
        ms(p50),
        ms(p99),
        ms(max),
        rss_kb(server_pid) / 1024
    );
    p99
}
