//! Throwaway PostgreSQL clusters for tests and benchmarks, from the system's own binaries.
//!
//! `initdb` refuses to run as root, so as root the cluster is created and run as the
//! `postgres` user (through `runuser`); otherwise as the current user. Each cluster lives in
//! a private temporary directory, listens on 127.0.0.1 on a free port with its socket in that
//! directory, trusts local connections, and is stopped and removed on drop. Nothing needs
//! setting up by hand; it needs only PostgreSQL's server binaries (`pg_config --bindir`, or
//! `/usr/lib/postgresql/*/bin`).

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running throwaway cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn bindir() -> io::Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL server binaries (initdb) found via pg_config or in /usr/lib/postgresql/*/bin; install the postgresql package",
        )
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn check(what: &str, out: Output) -> io::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )))
}

impl PgCluster {
    /// Creates and starts a new cluster.
    ///
    /// # Errors
    /// When the binaries are missing, or `initdb` or `pg_ctl start` fails (the message holds
    /// their output).
    pub fn start() -> io::Result<PgCluster> {
        let bindir = bindir()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("ferry-pg-").tempdir()?;
        if as_postgres {
            check("chown", Command::new("chown").arg("postgres:").arg(dir.path()).output()?)?;
        }
        let cluster = PgCluster { dir, bindir, port: free_port()?, as_postgres };
        let data = cluster.data_dir();
        check(
            "initdb",
            cluster
                .command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C", "-D"])
                .arg(&data)
                .output()?,
        )?;
        cluster.start_again()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A connection URL for database `db` (user `postgres`, no password, TCP on 127.0.0.1).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name`.
    ///
    /// # Errors
    /// When `createdb` fails.
    pub fn create_db(&self, name: &str) -> io::Result<String> {
        let out = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name])
            .output()?;
        check("createdb", out)?;
        Ok(self.url(name))
    }

    /// A `psql` command connected to `db`, for callers that pipe data through it (`COPY …
    /// TO STDOUT`); add `-c SQL` and run it.
    pub fn psql_command(&self, db: &str) -> Command {
        let mut c = self.command("psql");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-X",
        ]);
        c
    }

    /// Runs SQL with `psql` against database `db` and returns its output.
    ///
    /// # Errors
    /// When `psql` fails (the message holds its output).
    pub fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        check("psql", out)?;
        Ok(text)
    }

    /// Dumps database `db` as SQL into `file` (which must be writable by the cluster's user;
    /// the cluster's own directory is).
    ///
    /// # Errors
    /// When `pg_dump` fails.
    pub fn dump(&self, db: &str, file: &Path) -> io::Result<()> {
        let out = self
            .command("pg_dump")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-f"])
            .arg(file)
            .arg(db)
            .output()?;
        check("pg_dump", out)
    }

    /// Runs an SQL file (such as a dump) against database `db`.
    ///
    /// # Errors
    /// When `psql` fails.
    pub fn restore(&self, db: &str, file: &Path) -> io::Result<()> {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-f"])
            .arg(file)
            .output()?;
        check("psql -f", out)
    }

    /// Stops the server (fast shutdown: open connections are cut).
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub fn stop(&self) -> io::Result<()> {
        let out =
            self.command("pg_ctl").args(["-D"]).arg(self.data_dir()).args(["-m", "fast", "-w", "stop"]).output()?;
        check("pg_ctl stop", out)
    }

    /// Starts the server again on the same port, after [`PgCluster::stop`].
    ///
    /// # Errors
    /// When `pg_ctl start` fails.
    pub fn start_again(&self) -> io::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data_dir())
            .args(["-o", &opts, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()?;
        check("pg_ctl start", out).map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            io::Error::other(format!("{e}\n{log}"))
        })
    }
}

impl PgCluster {
    /// One cluster for the whole test process, started on first use. Statics are never
    /// dropped, so a watchdog process stops the cluster and removes its directory as soon as
    /// this process exits, however it exits.
    ///
    /// # Panics
    /// When the cluster cannot be started (the message says why).
    pub fn shared() -> &'static PgCluster {
        static SHARED: std::sync::OnceLock<PgCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(PgCluster::watched)
    }

    /// A second cluster for the whole test process, as [`PgCluster::shared`]: for tests of
    /// two servers each on its own PostgreSQL.
    ///
    /// # Panics
    /// When the cluster cannot be started (the message says why).
    pub fn shared_other() -> &'static PgCluster {
        static OTHER: std::sync::OnceLock<PgCluster> = std::sync::OnceLock::new();
        OTHER.get_or_init(PgCluster::watched)
    }

    /// A new cluster that a watchdog process stops and removes when this process exits.
    fn watched() -> PgCluster {
        let cluster = PgCluster::start().unwrap_or_else(|e| panic!("cannot start a throwaway PostgreSQL: {e}"));
        let stop = format!(
            "{}{} -D '{}' -m immediate -w stop",
            if cluster.as_postgres { "runuser -u postgres -- " } else { "" },
            cluster.bindir.join("pg_ctl").display(),
            cluster.data_dir().display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = cluster.dir().display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        cluster
    }

    /// A fresh database in the shared cluster, with a unique name; returns its URL.
    ///
    /// # Panics
    /// When the database cannot be created.
    pub fn fresh_db() -> String {
        PgCluster::shared().fresh()
    }

    /// A fresh database in this cluster, with a name unique in the process; returns its URL.
    ///
    /// # Panics
    /// When the database cannot be created.
    pub fn fresh(&self) -> String {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.create_db(&name).unwrap_or_else(|e| panic!("cannot create database {name}: {e}"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ =
            self.command("pg_ctl").args(["-D"]).arg(self.data_dir()).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_answers_stops_and_restarts() {
        let pg = PgCluster::start().unwrap();
        pg.create_db("t").unwrap();
        assert_eq!(pg.psql("t", "SELECT 40 + 2").unwrap().trim(), "42");
        pg.stop().unwrap();
        assert!(pg.psql("t", "SELECT 1").is_err());
        pg.start_again().unwrap();
        assert_eq!(pg.psql("t", "SELECT 1").unwrap().trim(), "1");
    }
}
