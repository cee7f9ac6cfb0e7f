//! Keeping the planner's statistics in step with what pushes write.

use std::sync::Arc;

use super::Inner;

/// Keeps the planner's statistics in step with the rows pushes write. Autovacuum analyzes a
/// growing table late (a minute apart at best), and until then the planner takes a table it
/// has no statistics for as small: during a bulk load it would read a batch's stored rows by
/// scanning every row of the table, slower with every batch. So a process that has written as many rows as the table held at
/// its last analysis (and at least [`Statistics::FIRST`]) analyzes the tables it wrote, in
/// the background: a handful of times while a table grows a thousandfold.
pub(super) struct Statistics {
    /// Rows written by this process since it last started an analysis.
    written: std::sync::atomic::AtomicU64,
    /// When `written` reaches this, analyze.
    due_at: std::sync::atomic::AtomicU64,
    running: std::sync::atomic::AtomicBool,
    /// The tables written since the last analysis.
    tables: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Statistics {
    const FIRST: u64 = 10_000;
    /// The planner's row count of `_ferry_rows` (-1 before its first analysis).
    pub(super) const ROWS: &str = "SELECT reltuples::float8 FROM pg_class WHERE oid = '_ferry_rows'::regclass";

    pub(super) fn new(rows: f64) -> Statistics {
        Statistics {
            written: 0.into(),
            due_at: Self::due_after(rows).into(),
            running: false.into(),
            tables: Default::default(),
        }
    }

    /// Rows to write before the next analysis, `_ferry_rows` holding `rows` now.
    fn due_after(rows: f64) -> u64 {
        (rows.max(0.0) as u64).max(Self::FIRST)
    }
}

/// Counts a committed push's writes; analyzes in the background when they are due.
pub(super) fn wrote(inner: &Arc<Inner>, tables: impl IntoIterator<Item = String>, rows: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &inner.stats;
    stats.tables.lock().expect("statistics lock").extend(tables);
    let written = stats.written.fetch_add(rows as u64, Relaxed) + rows as u64;
    if written < stats.due_at.load(Relaxed) || stats.running.swap(true, Relaxed) {
        return;
    }
    stats.written.store(0, Relaxed);
    let tables = std::mem::take(&mut *stats.tables.lock().expect("statistics lock"));
    let inner = Arc::downgrade(inner);
    tokio::spawn(async move {
        let Some(strong) = inner.upgrade() else { return };
        // An optimization only: when it fails (the database busy or gone), the next push
        // that is due tries again, and autovacuum analyzes in its own time.
        if let Ok(client) = strong.pool.get().await {
            let names: Vec<String> = std::iter::once("_ferry_rows".to_owned())
                .chain(tables.iter().map(|t| ferry_core::schema::quote(t)))
                .collect();
            if client.batch_execute(&format!("ANALYZE {}", names.join(", "))).await.is_ok()
                && let Ok(row) = client.query_one(Statistics::ROWS, &[]).await
            {
                strong.stats.due_at.store(Statistics::due_after(row.get(0)), Relaxed);
            }
        }
        strong.stats.running.store(false, Relaxed);
    });
}
