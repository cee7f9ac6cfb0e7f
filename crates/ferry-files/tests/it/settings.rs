//! The `[files]` section: parsing, and the errors that tell an operator what to fix.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_files::{Error, FileStore, FileStoreConfig, open};

use crate::{s3_config, s3_server};

async fn open_error(cfg: &FileStoreConfig) -> Error {
    match open(cfg, Path::new("/nonexistent")).await {
        Err(e) => e,
        Ok(store) => panic!("expected an error, opened {}", store.describe()),
    }
}

fn invalid(e: Error, wanted: &[&str]) {
    match e {
        Error::Invalid(msg) => {
            for w in wanted {
                assert!(msg.contains(w), "{msg:?} should mention {w:?}");
            }
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn the_files_section_parses() {
    let cfg: FileStoreConfig = toml::from_str(
        r#"
        store = "s3"
        s3_bucket = "photos"
        s3_endpoint = "https://s3.example.com"
        s3_region = "eu-west-1"
        s3_prefix = "ferry"
        s3_access_key_id = "AKIA"
        s3_secret_access_key = "very secret"
        s3_allow_http = false
        max_upload_bytes = 1000000
        "#,
    )
    .unwrap();
    assert_eq!(cfg.s3_bucket.as_deref(), Some("photos"));
    assert_eq!(cfg.max_upload_bytes, Some(1_000_000));
    assert!(!format!("{cfg:?}").contains("very secret"), "Debug must hide the secret key");
    let e = toml::from_str::<FileStoreConfig>("s3_buckt = \"photos\"").unwrap_err();
    assert!(e.to_string().contains("s3_buckt"), "{e}");
}

#[tokio::test]
async fn unknown_store_names_the_value_and_the_choices() {
    let cfg = FileStoreConfig { store: Some("gcs".into()), ..Default::default() };
    invalid(open_error(&cfg).await, &["'gcs'", "\"local\"", "\"s3\""]);
}

#[tokio::test]
async fn s3_settings_on_a_local_store_are_refused() {
    let cfg = FileStoreConfig { s3_bucket: Some("photos".into()), ..Default::default() };
    invalid(open_error(&cfg).await, &["s3_bucket", "store = \"s3\""]);
}

#[tokio::test]
async fn s3_needs_a_bucket() {
    let cfg = FileStoreConfig { s3_bucket: None, ..s3_config("x") };
    invalid(open_error(&cfg).await, &["s3_bucket"]);
}

#[tokio::test]
async fn plain_http_needs_s3_allow_http() {
    let cfg = FileStoreConfig { s3_allow_http: None, ..s3_config("x") };
    invalid(open_error(&cfg).await, &["s3_allow_http = true", s3_server::endpoint()]);
    let cfg = FileStoreConfig { s3_endpoint: Some("127.0.0.1:9000".into()), ..s3_config("x") };
    invalid(open_error(&cfg).await, &["'127.0.0.1:9000'", "not a URL"]);
}

#[tokio::test]
async fn s3_keys_come_in_pairs() {
    let cfg = FileStoreConfig { s3_secret_access_key: None, ..s3_config("x") };
    invalid(open_error(&cfg).await, &["s3_access_key_id", "s3_secret_access_key"]);
}

#[tokio::test]
async fn s3_without_credentials_says_where_to_put_them() {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        eprintln!("AWS_ACCESS_KEY_ID is set here, so the missing-credentials error cannot happen");
        return;
    }
    let cfg = FileStoreConfig { s3_access_key_id: None, s3_secret_access_key: None, ..s3_config("x") };
    invalid(open_error(&cfg).await, &["AWS_ACCESS_KEY_ID", "s3_access_key_id"]);
}

#[tokio::test]
async fn missing_bucket_is_named() {
    let cfg = s3_config("no-such-bucket-for-ferry");
    invalid(open_error(&cfg).await, &["'no-such-bucket-for-ferry'", s3_server::endpoint(), "s3_bucket"]);
}

#[tokio::test]
async fn bad_prefix_is_named() {
    let cfg = FileStoreConfig { s3_prefix: Some("a//b".into()), ..s3_config(&s3_server::new_bucket()) };
    invalid(open_error(&cfg).await, &["'a//b'", "s3_prefix"]);
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_and_answers_quickly() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = FileStoreConfig { s3_endpoint: Some(endpoint.clone()), ..s3_config("photos") };
    let started = Instant::now();
    match open_error(&cfg).await {
        Error::Unavailable(msg) => assert!(msg.contains("'photos'") && msg.contains(&endpoint), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}
