//! `ferry.toml`: the `[server]` section and per-table options.
//!
//! Every `[server]` key can also come from a flag or an environment variable
//! (`FERRY_LISTEN`, `FERRY_DATABASE`, `FERRY_DATA_DIR`, `FERRY_SCHEMA`, `FERRY_MAX_BODY_BYTES`); a flag or
//! variable wins over the file, the file over the defaults. Relative paths in the file are
//! relative to the file's directory, so a config works from any working directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    database: Option<String>,
    data_dir: Option<PathBuf>,
    schema: Option<PathBuf>,
    max_body_bytes: Option<usize>,
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
}

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
        Ok(Config { listen, database, data_dir, schema_path, max_body_bytes, tables, files })
    }

    /// Opens the file store `[files]` names (by default the directory `DATA_DIR/files`) and
    /// the staging area for uploads in progress.
    ///
    /// # Errors
    /// When the store cannot be opened or reached; the message names it and the fix.
    pub async fn open_files(&self) -> Result<crate::Files, String> {
        let store = ferry_files::open(&self.files, &self.data_dir.join("files")).await.map_err(|e| e.to_string())?;
        let staging = store.staging_dir().map_or_else(|| self.data_dir.join("uploads"), std::path::Path::to_path_buf);
        let max = self.files.max_upload_bytes.unwrap_or(crate::files::DEFAULT_MAX_UPLOAD_BYTES);
        crate::Files::new(store, staging.clone(), max)
            .map_err(|e| format!("cannot create the upload staging directory '{}': {e}", staging.display()))
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
