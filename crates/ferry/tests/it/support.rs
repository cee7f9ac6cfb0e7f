//! Helpers: a server process, CLI runs, replica files.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A test's private directory holding the example app's config and schema.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database name in the shared cluster, for the PostgreSQL store.
    pub pg_db: Option<String>,
    /// The cluster holding it (the shared one unless [`Env::postgres_other`]).
    pub pg: Option<&'static ferry_pgtemp::PgCluster>,
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    /// The example app without its sharing rules (`read` and `write`): tests of everything
    /// else share its groups and formations freely; `owner` tables stay private.
    pub fn new() -> Env {
        let env = Env::with_sharing();
        let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
        let open: Vec<&str> =
            config.lines().filter(|l| !l.starts_with("read = ") && !l.starts_with("write = ")).collect();
        std::fs::write(env.path("ferry.toml"), open.join("\n") + "\n").unwrap();
        env
    }

    /// The example app as it is, sharing rules included.
    pub fn with_sharing() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/skydive");
        for f in ["schema.sql", "ferry.toml"] {
            std::fs::copy(example.join(f), dir.path().join(f)).unwrap();
        }
        Env { dir, pg_db: None, pg: None }
    }

    /// [`Env::with_sharing`] on the PostgreSQL store.
    pub fn postgres_with_sharing() -> Env {
        let mut env = Env::with_sharing();
        env.use_database(&ferry_pgtemp::PgCluster::fresh_db());
        env
    }

    /// The same, with the PostgreSQL store: `database` in the config file points at a fresh
    /// database in the test process's throwaway cluster.
    pub fn postgres() -> Env {
        Env::with_database(&ferry_pgtemp::PgCluster::fresh_db())
    }

    pub fn with_database(url: &str) -> Env {
        let mut env = Env::new();
        env.use_database(url);
        env
    }

    /// As [`Env::postgres`], on the process's second cluster: for a second server on a
    /// PostgreSQL of its own.
    pub fn postgres_other() -> Env {
        let cluster = ferry_pgtemp::PgCluster::shared_other();
        let mut env = Env::new();
        env.use_database(&cluster.fresh());
        env.pg = Some(cluster);
        env
    }

    fn use_database(&mut self, url: &str) {
        self.pg = Some(ferry_pgtemp::PgCluster::shared());
        self.pg_db = url.rsplit('/').next().map(str::to_owned);
        let config = std::fs::read_to_string(self.path("ferry.toml")).unwrap();
        let config = config.replacen("[server]\n", &format!("[server]\ndatabase = \"{url}\"\n"), 1);
        std::fs::write(self.path("ferry.toml"), config).unwrap();
    }

    /// Sets `[tables.TABLE]` options in the config file (`lines` like `conflict = "manual"`),
    /// adding the section when the example has none.
    pub fn table_options(&self, table: &str, lines: &str) {
        let config = std::fs::read_to_string(self.path("ferry.toml")).unwrap();
        let section = format!("[tables.{table}]\n");
        let config = if config.contains(&section) {
            config.replacen(&section, &format!("{section}{lines}\n"), 1)
        } else {
            format!("{config}\n{section}{lines}\n")
        };
        std::fs::write(self.path("ferry.toml"), config).unwrap();
    }

    /// Runs SQL in this test's PostgreSQL database with `psql`, as another application would.
    pub fn psql(&self, sql: &str) -> String {
        let db = self.pg_db.as_deref().expect("a PostgreSQL test environment");
        let cluster = self.pg.unwrap_or_else(ferry_pgtemp::PgCluster::shared);
        cluster.psql(db, sql).unwrap_or_else(|e| panic!("psql: {e}"))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> String {
        self.path("ferry.toml").display().to_string()
    }

    /// Runs `ferry ARGS` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(FERRY).args(args).current_dir(self.dir.path()).env_remove("FERRY_TOKEN").output().unwrap()
    }

    /// Runs `ferry ARGS`, asserts success and returns the last line of stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ferry {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned()
    }

    /// Runs `ferry ARGS`, asserts success and returns all of stdout.
    pub fn ok_all(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "ferry {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn add_user(&self, name: &str) -> String {
        self.ok(&["user", "add", name, "-c", &self.config()])
    }

    pub fn token(&self, user: &str, device: &str) -> String {
        self.ok(&["token", "create", "--user", user, "--device", device, "-c", &self.config()])
    }

    /// Starts `ferry serve` on a free port.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    pub fn serve_with(&self, extra: &[&str]) -> Server {
        self.serve_on("127.0.0.1:0", extra)
    }

    /// Starts `ferry serve` listening on `listen` (to restart a server at the same address).
    pub fn serve_on(&self, listen: &str, extra: &[&str]) -> Server {
        self.start(listen, extra, None)
    }

    /// As [`Env::serve_with`], its log at `level` (`RUST_LOG`) kept: [`Server::kill_for_log`].
    pub fn serve_logged(&self, extra: &[&str], level: &str) -> Server {
        self.start("127.0.0.1:0", extra, Some(level))
    }

    fn start(&self, listen: &str, extra: &[&str], log: Option<&str>) -> Server {
        let mut command = Command::new(FERRY);
        command.args(["serve", "-c", &self.config(), "--listen", listen]).args(extra).current_dir(self.dir.path());
        match log {
            Some(level) => command.env("RUST_LOG", level).stderr(Stdio::piped()),
            None => command.stderr(Stdio::null()),
        };
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
        Server { child, url }
    }

    /// `ferry sync` of replica `db` with `token`; asserts success and returns `ferry status --json`.
    pub fn sync(&self, server: &Server, db: &str, token: &str) -> serde_json::Value {
        self.ok(&[
            "sync",
            "--db",
            &self.path(db).display().to_string(),
            "--server",
            &server.url,
            "--token",
            token,
            "--json",
        ]);
        let raw = self.run(&["status", "--db", &self.path(db).display().to_string(), "--json"]);
        serde_json::from_slice(&raw.stdout).unwrap()
    }

    pub fn db(&self, name: &str) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.path(name)).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c
    }
}

/// A running `ferry serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// A server reached at `url` (through a proxy, say) that this test did not start: a
    /// handle that owns no process.
    pub fn external(url: &str) -> Server {
        let child = Command::new("true").spawn().unwrap();
        Server { child, url: url.to_owned() }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills a server started by [`Env::serve_logged`]: what it logged.
    pub fn kill_for_log(&mut self) -> String {
        let mut stderr = self.child.stderr.take().expect("started by Env::serve_logged");
        self.kill();
        let mut log = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
        log
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::new()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A UUID for test rows (v4-shaped, random).
pub fn uuid() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand_u8();
    }
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-a{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 15,
        b[7],
        b[8] & 15,
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

fn fastrand_u8() -> u8 {
    use std::cell::Cell;
    thread_local!(static S: Cell<u64> = Cell::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    ));
    S.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 24) as u8
    })
}

/// Inserts a jump for `user` and returns its id.
pub fn insert_jump(db: &rusqlite::Connection, user: &str, n: i64, notes: &str) -> String {
    let id = uuid();
    db.execute(
        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, notes) VALUES (?1, ?2, ?3, '2026-11-21T10:00:00Z', ?4)",
        rusqlite::params![id, user, n, notes],
    )
    .unwrap();
    id
}

/// All jumps of a replica, sorted, as comparable rows.
pub fn jumps(db: &rusqlite::Connection) -> Vec<(String, i64, Option<String>, Option<String>)> {
    let mut stmt = db.prepare("SELECT id, jump_number, notes, dropzone FROM jump_log ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
}

/// One user with two devices, and a running server.
pub struct Pair {
    pub env: Env,
    pub server: Server,
    pub user: String,
    pub phone: String,
    pub laptop: String,
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

impl Pair {
    pub fn new() -> Pair {
        Pair::in_env(Env::new())
    }

    pub fn in_env(env: Env) -> Pair {
        let user = env.add_user("alice");
        let phone = env.token("alice", "phone");
        let laptop = env.token("alice", "laptop");
        let server = env.serve();
        // First syncs create the tables in both replicas.
        env.sync(&server, "phone.db", &phone);
        env.sync(&server, "laptop.db", &laptop);
        Pair { env, server, user, phone, laptop }
    }

    pub fn sync_phone(&self) -> serde_json::Value {
        self.env.sync(&self.server, "phone.db", &self.phone)
    }

    pub fn sync_laptop(&self) -> serde_json::Value {
        self.env.sync(&self.server, "laptop.db", &self.laptop)
    }

    /// `ferry sync --hydrate` of the laptop (pull only, its local changes stay unpushed);
    /// returns the sync report.
    pub fn hydrate_laptop(&self) -> serde_json::Value {
        let db = self.env.path("laptop.db").display().to_string();
        let args = ["sync", "--hydrate", "--db", &db, "--server", &self.server.url, "--token", &self.laptop, "--json"];
        let out = self.env.run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A POST a [`webhook_receiver`] received: its headers (names in lower case), body and the
/// status it was answered.
pub struct Delivery {
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook on a local port: each POST it receives, in order. It answers 500 to the first
/// `fail_first`, 204 to the rest.
pub fn webhook_receiver(fail_first: usize) -> (String, std::sync::mpsc::Receiver<Delivery>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/ferry", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(stream);
            let mut headers = std::collections::HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n < fail_first { 500 } else { 204 };
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = reader.get_mut().write_all(answer.as_bytes());
            let _ = tx.send(Delivery { headers, body, status });
        }
    });
    (url, rx)
}
