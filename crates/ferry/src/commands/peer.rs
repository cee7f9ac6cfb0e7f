//! `ferry peer`: the links between this server and its peers, from its store (status, log).

use anyhow::{Result, bail};
use ferry_protocol::{PeerStatus, SyncLogResponse, SyncStatusResponse};
use ferry_store::Store;

use crate::cli::PeerCommand;

pub async fn run(command: PeerCommand) -> Result<()> {
    match command {
        PeerCommand::Status { name, json, server } => {
            let (config, store) = server.open_store().await?;
            let now = now_ms();
            let mut peers: Vec<PeerStatus> =
                store.links().await?.into_iter().map(|p| ferry_server::peer::seen_at(p, now)).collect();
            if let Some(n) = &name {
                peers.retain(|p| &p.name == n);
                if peers.is_empty() {
                    let known: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
                    bail!(
                        "no link named '{n}' has run yet; the [peers] sections are: {}",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    );
                }
            }
            if json {
                let answer = SyncStatusResponse { role: config.role.clone(), peers };
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            println!("role: {}", config.role.as_deref().unwrap_or("none (set [server] role to link with peers)"));
            if peers.is_empty() {
                println!("no links yet");
            }
            for p in &peers {
                print_link(p, now);
            }
            Ok(())
        }
        PeerCommand::Resync { name, server } => {
            let (_, store) = server.open_store().await?;
            store.request_resync(&name).await?;
            println!(
                "link '{name}' syncs everything again, both ways, at its next run (`ferry peer log {name}` shows it)"
            );
            Ok(())
        }
        PeerCommand::Log { name, limit, json, server } => {
            let (_, store) = server.open_store().await?;
            let entries = store.sync_log(name.as_deref(), limit.clamp(1, 10_000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&SyncLogResponse { entries })?);
                return Ok(());
            }
            if entries.is_empty() {
                println!("the sync log is empty");
            }
            let now = now_ms();
            for e in &entries {
                println!(
                    "{:>10}  {:<8} {:<5} {:<4} {:<8} {} rows, {} bytes, {} ms",
                    ago(now, e.at_ms),
                    e.peer,
                    e.kind,
                    e.direction,
                    e.status,
                    e.rows,
                    e.bytes,
                    e.duration_ms
                );
                if let Some(error) = &e.error {
                    for line in error.lines() {
                        println!("            {line}");
                    }
                }
            }
            Ok(())
        }
    }
}

fn print_link(p: &PeerStatus, now: u64) {
    let never = || "never".to_owned();
    println!(
        "{} ({}, {} → {}){}",
        p.name,
        p.direction,
        p.role,
        p.peer_role.as_deref().unwrap_or("?"),
        p.url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default()
    );
    let mut state = p.state.clone();
    if !p.enabled {
        state.push_str(" (disabled)");
    }
    if p.failures > 0 {
        state.push_str(&format!(", {} failures in a row", p.failures));
        if let Some(at) = p.next_attempt_ms {
            state.push_str(&format!(", next try in {} s", at.saturating_sub(now).div_ceil(1000)));
        }
    }
    println!("  state:          {state}");
    if let Some(since) = p.down_since_ms {
        println!("  down since:     {}", ago(now, since));
    }
    let backoff: Vec<String> = p.backoff_ms.iter().map(|ms| shown_ms(*ms)).collect();
    if !backoff.is_empty() {
        println!("  backoff:        {}", backoff.join(", "));
    }
    println!("  last heartbeat: {}", p.last_heartbeat_ms.map_or_else(never, |at| ago(now, at)));
    println!("  last success:   {}", p.last_success_ms.map_or_else(never, |at| ago(now, at)));
    println!("  lag out:        {} ms, {} changes", p.lag_ms_out, p.lag_changes_out);
    println!("  lag in:         {} ms, {} changes", p.lag_ms_in, p.lag_changes_in);
    println!("  rows:           {} sent, {} received", p.rows_out, p.rows_in);
    println!("  file queue:     {}", p.file_queue);
    if let Some(way) = &p.behind {
        println!(
            "  behind:         a compaction passed the link's cursor ({way}); it catches up by difference at its next attempt (`ferry peer resync {}` re-syncs everything instead)",
            p.name
        );
    }
    if let Some(e) = &p.last_error {
        println!("  last error:     {e}");
    }
}

/// "3 minutes ago".
fn ago(now: u64, at: u64) -> String {
    let s = now.saturating_sub(at) / 1000;
    match s {
        0..=1 => "just now".to_owned(),
        2..=119 => format!("{s} seconds ago"),
        120..=7199 => format!("{} minutes ago", s / 60),
        7200..=172_799 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn shown_ms(ms: u64) -> String {
    match ms {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
