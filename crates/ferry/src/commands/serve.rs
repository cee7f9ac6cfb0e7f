//! `ferry serve`: the sync server, until Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use ferry_store::{AnyStore, Store};

use super::shutdown_signal;
use crate::cli::{LogFormat, ServeArgs};

pub async fn run(args: ServeArgs) -> Result<()> {
    let log = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
    let (config, store) = args.server.open_store().await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is another server using it?", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(store = store.describe(), tables = store.schema().tables.len(), "store ready");
    let files = config.open_files().await.map_err(anyhow::Error::msg)?;
    ferry_peer::full_sync::Exclude::parse(store.schema(), &config.full_sync_exclude).map_err(anyhow::Error::msg)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = start_links(&config, &store, &stopped).await?;
    if config.role.is_some() {
        tasks.push(tokio::spawn(ferry_server::peer::watch_alerts(
            store.clone(),
            config.alerts.clone(),
            config.webhooks.clone(),
            config.sync_log_keep,
            ALERTS_EVERY,
            stopped.clone(),
        )));
    }
    if let Some(older_than) = config.compact_older_than {
        tasks.push(tokio::spawn(compact_every_hour(store.clone(), older_than, stopped.clone())));
    }
    println!("listening on http://{addr}");
    ferry_server::run(listener, store, &config, files, shutdown_signal()).await?;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often the links' alerts are looked at (and raised or cleared in the sync log).
const ALERTS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a link for each `[peers.NAME]` section (a disabled one only records its state and
/// is warned about).
async fn start_links(
    config: &ferry_server::Config,
    store: &AnyStore,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let synced = store.schema().table_names();
    let mut links = Vec::new();
    // The links' own handle on the file store, when the schema has file columns.
    let files = if config.peers.is_empty() || !store.schema().tables.iter().any(|t| !t.options.files.is_empty()) {
        None
    } else {
        let local = config.open_file_store().await.map_err(anyhow::Error::msg)?;
        let staging = config.data_dir.join("peer-downloads");
        Some(std::sync::Arc::new(ferry_peer::LocalFiles { store: local, staging }))
    };
    for peer in &config.peers {
        let link = peer.link(&synced, config.sync_log_keep, files.clone()).map_err(anyhow::Error::msg)?;
        if peer.enabled {
            tracing::info!(peer = %peer.name, url = %peer.url, tables = link.tables.len(), "linking to peer");
        } else {
            tracing::warn!(peer = %peer.name, "peer link disabled (enabled = false in [peers.{}]): nothing crosses until it is enabled", peer.name);
        }
        links.push(tokio::spawn(ferry_peer::run(store.clone(), link, stopped.clone())));
    }
    Ok(links)
}

/// `[server] compact_older_than`: compacts history older than that now and every hour.
async fn compact_every_hour(
    store: AnyStore,
    older_than: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        match store.compact(now.saturating_sub(older_than.as_millis() as u64)).await {
            Ok(done) if done.tombstones + done.exits + done.batches > 0 => tracing::info!(
                tombstones = done.tombstones,
                exits = done.exits,
                batches = done.batches,
                horizon = done.horizon,
                "compacted history"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("compaction failed (tried again in an hour): {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}
