//! Files in an S3-compatible bucket, through `object_store`: keys `PREFIX/ab/<hash>`.

use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::{ByteStream, Error, FileStore, Result, StoreStats, check_hash, check_staged, is_stored_name};

/// Files up to this size go up in one PUT; larger ones as a multipart upload, so a failed
/// part is retried alone and the file never has to be in memory at once.
const SINGLE_PUT_MAX: u64 = 16 * 1024 * 1024;

/// Part size of a multipart upload (S3 wants at least 5 MiB for every part but the last).
const PART: u64 = 8 * 1024 * 1024;

/// S3 allows 10 000 parts; parts grow for files past 80 GB so that they still fit.
const MAX_PARTS: u64 = 9_000;

/// Parts of one upload in flight at once: enough to fill a link, bounded memory (4 × 8 MiB).
const PARTS_IN_FLIGHT: usize = 4;

/// S3 error codes and statuses that mean the bucket refused the credentials.
const CREDENTIALS_REFUSED: &[&str] =
    &["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden", "401 Unauthorized"];

/// What [`crate::open`] resolved from `[files]` for S3.
pub(crate) struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub allow_http: bool,
}

/// A file store in an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph, moto, …).
///
/// Objects are written whole: a single PUT or a completed multipart upload, so a reader never
/// sees part of a file under its key. Transient failures (connection errors, 5xx) are retried
/// with backoff by `object_store`; a download cut mid-stream resumes with a ranged GET.
pub struct S3Store {
    store: AmazonS3,
    bucket: String,
    prefix: Key,
    /// Where the bucket lives, for messages: the endpoint URL or the AWS region.
    place: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("store", &self.describe()).finish()
    }
}

impl S3Store {
    /// Builds the store and checks, with one listing of the prefix, that the endpoint answers,
    /// the bucket exists and the credentials are accepted.
    pub(crate) async fn open(s: S3Settings) -> Result<S3Store> {
        let prefix = s.prefix.trim_matches('/');
        let prefix = Key::parse(prefix).map_err(|e| {
            Error::Invalid(format!(
                "s3_prefix '{}' in [files] is not a usable key prefix ({e}); use segments separated by '/', like \"ferry/files\"",
                s.prefix
            ))
        })?;
        let place = match &s.endpoint {
            Some(endpoint) => format!("at {endpoint}"),
            None => format!("in AWS region {}", s.region),
        };
        // Requests include streaming a download to a slow client; 10 minutes bounds a hung
        // connection without cutting large files (a cut download resumes with a ranged GET).
        let store = build(&s, Duration::from_secs(600), RetryConfig::default())?;
        let probe = build(
            &s,
            Duration::from_secs(30),
            RetryConfig { max_retries: 1, retry_timeout: Duration::from_secs(10), backoff: BackoffConfig::default() },
        )?;
        let store = S3Store { store, bucket: s.bucket, prefix, place };
        let prefix = (!store.prefix.is_root()).then_some(&store.prefix);
        if let Err(e) = probe.list_with_delimiter(prefix).await {
            return Err(store.open_error(e));
        }
        Ok(store)
    }

    fn key(&self, hash: &str) -> Key {
        self.prefix.clone().join(&hash[..2]).join(hash)
    }

    fn open_error(&self, e: object_store::Error) -> Error {
        let (bucket, place) = (&self.bucket, &self.place);
        // A failed listing arrives as a generic error whose text carries the S3 error code
        // (object_store does not expose the status of list requests), hence the text match.
        let text = e.to_string();
        let has = |codes: &[&str]| codes.iter().any(|c| text.contains(c));
        let missing = matches!(e, object_store::Error::NotFound { .. }) || has(&["NoSuchBucket"]);
        let refused = has(CREDENTIALS_REFUSED)
            || matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. });
        if missing {
            Error::Invalid(format!(
                "s3 bucket '{bucket}' {place} does not exist; create it (for example `aws s3 mb s3://{bucket}`) or fix s3_bucket in [files] ({text})"
            ))
        } else if refused {
            Error::Invalid(format!(
                "s3 bucket '{bucket}' {place} refused the credentials; check s3_access_key_id and s3_secret_access_key in [files] (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and the key's permissions on the bucket ({text})"
            ))
        } else {
            Error::Unavailable(format!(
                "cannot reach s3 bucket '{bucket}' {place}; check that the service runs and that s3_endpoint and s3_region in [files] are right ({text})"
            ))
        }
    }

    /// Any failure of the object store is the store being unavailable from the server's point
    /// of view: the request was valid, and the operator, not the client, has to act.
    fn failed(&self, what: &str, hash: &str, e: object_store::Error) -> Error {
        let hint = match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                "; check the credentials in [files] and the key's permissions on the bucket"
            }
            _ => "",
        };
        Error::Unavailable(format!("s3 {what} of file {hash} in {} failed: {e}{hint}", self.describe()))
    }

    async fn head(&self, hash: &str) -> Result<Option<u64>> {
        match self.store.head(&self.key(hash)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("HEAD", hash, e)),
        }
    }

    async fn upload_multipart(&self, hash: &str, key: &Key, staged: &Path, size: u64) -> Result<()> {
        let upload = self.store.put_multipart(key).await.map_err(|e| self.failed("multipart upload", hash, e))?;
        let part = PART.max(size.div_ceil(MAX_PARTS)) as usize;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let result: Result<()> = async {
            let mut file = tokio::fs::File::open(staged).await.map_err(|e| read_error(staged, e))?;
            loop {
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| self.failed("part upload", hash, e))?;
                let mut buf = BytesMut::with_capacity(part);
                while buf.len() < part {
                    if file.read_buf(&mut buf).await.map_err(|e| read_error(staged, e))? == 0 {
                        break;
                    }
                }
                if buf.is_empty() {
                    return Ok(());
                }
                let last = buf.len() < part;
                writer.put(buf.freeze());
                if last {
                    return Ok(());
                }
            }
        }
        .await;
        match result {
            Ok(()) => writer.finish().await.map(drop).map_err(|e| self.failed("multipart upload", hash, e)),
            Err(e) => {
                // Parts already uploaded cost storage until aborted; a failed abort is left to
                // the bucket's lifecycle rules, the original error matters more.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

fn build(s: &S3Settings, timeout: Duration, retry: RetryConfig) -> Result<AmazonS3> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&s.bucket)
        .with_region(&s.region)
        .with_access_key_id(&s.access_key_id)
        .with_secret_access_key(&s.secret_access_key)
        .with_allow_http(s.allow_http)
        .with_retry(retry)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(s.allow_http)
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_secs(5)),
        );
    if let Some(endpoint) = &s.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(token) = &s.session_token {
        builder = builder.with_token(token);
    }
    builder.build().map_err(|e| Error::Invalid(format!("cannot use the s3 settings in [files]: {e}")))
}

fn read_error(staged: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("cannot read staged file {}: {e}", staged.display()))
}

impl FileStore for S3Store {
    async fn size(&self, hash: &str) -> Result<Option<u64>> {
        check_hash(hash)?;
        self.head(hash).await
    }

    async fn put_file(&self, hash: &str, staged: &Path, size: u64) -> Result<()> {
        check_hash(hash)?;
        check_staged(staged, size)?;
        // Skipping a stored hash saves the upload; the object is immutable, so equal size
        // means equal content.
        if self.head(hash).await? != Some(size) {
            let key = self.key(hash);
            if size <= SINGLE_PUT_MAX {
                let bytes = tokio::fs::read(staged).await.map_err(|e| read_error(staged, e))?;
                let payload = PutPayload::from(Bytes::from(bytes));
                self.store.put(&key, payload).await.map_err(|e| self.failed("PUT", hash, e))?;
            } else {
                self.upload_multipart(hash, &key, staged, size).await?;
            }
        }
        match tokio::fs::remove_file(staged).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io(format!("stored file {hash} but cannot remove staged file {}: {e}", staged.display())))
            }
            _ => Ok(()),
        }
    }

    async fn get(&self, hash: &str, offset: u64) -> Result<Option<ByteStream>> {
        check_hash(hash)?;
        let mut options = GetOptions::default();
        if offset > 0 {
            // S3 answers a range starting at the end with 416, so a resumed download asks the
            // size first (resuming is rare; a whole download stays one request).
            match self.head(hash).await? {
                None => return Ok(None),
                Some(size) if offset > size => {
                    return Err(Error::Invalid(format!(
                        "offset {offset} is past the end of file {hash} ({size} bytes); resume from at most {size}"
                    )));
                }
                Some(size) if offset == size => return Ok(Some(futures_util::stream::empty().boxed())),
                Some(_) => options.range = Some(GetRange::Offset(offset)),
            }
        }
        match self.store.get_opts(&self.key(hash), options).await {
            Ok(result) => Ok(Some(result.into_stream().map_err(std::io::Error::other).boxed())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("GET", hash, e)),
        }
    }

    async fn delete(&self, hash: &str) -> Result<bool> {
        check_hash(hash)?;
        // S3 answers a DELETE the same whether or not the key existed; the HEAD tells.
        if self.head(hash).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(&self.key(hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(self.failed("DELETE", hash, e)),
        }
    }

    async fn stats(&self) -> Result<StoreStats> {
        let prefix = (!self.prefix.is_root()).then_some(&self.prefix);
        let mut list = self.store.list(prefix);
        let mut stats = StoreStats::default();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| {
                Error::Unavailable(format!("cannot list {}: {e}; check that the service runs", self.describe()))
            })?;
            let Some(rest) = meta.location.prefix_match(&self.prefix) else { continue };
            let rest: Vec<_> = rest.collect();
            if let [dir, name] = rest.as_slice()
                && is_stored_name(dir.as_ref(), name.as_ref())
            {
                stats.files += 1;
                stats.bytes += meta.size;
            }
        }
        Ok(stats)
    }

    fn describe(&self) -> String {
        let prefix = if self.prefix.is_root() { String::new() } else { format!("/{}", self.prefix) };
        format!("s3://{}{prefix} {}", self.bucket, self.place)
    }
}
