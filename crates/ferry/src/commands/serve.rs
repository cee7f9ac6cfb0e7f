//! `ferry serve`: the sync server, until Ctrl-C or SIGTERM.

use anyhow::{Context, Result};
use ferry_store::Store;

use super::shutdown_signal;
use crate::cli::ServerArgs;

pub async fn run(args: ServerArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let (config, store) = args.open_store().await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is another server using it?", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(store = store.describe(), tables = store.schema().tables.len(), "store ready");
    let files = config.open_files().await.map_err(anyhow::Error::msg)?;
    println!("listening on http://{addr}");
    ferry_server::run(listener, store, config.max_body_bytes, files, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
