//! The server's file stores: where files that rows reference by SHA-256 are kept once the
//! server has verified them.
//!
//! [`FileStore`] is the one interface; [`LocalDir`] keeps files in a directory on the server's
//! disk and [`S3Store`] in an S3-compatible bucket. [`open`] builds the one that the `[files]`
//! section of `ferry.toml` ([`FileStoreConfig`]) asks for and checks that it is reachable;
//! [`AnyFileStore`] is what the server holds. `tests/it` is one suite run against both stores.
//!
//! Deliberately not here: hashing and verifying content (the server verifies an upload against
//! its hash before handing it over, so a store trusts the hash it is given), upload limits,
//! HTTP, and deciding which files are still referenced (stores only put, get, delete and count).
//!
//! Every method checks the hash first ([`check_hash`]), so a name that reaches a path or an
//! object key is always 64 lowercase hex characters: nothing a client sends can climb out of
//! the store.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

mod config;
mod local;
mod s3;

pub use config::{FileStoreConfig, open};
pub use local::LocalDir;
pub use s3::S3Store;

/// The bytes of a stored file, in chunks, as an HTTP body can stream them.
pub type ByteStream = Pin<Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// The result of a file store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A place that keeps verified files under their SHA-256.
///
/// Files are immutable: a hash names one content forever, which is why storing a hash twice is
/// a harmless no-op and why a reader can resume a download at any offset.
pub trait FileStore: Send + Sync + 'static {
    /// Size in bytes of the stored file, or `None` when absent.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed hash; [`Error::Unavailable`] or [`Error::Io`] when the
    /// store cannot be asked.
    fn size(&self, hash: &str) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Stores a file whose content the caller has already verified against `hash`, taking it
    /// from the local file `staged` (`size` bytes).
    ///
    /// The staged file is consumed (moved or deleted) on success and left alone on failure, so
    /// the caller can retry or clean up. Storing a hash that is already stored is a no-op
    /// success. The file is durable when this returns (fsync for a local directory; the
    /// object store's acknowledgement for S3).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed hash or a staged file that is not `size` bytes;
    /// [`Error::Unavailable`] when the store cannot take it now; [`Error::Io`] for local disk
    /// failures.
    fn put_file(&self, hash: &str, staged: &Path, size: u64) -> impl Future<Output = Result<()>> + Send;

    /// The bytes from `offset` to the end, or `None` when absent.
    ///
    /// An offset equal to the size gives an empty stream (a finished download resumed).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed hash or an offset past the end of the file. Errors
    /// while streaming come as `std::io::Error` items of the stream.
    fn get(&self, hash: &str, offset: u64) -> impl Future<Output = Result<Option<ByteStream>>> + Send;

    /// Removes a file; `Ok(false)` if it was absent.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed hash; [`Error::Unavailable`] or [`Error::Io`] when the
    /// store cannot be changed.
    fn delete(&self, hash: &str) -> impl Future<Output = Result<bool>> + Send;

    /// How many files and bytes are stored. Lists the whole store, so it takes time in
    /// proportion to the number of files: for status pages, not for every request.
    ///
    /// # Errors
    /// [`Error::Unavailable`] or [`Error::Io`] when the store cannot be listed.
    fn stats(&self) -> impl Future<Output = Result<StoreStats>> + Send;

    /// Human description for logs and status, e.g. `local directory /x/files` or
    /// `s3://bucket/prefix at http://127.0.0.1:9000`.
    fn describe(&self) -> String;
}

/// What a store holds, from [`FileStore::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Number of stored files.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Why a file store operation failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's fault: a malformed hash, an offset past the end, a staged file of the wrong
    /// size, or `[files]` settings that are wrong or name something that does not exist. The
    /// message names the value and the fix; retrying the same thing fails the same way.
    #[error("{0}")]
    Invalid(String),
    /// The store cannot be reached or refuses service now (S3 endpoint down, 5xx, credentials
    /// refused). Retrying later may succeed; a server answers 503.
    #[error("{0}")]
    Unavailable(String),
    /// A local disk operation failed (disk full, permissions, I/O error).
    #[error("{0}")]
    Io(String),
}

/// Checks that `hash` is a SHA-256 as Ferry writes it: 64 lowercase hex characters.
///
/// # Errors
/// [`Error::Invalid`] naming the value (shortened if long) and what is expected.
pub fn check_hash(hash: &str) -> Result<()> {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hash.len() == 64 && hash.bytes().all(lower_hex) {
        return Ok(());
    }
    let shown: String = hash.chars().take(80).flat_map(char::escape_debug).collect();
    let more = if hash.chars().count() > 80 { "…" } else { "" };
    let hint = if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        "; write the hex digits in lowercase"
    } else {
        ""
    };
    Err(Error::Invalid(format!(
        "invalid file hash '{shown}{more}' ({} characters): expected 64 lowercase hex characters (a SHA-256){hint}",
        hash.chars().count()
    )))
}

/// The store the server runs with: whichever [`open`] built from `[files]`.
///
/// An enum rather than `Box<dyn FileStore>` because [`FileStore`]'s methods return
/// `impl Future`, which keeps them free of boxing and of `async-trait`.
#[derive(Debug)]
pub enum AnyFileStore {
    /// Files in a directory on this machine.
    Local(LocalDir),
    /// Files in an S3-compatible bucket.
    S3(S3Store),
}

impl AnyFileStore {
    /// Where the server should stage uploads so that [`FileStore::put_file`] is a rename
    /// rather than a copy: a directory on the store's own filesystem for [`LocalDir`], `None`
    /// for S3 (any local directory will do there).
    pub fn staging_dir(&self) -> Option<&Path> {
        match self {
            AnyFileStore::Local(s) => Some(s.staging_dir()),
            AnyFileStore::S3(_) => None,
        }
    }
}

impl FileStore for AnyFileStore {
    async fn size(&self, hash: &str) -> Result<Option<u64>> {
        match self {
            AnyFileStore::Local(s) => s.size(hash).await,
            AnyFileStore::S3(s) => s.size(hash).await,
        }
    }

    async fn put_file(&self, hash: &str, staged: &Path, size: u64) -> Result<()> {
        match self {
            AnyFileStore::Local(s) => s.put_file(hash, staged, size).await,
            AnyFileStore::S3(s) => s.put_file(hash, staged, size).await,
        }
    }

    async fn get(&self, hash: &str, offset: u64) -> Result<Option<ByteStream>> {
        match self {
            AnyFileStore::Local(s) => s.get(hash, offset).await,
            AnyFileStore::S3(s) => s.get(hash, offset).await,
        }
    }

    async fn delete(&self, hash: &str) -> Result<bool> {
        match self {
            AnyFileStore::Local(s) => s.delete(hash).await,
            AnyFileStore::S3(s) => s.delete(hash).await,
        }
    }

    async fn stats(&self) -> Result<StoreStats> {
        match self {
            AnyFileStore::Local(s) => s.stats().await,
            AnyFileStore::S3(s) => s.stats().await,
        }
    }

    fn describe(&self) -> String {
        match self {
            AnyFileStore::Local(s) => s.describe(),
            AnyFileStore::S3(s) => s.describe(),
        }
    }
}

/// Checks that a staged file exists and has the size the caller announced, before anything is
/// stored: a mismatch is a bug in the caller that must not become a stored file.
fn check_staged(staged: &Path, size: u64) -> Result<()> {
    let meta = std::fs::metadata(staged)
        .map_err(|e| Error::Io(format!("cannot read staged file {}: {e}", staged.display())))?;
    if !meta.is_file() || meta.len() != size {
        return Err(Error::Invalid(format!(
            "staged file {} is {} bytes, but the upload announced {size}; stage the whole file before storing it",
            staged.display(),
            meta.len()
        )));
    }
    Ok(())
}

/// `ab/<hash>`: the first two hex characters as a directory (or key segment), so that no
/// directory grows past 1/256 of the store and listings stay cheap.
fn fanout(hash: &str) -> PathBuf {
    Path::new(&hash[..2]).join(hash)
}

/// Whether `dir`/`name` is where [`fanout`] puts a hash: used when listing a store, so stray
/// files (an editor's backup, a staging directory) are not counted.
fn is_stored_name(dir: &str, name: &str) -> bool {
    check_hash(name).is_ok() && name.starts_with(dir) && dir.len() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_hash_accepts_only_lowercase_sha256_hex() {
        let good = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(check_hash(good).is_ok());
        let message = |h: &str| match check_hash(h) {
            Err(Error::Invalid(m)) => m,
            other => panic!("{h:?}: expected Invalid, got {other:?}"),
        };
        assert!(message(&good.to_uppercase()).ends_with("write the hex digits in lowercase"));
        assert!(message("../etc/passwd").starts_with("invalid file hash '../etc/passwd' (13 characters)"));
        assert!(message("a\nb").contains(r"'a\nb'"), "control characters are shown escaped");
        let long = "x".repeat(1000);
        assert!(message(&long).contains(&format!("'{}…' (1000 characters)", "x".repeat(80))));
    }

    #[test]
    fn stored_names_are_hashes_under_their_first_two_characters() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(is_stored_name("e3", h));
        assert!(!is_stored_name("e4", h));
        assert!(!is_stored_name("e3", &format!("{h}~")));
        assert!(!is_stored_name("tmp", h));
        assert_eq!(fanout(h), Path::new("e3").join(h));
    }
}
