//! What the benchmarks share: a real `ferry serve` on a free loopback port, the example app,
//! and the benchmark's rows. (Each benchmark uses part of it.)
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// The machine, as each benchmark prints it and the summary records it.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({model}), {mem_gib:.0} GiB")
}

/// The command that reruns this benchmark as it was run.
pub fn command(bench: &str) -> String {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let args = if args.is_empty() { String::new() } else { format!(" -- {}", args.join(" ")) };
    format!("cargo bench -p ferry --bench {bench}{args}")
}

/// Prints the machine and the command at the start of a benchmark.
pub fn header(bench: &str, what: &str) {
    println!("machine: {}", machine());
    println!("command: {}", command(bench));
    println!("{what}");
    println!();
}

/// Where every benchmark appends its scenarios; `cargo xtask bench` starts it empty and
/// prints it at the end as one table.
pub fn summary_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-results/summary.tsv")
}

/// Records one scenario for the summary: the figure, its baseline from the same run (or
/// "–"), the ratio, the SPEC target and whether it was met, and the command.
pub fn record(bench: &str, scenario: &str, figure: &str, baseline: &str, ratio: &str, target: &str) {
    use std::io::Write as _;
    if target.contains("met") {
        println!("SPEC target, {scenario}: {target}");
    }
    let path = summary_path();
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    let line = [scenario, figure, baseline, ratio, target, &command(bench), &machine()]
        .map(|f| f.replace('\t', " "))
        .join("\t");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    writeln!(f, "{line}").unwrap();
}

/// A target's verdict: "≤ 8 s: met" or "≤ 8 s: NOT met (1.7× off)", where `off` is how
/// many times better the figure has to get.
pub fn verdict(target: &str, met: bool, off: f64) -> String {
    if met { format!("{target}: met") } else { format!("{target}: NOT met ({off:.1}× off)") }
}

/// A `ferry serve` process, killed when dropped (also when a benchmark panics).
pub struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ferry serve -c ferry.toml` in `dir`; returns the process and its URL.
pub fn serve(dir: &Path) -> (Server, String) {
    let mut server = Command::new(FERRY)
        .args(["serve", "-c", "ferry.toml", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    (Server(server), url)
}

/// A file of the example app (`examples/skydive/`); its `ferry.toml` without the sharing
/// rules (`read`, `write`): these scenarios measure the sync paths of owned and shared
/// tables, as recorded since the first benchmarks; `sync --only rules` measures the rules.
pub fn example(file: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/skydive").join(file))
        .unwrap();
    if file != "ferry.toml" {
        return text;
    }
    let open: Vec<&str> = text.lines().filter(|l| !l.starts_with("read = ") && !l.starts_with("write = ")).collect();
    open.join("\n") + "\n"
}

/// Writes the example app's schema and configuration ([`example`]) into `dir`.
pub fn write_example(dir: &Path) {
    for f in ["schema.sql", "ferry.toml"] {
        std::fs::write(dir.join(f), example(f)).unwrap();
    }
}

pub const INSERT: &str = "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, dropzone, exit_altitude_ft, notes, visible_to_connections)
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)";

/// Row `i`: ids are time-ordered like UUID v7, about 125 bytes of values in all.
pub fn row(i: usize) -> (String, String, i64, String, String, i64, String) {
    (
        format!("01900000-0000-7000-8000-{i:012x}"),
        "01900000-0000-7000-8000-00000000a11c".to_owned(),
        i as i64,
        format!("2026-11-{:02}T10:{:02}:00Z", 1 + i % 28, i % 60),
        "Skydive Spa".to_owned(),
        4000,
        "hop and pop".to_owned(),
    )
}

pub fn insert_rows(conn: &mut Connection, n: usize, user: &str) -> Duration {
    let start = Instant::now();
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx.prepare(INSERT).unwrap();
        for i in 0..n {
            let r = row(i);
            stmt.execute(params![r.0, user, r.2, r.3, r.4, r.5, r.6]).unwrap();
        }
    }
    tx.commit().unwrap();
    start.elapsed()
}

/// One line of a chart: a name and its points (x, y).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart as SVG (no dependencies): `log_x` puts x on a log-10 scale (data sizes);
/// y starts at 0.
pub fn svg_chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_x: bool) -> String {
    use std::fmt::Write as _;
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 80.0, 200.0, 40.0, 60.0);
    let fx = |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(fx(p.0)), b.max(fx(p.0))));
    if log_x {
        (x0, x1) = (x0.floor(), x1.ceil());
    } else {
        (x0, x1) = (x0.min(0.0), nice(x1));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = nice(all.iter().fold(0.0f64, |m, p| m.max(p.1)));
    let px = |x: f64| left + (fx(x) - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - y / y1 * (h - top - bottom);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="24" font-size="15" text-anchor="middle">{title}</text>"#,
        (left + w - right) / 2.0
    );
    let _ = write!(
        out,
        r#"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="black"/>"#,
        b = h - bottom,
        r = w - right
    );
    for i in 0..=5 {
        let y = y1 * i as f64 / 5.0;
        let _ = write!(
            out,
            r##"<line x1="{left}" y1="{py}" x2="{r}" y2="{py}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left - 6.0,
            py(y) + 4.0,
            short(y),
            py = py(y),
            r = w - right
        );
    }
    let ticks: Vec<f64> = if log_x {
        (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5).map(|i| x0 + (x1 - x0) * i as f64 / 5.0).collect()
    };
    for x in ticks {
        let _ =
            write!(out, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, px(x), h - bottom + 18.0, short(x));
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text><text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{y_label}</text>"#,
        (left + w - right) / 2.0,
        h - 16.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
    for (i, s) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<String> = s.points.iter().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1))).collect();
        let _ = write!(out, r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#, pts.join(" "));
        if s.points.len() <= 12 {
            for p in &s.points {
                let _ = write!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#, px(p.0), py(p.1));
            }
        }
        let ly = top + 10.0 + 20.0 * i as f64;
        let _ = write!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            ly + 4.0,
            s.name
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The top of an axis: the next round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k) at or
/// above `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * e)
        .find(|t| *t >= v * 0.9999)
        .unwrap_or(10.0 * e)
}

/// 1200 → "1.2k", 2500000 → "2.5M", 0.25 → "0.25".
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}", v / 1e6).trim_end_matches('0').trim_end_matches('.').to_owned() + "M"
    } else if a >= 1e3 {
        format!("{:.1}", v / 1e3).trim_end_matches('0').trim_end_matches('.').to_owned() + "k"
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Writes a benchmark artefact (a plot) under `target/tmp/bench-results/` and says where.
pub fn save(name: &str, content: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    println!("(plot: {})", path.display());
}

/// Waits until `done` holds (checking every 5 ms); panics after 10 minutes.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(600), "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The rows ([`row`]) as CSV for `\copy`, in `jump_log`'s column order.
pub fn csv(n: usize, user: &str) -> String {
    let mut out = String::new();
    for i in 0..n {
        let r = row(i);
        // id, user_id, device_id, jump_number, jumped_at, dropzone, aircraft, exit_altitude_ft,
        // deployment_altitude_ft, freefall_seconds, discipline, notes, visible_to_connections,
        // storage_url, video_sha256, created_at
        out.push_str(&format!("{},{user},,{},{},\"{}\",,{},,,,\"{}\",false,,,\n", r.0, r.2, r.3, r.4, r.5, r.6));
    }
    out
}

/// Restarts `cluster` with `wal_level = logical`, so it can publish.
pub fn enable_logical_replication(cluster: &ferry_pgtemp::PgCluster) {
    cluster.psql("postgres", "ALTER SYSTEM SET wal_level = logical").unwrap();
    cluster.stop().unwrap();
    cluster.start_again().unwrap();
}

/// `n` rows `\copy`ed into `publisher`'s `jump_log` (database `bench`, made here on both
/// clusters), until `subscriber` holds them through PostgreSQL's logical replication: the
/// time from the start of the copy. `publisher` must have `wal_level = logical`.
pub fn logical_replication(
    publisher: &ferry_pgtemp::PgCluster,
    subscriber: &ferry_pgtemp::PgCluster,
    n: usize,
) -> Duration {
    let schema = ferry_core::schema::Schema::parse(&example("schema.sql"), &Default::default()).unwrap();
    let ddl = ferry_store::PgStore::create_table_sql(schema.table("jump_log").unwrap());
    for c in [publisher, subscriber] {
        c.create_db("bench").unwrap();
        c.psql("bench", &ddl).unwrap();
    }
    publisher.psql("bench", "CREATE PUBLICATION bench FOR TABLE jump_log").unwrap();
    let conn = format!("host=127.0.0.1 port={} user=postgres dbname=bench", publisher.port());
    subscriber
        .psql(
            "bench",
            &format!("CREATE SUBSCRIPTION bench CONNECTION '{conn}' PUBLICATION bench WITH (copy_data = false)"),
        )
        .unwrap();
    // The subscription is live once its apply worker streams.
    wait_until("the subscription to start", || {
        subscriber
            .psql("bench", "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL")
            .is_ok_and(|o| o.trim().ends_with('1') || o.contains(" 1"))
    });
    let file = publisher.dir().join("rows.csv");
    std::fs::write(&file, csv(n, "01900000-0000-7000-8000-00000000a11c")).unwrap();
    let _ = Command::new("chmod").arg("644").arg(&file).status();
    let started = Instant::now();
    publisher.psql("bench", &format!("\\copy jump_log FROM '{}' CSV", file.display())).unwrap();
    wait_until("the subscriber's rows", || pg_count(subscriber, "bench") >= n);
    let took = started.elapsed();
    let _ = subscriber.psql("bench", "DROP SUBSCRIPTION bench");
    took
}

/// Rows of `jump_log` in database `db` of `cluster` (0 when it cannot be read).
pub fn pg_count(cluster: &ferry_pgtemp::PgCluster, db: &str) -> usize {
    cluster
        .psql(db, "SELECT count(*) FROM jump_log")
        .ok()
        .and_then(|o| o.split_whitespace().find_map(|w| w.parse::<usize>().ok()))
        .unwrap_or(0)
}

/// One row of a "n changes, time, rows/s, Ferry's ratio to it" table: `t` for `name`, beside
/// `ferry`'s time for the same `n` changes.
pub fn rate_row(name: &str, n: usize, t: Duration, ferry: Duration) {
    println!(
        "| {name} | {:.2} s | {:.0} | {:.2}× |",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64(),
        ferry.as_secs_f64() / t.as_secs_f64()
    );
}

/// Runs `ferry ARGS` in `dir`, asserts success and returns the last line it printed.
pub fn ferry_ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(FERRY).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "ferry {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default().to_owned()
}

/// Writes the example app into `dir` for a server on PostgreSQL `database` with `role`, its
/// `ferry.toml` followed by `extra`.
pub fn server_config(dir: &Path, database: &str, role: &str, extra: &str) {
    std::fs::write(dir.join("schema.sql"), example("schema.sql")).unwrap();
    let toml = example("ferry.toml").replacen(
        "[server]\n",
        &format!("[server]\ndatabase = \"{database}\"\nrole = \"{role}\"\n"),
        1,
    );
    std::fs::write(dir.join("ferry.toml"), toml + extra).unwrap();
}

/// MAIN and CLOUD, each `ferry serve` on its own cluster (database `ferry`); MAIN's
/// `[peers.cloud]` holds CLOUD's address and a token with role `main`, its link disabled:
/// only what a benchmark runs moves rows.
pub struct UnlinkedPair {
    pub main: tempfile::TempDir,
    pub cloud: tempfile::TempDir,
    pub main_url: String,
    pub cloud_url: String,
    /// MAIN's token on CLOUD.
    pub token: String,
    _servers: Vec<Server>,
}

impl UnlinkedPair {
    pub fn start(main_pg: &ferry_pgtemp::PgCluster, cloud_pg: &ferry_pgtemp::PgCluster) -> UnlinkedPair {
        let (main, cloud) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        server_config(cloud.path(), &cloud_pg.create_db("ferry").unwrap(), "cloud", "");
        ferry_ok(cloud.path(), &["user", "add", "dropzone", "-c", "ferry.toml"]);
        let token = ferry_ok(
            cloud.path(),
            &["token", "create", "--user", "dropzone", "--device", "main", "--role", "main", "-c", "ferry.toml"],
        );
        let (cloud_server, cloud_url) = serve(cloud.path());
        let peer = format!("\n[peers.cloud]\nurl = \"{cloud_url}\"\ntoken = \"{token}\"\nenabled = false\n");
        server_config(main.path(), &main_pg.create_db("ferry").unwrap(), "main", &peer);
        let (main_server, main_url) = serve(main.path());
        UnlinkedPair { main, cloud, main_url, cloud_url, token, _servers: vec![cloud_server, main_server] }
    }
}
