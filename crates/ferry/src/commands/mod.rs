//! One module per command; each takes its parsed arguments from [`crate::cli`] and prints
//! what the command prints. What several share is here: opening a replica or a server's
//! store, the shutdown signal.

pub mod admin;
pub mod audit;
pub mod compact;
pub mod conflicts;
pub mod device;
pub mod file;
pub mod full_sync;
pub mod integrity;
pub mod peer;
pub mod queue;
pub mod serve;
pub mod server_status;
pub mod status;
pub mod sync;
pub mod token;
pub mod user;

use anyhow::{Context, Result, bail};
use ferry_client::Replica;
use ferry_server::{Config, Overrides};
use ferry_store::AnyStore;

use crate::cli::ServerArgs;

impl ServerArgs {
    fn config(&self) -> Result<Config> {
        let overrides = Overrides {
            listen: self.listen.clone(),
            database: self.database.clone(),
            data_dir: self.data_dir.clone(),
            schema: self.schema.clone(),
            max_body_bytes: self.max_body_bytes,
        };
        Ok(Config::load(self.config.as_deref(), overrides)?)
    }

    pub async fn open_store(&self) -> Result<(Config, AnyStore)> {
        let config = self.config()?;
        let schema = config.schema()?;
        let place = match &config.database {
            Some(_) => "the PostgreSQL store".to_owned(),
            None => format!("the embedded store in '{}'", config.data_dir.display()),
        };
        let store = AnyStore::open(config.database.as_deref(), &config.data_dir, schema)
            .await
            .with_context(|| format!("opening {place}"))?;
        if let Some(role) = &config.role {
            ferry_store::Store::set_role(&store, role);
        }
        Ok((config, store))
    }
}

impl crate::cli::ReplicaServer {
    /// The server given, or the one `replica` last synced with.
    fn server(&self, replica: &Replica) -> Result<Option<String>> {
        Ok(self.server.clone().or(replica.meta(ferry_client::replica::Key::Server)?))
    }

    fn token(&self) -> Result<&str> {
        self.token.as_deref().ok_or_else(|| {
            anyhow::anyhow!("no token given; pass --token (from `ferry token create`) or set FERRY_TOKEN")
        })
    }
}

/// The refusal when a replica has no server to sync with.
fn no_server(db: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!("no server given for '{}'; pass --server http://HOST:PORT (or set FERRY_SERVER)", db.display())
}

pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Installed now, not when first awaited: a Ctrl-C that comes as soon as the process has
    // said it runs must stop it cleanly, not kill it.
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// The process's peak resident set size (Linux `VmHWM`), for `--json` reports and benchmarks.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn open_replica(db: &std::path::Path) -> Result<Replica> {
    if !db.exists() {
        bail!("no replica at '{}'; run `ferry sync --db {}` first", db.display(), db.display());
    }
    Ok(Replica::open(db)?)
}
