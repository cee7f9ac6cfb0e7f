//! Files in a directory on the server's disk: `DIR/ab/<hash>`, uploads staged in `DIR/tmp`.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::{ByteStream, Error, FileStore, Result, StoreStats, check_hash, check_staged, fanout, is_stored_name};

/// How much one read hands to the stream: each read is a hop to a blocking thread, which
/// costs more CPU than the copy, so a 1 MB file is one read; a download in flight holds at
/// most this much.
const CHUNK: u64 = 1024 * 1024;

/// The subdirectory for staged uploads and copies in progress. Not two hex characters, so it
/// can never collide with a fan-out directory, and listings skip it.
const STAGING: &str = "tmp";

/// A file store in a local directory.
///
/// Files live at `DIR/ab/<hash>`. A stored file is always complete: it arrives by an atomic
/// rename of a file that was fsynced first, and the directory is fsynced after, so a crash
/// leaves either no file or the whole file under a name.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    staging: PathBuf,
}

impl LocalDir {
    /// Opens (creating if needed) the store in `dir` and checks that it can write there.
    ///
    /// # Errors
    /// [`Error::Io`] naming the directory when it cannot be created or written.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<LocalDir> {
        let root = dir.into();
        let staging = root.join(STAGING);
        let store = LocalDir { root, staging };
        let probe = store.staging.join(format!(".probe-{}", std::process::id()));
        let (root, staging) = (store.root.clone(), store.staging.clone());
        blocking(move || {
            let fail = |what: &str, path: &Path, e: io::Error| {
                Error::Io(format!(
                    "cannot {what} {} for the file store: {e}; create it and make it writable by the server, or set dir in [files]",
                    path.display()
                ))
            };
            fs::create_dir_all(&staging).map_err(|e| fail("create", &staging, e))?;
            fs::write(&probe, b"").map_err(|e| fail("write in", &staging, e))?;
            fs::remove_file(&probe).map_err(|e| fail("write in", &staging, e))?;
            fs::metadata(&root).map_err(|e| fail("read", &root, e))?;
            Ok(())
        })
        .await?;
        Ok(store)
    }

    /// The directory the store keeps files in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A directory on the store's own filesystem where a server can stage uploads, so that
    /// storing them is a rename. The store never lists or cleans it.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.root.join(fanout(hash))
    }
}

impl FileStore for LocalDir {
    async fn size(&self, hash: &str) -> Result<Option<u64>> {
        check_hash(hash)?;
        let path = self.path(hash);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Err(Error::Io(format!("{} is not a regular file; remove it", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    async fn put_file(&self, hash: &str, staged: &Path, size: u64) -> Result<()> {
        check_hash(hash)?;
        let (root, staging, dest, staged) =
            (self.root.clone(), self.staging.clone(), self.path(hash), staged.to_owned());
        blocking(move || put_blocking(&root, &staging, &dest, &staged, size)).await
    }

    async fn get(&self, hash: &str, offset: u64) -> Result<Option<ByteStream>> {
        check_hash(hash)?;
        let path = self.path(hash);
        let hash = hash.to_owned();
        blocking(move || {
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_error("open", &path, e)),
            };
            let len = file.metadata().map_err(|e| io_error("read", &path, e))?.len();
            if offset > len {
                return Err(Error::Invalid(format!(
                    "offset {offset} is past the end of file {hash} ({len} bytes); resume from at most {len}"
                )));
            }
            io::Seek::seek(&mut file, io::SeekFrom::Start(offset)).map_err(|e| io_error("seek in", &path, e))?;
            Ok(Some(read_stream(file)))
        })
        .await
    }

    async fn delete(&self, hash: &str) -> Result<bool> {
        check_hash(hash)?;
        let path = self.path(hash);
        // No directory fsync: a delete undone by a crash leaves an unreferenced file, which
        // is garbage, never a wrong answer.
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    async fn stats(&self) -> Result<StoreStats> {
        let root = self.root.clone();
        blocking(move || {
            let mut stats = StoreStats::default();
            for dir in fs::read_dir(&root).map_err(|e| io_error("list", &root, e))? {
                let dir = dir.map_err(|e| io_error("list", &root, e))?;
                let dir_name = dir.file_name();
                let Some(dir_name) = dir_name.to_str().filter(|n| n.len() == 2) else { continue };
                if !dir.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let dir_path = dir.path();
                for file in fs::read_dir(&dir_path).map_err(|e| io_error("list", &dir_path, e))? {
                    let file = file.map_err(|e| io_error("list", &dir_path, e))?;
                    if !file.file_name().to_str().is_some_and(|n| is_stored_name(dir_name, n)) {
                        continue;
                    }
                    match file.metadata() {
                        Ok(meta) if meta.is_file() => {
                            stats.files += 1;
                            stats.bytes += meta.len();
                        }
                        // Deleted while we listed.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Ok(_) => {}
                        Err(e) => return Err(io_error("read", &file.path(), e)),
                    }
                }
            }
            Ok(stats)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

fn put_blocking(root: &Path, staging: &Path, dest: &Path, staged: &Path, size: u64) -> Result<()> {
    check_staged(staged, size)?;
    if fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == size) {
        // Already stored (same hash, so same content): the upload is a duplicate.
        fs::remove_file(staged).map_err(|e| io_error("remove staged file", staged, e))?;
        return Ok(());
    }
    // The content must be on disk before the name is, or a crash could leave a stored name
    // with missing content.
    File::open(staged).and_then(|f| f.sync_all()).map_err(|e| io_error("fsync staged file", staged, e))?;
    let parent = dest.parent().expect("a fan-out path has a parent");
    let renamed = match fs::rename(staged, dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The fan-out directory does not exist yet: make it, durably, and try again.
            match fs::create_dir(parent) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_error("create", parent, e)),
                _ => sync_dir(root)?,
            }
            fs::rename(staged, dest)
        }
        other => other,
    };
    match renamed {
        Ok(()) => {}
        // Staged on another filesystem (EXDEV): copy beside the target, then rename.
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => copy_into_place(staging, dest, staged)?,
        Err(e) => return Err(io_error(&format!("move {} to", staged.display()), dest, e)),
    }
    sync_dir(parent)
}

fn copy_into_place(staging: &Path, dest: &Path, staged: &Path) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = staging.join(format!(".copy-{name}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        fs::copy(staged, &tmp).map_err(|e| io_error(&format!("copy {} to", staged.display()), &tmp, e))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io_error("fsync", &tmp, e))?;
        fs::rename(&tmp, dest).map_err(|e| io_error(&format!("move {} to", tmp.display()), dest, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    fs::remove_file(staged).map_err(|e| io_error("remove staged file", staged, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync directory", dir, e))
}

/// The rest of `file` as a stream, one blocking read per chunk (no copy through an extra
/// buffer, unlike `tokio::fs::File`).
fn read_stream(file: File) -> ByteStream {
    futures_util::stream::try_unfold(Some(file), |file| async move {
        let Some(file) = file else { return Ok(None) };
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(CHUNK as usize);
            let mut file = file;
            (&mut file).take(CHUNK).read_to_end(&mut chunk).map(|_| (file, chunk))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(match chunk.len() {
            0 => None,
            // A short read means the end of the file: do not pay for another read to see EOF.
            n if (n as u64) < CHUNK => Some((Bytes::from(chunk), None)),
            _ => Some((Bytes::from(chunk), Some(file))),
        })
    })
    .boxed()
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Io(format!("cannot {what} {}: {e}", path.display()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(format!("file store task failed: {e}")))?
}
