//! The network fails in the middle of things (the fault-injecting proxy sits between the
//! client and the server): afterwards every replica converges, nothing is lost and nothing
//! is applied twice.

use std::time::Duration;

use crate::proxy::{Fault, Proxy};
use crate::*;

/// `ferry sync` of `db` through `url`; returns whether it succeeded, and its stderr.
fn sync_via(env: &Env, url: &str, db: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let path = env.path(db).display().to_string();
    let mut args = vec!["sync", "--db", &path, "--server", url, "--token", token, "--json"];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The push batches the embedded store has recorded.
fn batches(env: &Env) -> i64 {
    let db = rusqlite::Connection::open(env.path("ferry-data/ferry.db")).unwrap();
    db.query_row("SELECT count(*) FROM _ferry_batches", [], |r| r.get(0)).unwrap()
}

fn server_rows(env: &Env) -> i64 {
    let db = rusqlite::Connection::open(env.path("ferry-data/ferry.db")).unwrap();
    db.query_row("SELECT count(*) FROM jump_log", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_push_whose_answer_is_cut_is_sent_again_and_applied_once() {
    let p = Pair::new();
    let proxy = Proxy::start(&p.server.url);
    let phone = p.env.db("phone.db");
    for i in 0..2500 {
        insert_jump(&phone, &p.user, i, "cut");
    }
    // The first batch reaches the server, which applies it; its answer never arrives.
    proxy.set(Fault::CutAnswer { request: "POST /v1/push", after: 0 });
    let (ok, err) = sync_via(&p.env, &proxy.url, "phone.db", &p.phone, &[]);
    assert!(!ok, "the cut must fail the sync");
    assert!(err.contains("push"), "{err}");
    assert_eq!(server_rows(&p.env), 1000, "the server applied the first batch");
    assert_eq!(batches(&p.env), 1);
    // Again, with a working network: the first batch goes again under its id and is answered
    // from the record; the rest follow.
    let (ok, err) = sync_via(&p.env, &proxy.url, "phone.db", &p.phone, &[]);
    assert!(ok, "{err}");
    assert_eq!(batches(&p.env), 3, "the retried batch was not recorded twice");
    assert_eq!(server_rows(&p.env), 2500);
    let status = p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")), jumps(&phone));
    assert_eq!(status["conflicts"], 0);
    let log = p.env.run(&["conflicts", "list", "--json", "-c", &p.env.config()]);
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "[]", "the device never conflicts with itself");
}

#[test]
fn a_push_cut_in_the_middle_of_its_request_applies_nothing_and_goes_again() {
    let p = Pair::new();
    let proxy = Proxy::start(&p.server.url);
    let phone = p.env.db("phone.db");
    for i in 0..1500 {
        insert_jump(&phone, &p.user, i, "half a body");
    }
    proxy.set(Fault::CutRequest(20_000));
    let (ok, _) = sync_via(&p.env, &proxy.url, "phone.db", &p.phone, &["--timeout", "5s"]);
    assert!(!ok);
    assert!(proxy.up_bytes.load(std::sync::atomic::Ordering::SeqCst) >= 20_000, "part of the request got through");
    assert_eq!(server_rows(&p.env), 0, "a broken request body applies nothing");
    proxy.set(Fault::Pass);
    let (ok, err) = sync_via(&p.env, &proxy.url, "phone.db", &p.phone, &[]);
    assert!(ok, "{err}");
    assert_eq!(server_rows(&p.env), 1500);
}

#[test]
fn a_pull_cut_in_the_middle_resumes_from_its_cursor() {
    let p = Pair::new();
    let proxy = Proxy::start(&p.server.url);
    let phone = p.env.db("phone.db");
    for i in 0..3000 {
        insert_jump(&phone, &p.user, i, "pulled in pages");
    }
    p.sync_phone();
    let pages = ["--page-rows", "500", "--no-snapshot"];
    // How many bytes a whole hydrate takes, on a probe replica of the same user.
    let before = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let (ok, err) = sync_via(&p.env, &proxy.url, "probe.db", &p.laptop, &pages);
    assert!(ok, "{err}");
    let whole = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst) - before;
    // Cut the laptop's hydrate halfway through the pages.
    proxy.set(Fault::CutAnswer { request: "GET /v1/pull", after: whole / 2 });
    let (ok, _) = sync_via(&p.env, &proxy.url, "laptop.db", &p.laptop, &pages);
    assert!(!ok);
    let got = jumps(&p.env.db("laptop.db")).len();
    assert!(got > 0 && got < 3000, "whole pages before the cut are kept, the cut one is not: {got}");
    assert_eq!(got % 500, 0, "{got}");
    // The next sync goes on from the stored cursor: about half the bytes, not all.
    let before = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let (ok, err) = sync_via(&p.env, &proxy.url, "laptop.db", &p.laptop, &pages);
    assert!(ok, "{err}");
    let resumed = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(resumed < whole * 3 / 4, "resumed {resumed} bytes of {whole}");
    assert_eq!(jumps(&p.env.db("laptop.db")), jumps(&phone));
}

#[test]
fn a_black_holed_server_times_out_and_the_next_sync_completes() {
    let p = Pair::new();
    let proxy = Proxy::start(&p.server.url);
    insert_jump(&p.env.db("phone.db"), &p.user, 1, "through the hole");
    proxy.set(Fault::BlackHole);
    let started = std::time::Instant::now();
    let (ok, err) = sync_via(&p.env, &proxy.url, "phone.db", &p.phone, &["--timeout", "1s"]);
    assert!(!ok && started.elapsed() < Duration::from_secs(30), "{err}");
    proxy.set(Fault::Reset);
    let (ok, _) = sync_via(&p.env, &proxy.url, "phone.db", &p.phone, &["--timeout", "1s"]);
    assert!(!ok);
    // A slow network is only slow.
    proxy.set(Fault::Delay(Duration::from_millis(20)));
    let (ok, err) = sync_via(&p.env, &proxy.url, "phone.db", &p.phone, &[]);
    assert!(ok, "{err}");
    p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")).len(), 1);
}

#[test]
fn a_watching_device_rides_out_a_long_partition() {
    let p = Pair::new();
    let proxy = Proxy::start(&p.server.url);
    let via = Server::external(&proxy.url);
    let watch = crate::watch::Watch::start(&p.env, &via, "laptop.db", &p.laptop, &[]);
    watch.connected();
    proxy.partition();
    watch.state("DEGRADED");
    // Both sides write during the partition.
    insert_jump(&p.env.db("laptop.db"), &p.user, 1, "laptop, partitioned");
    insert_jump(&p.env.db("phone.db"), &p.user, 2, "phone, meanwhile");
    p.sync_phone();
    // DISCONNECTED, and retries by the schedule (200 ms, then 400 ms, repeating) while the
    // partition lasts, in whichever order the events interleave.
    let (mut disconnected, mut waits) = (false, Vec::new());
    while !(disconnected && waits.len() >= 4) {
        let v = watch.until("a retry", |v| v["event"] == "error" || v["event"] == "state");
        match v["event"].as_str() {
            Some("error") => waits.push(v["retry_in_ms"].as_u64().unwrap()),
            _ => disconnected |= v["to"] == "DISCONNECTED",
        }
    }
    assert_eq!(waits[0], 200, "{waits:?}");
    assert!(waits[1..].iter().all(|w| *w == 400), "{waits:?}");
    proxy.set(Fault::Pass);
    watch.state("CONNECTED");
    crate::watch::eventually("both writes on both devices", || {
        p.sync_phone();
        jumps(&p.env.db("phone.db")).len() == 2 && jumps(&p.env.db("laptop.db")).len() == 2
    });
}

#[test]
fn a_watching_device_killed_mid_push_loses_nothing_and_applies_nothing_twice() {
    let p = Pair::new();
    let laptop = p.env.db("laptop.db");
    for i in 0..20_000 {
        insert_jump(&laptop, &p.user, i, "killed mid-push");
    }
    for round in 0..3 {
        let mut watch = crate::watch::Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &[]);
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        // SIGKILL: no chance to clean up.
        let _ = watch.child.kill();
        let _ = watch.child.wait();
    }
    // A killed engine did not say it stopped; status sees that it is gone.
    let status = p.env.run(&["status", "--db", &p.env.path("laptop.db").display().to_string(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(matches!(status["connection"].as_str(), Some("STOPPED") | None), "{status}");
    let watch = crate::watch::Watch::start(&p.env, &p.server, "laptop.db", &p.laptop, &[]);
    crate::watch::eventually("every row on the server", || server_rows(&p.env) == 20_000);
    watch.state("CONNECTED");
    p.sync_phone();
    assert_eq!(jumps(&p.env.db("phone.db")), jumps(&laptop));
    let status = p.env.run(&["status", "--db", &p.env.path("laptop.db").display().to_string(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["pending"], 0, "{status}");
    let log = p.env.run(&["conflicts", "list", "--json", "-c", &p.env.config()]);
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "[]");
}
