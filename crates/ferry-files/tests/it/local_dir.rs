//! What only the local directory store promises: its layout on disk, cheap staging, and a
//! staged file on another filesystem.

use std::path::Path;

use ferry_files::{AnyFileStore, Error, FileStore, FileStoreConfig, LocalDir, StoreStats, open};

use crate::{Fixture, content, hash};

fn local(f: &Fixture) -> &LocalDir {
    match &f.store {
        AnyFileStore::Local(dir) => dir,
        AnyFileStore::S3(_) => unreachable!(),
    }
}

#[tokio::test]
async fn files_live_under_two_hex_characters() {
    let f = Fixture::local().await;
    let data = content(1, 10);
    let (h, staged) = f.stage(&data);
    f.store.put_file(&h, &staged, 10).await.unwrap();
    let path = local(&f).root().join(&h[..2]).join(&h);
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[tokio::test]
async fn staging_dir_is_inside_the_store_and_not_counted() {
    let f = Fixture::local().await;
    let staging = f.store.staging_dir().expect("a local store has a staging directory").to_owned();
    assert!(staging.starts_with(local(&f).root()));
    let data = content(2, 1000);
    let h = hash(&data);
    let staged = staging.join("upload-1");
    std::fs::write(&staged, &data).unwrap();
    std::fs::write(staging.join("upload-2"), b"half an upload").unwrap();
    f.store.put_file(&h, &staged, 1000).await.unwrap();
    assert!(!staged.exists());
    assert_eq!(f.store.stats().await.unwrap(), StoreStats { files: 1, bytes: 1000 });
}

#[tokio::test]
async fn stray_files_are_not_counted() {
    let f = Fixture::local().await;
    let root = local(&f).root().to_owned();
    let data = content(3, 7);
    let (h, staged) = f.stage(&data);
    f.store.put_file(&h, &staged, 7).await.unwrap();
    std::fs::write(root.join("README"), b"notes").unwrap();
    std::fs::write(root.join(&h[..2]).join(format!("{h}~")), b"editor backup").unwrap();
    let other = hash(b"other");
    std::fs::write(root.join(&h[..2]).join(&other), b"in the wrong directory").unwrap();
    std::fs::create_dir(root.join("zz")).unwrap();
    assert_eq!(f.store.stats().await.unwrap(), StoreStats { files: 1, bytes: 7 });
}

/// /dev/shm is a tmpfs, so a rename from there into the store fails with EXDEV and the store
/// must copy.
#[tokio::test]
async fn staged_on_another_filesystem() {
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs) to stage on another filesystem");
    let f = Fixture::local().await;
    let staging = tempfile::tempdir_in(shm).unwrap();
    let data = content(4, 300_000);
    let h = hash(&data);
    let staged = staging.path().join("upload");
    std::fs::write(&staged, &data).unwrap();
    f.store.put_file(&h, &staged, data.len() as u64).await.unwrap();
    assert!(!staged.exists(), "the staged file is removed after the copy");
    assert!(crate::read_all(f.store.get(&h, 0).await.unwrap().unwrap()).await == data);
    let leftovers = std::fs::read_dir(f.store.staging_dir().unwrap()).unwrap().count();
    assert_eq!(leftovers, 0, "the copy in progress is renamed into place");
}

#[tokio::test]
async fn reopened_store_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(5, 123);
    let h = hash(&data);
    {
        let store = LocalDir::open(dir.path()).await.unwrap();
        let staged = store.staging_dir().join("x");
        std::fs::write(&staged, &data).unwrap();
        store.put_file(&h, &staged, 123).await.unwrap();
    }
    let store = LocalDir::open(dir.path()).await.unwrap();
    assert_eq!(store.size(&h).await.unwrap(), Some(123));
}

#[tokio::test]
async fn default_dir_is_used_when_dir_is_not_set() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("data/files");
    let store = open(&FileStoreConfig::default(), &default).await.unwrap();
    assert_eq!(store.describe(), format!("local directory {}", default.display()));
    assert!(default.join("tmp").is_dir());
}

#[tokio::test]
async fn unusable_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let cfg = FileStoreConfig { dir: Some(file.join("files")), ..Default::default() };
    match open(&cfg, Path::new("/nonexistent")).await {
        Err(Error::Io(msg)) => {
            assert!(msg.contains(&file.display().to_string()) && msg.contains("dir in [files]"), "{msg}")
        }
        other => panic!("expected Io, got {other:?}"),
    }
}
