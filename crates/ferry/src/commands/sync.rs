//! `ferry sync`: one sync of a replica with a server, or with `--watch` the client engine
//! (and the file worker beside it) until Ctrl-C or SIGTERM.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_client::replica::Key;
use ferry_client::{Progress, Remote, Replica, SyncOptions};
use indicatif::{ProgressBar, ProgressStyle};

use super::file::print_file_event;
use super::{peak_rss_kb, shutdown_signal};
use crate::cli::SyncArgs;

pub async fn run(args: SyncArgs) -> Result<()> {
    if args.page_rows == 0 || args.page_rows > ferry_protocol::MAX_PAGE_ROWS {
        bail!("--page-rows {} must be from 1 to {}", args.page_rows, ferry_protocol::MAX_PAGE_ROWS);
    }
    let mut replica = Replica::open(&args.db)?;
    let server = match args.to.server(&replica)? {
        Some(s) => s,
        // Offline-only: the engine keeps the queue and says so.
        None if args.watch => return watch(args, replica, None).await,
        None => return Err(super::no_server(&args.db)),
    };
    let remote = Remote::with_timeout(&server, args.to.token()?, args.timeout)?;
    if args.watch {
        return watch(args, replica, Some(remote)).await;
    }
    let bar =
        if args.json || !std::io::stderr().is_terminal() { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("syncing with {server}"));
    let mut on_progress = |p: Progress| match p {
        Progress::Pushing { done, total } => {
            if bar.length() != Some(total) {
                bar.set_style(
                    ProgressStyle::with_template("push {bar:30} {pos}/{len} rows {per_sec} eta {eta}")
                        .expect("template"),
                );
                bar.set_length(total);
            }
            bar.set_position(done);
        }
        Progress::Pulling { rows } => {
            bar.set_style(ProgressStyle::with_template("{spinner} pull {pos} rows {per_sec}").expect("template"));
            bar.set_length(u64::MAX);
            bar.set_position(rows);
        }
        Progress::SetAside { table, key, message } => {
            if !args.json {
                bar.suspend(|| eprintln!("set aside {table} '{key}': {message}"));
            }
        }
    };
    let direction = match (args.seed, args.hydrate) {
        (true, _) => ferry_client::Direction::Up,
        (_, true) => ferry_client::Direction::Down,
        _ => ferry_client::Direction::Both,
    };
    let opts = SyncOptions { pull_page: args.page_rows, direction, tables: args.tables.clone(), ..subscribing(&args) };
    let result = ferry_client::sync(&mut replica, &remote, &opts, &mut on_progress).await;
    bar.finish_and_clear();
    let report = result.with_context(|| format!("sync of '{}' with {server} failed", args.db.display()))?;
    if args.json {
        let mut out = serde_json::to_value(&report)?;
        out["peak_rss_kb"] = peak_rss_kb().into();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for change in &report.schema_changes {
            eprintln!("{change}");
        }
        println!(
            "synced '{}' with {server}: pushed {} rows ({} new to the server), pulled {} rows ({} changed here{}){}, in {} ms",
            args.db.display(),
            report.pushed,
            report.pushed_changed,
            report.pulled,
            report.pulled_changed,
            if report.from_snapshot {
                format!("; first from the server's snapshot, {} chunks", report.snapshot_chunks)
            } else {
                String::new()
            },
            [
                (report.conflicts, "conflicts settled here (ferry conflicts list --db)"),
                (report.refused, "changes refused as stale (ferry conflicts refused --db)"),
                (report.set_aside, "changes refused as invalid and set aside (ferry queue --db)"),
                (report.refused_pulls, "pulled rows that break a rule, set aside (ferry queue --db)"),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!(", {n} {what}"))
            .collect::<String>(),
            report.elapsed_ms
        );
    }
    Ok(())
}

/// `ferry sync --watch`: runs the client engine until Ctrl-C or SIGTERM.
async fn watch(args: SyncArgs, replica: Replica, remote: Option<Remote>) -> Result<()> {
    use ferry_client::engine::{Backoff, EngineOptions, Event};
    let backoff = match args.backoff.as_str() {
        "device" => Backoff::device(),
        "server" => Backoff::server(),
        list => Backoff::parse(list).map_err(|e| anyhow::anyhow!("--backoff: {e}"))?,
    };
    let server = remote.as_ref().map_or_else(|| "no server (offline only)".to_owned(), |r| r.base().to_owned());
    let opts = EngineOptions {
        remote,
        interval: args.interval,
        debounce: args.debounce,
        backoff,
        stream: !args.no_stream,
        sync: SyncOptions { pull_page: args.page_rows, tables: args.tables.clone(), ..subscribing(&args) },
        ..EngineOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let json = args.json;
    // The stream's news of files wakes the file worker.
    let files_wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let wake = files_wake.clone();
    let printer = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let Event::Files = e {
                wake.notify_one();
                continue;
            }
            let line = match (&e, json) {
                (Event::State { from, to, why, .. }, true) => {
                    serde_json::json!({"event": "state", "from": from, "to": to, "why": why}).to_string()
                }
                (Event::State { to, why, .. }, false) => format!("{}: {why}", to.name()),
                (Event::Completed(r), true) => serde_json::json!({"event": "completed", "report": r}).to_string(),
                (Event::Completed(r), false) if r.pushed + r.pulled + r.set_aside + r.refused > 0 => format!(
                    "synced: pushed {} rows, pulled {} ({} changed here){}{}{}",
                    r.pushed,
                    r.pulled,
                    r.pulled_changed,
                    if r.set_aside > 0 { format!(", {} set aside", r.set_aside) } else { String::new() },
                    if r.refused > 0 { format!(", {} refused as stale", r.refused) } else { String::new() },
                    if r.refused_pulls > 0 {
                        format!(", {} pulled rows that break a rule set aside", r.refused_pulls)
                    } else {
                        String::new()
                    },
                ),
                (Event::Error { message, retry_in, .. }, true) => serde_json::json!({
                    "event": "error", "message": message, "retry_in_ms": retry_in.as_millis() as u64
                })
                .to_string(),
                (Event::Error { message, retry_in, .. }, false) => {
                    format!("sync failed: {message}; retrying in {retry_in:?}")
                }
                (Event::Conflict { settled, refused }, true) => {
                    serde_json::json!({"event": "conflict", "settled": settled, "refused": refused}).to_string()
                }
                (Event::Conflict { settled, refused }, false) => {
                    format!(
                        "conflicts: {settled} settled here, {refused} refused as stale (ferry conflicts list --db …)"
                    )
                }
                (Event::Progress { message, .. }, false) if message.starts_with("set aside") => message.clone(),
                (Event::Stream { up, why }, true) => {
                    serde_json::json!({"event": "stream", "up": up, "why": why}).to_string()
                }
                _ => continue,
            };
            println!("{line}");
        }
    });
    // Files move beside the rows, never in their way: their own task, connection and limits.
    let (stop_files, files_stopped) = tokio::sync::oneshot::channel::<()>();
    let file_worker = match (&opts.remote, args.no_files) {
        (Some(remote), false) => {
            let fopts = ferry_client::files::FileOptions { wake: Some(files_wake.clone()), ..args.files.options()? };
            let (db, remote) = (args.db.clone(), remote.clone());
            Some(tokio::spawn(async move {
                let stopped = async {
                    let _ = files_stopped.await;
                };
                if let Err(e) =
                    ferry_client::files::run(&db, &remote, fopts, move |e| print_file_event(&e, json), stopped).await
                {
                    eprintln!("file transfers stopped: {e}");
                }
            }))
        }
        _ => None,
    };
    eprintln!("watching '{}' with {server}; Ctrl-C stops", args.db.display());
    let replica = ferry_client::engine::run(replica, opts, tx, shutdown_signal()).await;
    let _ = stop_files.send(());
    if let Some(w) = file_worker {
        let _ = w.await;
    }
    let replica = replica?;
    let _ = replica.set_meta(Key::EngineState, "STOPPED");
    let _ = printer.await;
    eprintln!("stopped");
    Ok(())
}

/// The sync options that `--subscribe` and `--subscription-ttl` set.
fn subscribing(args: &SyncArgs) -> SyncOptions {
    SyncOptions {
        subscribe: args.subscribe.clone(),
        subscription_ttl_ms: args.subscription_ttl.as_millis() as u64,
        snapshot: !args.no_snapshot,
        ..SyncOptions::default()
    }
}
