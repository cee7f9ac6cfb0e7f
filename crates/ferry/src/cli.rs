//! The command line: every command, flag and its help text, as clap parses them. What a
//! command does is in [`crate::commands`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferry_client::SyncOptions;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Two-way sync between SQLite replicas and a Ferry server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the sync server (embedded SQLite store in data_dir, or PostgreSQL with --database).
    Serve(ServeArgs),
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
    /// The dashboard's admin password: `ferry admin passwd` sets it (or removes it).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Devices: list them (with user, role, last seen, revoked), revoke one by id.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
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
    /// Server peering: each link's state (role, connection, lag, last success) and sync log.
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Remove history older than a horizon (tombstones, old reaches, batch records) from the
    /// server's store; devices and peers whose cursor is older must re-sync.
    Compact(CompactArgs),
    /// Compare this server's store with a peer's, table by table (row counts, digests over
    /// keys and versions), list the rows that differ and, with --repair, mend them both ways.
    /// Exits 1 when rows differ and were not repaired.
    Integrity(IntegrityArgs),
    /// Move a whole data set between this server and a peer (push: ours to the peer; pull:
    /// the peer's here) as a snapshot: phases snapshot, transfer, restore (through the merge
    /// rules), verify; progress, cancel, resume, history.
    FullSync {
        #[command(subcommand)]
        command: FullSyncCommand,
    },
    /// A running server's status (file store and transfer queue), with an admin token.
    ServerStatus(RemoteArgs),
    /// Check every row the server's store holds against the rules pushes must pass (zero
    /// clocks, NOT NULL columns, types, limits) and name the rows that break one; exits 1 then.
    Audit(AuditArgs),
}

#[derive(Args)]
pub struct CompactArgs {
    /// Remove what is older than this (30d, 12h, …): rows deleted before then lose their
    /// tombstones. Devices and peers offline longer must re-sync (devices do it by themselves).
    #[arg(long = "older-than", value_parser = ferry_client::engine::parse_duration)]
    pub older_than: std::time::Duration,
    /// Print {"tombstones", "exits", "batches", "horizon"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args)]
pub struct IntegrityArgs {
    /// The peer (`[peers.NAME]` in ferry.toml).
    #[arg(long)]
    pub peer: String,
    /// Only these tables (comma-separated; default: every table that crosses the link).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Send the newer version of each differing row both ways, through the merge rules, and
    /// check again.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON (as POST /v1/admin/integrity answers).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Subcommand)]
pub enum FullSyncCommand {
    /// This server's data set to the peer.
    Push(FullSyncArgs),
    /// The peer's data set to this server.
    Pull(FullSyncArgs),
    /// One run (the newest when no id is given): phase, progress, outcome.
    Status {
        id: Option<String>,
        /// Print the run as GET /v1/admin/full-sync/{id} answers.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The runs, newest first: direction, method, phase, rows, bytes, speed, start, end, outcome.
    History {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print {"runs": [...]}, as GET /v1/admin/full-sync answers.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Ask a running full sync to stop (a restore in progress rolls its table back).
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Mark runs whose process stopped reporting (killed, crashed) as failed, so that a new
    /// one may start.
    Clear {
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
pub struct FullSyncArgs {
    /// The peer (`[peers.NAME]` in ferry.toml).
    #[arg(long)]
    pub peer: String,
    /// Only these tables (comma-separated; default: every table that crosses the link).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Compress the snapshot's chunks (zstd).
    #[arg(long)]
    pub compress: bool,
    /// Compare both sides after the restore (an integrity check).
    #[arg(long)]
    pub verify: bool,
    /// POST the finished run as JSON to this URL.
    #[arg(long)]
    pub notify: Option<String>,
    /// Print the run as a JSON line at each report (twice a second), the last one final.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args)]
pub struct AuditArgs {
    /// One JSON document: {"rows": N, "bad": [{"table", "key", "problem"}]}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// A server reached over HTTP.
#[derive(Args)]
pub struct RemoteArgs {
    /// Server URL.
    #[arg(long, env = "FERRY_SERVER")]
    pub server: String,
    /// Device token (`ferry token create`; the admin endpoints need `--admin`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum FileCommand {
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

/// Where a replica syncs: a server (by default the one it last synced with) and a token.
#[derive(Args, Clone)]
pub struct ReplicaServer {
    /// Server URL; defaults to the one this replica last synced with.
    #[arg(long, env = "FERRY_SERVER")]
    pub server: Option<String>,
    /// Device token (from `ferry token create`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Args, Clone)]
pub struct FileSyncArgs {
    /// The replica file.
    #[arg(long)]
    pub db: PathBuf,
    #[command(flatten)]
    pub to: ReplicaServer,
    #[command(flatten)]
    pub limits: FileLimits,
    /// Tries per file in this run (failures wait 1 s, 2 s, 4 s … between tries).
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How files move: at once, and how fast.
#[derive(Args, Clone)]
pub struct FileLimits {
    /// Files moved at once.
    #[arg(long = "files-concurrency", default_value_t = ferry_client::files::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Rate limit over all file transfers, in KB/s (1 KB = 1024 bytes); none by default.
    #[arg(long = "files-rate")]
    pub rate_kbps: Option<u64>,
    /// With --watch: look for files to move at least this often (it also looks when rows
    /// change, on `ferry file trigger` and on resume).
    #[arg(long = "files-interval", default_value = "10s", value_parser = ferry_client::engine::parse_duration)]
    pub files_interval: Duration,
}

#[derive(Subcommand)]
pub enum ConflictsCommand {
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
        #[arg(long = "use", value_enum)]
        keep: Version,
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
        #[arg(long, value_enum)]
        keep: Settled,
    },
}

/// Which version of a server conflict to keep (`ferry conflicts resolve --use`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Version {
    Stored,
    Incoming,
}

impl From<Version> for ferry_protocol::ConflictSide {
    fn from(v: Version) -> Self {
        match v {
            Version::Stored => ferry_protocol::ConflictSide::Stored,
            Version::Incoming => ferry_protocol::ConflictSide::Incoming,
        }
    }
}

/// Which version of a refused change a replica keeps (`ferry conflicts settle --keep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Settled {
    Local,
    Server,
}

/// `ferry serve`: the server's configuration, and how it logs.
#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Log lines as text (for people) or as one JSON object per line (for collectors).
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How `ferry serve` writes its log (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the server's configuration comes from. Every `[server]` key of the file can also
/// be given as a flag or an environment variable, which win over the file.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Config file (ferry.toml).
    #[arg(short = 'c', long = "config", env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free port).
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<String>,
    /// PostgreSQL store: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (default: the
    /// embedded SQLite store in data_dir).
    #[arg(long, env = "FERRY_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Schema file: CREATE TABLE statements in Ferry's portable subset.
    #[arg(long, env = "FERRY_SCHEMA")]
    pub schema: Option<PathBuf>,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, env = "FERRY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; the last line printed is the new user's id.
    Add {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Set the password that signs in to the dashboard (/admin) besides admin tokens: asked
    /// twice on a terminal, else read from the first line of standard input. At least 12
    /// characters; kept in the store as an Argon2id hash. A new password signs out the
    /// sessions the old one opened.
    Passwd {
        /// Remove the password (signing in then takes an admin token).
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
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

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Each link (or the one named): role, connection state and backoff, last heartbeat, lag
    /// each way in ms and changes, file queue, last success.
    Status {
        /// Only this link (`[peers.NAME]`, or a peer linking to this server by its device name).
        name: Option<String>,
        /// Print {"role", "peers": [...]}, as GET /v1/admin/sync/status answers.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Sync everything with a peer again, both ways, at the link's next run (a link a
    /// compaction passed catches up by difference by itself; this crosses every row again:
    /// docs/peering.md, "A peer behind the horizon").
    Resync {
        /// The link (`[peers.NAME]`).
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The sync log, newest first: each run's type, direction, status, rows, duration, error.
    Log {
        /// Only this link's entries.
        name: Option<String>,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print {"entries": [...]}, as GET /v1/admin/sync/log answers.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// List devices: id, name, user, role, created, last seen, revoked.
    List {
        /// Only this user's devices (name or id).
        #[arg(long)]
        user: Option<String>,
        /// Print {"devices": [...]}, as GET /v1/admin/devices answers.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a device by id: its tokens stop working at once, its open streams close within
    /// seconds.
    Revoke {
        /// The device's id (from `ferry device list`).
        id: String,
        /// Print {"revoked": [id]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
pub struct SyncArgs {
    /// The replica file (created if missing).
    #[arg(long)]
    pub db: PathBuf,
    #[command(flatten)]
    pub to: ReplicaServer,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Rows per pull page.
    #[arg(long, default_value_t = SyncOptions::default().pull_page)]
    pub page_rows: usize,
    /// Keep running: stay connected to the realtime stream, push soon after local writes,
    /// retry by the backoff schedule; print state changes and syncs; stop on Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: sync at least this often (500ms, 30s, 5m, 1h).
    #[arg(long, default_value = "30s", value_parser = ferry_client::engine::parse_duration, requires = "watch")]
    pub interval: Duration,
    /// With --watch: push at most this long after the first local write not yet pushed.
    #[arg(long, default_value = "300ms", value_parser = ferry_client::engine::parse_duration, requires = "watch")]
    pub debounce: Duration,
    /// With --watch: waits after failures, `device` (1s, 2s, 4s … 60s), `server` (30s, 1m, 2m,
    /// 5m, 10m … 1h) or a list like 1s,5s,30s.
    #[arg(long, default_value = "device", requires = "watch")]
    pub backoff: String,
    /// With --watch: do not use the realtime stream, poll at --interval only.
    #[arg(long, requires = "watch")]
    pub no_stream: bool,
    /// Push only: a one-way backup up (nothing is pulled).
    #[arg(long, conflicts_with_all = ["hydrate", "watch"])]
    pub seed: bool,
    /// Pull only: restore a new device from the server (nothing is pushed).
    #[arg(long, conflicts_with = "watch")]
    pub hydrate: bool,
    /// Sync only these tables (comma-separated); each selection keeps its own pull cursor.
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// A first pull reads the server's feed page by page instead of taking its snapshot of
    /// what this device may read (one consistent moment, in checksummed chunks).
    #[arg(long)]
    pub no_snapshot: bool,
    /// Read only the rows of a table a predicate covers, within what the table's read rule
    /// allows: "formations WHERE group_id = '…'" (repeat for several). Kept in the replica and
    /// renewed by each sync that names it; rows move in and out as subscriptions change.
    #[arg(long, value_name = "TABLE WHERE PREDICATE")]
    pub subscribe: Vec<String>,
    /// Drop a subscription, and its rows from the replica, when no sync has named it for
    /// this long (500ms, 30s, 2m, 1h).
    #[arg(long, default_value = "168h", value_parser = ferry_client::engine::parse_duration)]
    pub subscription_ttl: Duration,
    /// Give up on a request to the server after this long (500ms, 30s, 2m).
    #[arg(long, default_value = "120s", value_parser = ferry_client::engine::parse_duration)]
    pub timeout: Duration,
    /// With --watch: do not move files (rows only).
    #[arg(long, requires = "watch")]
    pub no_files: bool,
    #[command(flatten)]
    pub files: FileLimits,
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct QueueArgs {
    /// The replica's SQLite file.
    #[arg(long)]
    pub db: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// Put every set-aside change back in the queue (pushed at the next sync).
    #[arg(long, conflicts_with_all = ["clear_failed", "clear_completed_older_than"])]
    pub retry_failed: bool,
    /// Give up every set-aside change: its local values stay on this device only.
    #[arg(long, conflicts_with = "clear_completed_older_than")]
    pub clear_failed: bool,
    /// Forget completed syncs older than this many hours from the history.
    #[arg(long, value_name = "HOURS")]
    pub clear_completed_older_than: Option<f64>,
    /// How many recent syncs to show.
    #[arg(long, default_value_t = 10)]
    pub history: usize,
}
