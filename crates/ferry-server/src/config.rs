//! `ferry.toml`: the `[server]` section and per-table options.
//!
//! Every `[server]` key can also come from a flag or an environment variable
//! (`FERRY_LISTEN`, `FERRY_DATABASE`, `FERRY_DATA_DIR`, `FERRY_SCHEMA`, `FERRY_MAX_BODY_BYTES`); a flag or
//! variable wins over the file, the file over the defaults. Relative paths in the file are
//! relative to the file's directory, so a config works from any working directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_core::schema::{ConflictStrategy, Schema, TableOptions};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    tables: BTreeMap<String, TableSection>,
    /// Where verified files are kept (`docs/files.md`).
    #[serde(default)]
    files: ferry_files::FileStoreConfig,
    /// Other servers this one links to (`docs/peering.md`).
    #[serde(default)]
    peers: BTreeMap<String, PeerSection>,
    /// When the links' state raises alerts.
    #[serde(default)]
    alerts: AlertsSection,
    /// Full syncs (`docs/full-sync.md`).
    #[serde(default)]
    full_sync: FullSyncSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullSyncSection {
    /// Per table, a predicate over its columns: rows it holds true for (demo data) are left
    /// out of full syncs.
    #[serde(default)]
    exclude: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsSection {
    lag_warning: Option<String>,
    file_queue_warning: Option<u64>,
    disconnected_critical: Option<String>,
    health_max_lag: Option<String>,
    /// `[[alerts.webhook]]`: where alerts and full syncs' outcomes are POSTed.
    #[serde(default)]
    webhook: Vec<WebhookSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSection {
    url: String,
    secret: String,
    events: Option<Vec<String>>,
    /// The waits between attempts, like `1s,4s,15s,60s` (the default).
    retry: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerSection {
    url: String,
    token: String,
    tables: Option<Vec<String>>,
    #[serde(default)]
    exclude_tables: Vec<String>,
    interval: Option<String>,
    backoff: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    database: Option<String>,
    data_dir: Option<PathBuf>,
    schema: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    /// `main` (on site) or `cloud`: needed to link with peers.
    role: Option<String>,
    /// How long the sync log keeps entries (default 30 days).
    sync_log_keep: Option<String>,
    /// History older than this is compacted away every hour (off when absent).
    compact_older_than: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSection {
    owner: Option<String>,
    /// Who may read a row: a rule over the row (`docs/sharing.md`).
    read: Option<String>,
    /// Who may write a row: a rule over the row (`docs/sharing.md`).
    write: Option<String>,
    /// Rows matching it never leave the server.
    filter: Option<String>,
    /// Devices may not write the table.
    #[serde(default)]
    read_only: bool,
    /// The table stays on devices.
    #[serde(default)]
    local_only: bool,
    /// Columns that stay on devices.
    #[serde(default)]
    local_only_columns: Vec<String>,
    conflict: Option<String>,
    authority: Option<String>,
    #[serde(default)]
    files: Vec<String>,
}

/// Values given as flags or environment variables; `None` falls back to the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub schema: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
}

/// The server's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `postgres://…` for the PostgreSQL store; `None` for the embedded store in `data_dir`.
    pub database: Option<String>,
    pub data_dir: PathBuf,
    pub schema_path: PathBuf,
    pub max_body_bytes: usize,
    pub tables: BTreeMap<String, TableOptions>,
    /// The `[files]` section; relative `dir` already resolved against the file's directory.
    pub files: ferry_files::FileStoreConfig,
    /// `[server] role`: `main` or `cloud` (see [`ferry_store::SERVER_ROLES`]).
    pub role: Option<String>,
    /// How long the sync log keeps entries.
    pub sync_log_keep: Duration,
    /// `[server] compact_older_than`: `ferry serve` compacts history older than this every
    /// hour (see `ferry compact`).
    pub compact_older_than: Option<Duration>,
    /// The `[peers.NAME]` sections: the links this server starts.
    pub peers: Vec<PeerConfig>,
    /// The `[alerts]` section.
    pub alerts: AlertThresholds,
    /// `[[alerts.webhook]]`: where alerts and full syncs' outcomes are POSTed.
    pub webhooks: ferry_peer::webhooks::Hooks,
    /// `[full_sync.exclude]`: per table, a predicate; rows it holds true for are left out of
    /// full syncs (checked against the schema when a full sync starts).
    pub full_sync_exclude: BTreeMap<String, String>,
}

/// The `[[alerts.webhook]]` sections, checked: an http(s) URL, a secret, known events, a
/// retry schedule within bounds.
fn webhooks(sections: Vec<WebhookSection>) -> Result<ferry_peer::webhooks::Hooks, String> {
    use ferry_peer::webhooks::{BACKOFF, EVENTS, MAX_RETRIES, MAX_RETRY_WAIT, Webhook};
    let mut hooks = Vec::new();
    for (n, w) in sections.into_iter().enumerate() {
        let here = format!("[[alerts.webhook]] number {}", n + 1);
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            return Err(format!("{here}: url '{}' must start with http:// or https://", ferry_core::shown(&w.url)));
        }
        if w.secret.len() < 16 {
            return Err(format!(
                "{here}: secret must be at least 16 characters (the receiver checks each delivery's HMAC with it); make one with `openssl rand -hex 32`"
            ));
        }
        let events = w.events.unwrap_or_else(|| EVENTS.iter().map(|e| (*e).to_owned()).collect());
        if let Some(bad) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(format!("{here}: unknown event '{}'; use {}", ferry_core::shown(bad), EVENTS.join(" or ")));
        }
        let retry = match w.retry {
            None => BACKOFF.to_vec(),
            Some(r) => ferry_core::duration::parse_schedule(&r).map_err(|e| format!("{here}: retry: {e}"))?,
        };
        if retry.len() > MAX_RETRIES || retry.iter().any(|d| *d > MAX_RETRY_WAIT) {
            return Err(format!(
                "{here}: retry lists {} waits, the longest {:?}; at most {MAX_RETRIES} waits of at most 1h each (like \"1s,4s,15s,60s\")",
                retry.len(),
                retry.iter().max().copied().unwrap_or_default()
            ));
        }
        hooks.push(Webhook { url: w.url, secret: w.secret, events, retry });
    }
    Ok(ferry_peer::webhooks::Hooks::new(hooks))
}

/// When a link's state raises an alert (`[alerts]`), and what `/health/sync` accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertThresholds {
    /// A warning when changes have waited this long to cross (default 1 h).
    pub lag_warning: Duration,
    /// A warning when more files than this wait to cross (default 500).
    pub file_queue_warning: u64,
    /// Critical when a link has been down this long (default 24 h).
    pub disconnected_critical: Duration,
    /// `/health/sync` answers 503 when a link's lag reaches this (default 60 s).
    pub health_max_lag: Duration,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            lag_warning: Duration::from_secs(3600),
            file_queue_warning: 500,
            disconnected_critical: Duration::from_secs(86_400),
            health_max_lag: Duration::from_secs(60),
        }
    }
}

/// Why [`peer_link`] found no link.
#[derive(Debug, thiserror::Error)]
pub enum PeerLinkError {
    /// No `[peers.NAME]` section has that name.
    #[error("{0}")]
    Unknown(String),
    /// A table asked for does not cross the link.
    #[error("{0}")]
    Invalid(String),
}

/// The link to the peer `name` among `peers` (rows only), its tables narrowed to `tables`
/// when given: what an operator's integrity check or full sync runs over.
///
/// # Errors
/// No such peer, or a table that does not cross its link.
pub fn peer_link(
    peers: &[PeerConfig],
    name: &str,
    tables: Option<&[String]>,
    synced: &[&str],
    log_keep: Duration,
) -> Result<ferry_peer::Link, PeerLinkError> {
    let peer = peers.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        PeerLinkError::Unknown(format!(
            "no peer '{}' in ferry.toml; {}",
            ferry_core::shown(name),
            if known.is_empty() {
                "it has no [peers.NAME] section (docs/peering.md)".to_owned()
            } else {
                format!("its peers are: {}", known.join(", "))
            }
        ))
    })?;
    let mut link = peer.link(synced, log_keep, None).map_err(PeerLinkError::Invalid)?;
    if let Some(only) = tables {
        if only.is_empty() {
            return Err(PeerLinkError::Invalid("the list of tables is empty; name tables or leave it out".into()));
        }
        if let Some(t) = only.iter().find(|t| !link.tables.contains(t)) {
            return Err(PeerLinkError::Invalid(format!(
                "table '{}' does not cross the link to '{name}'; its tables are: {}",
                ferry_core::shown(t),
                link.tables.join(", ")
            )));
        }
        link.tables = only.to_vec();
    }
    Ok(link)
}

/// One `[peers.NAME]` section: another server this one links to.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerConfig {
    pub name: String,
    /// The other server's address, `http(s)://host:port`.
    pub url: String,
    /// A token created on the other server with a server role (`--role main`).
    pub token: String,
    /// Only these tables cross (all synced tables when `None`)…
    pub tables: Option<Vec<String>>,
    /// …but not these (site-local tables stay home).
    pub exclude_tables: Vec<String>,
    /// How often the link runs when nothing wakes it sooner.
    pub interval: Duration,
    /// The waits after failures in a row (the last repeats).
    pub backoff: Vec<Duration>,
    pub enabled: bool,
}

impl PeerConfig {
    /// The link this section describes, over the schema's `synced` tables; `files`: this
    /// server's file store, when files cross with their rows.
    ///
    /// # Errors
    /// As [`PeerConfig::crossing`].
    pub fn link(
        &self,
        synced: &[&str],
        log_keep: Duration,
        files: Option<std::sync::Arc<ferry_peer::LocalFiles>>,
    ) -> Result<ferry_peer::Link, String> {
        Ok(ferry_peer::Link {
            name: self.name.clone(),
            url: self.url.clone(),
            token: self.token.clone(),
            tables: self.crossing(synced)?,
            interval: self.interval,
            backoff: ferry_client::engine::Backoff { steps: self.backoff.clone() },
            enabled: self.enabled,
            log_keep,
            files,
        })
    }

    /// The tables that cross the link, of the schema's synced `tables`.
    ///
    /// # Errors
    /// A table named in `tables` or `exclude_tables` the schema does not sync.
    pub fn crossing(&self, synced: &[&str]) -> Result<Vec<String>, String> {
        for t in self.tables.iter().flatten().chain(&self.exclude_tables) {
            if !synced.contains(&t.as_str()) {
                return Err(format!(
                    "[peers.{}] names table '{t}', which the schema does not sync; the synced tables are: {}",
                    self.name,
                    synced.join(", ")
                ));
            }
        }
        Ok(synced
            .iter()
            .filter(|t| self.tables.as_ref().is_none_or(|only| only.iter().any(|o| o == *t)))
            .filter(|t| !self.exclude_tables.iter().any(|x| x == *t))
            .map(|t| t.to_string())
            .collect())
    }
}

/// A link runs every 5 s when nothing wakes it sooner.
pub const DEFAULT_PEER_INTERVAL: Duration = Duration::from_secs(5);
/// The sync log keeps 30 days.
pub const DEFAULT_SYNC_LOG_KEEP: Duration = Duration::from_secs(30 * 86_400);
/// The server backoff schedule: 30 s, 1 min, 2 min, 5 min, 10 min, 20 min, 40 min, then
/// every hour.
pub const SERVER_BACKOFF_S: [u64; 8] = [30, 60, 120, 300, 600, 1200, 2400, 3600];

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{path}': {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file '{path}': {message}")]
    Parse { path: PathBuf, message: String },
    #[error("listen address '{0}' is not HOST:PORT (for example 127.0.0.1:7070)")]
    Listen(String),
    #[error("no schema given; set `schema = \"schema.sql\"` in [server], pass --schema or set FERRY_SCHEMA")]
    NoSchema,
    #[error("cannot read schema file '{path}': {source}")]
    SchemaRead { path: PathBuf, source: std::io::Error },
    #[error("schema '{path}': {source}")]
    Schema { path: PathBuf, source: ferry_core::schema::SchemaError },
}

impl Config {
    /// Reads `file` (if given) and applies `overrides`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file and the bad key or value.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, ConfigError> {
        let (parsed, base) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let parsed: FileConfig = toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
                (parsed, path.parent().map(Path::to_path_buf).unwrap_or_default())
            }
            None => (FileConfig::default(), PathBuf::new()),
        };
        let from_file = |p: Option<PathBuf>| p.map(|p| if p.is_absolute() { p } else { base.join(p) });
        let listen_text = overrides.listen.or(parsed.server.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text.parse().map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let database = overrides.database.or(parsed.server.database).filter(|d| !d.is_empty());
        let data_dir =
            overrides.data_dir.or_else(|| from_file(parsed.server.data_dir)).unwrap_or_else(|| base.join("ferry-data"));
        let schema_path = overrides.schema.or_else(|| from_file(parsed.server.schema)).ok_or(ConfigError::NoSchema)?;
        let max_body_bytes =
            overrides.max_body_bytes.or(parsed.server.max_body_bytes).unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let mut tables = BTreeMap::new();
        for (name, t) in parsed.tables {
            let conflict = match t.conflict.as_deref() {
                None => ConflictStrategy::default(),
                Some(s) => ConflictStrategy::parse(s).map_err(|message| ConfigError::Parse {
                    path: file.map(Path::to_path_buf).unwrap_or_default(),
                    message: format!("[tables.{name}] {message}"),
                })?,
            };
            let options = TableOptions {
                owner: t.owner,
                read: t.read,
                write: t.write,
                filter: t.filter,
                read_only: t.read_only,
                local_only: t.local_only,
                local_only_columns: t.local_only_columns,
                conflict,
                authority: t.authority,
                files: t.files,
            };
            tables.insert(name, options);
        }
        let mut files = parsed.files;
        files.dir = from_file(files.dir);
        let bad =
            |message: String| ConfigError::Parse { path: file.map(Path::to_path_buf).unwrap_or_default(), message };
        let role = parsed.server.role;
        if let Some(r) = &role
            && !ferry_store::SERVER_ROLES.contains(&r.as_str())
        {
            return Err(bad(format!(
                "[server] role = \"{}\" is not a server role; use one of: {}",
                ferry_core::shown(r),
                ferry_store::SERVER_ROLES.join(", ")
            )));
        }
        let sync_log_keep = match parsed.server.sync_log_keep {
            None => DEFAULT_SYNC_LOG_KEEP,
            Some(k) => {
                ferry_core::duration::parse_duration(&k).map_err(|e| bad(format!("[server] sync_log_keep: {e}")))?
            }
        };
        let defaults = AlertThresholds::default();
        let duration = |key: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(v) => ferry_core::duration::parse_duration(&v).map_err(|e| bad(format!("[alerts] {key}: {e}"))),
        };
        let a = parsed.alerts;
        let webhooks = webhooks(a.webhook).map_err(bad)?;
        let alerts = AlertThresholds {
            lag_warning: duration("lag_warning", a.lag_warning, defaults.lag_warning)?,
            file_queue_warning: a.file_queue_warning.unwrap_or(defaults.file_queue_warning),
            disconnected_critical: duration(
                "disconnected_critical",
                a.disconnected_critical,
                defaults.disconnected_critical,
            )?,
            health_max_lag: duration("health_max_lag", a.health_max_lag, defaults.health_max_lag)?,
        };
        let compact_older_than = parsed
            .server
            .compact_older_than
            .map(|d| ferry_core::duration::parse_duration(&d))
            .transpose()
            .map_err(|e| bad(format!("[server] compact_older_than: {e}")))?;
        let mut peers = Vec::new();
        for (name, p) in parsed.peers {
            let here = format!("[peers.{name}]");
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(format!(
                    "{here}: a peer's name must be 1 to 64 letters, digits, '-' or '_' (it names the link in logs and headers)"
                )));
            }
            if role.is_none() {
                return Err(bad(format!(
                    "{here}: a server that links to peers needs a role; set [server] role = \"main\" (on site) or \"cloud\""
                )));
            }
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                return Err(bad(format!(
                    "{here} url = \"{}\" is not an http:// or https:// URL (the other server's address)",
                    ferry_core::shown(&p.url)
                )));
            }
            if p.token.trim().is_empty() {
                return Err(bad(format!(
                    "{here} token is empty; create one on the other server with `ferry token create --user USER --device NAME --role {}`",
                    role.as_deref().unwrap_or("main")
                )));
            }
            let interval = match p.interval {
                None => DEFAULT_PEER_INTERVAL,
                Some(i) => {
                    ferry_core::duration::parse_duration(&i).map_err(|e| bad(format!("{here} interval: {e}")))?
                }
            };
            let backoff = match p.backoff {
                None => SERVER_BACKOFF_S.map(Duration::from_secs).to_vec(),
                Some(b) => ferry_core::duration::parse_schedule(&b).map_err(|e| bad(format!("{here} backoff: {e}")))?,
            };
            peers.push(PeerConfig {
                name,
                url: p.url.trim_end_matches('/').to_owned(),
                token: p.token.trim().to_owned(),
                tables: p.tables,
                exclude_tables: p.exclude_tables,
                interval,
                backoff,
                enabled: p.enabled,
            });
        }
        Ok(Config {
            listen,
            database,
            data_dir,
            schema_path,
            max_body_bytes,
            tables,
            files,
            role,
            sync_log_keep,
            compact_older_than,
            peers,
            alerts,
            webhooks,
            full_sync_exclude: parsed.full_sync.exclude,
        })
    }

    /// Opens the file store `[files]` names (by default the directory `DATA_DIR/files`) and
    /// the staging area for uploads in progress.
    ///
    /// # Errors
    /// When the store cannot be opened or reached; the message names it and the fix.
    pub async fn open_files(&self) -> Result<crate::Files, String> {
        let store = self.open_file_store().await?;
        let staging = store.staging_dir().map_or_else(|| self.data_dir.join("uploads"), std::path::Path::to_path_buf);
        let max = self.files.max_upload_bytes.unwrap_or(crate::files::DEFAULT_MAX_UPLOAD_BYTES);
        crate::Files::new(store, staging.clone(), max)
            .map_err(|e| format!("cannot create the upload staging directory '{}': {e}", staging.display()))
    }

    /// Opens the file store `[files]` names (by default the directory `DATA_DIR/files`).
    ///
    /// # Errors
    /// When the store cannot be opened or reached; the message names it and the fix.
    pub async fn open_file_store(&self) -> Result<ferry_files::AnyFileStore, String> {
        ferry_files::open(&self.files, &self.data_dir.join("files")).await.map_err(|e| e.to_string())
    }

    /// Reads and checks the schema file with the per-table options.
    ///
    /// # Errors
    /// When the file cannot be read or the schema is refused (the message names the table
    /// and the fix).
    pub fn schema(&self) -> Result<Schema, ConfigError> {
        let sql = std::fs::read_to_string(&self.schema_path)
            .map_err(|source| ConfigError::SchemaRead { path: self.schema_path.clone(), source })?;
        Schema::parse(&sql, &self.tables)
            .map_err(|source| ConfigError::Schema { path: self.schema_path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, format!("[server]\nschema = \"schema.sql\"\n{toml}")).unwrap();
        Config::load(Some(&path), Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn peers_need_a_role_an_address_and_known_tables() {
        let peer = "[peers.cloud]\nurl = \"https://cloud.example.com/\"\ntoken = \"fry_x\"\n";
        let err = load(peer).unwrap_err();
        assert!(err.contains("[peers.cloud]: a server that links to peers needs a role"), "{err}");
        let err =
            load(&format!("role = \"main\"\n{}", peer.replace("https://cloud.example.com/", "cloud"))).unwrap_err();
        assert!(err.contains("url = \"cloud\" is not an http"), "{err}");
        let err = load(&format!("role = \"main\"\n{peer}interval = \"soon\"\n")).unwrap_err();
        assert!(err.contains("[peers.cloud] interval: 'soon' is not a duration"), "{err}");
        let err = load("role = \"main\"\n[peers.\"a b\"]\nurl = \"http://x\"\ntoken = \"t\"\n").unwrap_err();
        assert!(err.contains("a peer's name must be"), "{err}");

        let config =
            load(&format!("role = \"main\"\n{peer}exclude_tables = [\"site_log\"]\nbackoff = \"1s,1m\"\n")).unwrap();
        let link = &config.peers[0];
        assert_eq!(link.url, "https://cloud.example.com", "the trailing slash goes");
        assert_eq!(link.interval, DEFAULT_PEER_INTERVAL);
        assert_eq!(link.backoff, [Duration::from_secs(1), Duration::from_secs(60)]);
        assert!(link.enabled);
        assert_eq!(link.crossing(&["jumps", "site_log"]).unwrap(), ["jumps"]);
        let err = link.crossing(&["jumps"]).unwrap_err();
        assert!(err.contains("names table 'site_log', which the schema does not sync"), "{err}");
        let only = PeerConfig { tables: Some(vec!["jumps".into()]), exclude_tables: vec![], ..link.clone() };
        assert_eq!(only.crossing(&["jumps", "groups"]).unwrap(), ["jumps"]);

        let defaults = load("role = \"cloud\"\n[alerts]\nlag_warning = \"2h\"\n").unwrap();
        assert_eq!(defaults.alerts.lag_warning, Duration::from_secs(7200));
        assert_eq!(defaults.alerts.file_queue_warning, 500);
        assert_eq!(defaults.sync_log_keep, DEFAULT_SYNC_LOG_KEEP);
        let err = load("[alerts]\ndisconnected_critical = \"a day\"\n").unwrap_err();
        assert!(err.contains("[alerts] disconnected_critical"), "{err}");
        let hook = "[[alerts.webhook]]\nurl = \"https://hooks.example/ferry\"\nsecret = \"0123456789abcdef\"\n";
        let hooks = load(hook).unwrap().webhooks;
        assert!(!hooks.is_empty());
        let err = load(&hook.replace("https://hooks.example/ferry", "hooks.example")).unwrap_err();
        assert!(err.contains("url 'hooks.example' must start with http:// or https://"), "{err}");
        let err = load(&hook.replace("0123456789abcdef", "short")).unwrap_err();
        assert!(err.contains("secret must be at least 16 characters"), "{err}");
        let err = load(&format!("{hook}events = [\"alerts\"]\n")).unwrap_err();
        assert!(err.contains("unknown event 'alerts'; use alert or full_sync"), "{err}");
        let err = load(&format!("{hook}retry = \"1s,2h\"\n")).unwrap_err();
        assert!(err.contains("retry lists 2 waits, the longest 7200s; at most 10 waits of at most 1h"), "{err}");
        let err = load(&format!("{hook}retry = \"soon\"\n")).unwrap_err();
        assert!(err.contains("[[alerts.webhook]] number 1: retry: "), "{err}");
        assert!(load(&format!("{hook}retry = \"200ms, 1s\"\n")).is_ok());
    }
}
