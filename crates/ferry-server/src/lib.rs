//! `ferry serve`: the sync server over HTTP.
//!
//! - [`config`]: `ferry.toml`, flags and environment variables.
//! - [`error`]: the one mapping from errors to HTTP status, code and JSON body.
//! - `auth`: the bearer-token extractor (401 without or with a bad token).
//! - `guard`: what every request passes through (request id, early 413, JSON errors).
//! - `conn`: the connections, the only code that touches socket bytes.
//! - `push`, `pull`, `info`, `admin`: one file per request kind.
//! - [`metrics`]: `GET /metrics` and the request counts behind it.
//!
//! Only this crate knows HTTP. It decodes bodies with `ferry-protocol`, hands core row
//! states to a [`ferry_store::Store`] and never touches SQL itself.

pub mod config;
mod conn;
pub mod error;
mod guard;

mod admin;
mod auth;
mod catch_up;
mod dashboard;
pub mod files;
mod full_sync;
mod hydrate;
mod info;
mod integrity;
pub mod lag;
pub mod metrics;
pub mod peer;
mod pull;
mod push;
mod rows;
pub mod stream;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use ferry_store::Store;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

pub use config::{Config, ConfigError, Overrides};
pub use dashboard::session::hash_password;
pub use error::ApiError;
pub use files::Files;

/// What every handler shares.
pub struct AppState<S> {
    pub store: S,
    pub max_body_bytes: usize,
    pub files: Arc<Files>,
    /// The devices of this process's open streams, and the news of their revocation.
    pub revocations: stream::Revocations,
    /// When devices were last recorded as seen.
    pub seen: auth::Seen,
    /// When peers linking to this server last called.
    pub peers: peer::Heard,
    /// When links raise alerts (`[alerts]`).
    pub alerts: config::AlertThresholds,
    /// `[[alerts.webhook]]`: told of full syncs' outcomes (and, by the alert watcher, of alerts).
    pub webhooks: ferry_peer::webhooks::Hooks,
    /// The `[peers.NAME]` sections: the peers an operator may check this store against.
    pub links: Vec<config::PeerConfig>,
    /// How long the sync log keeps entries.
    pub sync_log_keep: std::time::Duration,
    /// The digest trees of peers' running integrity checks.
    pub trees: integrity::Trees,
    /// Full syncs: this process's runs and its side of peers' runs.
    pub full_syncs: full_sync::FullSyncs,
    /// The devices' running catch-ups by difference.
    pub catch_ups: catch_up::Walks,
    /// The devices' snapshots for a first hydrate.
    pub snapshots: hydrate::Snapshots,
    /// The dashboard's signed-in sessions.
    pub dashboard: dashboard::session::Sessions,
}

/// `bytes` random bytes as hex: the ids and secrets this crate makes (request ids, the REST
/// API's batch ids, dashboard sessions and their CSRF tokens).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the system's random source");
    ferry_core::to_hex(&b)
}

/// The HTTP routes over `store` as `config` sets them up, with `files` for the files rows
/// reference.
pub fn router<S: Store>(store: S, config: &Config, files: Files) -> Router {
    let max_body_bytes = config.max_body_bytes;
    use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
    let limits = guard::Limits { body: max_body_bytes, upload: files.max_upload_bytes() };
    let state = Arc::new(AppState {
        store,
        max_body_bytes,
        files: Arc::new(files),
        revocations: Default::default(),
        seen: Default::default(),
        peers: Default::default(),
        alerts: config.alerts.clone(),
        webhooks: config.webhooks.clone(),
        links: config.peers.clone(),
        sync_log_keep: config.sync_log_keep,
        trees: Default::default(),
        full_syncs: full_sync::FullSyncs::new(config.data_dir.join("full-sync"), config.full_sync_exclude.clone()),
        catch_ups: Default::default(),
        snapshots: hydrate::Snapshots::new(config.data_dir.join("snapshots")),
        dashboard: Default::default(),
    });
    // File bytes are compressed already or random-looking, and must keep their length for
    // ranges: only JSON answers are compressed.
    let compress = DefaultPredicate::new().and(NotForContentType::const_new("application/octet-stream"));
    // The recorder is in place before the first request is counted.
    let _ = metrics::handle();
    Router::new()
        .route("/health/live", get(info::live))
        .route("/health/sync", get(peer::health::<S>))
        .route("/metrics", get(metrics::metrics::<S>))
        .route("/v1/schema", get(info::schema::<S>))
        .route("/v1/me", get(info::me::<S>))
        .route("/v1/push", post(push::push::<S>))
        .route("/v1/pull", get(pull::pull::<S>))
        .route("/v1/rows/{table}/{key}", get(rows::get_row::<S>).put(rows::put_row::<S>).delete(rows::delete_row::<S>))
        .route("/v1/changes", get(rows::changes::<S>))
        .route("/v1/stream", get(stream::stream::<S>))
        .route("/v1/snapshot", post(hydrate::start::<S>))
        .route("/v1/snapshot/{id}", get(hydrate::show::<S>).delete(hydrate::end::<S>))
        .route("/v1/snapshot/{id}/chunks/{n}", get(hydrate::chunk::<S>))
        .route("/v1/catch-up", post(catch_up::digests::<S>))
        .route("/v1/catch-up/rows", post(catch_up::rows::<S>))
        .route("/v1/files/check", post(files::check::<S>))
        .route("/v1/files/{hash}", get(files::download::<S>).put(files::upload::<S>))
        .route("/v1/admin/status", get(files::status::<S>))
        .route("/v1/admin/conflicts", get(admin::list::<S>))
        .route("/v1/admin/conflicts/{id}", get(admin::show::<S>))
        .route("/v1/admin/conflicts/{id}/resolve", post(admin::resolve::<S>))
        .route("/v1/admin/devices", get(admin::devices::<S>))
        .route("/v1/admin/devices/{id}/revoke", post(admin::revoke_device::<S>))
        .route("/v1/admin/sync/status", get(peer::status::<S>))
        .route("/v1/admin/sync/log", get(peer::log::<S>))
        .route("/v1/admin/alerts", get(peer::list_alerts::<S>))
        .route("/v1/admin/integrity", post(integrity::run::<S>))
        .route("/v1/admin/full-sync", get(full_sync::list::<S>).post(full_sync::start::<S>))
        .route("/v1/admin/full-sync/clear", post(full_sync::clear::<S>))
        .route("/v1/admin/full-sync/{id}", get(full_sync::show::<S>))
        .route("/v1/admin/full-sync/{id}/cancel", post(full_sync::cancel::<S>))
        .route("/v1/peer/full-sync/{id}", get(full_sync::peer_state::<S>).delete(full_sync::end::<S>))
        .route("/v1/peer/full-sync/{id}/snapshot", post(full_sync::snapshot::<S>))
        .route("/v1/peer/full-sync/{id}/restore", post(full_sync::restore::<S>))
        .route("/v1/peer/full-sync/{id}/chunks/{n}", get(full_sync::get_chunk::<S>).put(full_sync::put_chunk::<S>))
        .route("/v1/peer/users", get(peer::users::<S>).post(peer::adopt_users::<S>))
        .route("/v1/peer/digests", post(integrity::digests::<S>))
        .route("/v1/peer/rows", post(integrity::rows::<S>))
        // The dashboard's HTML pages (docs/dashboard.md; not the JSON API of docs/openapi.json).
        .merge(dashboard::routes())
        .fallback(info::not_found)
        .method_not_allowed_fallback(info::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestDecompressionLayer::new())
        // Outside decompression, which drops a compressed body's Content-Length (so the guard
        // still refuses it from the head) and answers an unknown encoding with an empty 415
        // (which the guard makes JSON); inside compression, so it reads error bodies as made.
        .layer(axum::middleware::from_fn_with_state(limits, guard::guard))
        // Outside the guard: what it answers (413, its JSON errors) is counted too.
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(CompressionLayer::new().quality(tower_http::CompressionLevel::Fastest).compress_when(compress))
        .with_state(state)
}

/// Serves `store` on `listener` until `shutdown` completes, then finishes the requests in
/// flight and returns.
///
/// # Errors
/// The listener's I/O error.
pub async fn run<S: Store>(
    listener: TcpListener,
    store: S,
    config: &Config,
    files: Files,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(conn::Listener(listener), router(store, config, files)).with_graceful_shutdown(shutdown).await
}
