//! `ferry full-sync push|pull --peer NAME`, and its runs' status, history, cancel and clear
//! (`docs/full-sync.md`).

use anyhow::{Result, bail};
use ferry_peer::full_sync::{self as fs, Direction, Plan};
use ferry_protocol::FullSyncRun;
use ferry_store::Store;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{FullSyncArgs, FullSyncCommand};

pub async fn run(command: FullSyncCommand) -> Result<()> {
    match command {
        FullSyncCommand::Push(args) => start(Direction::Push, args).await,
        FullSyncCommand::Pull(args) => start(Direction::Pull, args).await,
        FullSyncCommand::Status { id, json, server } => {
            let (_, store) = server.open_store().await?;
            let run = match &id {
                Some(id) => store.full_sync(id).await?,
                None => store.full_syncs(1).await?.into_iter().next(),
            };
            let Some(run) = run else {
                bail!("{}", id.map_or("no full sync has run".to_owned(), |id| format!("no full sync '{id}'")));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                print_run(&run);
            }
            Ok(())
        }
        FullSyncCommand::History { limit, json, server } => {
            let (_, store) = server.open_store().await?;
            let runs = store.full_syncs(limit.clamp(1, 1000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ferry_protocol::FullSyncList { runs })?);
                return Ok(());
            }
            if runs.is_empty() {
                println!("no full sync has run");
            }
            for r in &runs {
                println!(
                    "{}  {:<4} {:<10} {:<8} {:<9} {:>9} rows {:>10} {:>12}  {}{}",
                    r.id,
                    r.direction,
                    r.peer,
                    r.method,
                    r.state,
                    r.rows,
                    bytes(r.bytes),
                    format!("{}/s", bytes(r.speed as u64)),
                    r.phase,
                    r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        FullSyncCommand::Cancel { id, server } => {
            let (_, store) = server.open_store().await?;
            match store.full_sync(&id).await? {
                Some(r) if r.state == "RUNNING" => {
                    store.cancel_full_sync(&id).await?;
                    println!("asked full sync {id} to stop; it does at its next report (within a second)");
                    Ok(())
                }
                Some(r) => bail!("full sync {id} is not running (it ended {})", r.state),
                None => bail!("no full sync '{id}'; `ferry full-sync history` lists them"),
            }
        }
        FullSyncCommand::Clear { server } => {
            let (_, store) = server.open_store().await?;
            let cleared = fs::clear_stuck(&store).await?;
            if cleared.is_empty() {
                println!("no stuck full sync");
            }
            for r in &cleared {
                println!("cleared {} ({} with {}, stopped in phase {})", r.id, r.direction, r.peer, r.phase);
            }
            Ok(())
        }
    }
}

async fn start(direction: Direction, args: FullSyncArgs) -> Result<()> {
    let (config, store) = args.server.open_store().await?;
    let synced = store.schema().table_names();
    let link = ferry_server::config::peer_link(&config.peers, &args.peer, None, &synced, config.sync_log_keep)?;
    let whole = link.tables.clone();
    let link = match &args.tables {
        Some(only) => {
            ferry_server::config::peer_link(&config.peers, &args.peer, Some(only), &synced, config.sync_log_keep)?
        }
        None => link,
    };
    if let Some(r) = fs::running(&store).await? {
        bail!(
            "full sync {} ({} with '{}', phase {}) is running; one runs at a time: wait for it, or `ferry full-sync cancel {}`",
            r.id,
            r.direction,
            r.peer,
            r.phase,
            r.id
        );
    }
    let plan = Plan {
        id: fs::new_id(),
        direction,
        whole_link: link.tables == whole,
        tables: link.tables.clone(),
        compress: args.compress,
        verify: args.verify,
        notify: args.notify.clone(),
        exclude: fs::Exclude::parse(store.schema(), &config.full_sync_exclude).map_err(anyhow::Error::msg)?,
        hooks: config.webhooks.clone(),
    };
    let id = plan.id.clone();
    let bar = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    let json = args.json;
    let observe = |run: &FullSyncRun| {
        if json {
            if let Ok(line) = serde_json::to_string(run) {
                println!("{line}");
            }
            return;
        }
        show(&bar, run);
    };
    let spool = config.data_dir.join("full-sync");
    let work = fs::run(&store, &link, plan, &spool, &observe);
    tokio::pin!(work);
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    let mut asked = false;
    let run = loop {
        tokio::select! {
            run = &mut work => break run,
            () = &mut stop, if !asked => {
                // Asked to stop: the run cancels itself at its next report, cleanly.
                eprintln!("cancelling full sync {id} …");
                store.cancel_full_sync(&id).await?;
                asked = true;
            }
        }
    };
    bar.finish_and_clear();
    if !json {
        print_run(&run);
    }
    if run.state != "SUCCESS" {
        bail!("full sync {} {}: {}", run.id, run.state, run.error.as_deref().unwrap_or("no reason recorded"));
    }
    Ok(())
}

/// The bar shows the running phase: its bytes (rows where it moves none), speed and ETA.
fn show(bar: &ProgressBar, run: &FullSyncRun) {
    let Some(p) = run.phases.iter().find(|p| p.name == run.phase) else { return };
    let by_bytes = p.bytes_total > 0;
    let style = if by_bytes {
        "{msg:10} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:10} {bar:30} {pos}/{len} rows {per_sec} eta {eta}"
    };
    bar.set_style(ProgressStyle::with_template(style).expect("template"));
    bar.set_message(p.name.clone());
    if by_bytes {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
    } else {
        bar.set_length(p.rows_total.max(p.rows_done));
        bar.set_position(p.rows_done);
    }
}

fn print_run(run: &FullSyncRun) {
    println!("full sync {} ({} with '{}', {}): {}", run.id, run.direction, run.peer, run.method, run.state);
    for p in &run.phases {
        let took = match (p.started_ms, p.finished_ms) {
            (Some(a), Some(b)) => format!(" in {:.2} s", b.saturating_sub(a) as f64 / 1000.0),
            _ => String::new(),
        };
        println!(
            "  {:<9} {:<8} {:>5.1}%  {:>9}/{} rows  {}/{}{took}",
            p.name,
            p.state,
            p.percent,
            p.rows_done,
            p.rows_total,
            bytes(p.bytes_done),
            bytes(p.bytes_total)
        );
    }
    println!(
        "  {} rows ({} changed on the target), {} in the snapshot, {} sent in {} attempt(s){}",
        run.rows,
        run.changed,
        bytes(run.bytes),
        bytes(run.bytes_sent),
        run.attempts,
        if run.resumed_chunks > 0 { format!(", {} chunks not sent again", run.resumed_chunks) } else { String::new() }
    );
    if let Some(equal) = run.verified_equal {
        println!(
            "  verify: {}",
            if equal { "both sides equal".to_owned() } else { format!("{} rows differ", run.differences.unwrap_or(0)) }
        );
    }
    if let Some(n) = &run.notified {
        println!("  notify: {n}");
    }
    if let Some(e) = &run.error {
        println!("  error: {e}");
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 << 20 => format!("{:.1} MiB", n as f64 / 1048576.0),
        n if n >= 10 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
