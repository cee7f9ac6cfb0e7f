//! `ferry file`: a replica's files (add, open), moving them (sync), the worker's switches
//! (pause, resume, trigger) and its queue and log.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use ferry_client::{Remote, Replica};
use indicatif::{ProgressBar, ProgressStyle};

use super::{open_replica, peak_rss_kb};
use crate::cli::{FileCommand, FileLimits, FileSyncArgs};

impl FileLimits {
    pub fn options(&self) -> Result<ferry_client::files::FileOptions> {
        if self.concurrency == 0 {
            bail!("--files-concurrency 0: at least one file must be able to move; use `ferry file pause` to stop them");
        }
        if self.rate_kbps == Some(0) {
            bail!("--files-rate 0 would never move a byte; leave it out for no limit, or use `ferry file pause`");
        }
        Ok(ferry_client::files::FileOptions {
            concurrency: self.concurrency,
            rate: self.rate_kbps.map(|k| k * 1024),
            interval: self.files_interval,
            ..Default::default()
        })
    }
}

pub async fn run(command: FileCommand) -> Result<()> {
    match command {
        FileCommand::Add { db, path, json } => {
            let replica = Replica::open(&db)?;
            let (hash, size) = replica.add_file(&path)?;
            if json {
                println!("{}", serde_json::json!({"hash": hash, "size": size, "path": replica.files().path(&hash)}));
            } else {
                eprintln!("added '{}' ({size} bytes) to {}", path.display(), replica.files().dir().display());
                println!("{hash}");
            }
        }
        FileCommand::Open { db, hash, out } => {
            let replica = open_replica(&db)?;
            let files = replica.files();
            let mut input = files.open(&hash)?;
            match out {
                Some(out) => {
                    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)
                        .with_context(|| format!("cannot write in '{}'", dir.display()))?;
                    let (got, _) = ferry_client::files::copy_hashing(&mut input, tmp.as_file_mut())?;
                    if got != hash {
                        bail!(
                            "file {hash} on this device is corrupt (its bytes hash to {got}); `ferry file sync` fetches it again once it is moved aside"
                        );
                    }
                    tmp.persist(&out).with_context(|| format!("cannot write '{}'", out.display()))?;
                }
                None => {
                    let (got, _) = ferry_client::files::copy_hashing(&mut input, &mut std::io::stdout().lock())?;
                    if got != hash {
                        bail!(
                            "file {hash} on this device is corrupt (its bytes hash to {got}); what was written is not the file"
                        );
                    }
                }
            }
        }
        FileCommand::Sync(args) => sync(args).await?,
        FileCommand::Pause { db } => {
            open_replica(&db)?.pause_files()?;
            eprintln!("file transfers paused on '{}'; `ferry file resume` lets them run again", db.display());
        }
        FileCommand::Resume { db } => {
            open_replica(&db)?.resume_files()?;
            eprintln!("file transfers resumed on '{}'", db.display());
        }
        FileCommand::Trigger { db } => {
            open_replica(&db)?.trigger_files()?;
            eprintln!("asked the file worker of '{}' to look now", db.display());
        }
        FileCommand::Status { db, json } => {
            let replica = open_replica(&db)?;
            let queue = replica.file_queue()?;
            let totals = replica.file_queue_totals()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"totals": totals, "files": queue}))?);
            } else {
                println!(
                    "{} files queued ({} up, {} down), {} bytes known pending{}",
                    totals.queued,
                    totals.uploads,
                    totals.downloads,
                    totals.bytes_pending,
                    if totals.paused { "; PAUSED" } else { "" }
                );
                for q in queue {
                    println!(
                        "{:4} {} {:>12} attempts {}{}",
                        if q.direction == ferry_client::files::Direction::Up { "up" } else { "down" },
                        q.hash,
                        q.size.map_or("?".to_owned(), |s| s.to_string()),
                        q.attempts,
                        q.last_error.map(|e| format!(" last error: {e}")).unwrap_or_default()
                    );
                }
            }
        }
        FileCommand::Log { db, limit, json } => {
            let log = open_replica(&db)?.file_log(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log)?);
            } else {
                for t in log {
                    println!(
                        "{} {:4} {} {} bytes, {} moved in {} ms: {}{}",
                        t.at,
                        t.direction,
                        t.hash,
                        t.size,
                        t.bytes,
                        t.millis,
                        t.outcome,
                        t.error.map(|e| format!(" ({e})")).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}

async fn sync(args: FileSyncArgs) -> Result<()> {
    let replica = open_replica(&args.db)?;
    let Some(server) = args.to.server(&replica)? else { return Err(super::no_server(&args.db)) };
    drop(replica);
    let remote = Remote::new(&server, args.to.token()?)?;
    if args.attempts == 0 {
        bail!("--attempts 0 would try nothing; give at least 1");
    }
    let opts = ferry_client::files::FileOptions { attempts: args.attempts, ..args.limits.options()? };
    let bar = if args.json || !std::io::stderr().is_terminal() { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("files {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("template"),
    );
    let (json, progress) = (args.json, bar.clone());
    let report = ferry_client::files::sync_files(&args.db, &remote, &opts, move |e| {
        use ferry_client::files::FileEvent;
        match &e {
            FileEvent::Progress { bytes, total } => {
                progress.set_length(*total);
                progress.set_position(*bytes);
            }
            // The bar shows progress; only what went wrong gets a line (`ferry file log` has all).
            FileEvent::Transferred(t) if !json && t.outcome == "ok" => {}
            FileEvent::Transferred(_) | FileEvent::Warning(_) if !json => {
                progress.suspend(|| print_file_event(&e, false))
            }
            FileEvent::Transferred(_) | FileEvent::Warning(_) => print_file_event(&e, true),
            _ => {}
        }
    })
    .await;
    bar.finish_and_clear();
    let report = report.with_context(|| format!("file sync of '{}' with {server} failed", args.db.display()))?;
    if args.json {
        let mut out = serde_json::to_value(&report)?;
        out["peak_rss_kb"] = peak_rss_kb().into();
        println!("{}", serde_json::to_string(&out)?);
    } else {
        eprintln!(
            "files: {} uploaded, {} downloaded, {} bytes in {} ms; {} waiting, {} failed",
            report.uploaded, report.downloaded, report.bytes, report.millis, report.waiting, report.failed
        );
    }
    if report.failed > 0 {
        bail!("{} files failed every attempt; see `ferry file status --db {}`", report.failed, args.db.display());
    }
    Ok(())
}

/// One line of the sync log for a file event.
pub fn print_file_event(e: &ferry_client::files::FileEvent, json: bool) {
    use ferry_client::files::FileEvent;
    let line = match (e, json) {
        (FileEvent::Transferred(t), true) => serde_json::json!({"event": "file", "transfer": t}).to_string(),
        (FileEvent::Transferred(t), false) => format!(
            "file {} {} {} bytes ({} moved in {} ms): {}{}",
            t.direction,
            t.hash,
            t.size,
            t.bytes,
            t.millis,
            t.outcome,
            t.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        ),
        (FileEvent::Warning(w), true) => serde_json::json!({"event": "warning", "message": w}).to_string(),
        (FileEvent::Warning(w), false) => format!("warning: {w}"),
        (FileEvent::Held { why }, true) => serde_json::json!({"event": "file_held", "why": why}).to_string(),
        (FileEvent::Waiting { hash, direction, reason }, true) => serde_json::json!({
            "event": "file_waiting", "hash": hash, "direction": direction.name(), "reason": reason
        })
        .to_string(),
        (FileEvent::Held { why }, false) => {
            format!("files: {why} while paused; nothing moves until `ferry file resume`")
        }
        (FileEvent::Queue { queued, bytes_pending }, true) if *queued > 0 => {
            serde_json::json!({"event": "file_queue", "queued": queued, "bytes_pending": bytes_pending}).to_string()
        }
        _ => return,
    };
    println!("{line}");
}
