//! `ferry`: the one binary. `serve` runs the sync server; `user` and `token` manage who
//! may sync; `sync` and `status` work on a device's replica file.

mod audit;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ferry_client::replica::Key;
use ferry_client::{Progress, Remote, Replica, SyncOptions};
use ferry_server::{Config, Overrides};
use ferry_store::{AnyStore, ConflictFilter, Keep, Store};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "ferry", version, about = "Two-way sync between SQLite replicas and a Ferry server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync server (embedded SQLite store in data_dir, or PostgreSQL with --database).
    Serve(ServerArgs),
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage device tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Sync a replica file with a server: create tables, push local changes, pull remote ones.
    Sync(SyncArgs),
    /// Show a replica's sync state (pending changes, last sync, cursor, conflicts).
    Status(StatusArgs),
    /// A replica's sync queue: pending changes, changes set aside as invalid, recent syncs.
    Queue(QueueArgs),
    /// Conflicts: the server's log (list, show, resolve) and a replica's own (list --db, refused, settle).
    Conflicts {
        #[command(subcommand)]
        command: ConflictsCommand,
    },
    /// Files rows reference by SHA-256: add, open, move them (sync), pause, resume, trigger, status, log.
    File {
        #[command(subcommand)]
        command: FileCommand,
    },
    /// A running server's status (file store and transfer queue), with an admin token.
    ServerStatus(RemoteArgs),
    /// Check every row the server's store holds against the rules pushes must pass (zero
    /// clocks, NOT NULL columns, types, limits) and name the rows that break one; exits 1 then.
    Audit(AuditArgs),
}

#[derive(Args)]
struct AuditArgs {
    /// One JSON document: {"rows": N, "bad": [{"table", "key", "problem"}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// A server reached over HTTP.
#[derive(Args)]
struct RemoteArgs {
    /// Server URL.
    #[arg(long, env = "FERRY_SERVER")]
    server: String,
    /// Device token (`ferry token create`; the admin endpoints need `--admin`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: String,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum FileCommand {
    /// Copy a file into the replica's files (REPLICA-files/, named by hash); prints its
    /// SHA-256, the value to put in a file column.
    Add {
        #[arg(long)]
        db: PathBuf,
        /// The file to add.
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a file of the replica to stdout (or --out), checking its hash on the way.
    Open {
        #[arg(long)]
        db: PathBuf,
        /// The file's SHA-256.
        hash: String,
        /// Write it here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Move the files that can move now (uploads and downloads, newest row first), then stop.
    Sync(FileSyncArgs),
    /// Stop file transfers (a running `ferry sync --watch` pauses too; row sync goes on).
    Pause {
        #[arg(long)]
        db: PathBuf,
    },
    /// Let file transfers run again.
    Resume {
        #[arg(long)]
        db: PathBuf,
    },
    /// Ask a running `ferry sync --watch` to look for files to move now, forgetting retry waits.
    Trigger {
        #[arg(long)]
        db: PathBuf,
    },
    /// The file queue: files to upload or download, sizes, failed attempts.
    Status {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Recent transfers: direction, hash, size, outcome.
    Log {
        #[arg(long)]
        db: PathBuf,
        /// How many, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct FileSyncArgs {
    /// The replica file.
    #[arg(long)]
    db: PathBuf,
    /// Server URL; defaults to the one this replica last synced with.
    #[arg(long, env = "FERRY_SERVER")]
    server: Option<String>,
    /// Device token (from `ferry token create`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    limits: FileLimits,
    /// Tries per file in this run (failures wait 1 s, 2 s, 4 s … between tries).
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// How files move: at once, and how fast.
#[derive(Args, Clone)]
struct FileLimits {
    /// Files moved at once.
    #[arg(long = "files-concurrency", default_value_t = ferry_client::files::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Rate limit over all file transfers, in KB/s (1 KB = 1024 bytes); none by default.
    #[arg(long = "files-rate")]
    rate_kbps: Option<u64>,
    /// With --watch: look for files to move at least this often (it also looks when rows
    /// change, on `ferry file trigger` and on resume).
    #[arg(long = "files-interval", default_value = "10s", value_parser = ferry_client::engine::parse_duration)]
    files_interval: Duration,
}

impl FileLimits {
    fn options(&self) -> Result<ferry_client::files::FileOptions> {
        if self.concurrency == 0 {
            bail!("--files-concurrency 0: at least one file must be able to move; use `ferry file pause` to stop them");
        }
        if self.rate_kbps == Some(0) {
            bail!("--files-rate 0 would never move a byte; leave it out for no limit, or use `ferry file pause`");
        }
        Ok(ferry_client::files::FileOptions {
            concurrency: self.concurrency,
            rate: self.rate_kbps.map(|k| k * 1024),
            interval: self.files_interval,
            ..Default::default()
        })
    }
}

#[derive(Subcommand)]
enum ConflictsCommand {
    /// List conflicts, newest first: the server's log, or with --db a replica's own view.
    List {
        /// A replica's own view instead of the server's log: the fields its client-side
        /// resolvers settled, and its changes refused as stale (open until settled).
        #[arg(long)]
        db: Option<std::path::PathBuf>,
        /// Only conflicts still waiting for a decision.
        #[arg(long, conflicts_with = "resolved")]
        open: bool,
        /// Only resolved conflicts (kept for audit).
        #[arg(long)]
        resolved: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resolve an open conflict by picking a version; it is written as a new change that
    /// reaches every replica.
    Resolve {
        /// The conflict's id (from `ferry conflicts list --open`).
        id: i64,
        /// Which version to keep: the one the server held (`stored`) or the one that arrived
        /// (`incoming`).
        #[arg(long = "use", value_parser = ["stored", "incoming"])]
        keep: String,
        /// Print the resolved conflict as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one conflict with both versions.
    Show {
        /// The conflict's id (from `ferry conflicts list`).
        id: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// On a replica: local changes the server refused as stale (tables with
    /// conflict = "reject-stale"), with the server's current version beside each.
    Refused {
        /// The replica's SQLite file.
        #[arg(long)]
        db: std::path::PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// On a replica: settle a refused change, keeping the local change (pushed again on top
    /// of the server's version at the next sync) or taking the server's version.
    Settle {
        /// The replica's SQLite file.
        #[arg(long)]
        db: std::path::PathBuf,
        /// The refused change's id (from `ferry conflicts refused`).
        id: i64,
        #[arg(long, value_parser = ["local", "server"])]
        keep: String,
    },
}

/// Where the server's configuration comes from. Every `[server]` key of the file can also
/// be given as a flag or an environment variable, which win over the file.
#[derive(Args, Clone)]
struct ServerArgs {
    /// Config file (ferry.toml).
    #[arg(short = 'c', long = "config", env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free port).
    #[arg(long, env = "FERRY_LISTEN")]
    listen: Option<String>,
    /// PostgreSQL store: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (default: the
    /// embedded SQLite store in data_dir).
    #[arg(long, env = "FERRY_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Schema file: CREATE TABLE statements in Ferry's portable subset.
    #[arg(long, env = "FERRY_SCHEMA")]
    schema: Option<PathBuf>,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, env = "FERRY_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
}

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

    async fn open_store(&self) -> Result<(Config, AnyStore)> {
        let config = self.config()?;
        let schema = config.schema()?;
        let place = match &config.database {
            Some(_) => "the PostgreSQL store".to_owned(),
            None => format!("the embedded store in '{}'", config.data_dir.display()),
        };
        let store = AnyStore::open(config.database.as_deref(), &config.data_dir, schema)
            .await
            .with_context(|| format!("opening {place}"))?;
        Ok((config, store))
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the last line printed is the new user's id.
    Add {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Register a device for a user and create its bearer token; the last line printed is the token.
    Create {
        /// User name or id.
        #[arg(long)]
        user: String,
        /// A name for the device (phone, laptop, on-site server …).
        #[arg(long)]
        device: String,
        /// The token may also use the admin endpoints (/v1/admin/…), such as conflict resolution.
        #[arg(long)]
        admin: bool,
        /// The device's role, for tables with conflict = "authoritative" (e.g. main for an
        /// on-site server whose writes win).
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a device: every token created for it stops working at once, and its open
    /// streams are closed within seconds. Prints the revoked device ids.
    Revoke {
        /// User name or id.
        #[arg(long)]
        user: String,
        /// The device's name (every live device of the user with that name is revoked) or id.
        #[arg(long)]
        device: String,
        /// Print {"revoked": [ids]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
struct SyncArgs {
    /// The replica file (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Server URL; defaults to the one this replica last synced with.
    #[arg(long, env = "FERRY_SERVER")]
    server: Option<String>,
    /// Device token (from `ferry token create`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Rows per pull page.
    #[arg(long, default_value_t = SyncOptions::default().pull_page)]
    page_rows: usize,
    /// Keep running: stay connected to the realtime stream, push soon after local writes,
    /// retry by the backoff schedule; print state changes and syncs; stop on Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// With --watch: sync at least this often (500ms, 30s, 5m, 1h).
    #[arg(long, default_value = "30s", value_parser = ferry_client::engine::parse_duration, requires = "watch")]
    interval: Duration,
    /// With --watch: push at most this long after the first local write not yet pushed.
    #[arg(long, default_value = "300ms", value_parser = ferry_client::engine::parse_duration, requires = "watch")]
    debounce: Duration,
    /// With --watch: waits after failures, `device` (1s, 2s, 4s … 60s), `server` (30s, 1m, 2m,
    /// 5m, 10m … 1h) or a list like 1s,5s,30s.
    #[arg(long, default_value = "device", requires = "watch")]
    backoff: String,
    /// With --watch: do not use the realtime stream, poll at --interval only.
    #[arg(long, requires = "watch")]
    no_stream: bool,
    /// Push only: a one-way backup up (nothing is pulled).
    #[arg(long, conflicts_with_all = ["hydrate", "watch"])]
    seed: bool,
    /// Pull only: restore a new device from the server (nothing is pushed).
    #[arg(long, conflicts_with = "watch")]
    hydrate: bool,
    /// Sync only these tables (comma-separated); each selection keeps its own pull cursor.
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<String>>,
    /// Give up on a request to the server after this long (500ms, 30s, 2m).
    #[arg(long, default_value = "120s", value_parser = ferry_client::engine::parse_duration)]
    timeout: Duration,
    /// With --watch: do not move files (rows only).
    #[arg(long, requires = "watch")]
    no_files: bool,
    #[command(flatten)]
    files: FileLimits,
}

#[derive(Args)]
struct StatusArgs {
    #[arg(long)]
    db: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct QueueArgs {
    /// The replica's SQLite file.
    #[arg(long)]
    db: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    /// Put every set-aside change back in the queue (pushed at the next sync).
    #[arg(long, conflicts_with_all = ["clear_failed", "clear_completed_older_than"])]
    retry_failed: bool,
    /// Give up every set-aside change: its local values stay on this device only.
    #[arg(long, conflicts_with = "clear_completed_older_than")]
    clear_failed: bool,
    /// Forget completed syncs older than this many hours from the history.
    #[arg(long, value_name = "HOURS")]
    clear_completed_older_than: Option<f64>,
    /// How many recent syncs to show.
    #[arg(long, default_value_t = 10)]
    history: usize,
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::User { command: UserCommand::Add { name, server } } => {
            let (_, store) = server.open_store().await?;
            let user = store.add_user(&name).await?;
            eprintln!("created user '{}'", user.name);
            println!("{}", user.id);
            Ok(())
        }
        Command::Token { command: TokenCommand::Create { user, device, admin, role, server } } => {
            let (_, store) = server.open_store().await?;
            let t = store.create_device(&user, &device, admin, role.as_deref()).await?;
            eprintln!("created device '{device}' ({}) for user '{user}'; the token is shown only once:", t.device_id);
            println!("{}", t.token);
            Ok(())
        }
        Command::Token { command: TokenCommand::Revoke { user, device, json, server } } => {
            let (_, store) = server.open_store().await?;
            let ids = store.revoke_devices(Some(&user), &device).await?;
            if json {
                println!("{}", serde_json::json!({ "revoked": ids }));
            } else {
                eprintln!("revoked {} device(s) named '{device}' of user '{user}':", ids.len());
                for id in ids {
                    println!("{id}");
                }
            }
            Ok(())
        }
        Command::Sync(args) => sync(args).await,
        Command::Conflicts { command } => conflicts(command).await,
        Command::Status(args) => status(args),
        Command::Queue(args) => queue(args),
        Command::File { command } => file(command).await,
        Command::ServerStatus(args) => server_status(args).await,
        Command::Audit(args) => {
            let (_, store) = args.server.open_store().await?;
            audit::run(&store, args.json).await
        }
    }
}

async fn serve(args: ServerArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let (config, store) = args.open_store().await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is another server using it?", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(store = store.describe(), tables = store.schema().tables.len(), "store ready");
    let files = config.open_files().await.map_err(anyhow::Error::msg)?;
    println!("listening on http://{addr}");
    ferry_server::run(listener, store, config.max_body_bytes, files, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// `ferry sync --watch`: runs the client engine until Ctrl-C or SIGTERM.
async fn watch(args: SyncArgs, replica: Replica, remote: Option<Remote>) -> Result<()> {
    use ferry_client::engine::{Backoff, EngineOptions, Event};
    let backoff = match args.backoff.as_str() {
        "device" => Backoff::device(),
        "server" => Backoff::server(),
        list => Backoff::parse(list).map_err(|e| anyhow::anyhow!("--backoff: {e}"))?,
    };
    let server = remote.as_ref().map_or_else(|| "no server (offline only)".to_owned(), |r| r.base().to_owned());
    let opts = EngineOptions {
        remote,
        interval: args.interval,
        debounce: args.debounce,
        backoff,
        stream: !args.no_stream,
        sync: SyncOptions { pull_page: args.page_rows, tables: args.tables.clone(), ..SyncOptions::default() },
        ..EngineOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let json = args.json;
    // The stream's news of files wakes the file worker.
    let files_wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let wake = files_wake.clone();
    let printer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let Event::Files = e {
                wake.notify_one();
                continue;
            }
            let line = match (&e, json) {
                (Event::State { from, to, why, .. }, true) => {
                    serde_json::json!({"event": "state", "from": from, "to": to, "why": why}).to_string()
                }
                (Event::State { to, why, .. }, false) => format!("{}: {why}", to.name()),
                (Event::Completed(r), true) => serde_json::json!({"event": "completed", "report": r}).to_string(),
                (Event::Completed(r), false) if r.pushed + r.pulled + r.set_aside + r.refused > 0 => format!(
                    "synced: pushed {} rows, pulled {} ({} changed here){}{}{}",
                    r.pushed,
                    r.pulled,
                    r.pulled_changed,
                    if r.set_aside > 0 { format!(", {} set aside", r.set_aside) } else { String::new() },
                    if r.refused > 0 { format!(", {} refused as stale", r.refused) } else { String::new() },
                    if r.refused_pulls > 0 {
                        format!(", {} pulled rows that break a rule set aside", r.refused_pulls)
                    } else {
                        String::new()
                    },
                ),
                (Event::Error { message, retry_in, .. }, true) => serde_json::json!({
                    "event": "error", "message": message, "retry_in_ms": retry_in.as_millis() as u64
                })
                .to_string(),
                (Event::Error { message, retry_in, .. }, false) => {
                    format!("sync failed: {message}; retrying in {retry_in:?}")
                }
                (Event::Conflict { settled, refused }, true) => {
                    serde_json::json!({"event": "conflict", "settled": settled, "refused": refused}).to_string()
                }
                (Event::Conflict { settled, refused }, false) => {
                    format!(
                        "conflicts: {settled} settled here, {refused} refused as stale (ferry conflicts list --db …)"
                    )
                }
                (Event::Progress { message, .. }, false) if message.starts_with("set aside") => message.clone(),
                (Event::Stream { up, why }, true) => {
                    serde_json::json!({"event": "stream", "up": up, "why": why}).to_string()
                }
                _ => continue,
            };
            println!("{line}");
        }
    });
    // Files move beside the rows, never in their way: their own task, connection and limits.
    let (stop_files, files_stopped) = tokio::sync::oneshot::channel::<()>();
    let file_worker = match (&opts.remote, args.no_files) {
        (Some(remote), false) => {
            let fopts = ferry_client::files::FileOptions { wake: Some(files_wake.clone()), ..args.files.options()? };
            let (db, remote) = (args.db.clone(), remote.clone());
            Some(tokio::spawn(async move {
                let stopped = async {
                    let _ = files_stopped.await;
                };
                if let Err(e) =
                    ferry_client::files::run(&db, &remote, fopts, move |e| print_file_event(&e, json), stopped).await
                {
                    eprintln!("file transfers stopped: {e}");
                }
            }))
        }
        _ => None,
    };
    eprintln!("watching '{}' with {server}; Ctrl-C stops", args.db.display());
    let replica = ferry_client::engine::run(replica, opts, tx, shutdown_signal()).await;
    let _ = stop_files.send(());
    if let Some(w) = file_worker {
        let _ = w.await;
    }
    let replica = replica?;
    let _ = replica.set_meta(Key::EngineState, "STOPPED");
    let _ = printer.await;
    eprintln!("stopped");
    Ok(())
}

/// One line of the sync log for a file event.
fn print_file_event(e: &ferry_client::files::FileEvent, json: bool) {
    use ferry_client::files::FileEvent;
    let line = match (e, json) {
        (FileEvent::Transferred(t), true) => serde_json::json!({"event": "file", "transfer": t}).to_string(),
        (FileEvent::Transferred(t), false) => format!(
            "file {} {} {} bytes ({} moved in {} ms): {}{}",
            t.direction,
            t.hash,
            t.size,
            t.bytes,
            t.millis,
            t.outcome,
            t.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        ),
        (FileEvent::Warning(w), true) => serde_json::json!({"event": "warning", "message": w}).to_string(),
        (FileEvent::Warning(w), false) => format!("warning: {w}"),
        (FileEvent::Queue { queued, bytes_pending }, true) if *queued > 0 => {
            serde_json::json!({"event": "file_queue", "queued": queued, "bytes_pending": bytes_pending}).to_string()
        }
        _ => return,
    };
    println!("{line}");
}

async fn file(command: FileCommand) -> Result<()> {
    match command {
        FileCommand::Add { db, path, json } => {
            let replica = Replica::open(&db)?;
            let (hash, size) = replica.add_file(&path)?;
            if json {
                println!("{}", serde_json::json!({"hash": hash, "size": size, "path": replica.files().path(&hash)}));
            } else {
                eprintln!("added '{}' ({size} bytes) to {}", path.display(), replica.files().dir().display());
                println!("{hash}");
            }
        }
        FileCommand::Open { db, hash, out } => {
            let replica = open_replica(&db)?;
            let files = replica.files();
            let mut input = files.open(&hash)?;
            match out {
                Some(out) => {
                    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)
                        .with_context(|| format!("cannot write in '{}'", dir.display()))?;
                    let (got, _) = ferry_client::files::copy_hashing(&mut input, tmp.as_file_mut())?;
                    if got != hash {
                        bail!(
                            "file {hash} on this device is corrupt (its bytes hash to {got}); `ferry file sync` fetches it again once it is moved aside"
                        );
                    }
                    tmp.persist(&out).with_context(|| format!("cannot write '{}'", out.display()))?;
                }
                None => {
                    let (got, _) = ferry_client::files::copy_hashing(&mut input, &mut std::io::stdout().lock())?;
                    if got != hash {
                        bail!(
                            "file {hash} on this device is corrupt (its bytes hash to {got}); what was written is not the file"
                        );
                    }
                }
            }
        }
        FileCommand::Sync(args) => file_sync(args).await?,
        FileCommand::Pause { db } => {
            open_replica(&db)?.pause_files()?;
            eprintln!("file transfers paused on '{}'; `ferry file resume` lets them run again", db.display());
        }
        FileCommand::Resume { db } => {
            open_replica(&db)?.resume_files()?;
            eprintln!("file transfers resumed on '{}'", db.display());
        }
        FileCommand::Trigger { db } => {
            open_replica(&db)?.trigger_files()?;
            eprintln!("asked the file worker of '{}' to look now", db.display());
        }
        FileCommand::Status { db, json } => {
            let replica = open_replica(&db)?;
            let queue = replica.file_queue()?;
            let totals = replica.file_queue_totals()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"totals": totals, "files": queue}))?);
            } else {
                println!(
                    "{} files queued ({} up, {} down), {} bytes known pending{}",
                    totals.queued,
                    totals.uploads,
                    totals.downloads,
                    totals.bytes_pending,
                    if totals.paused { "; PAUSED" } else { "" }
                );
                for q in queue {
                    println!(
                        "{:4} {} {:>12} attempts {}{}",
                        if q.direction == ferry_client::files::Direction::Up { "up" } else { "down" },
                        q.hash,
                        q.size.map_or("?".to_owned(), |s| s.to_string()),
                        q.attempts,
                        q.last_error.map(|e| format!(" last error: {e}")).unwrap_or_default()
                    );
                }
            }
        }
        FileCommand::Log { db, limit, json } => {
            let log = open_replica(&db)?.file_log(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log)?);
            } else {
                for t in log {
                    println!(
                        "{} {:4} {} {} bytes, {} moved in {} ms: {}{}",
                        t.at,
                        t.direction,
                        t.hash,
                        t.size,
                        t.bytes,
                        t.millis,
                        t.outcome,
                        t.error.map(|e| format!(" ({e})")).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}

async fn file_sync(args: FileSyncArgs) -> Result<()> {
    let replica = open_replica(&args.db)?;
    let Some(server) = args.server.clone().or(replica.meta(Key::Server)?) else {
        bail!("no server given for '{}'; pass --server http://HOST:PORT (or set FERRY_SERVER)", args.db.display());
    };
    let Some(token) = args.token.as_deref() else {
        bail!("no token given; pass --token (from `ferry token create`) or set FERRY_TOKEN");
    };
    drop(replica);
    let remote = Remote::new(&server, token)?;
    if args.attempts == 0 {
        bail!("--attempts 0 would try nothing; give at least 1");
    }
    let opts = ferry_client::files::FileOptions { attempts: args.attempts, ..args.limits.options()? };
    let bar = if args.json || !std::io::stderr().is_terminal() { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("files {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("template"),
    );
    let (json, progress) = (args.json, bar.clone());
    let report = ferry_client::files::sync_files(&args.db, &remote, &opts, move |e| {
        use ferry_client::files::FileEvent;
        match &e {
            FileEvent::Progress { bytes, total } => {
                progress.set_length(*total);
                progress.set_position(*bytes);
            }
            // The bar shows progress; only what went wrong gets a line (`ferry file log` has all).
            FileEvent::Transferred(t) if !json && t.outcome == "ok" => {}
            FileEvent::Transferred(_) | FileEvent::Warning(_) if !json => {
                progress.suspend(|| print_file_event(&e, false))
            }
            FileEvent::Transferred(_) | FileEvent::Warning(_) => print_file_event(&e, true),
            _ => {}
        }
    })
    .await;
    bar.finish_and_clear();
    let report = report.with_context(|| format!("file sync of '{}' with {server} failed", args.db.display()))?;
    if args.json {
        let mut out = serde_json::to_value(&report)?;
        out["peak_rss_kb"] = peak_rss_kb().into();
        println!("{}", serde_json::to_string(&out)?);
    } else {
        eprintln!(
            "files: {} uploaded, {} downloaded, {} bytes in {} ms; {} waiting, {} failed",
            report.uploaded, report.downloaded, report.bytes, report.millis, report.waiting, report.failed
        );
    }
    if report.failed > 0 {
        bail!("{} files failed every attempt; see `ferry file status --db {}`", report.failed, args.db.display());
    }
    Ok(())
}

async fn server_status(args: RemoteArgs) -> Result<()> {
    let remote = Remote::new(&args.server, &args.token)?;
    let status = remote.admin_status().await.with_context(|| format!("status of {}", args.server))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let f = &status["files"];
        println!("server        {}", args.server);
        println!("file store    {}", f["store"].as_str().unwrap_or("?"));
        println!("stored        {} files, {} bytes", f["stored"], f["stored_bytes"]);
        println!("referenced    {} files, {} not uploaded yet", f["referenced"], f["missing"]);
        println!("uploading     {} files, {} bytes still to come", f["uploading"], f["uploading_bytes_pending"]);
        println!("transfers     {} now, at most {} at once", f["in_flight"], f["peak_in_flight"]);
        println!(
            "completed     {} uploads, {} downloads, {} uploads refused (hash mismatch)",
            f["uploads_completed"], f["downloads_completed"], f["uploads_refused"]
        );
        println!("upload limit  {} bytes", f["max_upload_bytes"]);
    }
    Ok(())
}

async fn sync(args: SyncArgs) -> Result<()> {
    if args.page_rows == 0 || args.page_rows > ferry_protocol::MAX_PAGE_ROWS {
        bail!("--page-rows {} must be from 1 to {}", args.page_rows, ferry_protocol::MAX_PAGE_ROWS);
    }
    let mut replica = Replica::open(&args.db)?;
    let server = match args.server.clone().or(replica.meta(Key::Server)?) {
        Some(s) => s,
        // Offline-only: the engine keeps the queue and says so.
        None if args.watch => return watch(args, replica, None).await,
        None => {
            bail!("no server given for '{}'; pass --server http://HOST:PORT (or set FERRY_SERVER)", args.db.display())
        }
    };
    let Some(token) = args.token.as_deref() else {
        bail!("no token given; pass --token (from `ferry token create`) or set FERRY_TOKEN");
    };
    let remote = Remote::with_timeout(&server, token, args.timeout)?;
    if args.watch {
        return watch(args, replica, Some(remote)).await;
    }
    let bar =
        if args.json || !std::io::stderr().is_terminal() { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("syncing with {server}"));
    let mut on_progress = |p: Progress| match p {
        Progress::Pushing { done, total } => {
            if bar.length() != Some(total) {
                bar.set_style(
                    ProgressStyle::with_template("push {bar:30} {pos}/{len} rows {per_sec} eta {eta}")
                        .expect("template"),
                );
                bar.set_length(total);
            }
            bar.set_position(done);
        }
        Progress::Pulling { rows } => {
            bar.set_style(ProgressStyle::with_template("{spinner} pull {pos} rows {per_sec}").expect("template"));
            bar.set_length(u64::MAX);
            bar.set_position(rows);
        }
        Progress::SetAside { table, key, message } => {
            if !args.json {
                bar.suspend(|| eprintln!("set aside {table} '{key}': {message}"));
            }
        }
    };
    let direction = match (args.seed, args.hydrate) {
        (true, _) => ferry_client::Direction::Up,
        (_, true) => ferry_client::Direction::Down,
        _ => ferry_client::Direction::Both,
    };
    let opts =
        SyncOptions { pull_page: args.page_rows, direction, tables: args.tables.clone(), ..SyncOptions::default() };
    let result = ferry_client::sync(&mut replica, &remote, &opts, &mut on_progress).await;
    bar.finish_and_clear();
    let report = result.with_context(|| format!("sync of '{}' with {server} failed", args.db.display()))?;
    if args.json {
        let mut out = serde_json::to_value(&report)?;
        out["peak_rss_kb"] = peak_rss_kb().into();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for change in &report.schema_changes {
            eprintln!("{change}");
        }
        println!(
            "synced '{}' with {server}: pushed {} rows ({} new to the server), pulled {} rows ({} changed here){}, in {} ms",
            args.db.display(),
            report.pushed,
            report.pushed_changed,
            report.pulled,
            report.pulled_changed,
            [
                (report.conflicts, "conflicts settled here (ferry conflicts list --db)"),
                (report.refused, "changes refused as stale (ferry conflicts refused --db)"),
                (report.set_aside, "changes refused as invalid and set aside (ferry queue --db)"),
                (report.refused_pulls, "pulled rows that break a rule, set aside (ferry queue --db)"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!(", {n} {what}"))
            .collect::<String>(),
            report.elapsed_ms
        );
    }
    Ok(())
}

async fn conflicts(command: ConflictsCommand) -> Result<()> {
    match command {
        ConflictsCommand::Refused { db, json } => {
            let replica = open_replica(&db)?;
            let refused = replica.refused()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&refused)?);
            } else if refused.is_empty() {
                println!("no refused changes");
            } else {
                for r in &refused {
                    println!("{}  {} '{}'  refused {}: {}", r.id, r.table, r.key, r.refused_at, r.message);
                    println!("    local   {}", r.local["values"]);
                    println!("    server  {}", r.current["values"]);
                }
            }
            Ok(())
        }
        ConflictsCommand::Settle { db, id, keep } => {
            let mut replica = open_replica(&db)?;
            replica.settle_refused(id, keep == "local")?;
            println!("settled {id}: kept the {} version", if keep == "local" { "local" } else { "server's" });
            Ok(())
        }
        ConflictsCommand::List { db: Some(db), open, resolved, json, .. } => {
            let replica = open_replica(&db)?;
            let settled = if open { Vec::new() } else { replica.local_conflicts()? };
            let refused = if resolved { Vec::new() } else { replica.refused()? };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"open": refused, "settled": settled}))?
                );
                return Ok(());
            }
            if settled.is_empty() && refused.is_empty() {
                println!("no conflicts");
            }
            for r in &refused {
                println!(
                    "{:>6}  {}  {} '{}'  open: refused as stale (`ferry conflicts refused`)",
                    r.id, r.refused_at, r.table, r.key
                );
            }
            for c in &settled {
                println!(
                    "settled #{}  {}  {} '{}'  field {}: local {} / remote {}  by {}",
                    c.id,
                    c.detected_at,
                    c.table,
                    c.key,
                    c.field,
                    c.local_value.as_deref().unwrap_or("-"),
                    c.remote_value.as_deref().unwrap_or("-"),
                    c.resolved_by.as_deref().unwrap_or("newest-wins")
                );
            }
            Ok(())
        }
        ConflictsCommand::List { db: None, open, resolved, json, server } => {
            let (_, store) = server.open_store().await?;
            let filter = match (open, resolved) {
                (true, _) => ConflictFilter::Open,
                (_, true) => ConflictFilter::Resolved,
                _ => ConflictFilter::All,
            };
            let list = store.conflicts(filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if list.is_empty() {
                println!("no conflicts");
            }
            for c in &list {
                let state = match (&c.resolved_by, &c.resolved_at) {
                    (Some(by), Some(at)) => format!("resolved by {by} at {at}"),
                    _ => "open".to_owned(),
                };
                println!(
                    "{:>6}  {}  {} '{}'  fields: {}  {state}",
                    c.id,
                    c.detected_at,
                    c.table,
                    c.key,
                    c.fields.join(", ")
                );
            }
            Ok(())
        }
        ConflictsCommand::Resolve { id, keep, json, server } => {
            let (_, store) = server.open_store().await?;
            let keep = if keep == "stored" { Keep::Stored } else { Keep::Incoming };
            let c = store.resolve_conflict(id, keep).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!(
                    "resolved conflict {} on {} '{}': kept the {} version of {}",
                    c.id,
                    c.table,
                    c.key,
                    keep.name(),
                    c.fields.join(", ")
                );
            }
            Ok(())
        }
        ConflictsCommand::Show { id, json, server } => {
            let (_, store) = server.open_store().await?;
            let Some(c) = store.conflict(id).await? else {
                bail!("no conflict with id {id}; `ferry conflicts list` shows the ids");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
                return Ok(());
            }
            println!("conflict {} on {} '{}' ({}, strategy {})", c.id, c.table, c.key, c.kind, c.strategy);
            println!("detected   {}", c.detected_at);
            match (&c.resolved_by, &c.resolved_at) {
                (Some(by), Some(at)) => println!("resolved   by {by} at {at}"),
                _ => println!("resolved   no"),
            }
            for field in &c.fields {
                let kept = c.winner.get(field).map_or("?", String::as_str);
                println!("field {field}: kept the {kept} value");
                println!(
                    "  stored   {}  (clock {}, from {})",
                    c.stored["values"][field], c.stored["clocks"][field], c.stored["origin"]
                );
                println!(
                    "  incoming {}  (clock {}, from {})",
                    c.incoming["values"][field], c.incoming["clocks"][field], c.incoming["origin"]
                );
            }
            Ok(())
        }
    }
}

/// The process's peak resident set size (Linux `VmHWM`), for `--json` reports and benchmarks.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn open_replica(db: &std::path::Path) -> Result<Replica> {
    if !db.exists() {
        bail!("no replica at '{}'; run `ferry sync --db {}` first", db.display(), db.display());
    }
    Ok(Replica::open(db)?)
}

fn queue(args: QueueArgs) -> Result<()> {
    let mut replica = open_replica(&args.db)?;
    if args.retry_failed {
        println!("{} set-aside changes back in the queue; they are pushed at the next sync", replica.retry_failed()?);
        return Ok(());
    }
    if args.clear_failed {
        println!("{} set-aside changes given up; their local values stay on this device", replica.clear_failed()?);
        return Ok(());
    }
    if let Some(hours) = args.clear_completed_older_than {
        if !(hours >= 0.0 && hours.is_finite()) {
            bail!("--clear-completed-older-than {hours} must be a number of hours, 0 or more");
        }
        println!("{} completed syncs older than {hours} h forgotten", replica.clear_completed_older_than(hours)?);
        return Ok(());
    }
    let status = replica.status()?;
    let failed = replica.failed()?;
    let refused_pulls = replica.refused_pulls()?;
    let history = replica.history(args.history)?;
    if args.json {
        let out = serde_json::json!({
            "pending": status.pending,
            "failed": failed,
            "refused_pulls": refused_pulls,
            "conflicted": status.conflicted,
            "last_sync": replica.last_completed()?,
            "history": history,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("pending      {} rows", status.pending);
    println!("conflicted   {} (ferry conflicts refused --db …)", status.conflicted);
    println!("failed       {} set aside", failed.len());
    for f in &failed {
        println!("  #{} {} '{}' ({} {}) at {}: {}", f.id, f.table, f.key, f.status, f.code, f.failed_at, f.message);
    }
    println!(
        "refused      {} pulled rows that break a rule, set aside (fix them on the server: ferry audit)",
        refused_pulls.len()
    );
    for r in &refused_pulls {
        println!("  {} '{}' at {}: {}", r.table, ferry_core::shown(&r.key), r.refused_at, r.message);
    }
    println!("last sync    {}", replica.last_completed()?.as_deref().unwrap_or("never completed"));
    for h in &history {
        let what = match &h.error {
            Some(e) => format!("failed: {e}"),
            None => format!("pushed {}, pulled {}, set aside {}", h.pushed, h.pulled, h.set_aside),
        };
        println!("  {} → {}  {}", h.started_at, h.finished_at, what);
    }
    Ok(())
}

fn status(args: StatusArgs) -> Result<()> {
    let replica = open_replica(&args.db)?;
    let s = replica.status()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("replica      {}", args.db.display());
        println!("server       {}", s.server.as_deref().unwrap_or("none (never synced)"));
        println!("connection   {}", s.connection.as_deref().unwrap_or("no engine has run (ferry sync --watch)"));
        if let Some(why) = &s.stopped_because {
            println!("stopped      {why}");
        }
        println!("user         {}", s.user_id.as_deref().unwrap_or("-"));
        println!("last sync    {}", s.last_sync.as_deref().unwrap_or("never"));
        println!("pending      {} rows ({} writes not yet stamped)", s.pending, s.unstamped);
        println!("conflicts    {}", s.conflicts);
        println!("conflicted   {} local changes refused as stale (see `ferry conflicts refused`)", s.conflicted);
        println!("failed       {} local changes refused as invalid, set aside (see `ferry queue`)", s.failed);
        println!("refused      {} pulled rows that break a rule, set aside (see `ferry queue`)", s.refused_pulls);
        println!("rejected     {} (see _ferry_rejected)", s.rejected);
        println!(
            "files        {} queued ({} up, {} down), {} bytes pending{}{}",
            s.files.queued,
            s.files.uploads,
            s.files.downloads,
            s.files.bytes_pending,
            if s.files.failing > 0 { format!(", {} failing", s.files.failing) } else { String::new() },
            if s.files.paused { ", PAUSED" } else { "" }
        );
        println!("cursor       {}", s.cursor);
        println!("tables       {}", if s.tables.is_empty() { "-".to_owned() } else { s.tables.join(", ") });
    }
    Ok(())
}
