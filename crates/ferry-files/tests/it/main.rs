//! One suite run against every file store: each property in `suite` is a test for the local
//! directory and for S3 (a real moto server, see `s3_server`). Store-specific behaviour
//! (on-disk layout, configuration errors) is tested below the suite.

mod s3_server;
mod suite;

use std::path::{Path, PathBuf};

use ferry_files::{AnyFileStore, ByteStream, FileStoreConfig, open};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// A store to test and a directory to stage uploads in.
pub struct Fixture {
    pub store: AnyFileStore,
    staging: TempDir,
    /// The local store's directory (kept alive for the test), or `None` for S3.
    pub dir: Option<TempDir>,
}

impl Fixture {
    pub async fn local() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FileStoreConfig { dir: Some(dir.path().join("files")), ..Default::default() };
        let store = open(&cfg, Path::new("/nonexistent")).await.unwrap();
        Fixture { store, staging: tempfile::tempdir().unwrap(), dir: Some(dir) }
    }

    pub async fn s3() -> Fixture {
        let store = open(&s3_config(&s3_server::new_bucket()), Path::new("/nonexistent")).await.unwrap();
        Fixture { store, staging: tempfile::tempdir().unwrap(), dir: None }
    }

    /// Writes `content` to a new staged file and returns its hash and path.
    pub fn stage(&self, content: &[u8]) -> (String, PathBuf) {
        let hash = hash(content);
        let path = self.staging.path().join(format!("{hash}.{}", content.len()));
        std::fs::write(&path, content).unwrap();
        (hash, path)
    }
}

pub fn s3_config(bucket: &str) -> FileStoreConfig {
    FileStoreConfig {
        store: Some("s3".into()),
        s3_bucket: Some(bucket.into()),
        s3_endpoint: Some(s3_server::endpoint().into()),
        s3_prefix: Some("ferry/files".into()),
        s3_access_key_id: Some("test".into()),
        s3_secret_access_key: Some("test".into()),
        s3_allow_http: Some(true),
        ..Default::default()
    }
}

pub fn hash(content: &[u8]) -> String {
    Sha256::digest(content).iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` bytes that differ from one `seed` to another, so that no two test files share a hash.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub async fn read_all(stream: ByteStream) -> Vec<u8> {
    stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .unwrap()
}

/// Each named property of `suite` as a test against each store.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::suite::$name(&crate::Fixture::local().await).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::suite::$name(&crate::Fixture::s3().await).await;
                }
            )*
        }
    };
}

suite!(
    round_trip,
    empty_file,
    large_file,
    get_from_offset,
    absent_hash,
    delete,
    put_twice_is_a_no_op,
    bad_hashes_touch_nothing,
    staged_file_of_wrong_size_is_refused,
    stats_count_files_and_bytes,
    concurrent_puts,
    describe_names_the_place,
);

mod local_dir;
mod settings;
