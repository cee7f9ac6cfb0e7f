//! The `[files]` section of `ferry.toml` and [`open`], which turns it into a store.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::s3::{S3Settings, S3Store};
use crate::{AnyFileStore, Error, LocalDir, Result};

/// The `[files]` section of `ferry.toml`: where the server keeps files.
///
/// Every field is optional; the default is a local directory. Secrets can stay out of the
/// file: the S3 keys fall back to `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStoreConfig {
    /// `"local"` (the default) or `"s3"`.
    pub store: Option<String>,
    /// Local store: the directory (default: the one the server passes to [`open`]).
    pub dir: Option<PathBuf>,
    /// S3 store: the bucket (required). It must exist; Ferry does not create buckets.
    pub s3_bucket: Option<String>,
    /// S3 store: the service URL for S3-compatible services, e.g. `http://127.0.0.1:9000`
    /// (default: AWS).
    pub s3_endpoint: Option<String>,
    /// S3 store: the region (default `us-east-1`).
    pub s3_region: Option<String>,
    /// S3 store: a key prefix, e.g. `ferry/files` (default: none).
    pub s3_prefix: Option<String>,
    /// S3 store: access key id (default: `AWS_ACCESS_KEY_ID`).
    pub s3_access_key_id: Option<String>,
    /// S3 store: secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: Option<String>,
    /// S3 store: allow a plain `http://` endpoint (default false: credentials and files would
    /// travel unencrypted).
    pub s3_allow_http: Option<bool>,
    /// The largest upload the server accepts, in bytes. Read by the server; the stores do not
    /// use it. Here so that `[files]` is one struct.
    pub max_upload_bytes: Option<u64>,
}

impl std::fmt::Debug for FileStoreConfig {
    /// Hides the secret key, since configurations end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStoreConfig")
            .field("store", &self.store)
            .field("dir", &self.dir)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_prefix", &self.s3_prefix)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &self.s3_secret_access_key.as_ref().map(|_| "<hidden>"))
            .field("s3_allow_http", &self.s3_allow_http)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .finish()
    }
}

/// Builds the store `cfg` asks for and checks that it is usable: for a local directory, that
/// it can be created and written (`default_dir` when `dir` is not set); for S3, that one
/// listing of the bucket succeeds.
///
/// # Errors
/// [`Error::Invalid`] for settings that are wrong or name a bucket that does not exist or
/// credentials it refuses; [`Error::Unavailable`] when the S3 endpoint does not answer;
/// [`Error::Io`] when the local directory cannot be created or written. Each message names the
/// setting and the fix.
pub async fn open(cfg: &FileStoreConfig, default_dir: &Path) -> Result<AnyFileStore> {
    match cfg.store.as_deref().unwrap_or("local") {
        "local" => {
            if let Some(name) = cfg.s3_settings_present().first() {
                return Err(Error::Invalid(format!(
                    "{name} is set in [files], but the store is local; set store = \"s3\" to use S3, or remove the s3_ settings"
                )));
            }
            let dir = cfg.dir.as_deref().unwrap_or(default_dir);
            Ok(AnyFileStore::Local(LocalDir::open(dir).await?))
        }
        "s3" => {
            if let Some(dir) = &cfg.dir {
                return Err(Error::Invalid(format!(
                    "dir = '{}' is set in [files], but the store is s3; remove dir, or set store = \"local\"",
                    dir.display()
                )));
            }
            Ok(AnyFileStore::S3(S3Store::open(cfg.s3_settings()?).await?))
        }
        other => Err(Error::Invalid(format!(
            "unknown file store '{other}' in [files] store; use \"local\" (a directory on this machine) or \"s3\" (an S3-compatible bucket)"
        ))),
    }
}

impl FileStoreConfig {
    fn s3_settings_present(&self) -> Vec<&'static str> {
        [
            ("s3_bucket", self.s3_bucket.is_some()),
            ("s3_endpoint", self.s3_endpoint.is_some()),
            ("s3_region", self.s3_region.is_some()),
            ("s3_prefix", self.s3_prefix.is_some()),
            ("s3_access_key_id", self.s3_access_key_id.is_some()),
            ("s3_secret_access_key", self.s3_secret_access_key.is_some()),
            ("s3_allow_http", self.s3_allow_http.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    fn s3_settings(&self) -> Result<S3Settings> {
        let bucket = self.s3_bucket.clone().filter(|b| !b.is_empty()).ok_or_else(|| {
            Error::Invalid("store = \"s3\" needs s3_bucket in [files]: the name of an existing bucket".into())
        })?;
        let allow_http = self.s3_allow_http.unwrap_or(false);
        if let Some(endpoint) = &self.s3_endpoint {
            if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                return Err(Error::Invalid(format!(
                    "s3_endpoint '{endpoint}' in [files] is not a URL; write it like \"https://s3.example.com\""
                )));
            }
            if endpoint.starts_with("http://") && !allow_http {
                return Err(Error::Invalid(format!(
                    "s3_endpoint '{endpoint}' in [files] is plain HTTP; use https, or set s3_allow_http = true (credentials and files then travel unencrypted)"
                )));
            }
        }
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (key_id, secret, token) = match (&self.s3_access_key_id, &self.s3_secret_access_key) {
            (Some(id), Some(secret)) => (Some(id.clone()), Some(secret.clone()), None),
            (None, None) => {
                (from_env("AWS_ACCESS_KEY_ID"), from_env("AWS_SECRET_ACCESS_KEY"), from_env("AWS_SESSION_TOKEN"))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Invalid(
                    "[files] sets only one of s3_access_key_id and s3_secret_access_key; set both, or neither to use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                ));
            }
        };
        // No fallback to instance metadata or profiles: a server that silently picked up some
        // other identity would be harder to debug than one that says what is missing.
        let (Some(access_key_id), Some(secret_access_key)) = (key_id, secret) else {
            return Err(Error::Invalid(
                "store = \"s3\" needs credentials: set s3_access_key_id and s3_secret_access_key in [files], or the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            ));
        };
        Ok(S3Settings {
            bucket,
            prefix: self.s3_prefix.clone().unwrap_or_default(),
            endpoint: self.s3_endpoint.clone().map(|e| e.trim_end_matches('/').to_owned()),
            region: self.s3_region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id,
            secret_access_key,
            session_token: token,
            allow_http,
        })
    }
}
