//! The HTTP side of the client: one method per protocol endpoint.

use std::time::Duration;

use ferry_protocol::{
    ErrorBody, FileCheckRequest, FileCheckResponse, PullResponse, PushRequest, PushResponse, SchemaResponse,
    StreamMessage, WhoAmI,
};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A Ferry server and the token this device uses with it.
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    /// For file bytes: no limit on a whole transfer, a limit on each wait for bytes.
    files: reqwest::Client,
    base: String,
    token: String,
    /// Set when a server links as a peer: sent as the `ferry-peer` header.
    peer: Option<String>,
    /// Bytes of the answers' bodies read so far (as decoded), shared by clones.
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Remote").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Remote {
    /// # Errors
    /// When `base` is not an http(s) URL.
    pub fn new(base: &str, token: &str) -> Result<Remote> {
        Remote::with_timeout(base, token, Duration::from_secs(120))
    }

    /// As [`Remote::new`], giving up on a request that has not completed within `timeout`
    /// (connecting alone may take at most 10 s, or `timeout` if shorter).
    ///
    /// # Errors
    /// When `base` is not an http(s) URL.
    pub fn with_timeout(base: &str, token: &str, timeout: Duration) -> Result<Remote> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Unreachable(format!(
                "server '{base}' is not an http:// or https:// URL (for example http://127.0.0.1:7070)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Local(format!("cannot build HTTP client: {e}")))?;
        let files = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Local(format!("cannot build HTTP client: {e}")))?;
        Ok(Remote { http, files, base, token: token.to_owned(), peer: None, received: Default::default() })
    }

    /// This remote as a server's peer link named `link`: every request asks to be served as
    /// a peer (the token must hold a server role on the other side).
    pub fn as_peer(mut self, link: &str) -> Remote {
        self.peer = Some(link.to_owned());
        self
    }

    /// The `ferry-peer` header, for a peer link's requests (empty otherwise).
    fn peer_header(&self) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        if let Some(v) = self.peer.as_deref().and_then(|l| reqwest::header::HeaderValue::from_str(l).ok()) {
            h.insert(ferry_protocol::PEER_HEADER, v);
        }
        h
    }

    /// Bytes of the answers' bodies this remote (and its clones) has read, decompressed.
    pub fn received_bytes(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder, what: &str) -> Result<T> {
        let bytes = self.send_raw(req, what).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("unreadable {what} answer from {}: {e}", self.base)))
    }

    /// Sends `req`; the body of a successful answer, else the error it means.
    async fn send_raw(&self, req: reqwest::RequestBuilder, what: &str) -> Result<bytes::Bytes> {
        let resp = req.headers(self.peer_header()).bearer_auth(&self.token).send().await.map_err(|e| {
            Error::Unreachable(format!("cannot reach server at {} ({what}): {}", self.base, error_chain(&e)))
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            Error::Unreachable(format!(
                "connection to {} broke while reading the {what} answer: {}",
                self.base,
                error_chain(&e)
            ))
        })?;
        self.received.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if status.is_success() {
            return Ok(bytes);
        }
        Err(self.refusal(what, status.as_u16(), &bytes))
    }

    /// The error an unsuccessful answer (`status`, `body`) to a `what` request means.
    fn refusal(&self, what: &str, status: u16, body: &[u8]) -> Error {
        let (code, message, offset) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => (b.error.code, b.error.message, b.offset),
            Err(_) => ("unknown".to_owned(), String::from_utf8_lossy(body).chars().take(300).collect(), None),
        };
        match status {
            401 => Error::Unauthorized(message),
            // Time-outs and rate limits pass: retried like an unreachable server.
            s @ (408 | 429) => {
                Error::Unreachable(format!("server at {} answered {s} during {what}: {message}", self.base))
            }
            s @ 400..=499 => Error::Refused { status: s, code, message, offset },
            s => Error::Unreachable(format!("server at {} failed ({s}) during {what}: {message}", self.base)),
        }
    }

    fn unreachable(&self, what: &str, e: &reqwest::Error) -> Error {
        Error::Unreachable(format!("cannot reach server at {} ({what}): {}", self.base, error_chain(e)))
    }

    /// `POST /v1/files/check`: where the server stands on these files.
    ///
    /// # Errors
    /// As every call: [`Error::Unauthorized`], [`Error::Refused`], [`Error::Unreachable`].
    pub async fn check_files(&self, hashes: Vec<String>) -> Result<FileCheckResponse> {
        let req = self.files.post(format!("{}/v1/files/check", self.base)).json(&FileCheckRequest { hashes });
        let bytes = self.send_raw(req, "file check").await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("unreadable file check answer: {e}")))
    }

    /// `PUT /v1/files/{hash}`: the bytes of a file of `size` bytes from `offset` on.
    ///
    /// # Errors
    /// As every call; a wrong offset is [`Error::Refused`] with the `offset` to resume from.
    pub async fn upload_file(&self, hash: &str, size: u64, offset: u64, body: reqwest::Body) -> Result<()> {
        let resp = self
            .files
            .put(format!("{}/v1/files/{hash}", self.base))
            .bearer_auth(&self.token)
            .headers(self.peer_header())
            .header("upload-length", size)
            .header("upload-offset", offset)
            .header(reqwest::header::CONTENT_LENGTH, size - offset)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable("upload", &e))?;
        self.success(resp, "upload").await.map(drop)
    }

    /// `GET /v1/files/{hash}` from byte `from` on: the answer, to stream its body (206 when
    /// the server resumes there, 200 when it sends the whole file).
    ///
    /// # Errors
    /// As every call; a file the server does not give (yet) is [`Error::Refused`] 404.
    pub async fn download_file(&self, hash: &str, from: u64) -> Result<reqwest::Response> {
        let mut req = self
            .files
            .get(format!("{}/v1/files/{hash}", self.base))
            .bearer_auth(&self.token)
            .headers(self.peer_header());
        if from > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let resp = req.send().await.map_err(|e| self.unreachable("download", &e))?;
        self.success(resp, "download").await
    }

    /// The answer when it is a success, else the error it means.
    async fn success(&self, resp: reqwest::Response, what: &str) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Err(self.refusal(what, status, &body))
    }

    pub async fn schema(&self) -> Result<SchemaResponse> {
        self.send(self.http.get(format!("{}/v1/schema", self.base)), "schema").await
    }

    /// `GET /v1/admin/status` (admin token): the server's file store and transfer queue.
    pub async fn admin_status(&self) -> Result<ferry_protocol::ServerStatus> {
        self.send(self.http.get(format!("{}/v1/admin/status", self.base)), "status").await
    }

    /// `GET /v1/peer/users` (a peer link): every user of the other server.
    pub async fn peer_users(&self) -> Result<ferry_protocol::PeerUsers> {
        self.send(self.http.get(format!("{}/v1/peer/users", self.base)), "users").await
    }

    /// `POST /v1/peer/users` (a peer link): the other server adopts the users it lacks.
    pub async fn adopt_users(&self, users: &ferry_protocol::PeerUsers) -> Result<ferry_protocol::AdoptUsersResponse> {
        self.send(self.http.post(format!("{}/v1/peer/users", self.base)).json(users), "users").await
    }

    /// POSTs `req` as JSON to `path`; returns the answer's body and the bytes of the
    /// request's body (digest descents count what crosses).
    async fn post_counted<T: serde::Serialize>(&self, path: &str, what: &str, req: &T) -> Result<(bytes::Bytes, u64)> {
        let body = serde_json::to_vec(req).map_err(|e| Error::Local(format!("encoding a {what} request: {e}")))?;
        let sent = body.len() as u64;
        let post = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        Ok((self.send_raw(post, what).await?, sent))
    }

    /// As [`Remote::post_counted`], the answer read as JSON; with the bytes of both bodies.
    async fn post_json_counted<T: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
        req: &T,
    ) -> Result<(A, u64, u64)> {
        let (bytes, sent) = self.post_counted(path, what, req).await?;
        let answer = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("unreadable {what} answer from {}: {e}", self.base)))?;
        Ok((answer, sent, bytes.len() as u64))
    }

    /// As [`Remote::post_counted`], the answer decoded as a pull page; with the bytes of both
    /// bodies.
    async fn post_page_counted<T: serde::Serialize>(
        &self,
        schema: &ferry_core::schema::Schema,
        path: &str,
        what: &str,
        req: &T,
    ) -> Result<(ferry_protocol::DecodedPage, u64, u64)> {
        let (bytes, sent) = self.post_counted(path, what, req).await?;
        let page = ferry_protocol::decode_page(schema, &bytes)
            .map_err(|e| Error::Protocol(format!("server {} sent bad rows: {e}", self.base)))?;
        Ok((page, sent, bytes.len() as u64))
    }

    /// `POST /v1/peer/digests` (a peer link): the peer's summaries of nodes of a table's
    /// digest tree and the rows under others. Also returns the bytes of the request's and the
    /// answer's bodies.
    pub async fn digests(
        &self,
        req: &ferry_protocol::DigestRequest,
    ) -> Result<(ferry_protocol::DigestResponse, u64, u64)> {
        self.post_json_counted("/v1/peer/digests", "digests", req).await
    }

    /// `POST /v1/peer/rows` (a peer link): the peer's stored states of these keys, decoded
    /// as a pull page, with the bytes of the request's and the answer's bodies.
    pub async fn peer_rows(
        &self,
        schema: &ferry_core::schema::Schema,
        req: &ferry_protocol::PeerRowsRequest,
    ) -> Result<(ferry_protocol::DecodedPage, u64, u64)> {
        self.post_page_counted(schema, "/v1/peer/rows", "rows", req).await
    }

    /// `POST /v1/catch-up`: the digest tree of the rows this device may read (a catch-up by
    /// difference), with the bytes of the request's and the answer's bodies.
    pub async fn catch_up(
        &self,
        req: &ferry_protocol::CatchUpRequest,
    ) -> Result<(ferry_protocol::CatchUpResponse, u64, u64)> {
        self.post_json_counted("/v1/catch-up", "catch-up", req).await
    }

    /// `POST /v1/catch-up/rows`: the states of these keys this device may read, decoded as a
    /// pull page, with the bytes of the request's and the answer's bodies.
    pub async fn catch_up_rows(
        &self,
        schema: &ferry_core::schema::Schema,
        req: &ferry_protocol::PeerRowsRequest,
    ) -> Result<(ferry_protocol::DecodedPage, u64, u64)> {
        self.post_page_counted(schema, "/v1/catch-up/rows", "catch-up rows", req).await
    }

    /// `POST /v1/admin/integrity`: the server compares its store with a peer's (and repairs).
    pub async fn integrity(&self, req: &ferry_protocol::IntegrityRequest) -> Result<ferry_protocol::IntegrityReport> {
        self.send(self.http.post(format!("{}/v1/admin/integrity", self.base)).json(req), "integrity").await
    }

    /// `GET /v1/peer/full-sync/{id}` (a peer link): the peer's side of a full sync.
    pub async fn peer_full_sync(&self, id: &str) -> Result<ferry_protocol::PeerFullSync> {
        self.send(self.http.get(format!("{}/v1/peer/full-sync/{id}", self.base)), "full sync").await
    }

    /// `PUT /v1/peer/full-sync/{id}/chunks/{n}` (a peer link): one chunk of a snapshot, which
    /// the peer keeps only if its bytes hash to `sha256`.
    pub async fn put_chunk(&self, id: &str, n: u64, sha256: &str, bytes: Vec<u8>) -> Result<()> {
        let req = self
            .files
            .put(format!("{}/v1/peer/full-sync/{id}/chunks/{n}", self.base))
            .header(ferry_protocol::full_sync::CHUNK_SHA256_HEADER, sha256)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        self.send_raw(req, "chunk upload").await.map(|_| ())
    }

    /// `GET /v1/peer/full-sync/{id}/chunks/{n}` (a peer link): one chunk of the peer's
    /// snapshot.
    pub async fn get_chunk(&self, id: &str, n: u64) -> Result<bytes::Bytes> {
        let req = self.files.get(format!("{}/v1/peer/full-sync/{id}/chunks/{n}", self.base));
        self.send_raw(req, "chunk download").await
    }

    /// `POST /v1/peer/full-sync/{id}/restore` (a peer link): the peer restores the snapshot
    /// whose chunks it holds.
    pub async fn restore_snapshot(
        &self,
        id: &str,
        manifest: &ferry_protocol::SnapshotManifest,
    ) -> Result<ferry_protocol::PeerFullSync> {
        let req = self.http.post(format!("{}/v1/peer/full-sync/{id}/restore", self.base)).json(manifest);
        self.send(req, "restore").await
    }

    /// `POST /v1/peer/full-sync/{id}/snapshot` (a peer link): the peer takes a snapshot.
    pub async fn take_snapshot(
        &self,
        id: &str,
        req: &ferry_protocol::PeerSnapshotRequest,
    ) -> Result<ferry_protocol::PeerFullSync> {
        self.send(self.http.post(format!("{}/v1/peer/full-sync/{id}/snapshot", self.base)).json(req), "snapshot").await
    }

    /// `DELETE /v1/peer/full-sync/{id}` (a peer link): the peer stops its side (a restore
    /// rolls back) and removes its chunks.
    pub async fn end_full_sync(&self, id: &str) -> Result<()> {
        self.send_raw(self.http.delete(format!("{}/v1/peer/full-sync/{id}", self.base)), "full sync end")
            .await
            .map(|_| ())
    }

    /// `POST /v1/admin/full-sync`: the server starts a full sync with a peer.
    pub async fn start_full_sync(&self, req: &ferry_protocol::FullSyncRequest) -> Result<ferry_protocol::FullSyncRun> {
        self.send(self.http.post(format!("{}/v1/admin/full-sync", self.base)).json(req), "full sync").await
    }

    /// `GET /v1/admin/full-sync/{id}`.
    pub async fn full_sync_run(&self, id: &str) -> Result<ferry_protocol::FullSyncRun> {
        self.send(self.http.get(format!("{}/v1/admin/full-sync/{id}", self.base)), "full sync").await
    }

    /// `POST /v1/snapshot`: the server starts a snapshot of the rows this device may read in
    /// `tables` (every table when `None`), for a first hydrate.
    pub async fn start_snapshot(&self, tables: Option<&[String]>) -> Result<ferry_protocol::DeviceSnapshot> {
        let req = ferry_protocol::DeviceSnapshotRequest { tables: tables.map(<[String]>::to_vec) };
        self.send(self.http.post(format!("{}/v1/snapshot", self.base)).json(&req), "snapshot").await
    }

    /// `GET /v1/snapshot/{id}?after=N`: the snapshot as it stands, with its chunks from `after`
    /// on (the server waits a little for chunk `after` while it writes).
    pub async fn snapshot(&self, id: &str, after: u64) -> Result<ferry_protocol::DeviceSnapshot> {
        let req = self.http.get(format!("{}/v1/snapshot/{id}", self.base)).query(&[("after", after)]);
        self.send(req, "snapshot").await
    }

    /// `GET /v1/snapshot/{id}/chunks/{n}`: one chunk's bytes, as sent (the caller checks them
    /// against the hash the snapshot lists).
    pub async fn snapshot_chunk(&self, id: &str, n: u64) -> Result<bytes::Bytes> {
        self.send_raw(self.http.get(format!("{}/v1/snapshot/{id}/chunks/{n}", self.base)), "snapshot chunk").await
    }

    /// `DELETE /v1/snapshot/{id}`: done with it; the server removes its chunks.
    pub async fn end_snapshot(&self, id: &str) -> Result<()> {
        self.send_raw(self.http.delete(format!("{}/v1/snapshot/{id}", self.base)), "snapshot end").await.map(|_| ())
    }

    pub async fn me(&self) -> Result<WhoAmI> {
        self.send(self.http.get(format!("{}/v1/me", self.base)), "me").await
    }

    pub async fn push(&self, req: &PushRequest) -> Result<PushResponse> {
        let body = serde_json::to_vec(req).map_err(|e| Error::Local(format!("encoding a push: {e}")))?;
        self.push_json(body).await
    }

    /// As [`Remote::push`], with the request already serialized (a [`PushRequest`] as JSON).
    pub async fn push_json(&self, body: Vec<u8>) -> Result<PushResponse> {
        let req = self
            .http
            .post(format!("{}/v1/push", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req, "push").await
    }

    /// Opens the realtime stream (`/v1/stream`, a WebSocket) and waits for its hello.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for a refused token, [`Error::Unreachable`] otherwise.
    pub async fn stream(&self) -> Result<Stream> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws{}/v1/stream", self.base.strip_prefix("http").unwrap_or(&self.base));
        let mut req =
            url.as_str().into_client_request().map_err(|e| Error::Unreachable(format!("bad stream URL {url}: {e}")))?;
        let auth = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| Error::Local("the token is not valid in an HTTP header".into()))?;
        req.headers_mut().insert("authorization", auth);
        if let Some(link) = &self.peer {
            let value =
                link.parse().map_err(|_| Error::Local(format!("link name '{link}' is not valid in an HTTP header")))?;
            req.headers_mut().insert(ferry_protocol::PEER_HEADER, value);
        }
        let connect = tokio_tungstenite::connect_async(req);
        let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Err(_) => return Err(Error::Unreachable(format!("stream at {url}: no answer in 10 s"))),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) if resp.status() == 401 => {
                return Err(Error::Unauthorized(format!("stream at {url}: bad token")));
            }
            Ok(Err(e)) => return Err(Error::Unreachable(format!("cannot open the stream at {url}: {e}"))),
            Ok(Ok(ok)) => ok,
        };
        let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| Error::Unreachable(format!("stream at {url}: no hello in 10 s")))?;
        let ping_interval = match hello {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => match StreamMessage::parse(t.as_str()) {
                Some(StreamMessage::Hello { ping_interval_ms }) => Duration::from_millis(ping_interval_ms),
                _ => {
                    let shown: String = t.as_str().chars().take(100).collect();
                    return Err(Error::Protocol(format!("stream at {url}: expected a hello, got {shown}")));
                }
            },
            other => return Err(Error::Protocol(format!("stream at {url}: expected a hello, got {other:?}"))),
        };
        Ok(Stream { ws, ping_interval })
    }

    pub async fn pull(&self, cursor: &str, limit: usize) -> Result<PullResponse> {
        self.pull_tables(cursor, limit, None).await
    }

    /// A pull of only `tables` (every table when `None`).
    pub async fn pull_tables(&self, cursor: &str, limit: usize, tables: Option<&[String]>) -> Result<PullResponse> {
        self.send(self.pull_request(cursor, limit, tables, &[]), "pull").await
    }

    fn pull_request(
        &self,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
        subscriptions: &[String],
    ) -> reqwest::RequestBuilder {
        let mut req =
            self.http.get(format!("{}/v1/pull", self.base)).query(&[("cursor", cursor), ("limit", &limit.to_string())]);
        if let Some(t) = tables {
            req = req.query(&[("tables", t.join(","))]);
        }
        if !subscriptions.is_empty() {
            let json = serde_json::to_string(subscriptions).expect("strings serialize");
            req = req.query(&[("subscriptions", json)]);
        }
        req
    }

    /// As [`Remote::pull_tables`], the page's rows decoded against `schema` as they are read.
    pub async fn pull_decoded(
        &self,
        schema: &ferry_core::schema::Schema,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
        subscriptions: &[String],
    ) -> Result<ferry_protocol::DecodedPage> {
        let bytes = self.send_raw(self.pull_request(cursor, limit, tables, subscriptions), "pull").await?;
        ferry_protocol::decode_page(schema, &bytes)
            .map_err(|e| Error::Protocol(format!("server {} sent a bad pull page: {e}", self.base)))
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// An open realtime stream.
pub struct Stream {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ping_interval: Duration,
}

/// What the stream told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum News {
    /// Rows the device may read changed: pull.
    Rows,
    /// Files that rows of the device's user reference arrived on the server: the file
    /// worker may fetch them.
    Files,
}

impl Stream {
    /// Waits for the next change notification about rows (file news is skipped). An error:
    /// the stream is down (closed, broken, or silent for three ping intervals).
    ///
    /// # Errors
    /// [`Error::Unreachable`] naming why the stream ended.
    pub async fn changed(&mut self) -> Result<()> {
        loop {
            if self.news().await? == News::Rows {
                return Ok(());
            }
        }
    }

    /// Waits for the next notification, rows or files.
    ///
    /// # Errors
    /// [`Error::Unreachable`] naming why the stream ended.
    pub async fn news(&mut self) -> Result<News> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let next = tokio::time::timeout(self.ping_interval * 3, self.ws.next()).await;
            match next {
                Err(_) => return Err(Error::Unreachable("the stream went silent".into())),
                Ok(None) => return Err(Error::Unreachable("the server closed the stream".into())),
                Ok(Some(Err(e))) => return Err(Error::Unreachable(format!("the stream broke: {e}"))),
                Ok(Some(Ok(Message::Text(t)))) => match StreamMessage::parse(t.as_str()) {
                    Some(StreamMessage::Changed) => return Ok(News::Rows),
                    Some(StreamMessage::Files) => return Ok(News::Files),
                    // A hello again, or a message of a newer server: nothing to do.
                    Some(StreamMessage::Hello { .. }) | None => {}
                },
                Ok(Some(Ok(Message::Close(_)))) => {
                    return Err(Error::Unreachable("the server closed the stream".into()));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// The `Ferry-Signature` of a webhook delivery's `body` sent at `unix_s` with `secret`:
/// `t=UNIX_S,v1=HEX`, where HEX is the HMAC-SHA256 of `"{unix_s}.{body}"` (docs/monitoring.md
/// shows how a receiver checks it).
pub fn webhook_signature(secret: &str, unix_s: u64, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_s},v1={}", ferry_core::to_hex(&mac.finalize().into_bytes()))
}

/// POSTs a signed webhook delivery (once, 10 s at most): `body` (JSON) with the headers
/// `Ferry-Event`, `Ferry-Delivery` (the same on every attempt) and `Ferry-Signature`
/// ([`webhook_signature`]). The status it answered.
///
/// # Errors
/// The URL is not http(s), or the hook cannot be reached.
pub async fn post_signed_webhook(url: &str, secret: &str, event: &str, delivery: &str, body: Vec<u8>) -> Result<u16> {
    let unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let signature = webhook_signature(secret, unix_s, &body);
    post_hook(url, |post| {
        post.header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("ferry-event", event)
            .header("ferry-delivery", delivery)
            .header("ferry-signature", signature)
            .body(body)
    })
    .await
}

/// POSTs `body` as JSON to a webhook `url` (once, 10 s at most); the status it answered.
///
/// # Errors
/// The URL is not http(s), or the hook cannot be reached.
pub async fn post_webhook(url: &str, body: &impl serde::Serialize) -> Result<u16> {
    post_hook(url, |post| post.json(body)).await
}

/// One POST to a webhook `url`, its body and headers set by `with`; the status it answered.
async fn post_hook(url: &str, with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Result<u16> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Local(format!("webhook '{url}' is not an http:// or https:// URL")));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Local(format!("cannot build HTTP client: {e}")))?;
    let resp = with(http.post(url))
        .send()
        .await
        .map_err(|e| Error::Unreachable(format!("cannot reach webhook {url}: {}", error_chain(&e))))?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_webhook_signature_is_the_hmac_a_receiver_computes() {
        // Computed apart, with Python's hmac (the receiver's check in docs/monitoring.md).
        let want = "t=1700000000,v1=efa376ec047f90c08a22280e22ade68f930880cd4d4a2211ddc8cfa8e62df4da";
        let body = br#"{"event":"alert.raised"}"#;
        assert_eq!(super::webhook_signature("0123456789abcdef", 1_700_000_000, body), want);
    }
}
