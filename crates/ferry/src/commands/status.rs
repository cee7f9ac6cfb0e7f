//! `ferry status`: a replica's sync state.

use anyhow::Result;

use super::open_replica;
use crate::cli::StatusArgs;

pub fn run(args: StatusArgs) -> Result<()> {
    let replica = open_replica(&args.db)?;
    let s = replica.status()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("replica      {}", args.db.display());
        println!("server       {}", s.server.as_deref().unwrap_or("none (never synced)"));
        println!("connection   {}", s.connection.as_deref().unwrap_or("no engine has run (ferry sync --watch)"));
        if let Some(why) = &s.stopped_because {
            println!("stopped      {why}");
        }
        println!("user         {}", s.user_id.as_deref().unwrap_or("-"));
        println!("last sync    {}", s.last_sync.as_deref().unwrap_or("never"));
        println!("pending      {} rows ({} writes not yet stamped)", s.pending, s.unstamped);
        println!("conflicts    {}", s.conflicts);
        println!("conflicted   {} local changes refused as stale (see `ferry conflicts refused`)", s.conflicted);
        println!("failed       {} local changes refused as invalid, set aside (see `ferry queue`)", s.failed);
        println!("refused      {} pulled rows that break a rule, set aside (see `ferry queue`)", s.refused_pulls);
        println!("rejected     {} (see _ferry_rejected)", s.rejected);
        println!(
            "files        {} queued ({} up, {} down), {} bytes pending{}{}",
            s.files.queued,
            s.files.uploads,
            s.files.downloads,
            s.files.bytes_pending,
            if s.files.failing > 0 { format!(", {} failing", s.files.failing) } else { String::new() },
            if s.files.paused { ", PAUSED" } else { "" }
        );
        println!("cursor       {}", s.cursor);
        println!("tables       {}", if s.tables.is_empty() { "-".to_owned() } else { s.tables.join(", ") });
    }
    Ok(())
}
