//! `ferry audit`: the rows a store holds that its door would refuse today (written before
//! a check existed, or straight into the store), reported by key. Such a row is served to
//! devices, which set it aside; this finds them on the server so they can be fixed at the
//! source.

use anyhow::Result;
use ferry_store::{AnyStore, Store};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::AuditArgs;

/// A stored row that breaks a rule, and the rule in the words a device would see.
#[derive(serde::Serialize)]
pub struct Finding {
    pub table: String,
    pub key: String,
    pub problem: String,
}

/// Rows read per page of the scan.
const PAGE_ROWS: usize = 1000;

/// Reads every row of `store` and checks it as a pull page's row is checked on a device (the
/// same decoder: zero clocks, NOT NULL columns, types, allowed values, limits). Returns the
/// number of rows read and the rows that break a rule; `progress` counts rows as they go.
pub async fn scan(store: &AnyStore, progress: &ProgressBar) -> Result<(u64, Vec<Finding>)> {
    let schema = store.schema();
    let (mut cursor, mut rows, mut found) = ("0".to_owned(), 0u64, Vec::new());
    loop {
        let page = store.scan(&cursor, PAGE_ROWS).await?;
        for row in &page.rows {
            let Some(table) = schema.table(&row.table) else { continue };
            let wire = ferry_protocol::encode_row(table, &row.key, &row.state);
            if let Err(e) = ferry_protocol::decode_row(schema, &wire) {
                found.push(Finding { table: row.table.clone(), key: row.key.clone(), problem: e.0 });
            }
        }
        rows += page.rows.len() as u64;
        progress.inc(page.rows.len() as u64);
        if !page.more {
            return Ok((rows, found));
        }
        cursor = page.cursor;
    }
}

/// `ferry audit`: prints each bad row (or one JSON document) and fails when there is one.
pub async fn run(args: AuditArgs) -> Result<()> {
    let (_, store) = args.server.open_store().await?;
    let json = args.json;
    let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} audit {pos} rows {per_sec}").expect("template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let (rows, found) = scan(&store, &bar).await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::json!({ "rows": rows, "bad": found }));
    } else {
        for f in &found {
            println!("{}", f.problem);
        }
    }
    if !found.is_empty() {
        anyhow::bail!(
            "{} of {rows} stored rows break the rules above; devices set them aside until they are fixed: write each row again whole (PUT /v1/rows/TABLE/KEY, or an UPDATE of every column in PostgreSQL)",
            found.len()
        );
    }
    eprintln!("audit: {rows} rows, none breaks a rule");
    Ok(())
}
