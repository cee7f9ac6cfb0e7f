//! `GET /metrics`: the server's metrics in Prometheus' text format (docs/monitoring.md).
//!
//! Counters and histograms are recorded where things happen, through the `metrics` facade,
//! into one recorder per process ([`handle`]); the state of links, conflicts, files and the
//! store's connections is read when a scrape asks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_store::Store;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{ApiError, AppState};

/// The buckets of every `…_seconds` histogram: 1 ms to a minute.
const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The process's recorder, installed by the first call. `None` when another recorder was
/// installed first (an embedding application's): its exporter has the metrics then.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .expect("the buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!("/metrics answers 404: a metrics recorder was installed before ferry's ({e})");
                    None
                }
            }
        })
        .as_ref()
}

/// The `# HELP` of each metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("ferry_http_requests_total", "HTTP requests answered, by method, route and status");
    describe_histogram!("ferry_http_request_duration_seconds", "Time to answer an HTTP request (to its head)");
    describe_counter!("ferry_push_rows_total", "Rows received in pushes");
    describe_counter!("ferry_push_changed_rows_total", "Pushed rows that changed the store");
    describe_counter!("ferry_push_bytes_total", "Bytes of push request bodies");
    describe_histogram!("ferry_push_duration_seconds", "Time to merge and commit one push batch");
    describe_counter!("ferry_pull_rows_total", "Rows sent in pull pages");
    describe_counter!("ferry_pull_bytes_total", "Bytes of pull pages");
    describe_histogram!("ferry_pull_duration_seconds", "Time to read and encode one pull page");
    describe_counter!("ferry_refused_changes_total", "Pushed rows refused one by one, by table and reason");
    describe_gauge!(
        "ferry_conflicts",
        "Conflicts recorded in the store, by table, strategy and state (open or resolved)"
    );
    describe_gauge!("ferry_stream_clients", "Realtime streams open on this process");
    describe_counter!("ferry_file_transfers_total", "File transfers ended, by direction (in, out) and outcome");
    describe_counter!("ferry_file_bytes_total", "File bytes received (in) and sent (out)");
    describe_gauge!("ferry_file_transfers_in_flight", "File transfers running on this process");
    describe_gauge!("ferry_peer_connected", "1 while a peer link is connected (or degraded), else 0");
    describe_gauge!("ferry_peer_lag_seconds", "How long changes have waited to cross a peer link");
    describe_gauge!("ferry_peer_down_seconds", "How long a peer link has been down (0 while it is up)");
    describe_gauge!("ferry_peer_file_queue", "Files waiting to cross a peer link");
    describe_gauge!("ferry_alerts", "Built-in alerts that hold now (1), by peer, kind and severity");
    describe_gauge!("ferry_store_connections", "The store's connections, by state (max, open, in_use, waiting)");
}

/// Counts each request by method, matched route (`unmatched` for a 404 outside the routes)
/// and status, and times it to its head.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("ferry_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("ferry_http_requests_total", "method" => method, "route" => route, "status" => status).increment(1);
    response
}

/// A realtime stream open on this process, counted in `ferry_stream_clients` while it lives.
pub struct StreamClient(());

impl StreamClient {
    pub fn open() -> StreamClient {
        gauge!("ferry_stream_clients").increment(1.0);
        StreamClient(())
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        gauge!("ferry_stream_clients").decrement(1.0);
    }
}

/// `GET /metrics`: no token (as `/health/sync`: for monitors; it names tables, peers and
/// counts, never rows or tokens).
pub async fn metrics<S: Store>(State(state): State<Arc<AppState<S>>>) -> Result<Response, ApiError> {
    let Some(handle) = handle() else {
        return Err(ApiError::NotFound("this process's metrics go to another exporter".into()));
    };
    read_state(&state).await?;
    handle.run_upkeep();
    let text = handle.render();
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// Sets the gauges that describe state rather than events.
async fn read_state<S: Store>(state: &AppState<S>) -> Result<(), ApiError> {
    let now = crate::peer::now_ms();
    let links: Vec<_> = state.store.links().await?.into_iter().map(|p| crate::peer::seen_at(p, now)).collect();
    let active = crate::peer::alerts(&links, &state.alerts, now);
    for p in links.iter().filter(|p| p.enabled) {
        let peer = p.name.clone();
        let up = crate::peer::is_up(p);
        gauge!("ferry_peer_connected", "peer" => peer.clone()).set(if up { 1.0 } else { 0.0 });
        gauge!("ferry_peer_lag_seconds", "peer" => peer.clone()).set(crate::peer::lag_at(p, now) as f64 / 1000.0);
        let down = if up { 0 } else { p.down_since_ms.map_or(0, |at| now.saturating_sub(at)) };
        gauge!("ferry_peer_down_seconds", "peer" => peer.clone()).set(down as f64 / 1000.0);
        gauge!("ferry_peer_file_queue", "peer" => peer).set(p.file_queue as f64);
        // Every alert kind, 0 when it does not hold: an alert that clears is seen to clear,
        // not left at its last value.
        for (kind, severity) in crate::peer::ALERT_KINDS {
            let on = active.iter().any(|a| a.peer == p.name && a.kind == *kind);
            gauge!("ferry_alerts", "peer" => p.name.clone(), "kind" => *kind, "severity" => *severity).set(if on {
                1.0
            } else {
                0.0
            });
        }
    }
    // A count that fell to none (every open conflict of a table resolved) reads 0, not its
    // last value.
    static COUNTED: std::sync::Mutex<BTreeSet<(String, String, &str)>> = std::sync::Mutex::new(BTreeSet::new());
    let counts = state.store.conflict_counts().await?;
    let mut counted = COUNTED.lock().unwrap_or_else(|p| p.into_inner());
    let now_counted: BTreeMap<(String, String, &str), u64> = counts
        .into_iter()
        .map(|c| ((c.table, c.strategy, if c.open { "open" } else { "resolved" }), c.count))
        .collect();
    counted.extend(now_counted.keys().cloned());
    for labels in counted.iter() {
        let n = now_counted.get(labels).copied().unwrap_or(0);
        let (table, strategy, open) = labels.clone();
        gauge!("ferry_conflicts", "table" => table, "strategy" => strategy, "state" => open).set(n as f64);
    }
    drop(counted);
    gauge!("ferry_file_transfers_in_flight").set(state.files.in_flight() as f64);
    let pool = state.store.pool_use();
    for (what, n) in [("max", pool.max), ("open", pool.open), ("in_use", pool.in_use), ("waiting", pool.waiting)] {
        gauge!("ferry_store_connections", "state" => what).set(n as f64);
    }
    Ok(())
}
