//! `ferry integrity --peer NAME [--tables …] [--repair]`: this server's store against a
//! peer's, table by table (`docs/integrity.md`).

use anyhow::Result;
use ferry_store::Store;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::IntegrityArgs;

pub async fn run(args: IntegrityArgs) -> Result<()> {
    let (config, store) = args.server.open_store().await?;
    let synced = store.schema().table_names();
    let link = ferry_server::config::peer_link(
        &config.peers,
        &args.peer,
        args.tables.as_deref(),
        &synced,
        config.sync_log_keep,
    )?;
    let bar = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} integrity {elapsed} {msg}").expect("template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = ferry_peer::integrity::check(&store, &link, &link.tables, args.repair, &|step| {
        bar.set_message(step.to_owned());
    })
    .await
    .map_err(|e| anyhow::anyhow!("integrity check with peer '{}' failed: {e}", args.peer))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for t in &report.tables {
            let mark = if t.differences.is_empty() {
                "equal"
            } else if t.equal {
                "repaired"
            } else {
                "DIFFERS"
            };
            println!(
                "{:<24} {mark:<9} rows here {:>9}, on the peer {:>9}; digest here {} peer {}",
                t.table, t.here_rows, t.there_rows, t.here_digest, t.there_digest
            );
            for d in &t.differences {
                println!("  {} '{}': {}", d.kind, ferry_core::shown(&d.key), ferry_peer::integrity::describe(d));
            }
            if t.repaired_out + t.repaired_in > 0 {
                println!("  repair: {} rows sent to the peer, {} merged here", t.repaired_out, t.repaired_in);
            }
            for w in &t.repair_warnings {
                println!("  warning: {w}");
            }
        }
        println!(
            "{}: {} tables in {} ms; {} requests, {} bytes sent, {} received",
            report.status,
            report.tables.len(),
            report.duration_ms,
            report.requests,
            report.bytes_sent,
            report.bytes_received
        );
    }
    if report.status == "FAILED" {
        let differing: usize = report.tables.iter().map(|t| t.differences.len()).sum();
        anyhow::bail!(
            "{differing} rows differ from peer '{}'{}; `ferry integrity --peer {} --repair -c ferry.toml` sends the newer versions both ways",
            args.peer,
            if args.repair { " after the repair" } else { "" },
            args.peer
        );
    }
    Ok(())
}
