//! The realtime stream and `ferry sync --watch`: changes arrive without asking, local writes
//! are pushed by themselves, and the engine rides out a server that goes away.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::*;

/// A running `ferry sync --watch --json`, its output lines arriving on a channel.
pub struct Watch {
    pub child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Watch {
    pub fn start(env: &Env, server: &Server, db: &str, token: &str, extra: &[&str]) -> Watch {
        let db = env.path(db).display().to_string();
        let mut child = Command::new(FERRY)
            .args(["sync", "--watch", "--json", "--db", &db, "--server", &server.url, "--token", token])
            .args(["--backoff", "200ms,400ms"])
            .args(if extra.contains(&"--interval") { &[][..] } else { &["--interval", "60s"][..] })
            .args(extra)
            .current_dir(env.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Watch { child, lines }
    }

    /// Waits (up to 20 s) for an output line that `want` accepts; returns it.
    pub fn until(&self, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if want(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("no '{what}' from ferry sync --watch within 20 s"),
            }
        }
    }

    pub fn state(&self, to: &str) {
        self.until(to, |v| v["event"] == "state" && v["to"] == to);
    }

    /// Waits until the engine is connected, its stream is up, and the sync the stream's
    /// connection triggers is done.
    pub fn connected(&self) {
        // In whichever order they come.
        let (mut connected, mut up, mut synced_after_up) = (false, false, false);
        while !(connected && up && synced_after_up) {
            let v = self.until("CONNECTED, the stream up and a sync after it", |v| {
                v["event"] == "state" || v["event"] == "stream" || v["event"] == "completed"
            });
            match v["event"].as_str() {
                Some("state") => connected = v["to"] == "CONNECTED",
                Some("stream") => up = v["up"] == true,
                _ => synced_after_up |= up,
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_jumps(env: &Env, db: &str) -> usize {
    jumps(&env.db(db)).len()
}

/// Polls (up to 20 s) until `check` holds.
pub fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_watching_device_gets_changes_by_the_stream_and_pushes_its_own_writes() {
    let p = Pair::new();
    let watch = Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &[]);
    watch.connected();
    // Another device's change arrives without the laptop asking (the interval is 60 s).
    insert_jump(&p.env.db("phone.db"), &p.user, 1, "from the phone");
    p.sync_phone();
    watch.until("a sync pulling the change", |v| v["event"] == "completed" && v["report"]["pulled_changed"] == 1);
    assert_eq!(count_jumps(&p.env, "laptop.db"), 1);
    // A write to the laptop's file by another program is pushed by itself.
    insert_jump(&p.env.db("laptop.db"), &p.user, 2, "from the laptop");
    watch.until("a sync pushing the write", |v| v["event"] == "completed" && v["report"]["pushed"] == 1);
    p.sync_phone();
    assert_eq!(count_jumps(&p.env, "phone.db"), 2);
    let status = p.env.run(&["status", "--db", &p.env.path("laptop.db").display().to_string(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["connection"], "CONNECTED");
}

#[test]
fn the_engine_rides_out_a_server_restart_and_stops_cleanly() {
    let mut p = Pair::new();
    let watch = Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &[]);
    watch.connected();
    let addr = p.server.url.trim_start_matches("http://").to_owned();
    p.server.kill();
    // The stream notices first; the next sync attempt fails and backs off.
    watch.state("DEGRADED");
    insert_jump(&p.env.db("laptop.db"), &p.user, 1, "written while the server is down");
    watch.state("DISCONNECTED");
    let retry = watch.until("a retry", |v| v["event"] == "error");
    assert!(retry["retry_in_ms"].as_u64().unwrap() <= 400, "{retry}");
    // Back at the same address: the engine reconnects and pushes what waited.
    p.server = p.env.serve_on(&addr, &[]);
    watch.state("CONNECTED");
    eventually("the write reaches the server", || {
        p.sync_phone();
        count_jumps(&p.env, "phone.db") == 1
    });
    // SIGTERM: a clean stop, recorded.
    let pid = watch.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut watch = watch;
    let status = watch.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let out = p.env.run(&["status", "--db", &p.env.path("laptop.db").display().to_string(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["connection"], "STOPPED");
}

#[test]
fn without_the_stream_the_engine_polls_and_says_so() {
    let p = Pair::new();
    let watch = Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &["--no-stream", "--interval", "300ms"]);
    watch.state("CONNECTED");
    insert_jump(&p.env.db("phone.db"), &p.user, 1, "polled");
    p.sync_phone();
    eventually("the change arrives by polling", || count_jumps(&p.env, "laptop.db") == 1);
    // Idle between polls: it waits, it does not spin (CPU time from /proc, in clock ticks).
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", watch.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    assert!(cpu() - before < 50, "an idle engine used {} ticks of CPU in 2 s", cpu() - before);
}

#[test]
fn on_the_embedded_store_a_change_written_by_another_process_is_announced_too() {
    let p = Pair::new();
    // A second server process on the same data directory; the phone pushes through it.
    let other = p.env.serve();
    let watch = Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &[]);
    watch.connected();
    insert_jump(&p.env.db("phone.db"), &p.user, 1, "through the other process");
    p.env.sync(&other, "phone.db", &p.phone);
    watch.until("a sync pulling the change", |v| v["event"] == "completed" && v["report"]["pulled_changed"] == 1);
    assert_eq!(count_jumps(&p.env, "laptop.db"), 1);
}

#[test]
fn the_engine_reports_a_change_refused_as_stale_as_a_conflict() {
    let env = Env::new();
    env.table_options("jump_log", "conflict = \"reject-stale\"");
    let p = Pair::in_env(env);
    let id = insert_jump(&p.env.db("phone.db"), &p.user, 1, "first");
    p.sync_phone();
    p.sync_laptop();
    // The laptop's engine pushes 5 s after a local write and does not listen to the stream.
    let watch = Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &["--no-stream", "--debounce", "5s"]);
    watch.state("CONNECTED");
    p.env.db("laptop.db").execute("UPDATE jump_log SET notes = 'laptop' WHERE id = ?1", [&id]).unwrap();
    p.env.db("phone.db").execute("UPDATE jump_log SET notes = 'phone' WHERE id = ?1", [&id]).unwrap();
    p.sync_phone();
    let c = watch.until("a conflict event", |v| v["event"] == "conflict");
    assert_eq!(c["refused"], 1, "{c}");
}

#[test]
fn without_a_server_the_watch_runs_offline_only_and_says_so() {
    let env = Env::new();
    let mut child = Command::new(FERRY)
        .args(["sync", "--watch", "--json", "--db", &env.path("alone.db").display().to_string()])
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_TOKEN")
        .current_dir(env.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!((v["event"].as_str(), v["to"].as_str()), (Some("state"), Some("OFFLINE_ONLY")), "{v}");
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "Ctrl-C stops it cleanly");
}

/// A failure that trying again cannot mend stops the engine instead of retrying forever:
/// here the device's token is revoked while it watches. The engine says why, exits with an
/// error, and `ferry status` shows STOPPED with the reason.
#[test]
fn a_revoked_token_stops_the_engine_with_the_reason() {
    let p = Pair::new();
    let mut watch = Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &["--interval", "1s"]);
    watch.connected();
    p.env.ok_all(&["token", "revoke", "--user", "alice", "--device", "laptop", "-c", &p.env.config()]);
    let stopped = watch.until("the engine stopping", |v| v["event"] == "state" && v["to"] == "STOPPED");
    assert!(stopped["why"].as_str().unwrap_or_default().contains("401"), "{stopped}");
    // It exits by itself, with an error.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = watch.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "ferry sync --watch still runs after STOPPED");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let db = p.env.path("laptop.db").display().to_string();
    let out = p.env.run(&["status", "--db", &db, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["connection"], "STOPPED", "{s}");
    assert!(s["stopped_because"].as_str().unwrap_or_default().contains("401"), "{s}");
}
