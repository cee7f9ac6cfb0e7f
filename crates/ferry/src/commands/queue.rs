//! `ferry queue`: a replica's sync queue, and retrying or giving up what was set aside.

use anyhow::{Result, bail};

use super::open_replica;
use crate::cli::QueueArgs;

pub fn run(args: QueueArgs) -> Result<()> {
    let mut replica = open_replica(&args.db)?;
    if args.retry_failed {
        println!("{} set-aside changes back in the queue; they are pushed at the next sync", replica.retry_failed()?);
        return Ok(());
    }
    if args.clear_failed {
        println!("{} set-aside changes given up; their local values stay on this device", replica.clear_failed()?);
        return Ok(());
    }
    if let Some(hours) = args.clear_completed_older_than {
        if !(hours >= 0.0 && hours.is_finite()) {
            bail!("--clear-completed-older-than {hours} must be a number of hours, 0 or more");
        }
        println!("{} completed syncs older than {hours} h forgotten", replica.clear_completed_older_than(hours)?);
        return Ok(());
    }
    let status = replica.status()?;
    let failed = replica.failed()?;
    let refused_pulls = replica.refused_pulls()?;
    let history = replica.history(args.history)?;
    if args.json {
        let out = serde_json::json!({
            "pending": status.pending,
            "failed": failed,
            "refused_pulls": refused_pulls,
            "conflicted": status.conflicted,
            "last_sync": replica.last_completed()?,
            "history": history,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("pending      {} rows", status.pending);
    println!("conflicted   {} (ferry conflicts refused --db …)", status.conflicted);
    println!("failed       {} set aside", failed.len());
    for f in &failed {
        println!("  #{} {} '{}' ({} {}) at {}: {}", f.id, f.table, f.key, f.status, f.code, f.failed_at, f.message);
    }
    println!(
        "refused      {} pulled rows that break a rule, set aside (fix them on the server: ferry audit)",
        refused_pulls.len()
    );
    for r in &refused_pulls {
        println!("  {} '{}' at {}: {}", r.table, ferry_core::shown(&r.key), r.refused_at, r.message);
    }
    println!("last sync    {}", replica.last_completed()?.as_deref().unwrap_or("never completed"));
    for h in &history {
        let what = match &h.error {
            Some(e) => format!("failed: {e}"),
            None => format!("pushed {}, pulled {}, set aside {}", h.pushed, h.pulled, h.set_aside),
        };
        println!("  {} → {}  {}", h.started_at, h.finished_at, what);
    }
    Ok(())
}
