//! `ferry conflicts`: the server's conflict log (list, show, resolve) and a replica's own
//! (list --db, refused, settle).

use anyhow::{Result, bail};
use ferry_protocol::ConflictSide;
use ferry_store::{ConflictFilter, Store};

use super::open_replica;
use crate::cli::{ConflictsCommand, Settled};

pub async fn run(command: ConflictsCommand) -> Result<()> {
    match command {
        ConflictsCommand::Refused { db, json } => {
            let replica = open_replica(&db)?;
            let refused = replica.refused()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&refused)?);
            } else if refused.is_empty() {
                println!("no refused changes");
            } else {
                for r in &refused {
                    println!("{}  {} '{}'  refused {}: {}", r.id, r.table, r.key, r.refused_at, r.message);
                    println!("    local   {}", r.local["values"]);
                    println!("    server  {}", r.current["values"]);
                }
            }
            Ok(())
        }
        ConflictsCommand::Settle { db, id, keep } => {
            let mut replica = open_replica(&db)?;
            replica.settle_refused(id, keep == Settled::Local)?;
            let kept = match keep {
                Settled::Local => "local",
                Settled::Server => "server's",
            };
            println!("settled {id}: kept the {kept} version");
            Ok(())
        }
        ConflictsCommand::List { db: Some(db), open, resolved, json, .. } => {
            let replica = open_replica(&db)?;
            let settled = if open { Vec::new() } else { replica.local_conflicts()? };
            let refused = if resolved { Vec::new() } else { replica.refused()? };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"open": refused, "settled": settled}))?
                );
                return Ok(());
            }
            if settled.is_empty() && refused.is_empty() {
                println!("no conflicts");
            }
            for r in &refused {
                println!(
                    "{:>6}  {}  {} '{}'  open: refused as stale (`ferry conflicts refused`)",
                    r.id, r.refused_at, r.table, r.key
                );
            }
            for c in &settled {
                println!(
                    "settled #{}  {}  {} '{}'  field {}: local {} / remote {}  by {}",
                    c.id,
                    c.detected_at,
                    c.table,
                    c.key,
                    c.field,
                    c.local_value.as_deref().unwrap_or("-"),
                    c.remote_value.as_deref().unwrap_or("-"),
                    c.resolved_by.as_deref().unwrap_or("newest-wins")
                );
            }
            Ok(())
        }
        ConflictsCommand::List { db: None, open, resolved, json, server } => {
            let (_, store) = server.open_store().await?;
            let filter = match (open, resolved) {
                (true, _) => ConflictFilter::Open,
                (_, true) => ConflictFilter::Resolved,
                _ => ConflictFilter::All,
            };
            let list = store.conflicts(filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if list.is_empty() {
                println!("no conflicts");
            }
            for c in &list {
                let state = match (&c.resolved_by, &c.resolved_at) {
                    (Some(by), Some(at)) => format!("resolved by {by} at {at}"),
                    _ => "open".to_owned(),
                };
                println!(
                    "{:>6}  {}  {} '{}'  fields: {}  {state}",
                    c.id,
                    c.detected_at,
                    c.table,
                    c.key,
                    c.fields.join(", ")
                );
            }
            Ok(())
        }
        ConflictsCommand::Resolve { id, keep, json, server } => {
            let (_, store) = server.open_store().await?;
            let keep = ConflictSide::from(keep);
            let c = store.resolve_conflict(id, keep).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!(
                    "resolved conflict {} on {} '{}': kept the {} version of {}",
                    c.id,
                    c.table,
                    c.key,
                    keep.name(),
                    c.fields.join(", ")
                );
            }
            Ok(())
        }
        ConflictsCommand::Show { id, json, server } => {
            let (_, store) = server.open_store().await?;
            let Some(c) = store.conflict(id).await? else {
                bail!("no conflict with id {id}; `ferry conflicts list` shows the ids");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
                return Ok(());
            }
            println!("conflict {} on {} '{}' ({}, strategy {})", c.id, c.table, c.key, c.kind, c.strategy);
            println!("detected   {}", c.detected_at);
            match (&c.resolved_by, &c.resolved_at) {
                (Some(by), Some(at)) => println!("resolved   by {by} at {at}"),
                _ => println!("resolved   no"),
            }
            for field in &c.fields {
                let kept = c.winner.get(field).map_or("?", |side| side.name());
                println!("field {field}: kept the {kept} value");
                for (side, v) in [("stored  ", &c.stored), ("incoming", &c.incoming)] {
                    let value =
                        if field == "*" { v.exists.into() } else { v.values.get(field).cloned().unwrap_or_default() };
                    let clock = v.clocks.get(field).map_or("-", String::as_str);
                    println!(
                        "  {side} {value}  (clock {clock}, from {})",
                        v.origin.as_deref().unwrap_or("the server's tables")
                    );
                }
            }
            Ok(())
        }
    }
}
