//! The operator's view from outside the dashboard: `GET /metrics` in Prometheus' text format
//! and `ferry serve --log-format json`.

use std::time::Duration;

use crate::watch::{Watch, eventually};
use crate::*;

/// One scrape of `server`'s `/metrics`, answered 200 in Prometheus' text format.
pub fn scrape(server: &Server) -> String {
    let answer = server.http().get(format!("{}/metrics", server.url)).send().unwrap();
    assert_eq!(answer.status(), 200);
    let kind = answer.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    answer.text().unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels`; `None` when
/// no sample matches.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            continue;
        }
        let have = rest.trim_end_matches('}');
        if labels.iter().all(|(k, v)| have.split(',').any(|pair| pair == format!("{k}=\"{v}\""))) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

#[test]
fn metrics_count_requests_rows_conflicts_streams_and_the_stores_connections() {
    let (p, _) = crate::sync::manual_group_conflict();
    let text = scrape(&p.server);
    let at_least = |name: &str, labels: &[(&str, &str)], n: f64| {
        let got = sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        assert!(got >= n, "{name} {labels:?} = {got}, expected at least {n}");
    };
    // Pair's first syncs, the group's insert and both renames: pushes and pulls on both devices.
    at_least("ferry_http_requests_total", &[("method", "POST"), ("route", "/v1/push"), ("status", "200")], 3.0);
    at_least("ferry_http_requests_total", &[("method", "GET"), ("route", "/v1/pull"), ("status", "200")], 4.0);
    at_least("ferry_push_rows_total", &[], 3.0);
    at_least("ferry_push_changed_rows_total", &[], 2.0);
    at_least("ferry_push_bytes_total", &[], 100.0);
    at_least("ferry_pull_rows_total", &[], 1.0);
    at_least("ferry_pull_bytes_total", &[], 100.0);
    at_least("ferry_push_duration_seconds_count", &[], 3.0);
    at_least("ferry_pull_duration_seconds_bucket", &[("le", "+Inf")], 4.0);
    at_least("ferry_http_request_duration_seconds_count", &[("route", "/v1/push")], 3.0);
    let open = [("table", "groups"), ("strategy", "manual"), ("state", "open")];
    assert_eq!(sample(&text, "ferry_conflicts", &open), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ferry_stream_clients", &[]), None, "no stream was ever opened here");
    at_least("ferry_store_connections", &[("state", "max")], 2.0);
    assert_eq!(sample(&text, "ferry_store_connections", &[("state", "waiting")]), Some(0.0));

    // A refusal by content and a path outside the routes are counted by their status.
    let http = p.server.http();
    let bad = http.get(format!("{}/v1/pull?limit=0", p.server.url)).bearer_auth(&p.phone).send().unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(http.get(format!("{}/v1/nothing-here", p.server.url)).send().unwrap().status(), 404);
    let text = scrape(&p.server);
    let pull_400 = [("method", "GET"), ("route", "/v1/pull"), ("status", "400")];
    assert_eq!(sample(&text, "ferry_http_requests_total", &pull_400), Some(1.0), "{text}");
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(sample(&text, "ferry_http_requests_total", &unmatched), Some(1.0), "{text}");
    // A scrape counts itself: the one before this one.
    let scraped = [("route", "/metrics"), ("status", "200")];
    assert!(sample(&text, "ferry_http_requests_total", &scraped) >= Some(1.0), "{text}");

    // Resolved, the conflict moves from open to resolved; the open count reads 0, not 1.
    let config = p.env.config();
    let list = p.env.run(&["conflicts", "list", "--open", "--json", "-c", &config]);
    let id = serde_json::from_slice::<serde_json::Value>(&list.stdout).unwrap()[0]["id"].to_string();
    p.env.ok(&["conflicts", "resolve", &id, "--use", "incoming", "-c", &config]);
    let text = scrape(&p.server);
    assert_eq!(sample(&text, "ferry_conflicts", &open), Some(0.0), "{text}");
    let resolved = [("table", "groups"), ("strategy", "manual"), ("state", "resolved")];
    assert_eq!(sample(&text, "ferry_conflicts", &resolved), Some(1.0), "{text}");

    // A watching device holds a stream open while it runs.
    let watch = Watch::start(&p.env, &p.server, "phone.db", &p.phone, &[]);
    watch.connected();
    assert_eq!(sample(&scrape(&p.server), "ferry_stream_clients", &[]), Some(1.0));
    drop(watch);
    eventually("the stream counted closed", || sample(&scrape(&p.server), "ferry_stream_clients", &[]) == Some(0.0));
}

#[test]
fn a_file_upload_and_its_download_are_counted_with_their_bytes() {
    let pair = Pair::new();
    let (hash, content) = pair.phone_adds_video(150_000, 7);
    pair.sync_phone();
    pair.file_sync("phone.db", &pair.phone, &pair.server.url, &[]).unwrap();
    pair.sync_laptop();
    pair.file_sync("laptop.db", &pair.laptop, &pair.server.url, &[]).unwrap();
    assert_eq!(std::fs::read(pair.env.path("laptop.db-files").join(&hash)).unwrap(), content);
    let text = scrape(&pair.server);
    let n = content.len() as f64;
    assert_eq!(sample(&text, "ferry_file_bytes_total", &[("direction", "in")]), Some(n), "{text}");
    assert_eq!(sample(&text, "ferry_file_bytes_total", &[("direction", "out")]), Some(n), "{text}");
    let done = |d| [("direction", d), ("outcome", "completed")];
    assert_eq!(sample(&text, "ferry_file_transfers_total", &done("in")), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ferry_file_transfers_total", &done("out")), Some(1.0), "{text}");
    assert_eq!(sample(&text, "ferry_file_transfers_in_flight", &[]), Some(0.0), "{text}");
}

#[test]
fn with_log_format_json_every_log_line_is_a_json_object_and_no_token_is_in_them() {
    let env = Env::new();
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let mut server = env.serve_logged(&["--log-format", "json"], "debug");
    env.sync(&server, "phone.db", &token);
    let bad = server.http().get(format!("{}/v1/pull", server.url)).bearer_auth("fry_not_a_token").send().unwrap();
    assert_eq!(bad.status(), 401);
    let log = server.kill_for_log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().any(|l| l.contains("store ready")), "{lines:#?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
        assert!(!l.contains(&token) && !l.contains("fry_not_a_token"), "a token in the log: {l}");
    }
}

/// A delivery no attempt of which is answered 2xx: sent once and again after each of the
/// hook's waits, with one delivery id, then written to the sync log as FAILED.
#[test]
fn a_webhook_delivery_that_every_attempt_fails_is_logged_failed() {
    use ferry_peer::webhooks::{Event, Hooks, Webhook};
    use ferry_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let schema = ferry_core::schema::Schema::parse("CREATE TABLE notes (id text PRIMARY KEY);", &Default::default());
    let store = ferry_store::SqliteStore::open(dir.path(), schema.unwrap()).unwrap();
    let (url, received) = crate::webhook_receiver(usize::MAX);
    let hooks = Hooks::new(vec![Webhook {
        url: url.clone(),
        secret: "0123456789abcdef".into(),
        events: vec!["alert".into()],
        retry: vec![Duration::from_millis(50), Duration::from_millis(100)],
    }]);
    let event = Event { name: "alert.raised", peer: "cloud".into(), data: serde_json::json!({"kind": "lag"}) };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let log = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), hooks.deliver(&store, event, 3_600_000))
            .await
            .expect("three attempts end within seconds");
        store.sync_log(Some("cloud"), 10).await.unwrap()
    });
    // The receiver reports a POST after answering it: the last may come a moment after
    // `deliver` returned.
    let ids: Vec<String> = (0..3)
        .map(|n| received.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| panic!("attempt {} missing", n + 1)))
        .map(|d| d.headers["ferry-delivery"].clone())
        .collect();
    assert!(received.recv_timeout(Duration::from_millis(200)).is_err(), "one attempt and one after each wait, no more");
    assert!(ids.iter().all(|id| *id == ids[0]), "one delivery id: {ids:?}");

    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].kind.as_str(), log[0].status.as_str()), ("webhook", "FAILED"));
    let said = log[0].error.as_deref().unwrap_or_default();
    let expected = format!("alert.raised {} to {url}: 3 attempts failed, the last: answered 500", ids[0]);
    assert_eq!(said, expected);
    assert!(log[0].duration_ms >= 150, "the waits were waited: {} ms", log[0].duration_ms);
}
