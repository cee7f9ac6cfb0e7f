//! Full sync (issue 18): whole data sets moved between two servers, each on its own
//! PostgreSQL cluster, both ways; a transfer cut by the fault proxy and resumed; cancels;
//! a target row newer than the snapshot kept; one run at a time; the history.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::integrity::{unlinked_pair, unlinked_pair_via};
use crate::peering::Site;
use crate::proxy::{Fault, Proxy};
use crate::uuid;

/// `ferry full-sync DIRECTION --peer cloud --json [extra]` on MAIN: every report, the last
/// one final, and whether it exited 0.
fn full_sync(main: &Site, direction: &str, extra: &[&str]) -> (Vec<Value>, bool) {
    let config = main.env.config();
    let mut args = vec!["full-sync", direction, "--peer", "cloud", "--json", "-c", config.as_str()];
    args.extend_from_slice(extra);
    let out = main.env.run(&args);
    let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a report ({e}): {l}")))
        .collect();
    assert!(!reports.is_empty(), "no report: {}", String::from_utf8_lossy(&out.stderr));
    (reports, out.status.success())
}

/// Inserts `n` groups by SQL; returns their ids.
pub(crate) fn groups(site: &Site, n: usize, name: &str) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| uuid()).collect();
    let creator = uuid();
    for part in ids.chunks(500) {
        let values: Vec<String> = part.iter().map(|id| format!("('{id}', '{name}', '{creator}')")).collect();
        site.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES {}", values.join(", ")));
    }
    ids
}

fn count(site: &Site, sql: &str) -> u64 {
    site.psql(sql).parse().unwrap()
}

fn phase<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["phases"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()
}

#[test]
fn full_sync_moves_whole_data_sets_both_ways_through_the_merge() {
    let (main, cloud) = unlinked_pair(false);
    let ids = groups(&main, 3000, "from main");

    // Push: MAIN's data set to CLOUD, verified, the outcome told to a webhook, and to the
    // operator's `[[alerts.webhook]]`, signed.
    let (hook, told) = crate::webhook_receiver(0);
    let (operators, deliveries) = crate::webhook_receiver(0);
    let secret = "the operator's receiver secret";
    let config = std::fs::read_to_string(main.env.path("ferry.toml")).unwrap();
    let section =
        format!("\n[[alerts.webhook]]\nurl = \"{operators}\"\nsecret = \"{secret}\"\nevents = [\"full_sync\"]\n");
    std::fs::write(main.env.path("ferry.toml"), config + &section).unwrap();
    let (reports, ok) = full_sync(&main, "push", &["--verify", "--notify", &hook]);
    let run = reports.last().unwrap();
    assert!(ok, "{run}");
    assert_eq!(run["state"], "SUCCESS");
    assert_eq!(run["notified"], "answered 204", "{run}");
    let heard = told.recv_timeout(Duration::from_secs(10)).unwrap().json();
    assert_eq!((&heard["id"], &heard["state"], &heard["rows"]), (&run["id"], &json!("SUCCESS"), &json!(3000)));
    let delivered = deliveries.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(delivered.headers["ferry-event"], "full_sync.finished");
    crate::peering::assert_signed(&delivered, secret);
    let told = delivered.json();
    assert_eq!(
        (&told["data"]["id"], &told["data"]["state"], &told["peer"]),
        (&run["id"], &json!("SUCCESS"), &json!("cloud"))
    );
    let log: Value = main.get("/v1/admin/sync/log?peer=cloud").json().unwrap();
    let logged = log["entries"].as_array().unwrap().iter().any(|e| {
        e["kind"] == "webhook"
            && e["status"] == "SUCCESS"
            && e["error"].as_str().unwrap().contains("full_sync.finished")
    });
    assert!(logged, "the delivery is in the sync log: {log}");
    assert_eq!(run["rows"], 3000);
    assert_eq!(run["verified_equal"], true, "{run}");
    for p in ["snapshot", "transfer", "restore", "verify"] {
        let p = phase(run, p);
        assert_eq!((p["state"].as_str(), p["percent"].as_f64()), (Some("done"), Some(100.0)), "{p}");
    }
    assert_eq!(phase(run, "restore")["rows_done"], 3000);
    assert!(run["bytes"].as_u64().unwrap() > 0 && run["bytes_sent"] == run["bytes"]);
    // The reports came while it ran: phases in order, progress never going back.
    let order = ["snapshot", "transfer", "restore", "verify", "done"];
    let phases: Vec<usize> = reports.iter().map(|r| order.iter().position(|p| r["phase"] == *p).unwrap()).collect();
    assert_eq!(phases.first(), Some(&0));
    assert!(phases.windows(2).all(|w| w[0] <= w[1]), "phases out of order: {phases:?}");
    assert_eq!(count(&cloud, "SELECT count(*) FROM groups WHERE name = 'from main'"), 3000);
    // Both sides now hold these versions: the link judges later changes against them.
    assert_eq!(count(&main, "SELECT count(*) FROM _ferry_peer_bases WHERE tbl = 'groups'"), 3000);

    // A row changed on CLOUD since keeps its newer version when MAIN pushes again; re-running
    // changes nothing else.
    cloud.psql(&format!("UPDATE groups SET name = 'newer on cloud' WHERE id = '{}'", ids[0]));
    let (reports, ok) = full_sync(&main, "push", &["--compress"]);
    let run = reports.last().unwrap();
    assert!(ok, "{run}");
    assert_eq!(run["changed"], 0, "{run}");
    assert_eq!(cloud.psql(&format!("SELECT name FROM groups WHERE id = '{}'", ids[0])), "newer on cloud");

    // Pull: CLOUD's rows (its own, and that newer version) to MAIN, compressed, verified.
    let theirs = groups(&cloud, 500, "from cloud");
    let (reports, ok) = full_sync(&main, "pull", &["--compress", "--verify"]);
    let run = reports.last().unwrap();
    assert!(ok, "{run}");
    assert_eq!(run["direction"], "pull");
    assert_eq!(run["changed"], 501, "{run}");
    assert_eq!(run["verified_equal"], true, "{run}");
    assert_eq!(main.psql(&format!("SELECT name FROM groups WHERE id = '{}'", ids[0])), "newer on cloud");
    assert_eq!(main.psql(&format!("SELECT name FROM groups WHERE id = '{}'", theirs[7])), "from cloud");
    assert_eq!(count(&main, "SELECT count(*) FROM groups"), 3500);

    // The history, from the CLI and the API.
    let history: Value =
        serde_json::from_str(&main.env.ok_all(&["full-sync", "history", "--json", "-c", &main.env.config()])).unwrap();
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["direction"], "pull");
    assert!(runs.iter().all(|r| r["state"] == "SUCCESS" && r["method"] == "snapshot" && r["finished_ms"].is_u64()));
    let api: Value = main.get("/v1/admin/full-sync").json().unwrap();
    assert_eq!(api["runs"], history["runs"]);
    // Each run is in the sync log too.
    let log: Value =
        serde_json::from_str(&main.env.ok_all(&["peer", "log", "cloud", "--json", "-c", &main.env.config()])).unwrap();
    let runs: Vec<&Value> = log["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "full-sync").collect();
    assert_eq!(runs.len(), 3, "{log}");
    assert!(runs.iter().all(|e| e["status"] == "SUCCESS" && e["rows"].as_u64() > Some(0)), "{log}");
}

#[test]
fn one_full_sync_at_a_time_and_a_cancel_in_each_phase_leaves_the_target_whole() {
    // CLOUD behind a proxy that can slow the transfer down.
    let proxy = std::cell::OnceCell::new();
    let (main, cloud) = unlinked_pair_via(false, &|url| proxy.get_or_init(|| Proxy::start(url)).url.clone());
    let proxy = proxy.get().unwrap();
    // Enough rows that each phase is seen in the run's reports (twice a second).
    groups(&main, 40_000, "from main");
    let http = main.server.http();
    let start = |direction: &str| {
        http.post(format!("{}/v1/admin/full-sync", main.server.url))
            .bearer_auth(&main.admin)
            .json(&json!({"direction": direction, "peer": "cloud", "options": {"verify": true}}))
            .send()
            .unwrap()
    };
    let get = |id: &str| -> Value {
        http.get(format!("{}/v1/admin/full-sync/{id}", main.server.url))
            .bearer_auth(&main.admin)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let cancel_in = |direction: &str, wanted: &str| -> Value {
        let answer = start(direction);
        assert_eq!(answer.status(), 202);
        let run: Value = answer.json().unwrap();
        let id = run["id"].as_str().unwrap().to_owned();
        // A second one while it runs: 409 busy, naming it.
        let second = start(direction);
        assert_eq!(second.status(), 409);
        let body: Value = second.json().unwrap();
        assert_eq!(body["error"]["code"], "busy");
        assert!(body["error"]["message"].as_str().unwrap().contains(&id), "{body}");
        let started = Instant::now();
        while get(&id)["phase"] != wanted {
            assert!(started.elapsed() < Duration::from_secs(60), "never in phase {wanted}: {}", get(&id));
            std::thread::sleep(Duration::from_millis(20));
        }
        let cancelled = http
            .post(format!("{}/v1/admin/full-sync/{id}/cancel", main.server.url))
            .bearer_auth(&main.admin)
            .send()
            .unwrap();
        assert_eq!(cancelled.status(), 200);
        let started = Instant::now();
        loop {
            let run = get(&id);
            if run["state"] != "RUNNING" {
                return run;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "not stopped: {run}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Cancelled while the chunks cross (slowly): CLOUD holds nothing of it.
    proxy.set(Fault::Delay(Duration::from_millis(40)));
    let run = cancel_in("push", "transfer");
    assert_eq!(run["state"], "CANCELLED", "{run}");
    assert_eq!(count(&cloud, "SELECT count(*) FROM groups"), 0);
    proxy.set(Fault::Pass);

    // Cancelled while CLOUD restores: the table rolls back whole.
    let run = cancel_in("push", "restore");
    assert_eq!(run["state"], "CANCELLED", "{run}");
    let held = count(&cloud, "SELECT count(*) FROM groups");
    assert!(held == 0 || held == 40_000, "never half a table: {held}");

    // Cancelled while CLOUD takes its snapshot for a pull: MAIN is as it was.
    groups(&cloud, 5000, "from cloud");
    proxy.set(Fault::Delay(Duration::from_millis(40)));
    let before = count(&main, "SELECT count(*) FROM groups");
    let run = cancel_in("pull", "snapshot");
    assert_eq!(run["state"], "CANCELLED", "{run}");
    assert_eq!(count(&main, "SELECT count(*) FROM groups"), before);
    proxy.set(Fault::Pass);

    // After cancels nothing is left running: a whole run goes through.
    let answer = start("push");
    assert_eq!(answer.status(), 202);
    let id = answer.json::<Value>().unwrap()["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while get(&id)["state"] == "RUNNING" {
        assert!(started.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = get(&id);
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(count(&cloud, "SELECT count(*) FROM groups WHERE name = 'from main'"), 40_000);
}

#[test]
fn a_transfer_cut_mid_way_resumes_from_the_chunks_that_arrived() {
    let proxy = std::cell::OnceCell::new();
    let (main, cloud) = unlinked_pair_via(false, &|url| proxy.get_or_init(|| Proxy::start(url)).url.clone());
    let proxy = proxy.get().unwrap();
    groups(&cloud, 12_000, "from cloud, a name long enough to make the chunks a few hundred kilobytes each");
    // The chunks cross slowly; once a few have arrived, the next chunk's answer is cut.
    proxy.set(Fault::Delay(Duration::from_millis(30)));
    let spool = main.env.path("ferry-data/full-sync");
    let (config, dir) = (main.env.config(), main.env.path(""));
    let running = std::thread::spawn(move || {
        std::process::Command::new(crate::FERRY)
            .args(["full-sync", "pull", "--peer", "cloud", "--json", "-c", &config])
            .current_dir(dir)
            .output()
            .unwrap()
    });
    let arrived = || {
        std::fs::read_dir(&spool)
            .into_iter()
            .flatten()
            .flatten()
            .map(|run| std::fs::read_dir(run.path()).into_iter().flatten().flatten().count())
            .sum::<usize>()
    };
    let started = Instant::now();
    while arrived() < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no chunks arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.set(Fault::CutAnswer { request: "/chunks/", after: 100_000 });
    let out = running.join().unwrap();
    let ok = out.status.success();
    let reports: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let run = reports.last().unwrap();
    assert!(ok, "{run}");
    assert_eq!(run["state"], "SUCCESS");
    assert_eq!(run["attempts"], 2, "{run}");
    let resumed = run["resumed_chunks"].as_u64().unwrap();
    assert!(resumed > 0, "{run}");
    // The second attempt fetched only what had not arrived: about the snapshot's size in all.
    let (size, sent) = (run["bytes"].as_u64().unwrap(), run["bytes_sent"].as_u64().unwrap());
    assert_eq!(sent, size, "each chunk counted once it arrived whole: {run}");
    assert!(proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst) < size * 3 / 2, "{run}");
    assert_eq!(count(&main, "SELECT count(*) FROM groups"), 12_000);
}

#[test]
fn rows_matching_the_exclude_filter_are_left_out() {
    let (main, cloud) = unlinked_pair(false);
    groups(&main, 200, "real");
    groups(&main, 100, "demo");
    let config = std::fs::read_to_string(main.env.path("ferry.toml")).unwrap();
    std::fs::write(main.env.path("ferry.toml"), format!("{config}\n[full_sync.exclude]\ngroups = \"name = :user\"\n"))
        .unwrap();
    let out = main.env.run(&["full-sync", "push", "--peer", "cloud", "-c", &main.env.config()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[full_sync.exclude] groups") && err.contains("own columns"), "{err}");
    std::fs::write(main.env.path("ferry.toml"), format!("{config}\n[full_sync.exclude]\ngroups = \"name = 'demo'\"\n"))
        .unwrap();
    let (reports, ok) = full_sync(&main, "push", &[]);
    let run = reports.last().unwrap();
    assert!(ok, "{run}");
    assert_eq!((run["rows"].as_u64(), run["excluded"].as_u64()), (Some(200), Some(100)), "{run}");
    assert_eq!(count(&cloud, "SELECT count(*) FROM groups"), 200);
    assert_eq!(count(&cloud, "SELECT count(*) FROM groups WHERE name = 'demo'"), 0);
    // Pulling back, the demo rows CLOUD might hold are not taken either.
    groups(&cloud, 10, "demo");
    let (reports, ok) = full_sync(&main, "pull", &[]);
    let run = reports.last().unwrap();
    assert!(ok, "{run}");
    assert_eq!(run["excluded"], 10, "{run}");
    assert_eq!(count(&main, "SELECT count(*) FROM groups WHERE name = 'demo'"), 100);
}

#[test]
fn after_a_full_sync_the_link_carries_only_later_changes_and_no_false_conflict() {
    let (mut main, cloud) = unlinked_pair(false);
    let ids = groups(&main, 500, "from main");
    let (reports, ok) = full_sync(&main, "push", &[]);
    assert!(ok, "{}", reports.last().unwrap());
    main.psql(&format!("UPDATE groups SET name = 'changed after' WHERE id = '{}'", ids[3]));
    // The link on: it reads on from the snapshot, so one row crosses, judged against the
    // version both sides got from the full sync (no conflict logged on CLOUD).
    let config = std::fs::read_to_string(main.env.path("ferry.toml")).unwrap();
    std::fs::write(main.env.path("ferry.toml"), config.replace("enabled = false", "")).unwrap();
    main.server = main.env.serve();
    let started = Instant::now();
    while cloud.psql(&format!("SELECT name FROM groups WHERE id = '{}'", ids[3])) != "changed after" {
        assert!(started.elapsed() < Duration::from_secs(30), "the change never crossed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status: Value =
        serde_json::from_str(&main.env.ok_all(&["peer", "status", "cloud", "--json", "-c", &main.env.config()]))
            .unwrap();
    assert_eq!(status["peers"][0]["rows_out"], 1, "{status}");
    assert_eq!(count(&cloud, "SELECT count(*) FROM _ferry_conflicts"), 0);
}
