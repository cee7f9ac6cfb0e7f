//! `ferry compact --older-than 30d`: history older than a horizon leaves the server's store.

use anyhow::Result;
use ferry_store::Store;

use crate::cli::CompactArgs;

pub async fn run(args: CompactArgs) -> Result<()> {
    let (_, store) = args.server.open_store().await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let before = now.saturating_sub(args.older_than.as_millis() as u64);
    if !args.json {
        eprintln!("compacting history older than {} s …", args.older_than.as_secs());
    }
    let started = std::time::Instant::now();
    let done = store.compact(before).await?;
    if args.json {
        println!("{}", serde_json::to_string(&done)?);
    } else {
        println!(
            "removed {} tombstones, {} old reaches and {} batch records in {} ms; cursors before position {} now re-sync",
            done.tombstones,
            done.exits,
            done.batches,
            started.elapsed().as_millis(),
            done.horizon
        );
    }
    Ok(())
}
