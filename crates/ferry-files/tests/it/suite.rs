//! The properties every file store must have, each a function of a fresh [`Fixture`].

use ferry_files::{Error, FileStore, StoreStats};

use crate::{Fixture, content, read_all};

async fn put(f: &Fixture, content: &[u8]) -> String {
    let (hash, staged) = f.stage(content);
    f.store.put_file(&hash, &staged, content.len() as u64).await.unwrap();
    assert!(!staged.exists(), "put_file must consume the staged file");
    hash
}

async fn get(f: &Fixture, hash: &str, offset: u64) -> Vec<u8> {
    read_all(f.store.get(hash, offset).await.unwrap().expect("the file is stored")).await
}

pub async fn round_trip(f: &Fixture) {
    let data = content(1, 1_000_000);
    let hash = put(f, &data).await;
    assert_eq!(f.store.size(&hash).await.unwrap(), Some(1_000_000));
    assert!(get(f, &hash, 0).await == data);
}

pub async fn empty_file(f: &Fixture) {
    let hash = put(f, b"").await;
    assert_eq!(f.store.size(&hash).await.unwrap(), Some(0));
    assert_eq!(get(f, &hash, 0).await, b"");
    assert!(matches!(f.store.get(&hash, 1).await, Err(Error::Invalid(_))));
}

/// Past the single-PUT limit, so S3 takes the multipart path, with a short last part.
pub async fn large_file(f: &Fixture) {
    let data = content(2, 20 * 1024 * 1024 + 12_345);
    let hash = put(f, &data).await;
    assert_eq!(f.store.size(&hash).await.unwrap(), Some(data.len() as u64));
    assert!(get(f, &hash, 0).await == data, "the large file came back different");
    let offset = 17 * 1024 * 1024 + 3;
    assert!(get(f, &hash, offset).await == data[offset as usize..]);
}

pub async fn get_from_offset(f: &Fixture) {
    let data = content(3, 1000);
    let hash = put(f, &data).await;
    assert_eq!(get(f, &hash, 400).await, &data[400..]);
    assert_eq!(get(f, &hash, 999).await, &data[999..]);
    assert_eq!(get(f, &hash, 1000).await, b"", "resuming a finished download gives nothing more");
    match f.store.get(&hash, 1001).await {
        Err(Error::Invalid(msg)) => {
            assert!(msg.contains("1001") && msg.contains("1000 bytes") && msg.contains(&hash), "{msg}")
        }
        Err(e) => panic!("expected Invalid for an offset past the end, got {e:?}"),
        Ok(_) => panic!("expected Invalid for an offset past the end, got a stream"),
    }
}

pub async fn absent_hash(f: &Fixture) {
    let absent = crate::hash(b"never stored");
    assert_eq!(f.store.size(&absent).await.unwrap(), None);
    assert!(f.store.get(&absent, 0).await.unwrap().is_none());
    assert!(f.store.get(&absent, 5).await.unwrap().is_none());
    assert!(!f.store.delete(&absent).await.unwrap());
}

pub async fn delete(f: &Fixture) {
    let kept = put(f, &content(4, 10)).await;
    let gone = put(f, &content(5, 10)).await;
    assert!(f.store.delete(&gone).await.unwrap());
    assert_eq!(f.store.size(&gone).await.unwrap(), None);
    assert!(f.store.get(&gone, 0).await.unwrap().is_none());
    assert!(!f.store.delete(&gone).await.unwrap(), "a second delete finds nothing");
    assert_eq!(f.store.size(&kept).await.unwrap(), Some(10));
    assert_eq!(f.store.stats().await.unwrap(), StoreStats { files: 1, bytes: 10 });
}

pub async fn put_twice_is_a_no_op(f: &Fixture) {
    let data = content(6, 5000);
    let first = put(f, &data).await;
    let second = put(f, &data).await;
    assert_eq!(first, second);
    assert!(get(f, &first, 0).await == data);
    assert_eq!(f.store.stats().await.unwrap(), StoreStats { files: 1, bytes: 5000 });
}

pub async fn bad_hashes_touch_nothing(f: &Fixture) {
    let good = crate::hash(b"x");
    let bad = [
        "../etc/passwd".to_owned(),
        format!("../../{}", &good[6..]),
        good.to_uppercase(),
        good[..63].to_owned(),
        format!("{good}0"),
        String::new(),
        format!("{}/{}", &good[..2], &good[3..]),
        format!("{}g", &good[..63]),
    ];
    let before = f.store.stats().await.unwrap();
    for hash in &bad {
        let (_, staged) = f.stage(b"x");
        let refused = |what: &str, r: Result<(), Error>| match r {
            Err(Error::Invalid(msg)) => {
                assert!(msg.contains(hash.as_str()) && msg.contains("64 lowercase hex"), "{what}: {msg}")
            }
            other => panic!("{what} of {hash:?}: expected Invalid, got {other:?}"),
        };
        refused("size", f.store.size(hash).await.map(drop));
        refused("put_file", f.store.put_file(hash, &staged, 1).await);
        refused("get", f.store.get(hash, 0).await.map(drop));
        refused("delete", f.store.delete(hash).await.map(drop));
        assert!(staged.exists(), "a refused put_file must leave the staged file alone");
    }
    assert_eq!(f.store.stats().await.unwrap(), before);
    if let Some(dir) = &f.dir {
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["tmp"], "bad hashes must not create anything in the store");
        assert!(dir.path().join("etc").symlink_metadata().is_err());
    }
}

pub async fn staged_file_of_wrong_size_is_refused(f: &Fixture) {
    let data = content(7, 100);
    let (hash, staged) = f.stage(&data);
    match f.store.put_file(&hash, &staged, 101).await {
        Err(Error::Invalid(msg)) => assert!(msg.contains("100 bytes") && msg.contains("101"), "{msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(staged.exists());
    assert_eq!(f.store.size(&hash).await.unwrap(), None);
    let missing = staged.with_extension("missing");
    assert!(f.store.put_file(&hash, &missing, 100).await.is_err());
    assert_eq!(f.store.size(&hash).await.unwrap(), None);
}

pub async fn stats_count_files_and_bytes(f: &Fixture) {
    assert_eq!(f.store.stats().await.unwrap(), StoreStats::default());
    for (seed, len) in [(10, 0), (11, 1), (12, 300_000), (13, 4096)] {
        put(f, &content(seed, len)).await;
    }
    assert_eq!(f.store.stats().await.unwrap(), StoreStats { files: 4, bytes: 304_097 });
}

pub async fn concurrent_puts(f: &Fixture) {
    let files: Vec<Vec<u8>> = (0..16).map(|i| content(100 + i, 50_000 + i as usize)).collect();
    let hashes = futures_util::future::join_all(files.iter().map(|data| put(f, data))).await;
    for (hash, data) in hashes.iter().zip(&files) {
        assert!(get(f, hash, 0).await == *data);
    }
    let bytes = files.iter().map(|d| d.len() as u64).sum();
    assert_eq!(f.store.stats().await.unwrap(), StoreStats { files: 16, bytes });
}

pub async fn describe_names_the_place(f: &Fixture) {
    let description = f.store.describe();
    match &f.dir {
        Some(dir) => assert_eq!(description, format!("local directory {}", dir.path().join("files").display())),
        None => {
            assert!(description.starts_with("s3://ferry-") && description.contains("/ferry/files at http://127.0.0.1:"))
        }
    }
}
