//! Capture: plain-SQL triggers stored in the replica file.
//!
//! Because the triggers live in the file, every writer is captured: the app through
//! `ferry-client`, another process, the `sqlite3` shell while Ferry is not running. A
//! trigger only appends to `_ferry_outbox` (what changed, which columns, when by the wall
//! clock, and a deleted row's last values); clocks are assigned later, when Ferry stamps
//! the outbox. While Ferry applies pulled rows it puts a row in `_ferry_apply` inside its
//! own transaction, which the triggers see and so stay quiet; other connections never see
//! that row.
//!
//! The SQL must run on SQLite 3.40 (Debian's shell): no `unixepoch('subsec')`.

use ferry_core::schema::{ColType, Table, quote, quote_literal as lit};

/// Milliseconds since the Unix epoch, in SQL that SQLite 3.40 understands.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
const QUIET: &str = "NOT EXISTS (SELECT 1 FROM _ferry_apply)";

/// An old value as JSON-safe SQL: blobs (and stray blobs in other columns) as hex, so
/// `json_object` never fails and so never breaks the application's delete; reals as text
/// with 17 significant digits, because SQLite 3.40's JSON keeps only 15 (and writes
/// infinities as invalid JSON).
fn json_safe(ty: ColType, expr: &str) -> String {
    match ty {
        ColType::Blob => format!("CASE WHEN {expr} IS NULL THEN NULL ELSE hex({expr}) END"),
        _ => format!(
            "CASE typeof({expr}) WHEN 'blob' THEN hex({expr}) WHEN 'real' THEN printf('%!.17g', {expr}) ELSE {expr} END"
        ),
    }
}

/// SQLite before 3.48 allows at most 127 arguments per function call.
const PAIRS_PER_CALL: usize = 60;

/// A JSON object of the old values: `json_object` per group of columns, merged with
/// `json_patch` so that tables of any width stay within SQLite 3.40's argument limit.
fn old_values_json(data: &[&ferry_core::schema::Column]) -> String {
    if data.is_empty() {
        return "json_object()".to_owned();
    }
    let groups: Vec<String> = data
        .chunks(PAIRS_PER_CALL)
        .map(|chunk| {
            let pairs: Vec<String> = chunk
                .iter()
                .map(|c| format!("{}, {}", lit(&c.name), json_safe(c.ty, &format!("OLD.{}", quote(&c.name)))))
                .collect();
            format!("json_object({})", pairs.join(", "))
        })
        .collect();
    groups.into_iter().reduce(|acc, g| format!("json_patch({acc}, {g})")).unwrap_or_default()
}

/// `OLD.c IS NOT NEW.c`, compared byte for byte whatever the column's collation (a change of
/// case in a NOCASE column is still a change).
fn differs(col: &str) -> String {
    let q = quote(col);
    format!("OLD.{q} IS NOT NEW.{q} COLLATE BINARY")
}

/// `DROP TRIGGER` for every capture trigger Ferry may have made on `table`.
pub fn drop_triggers(table: &str) -> String {
    ["ins", "upd", "key", "del"]
        .iter()
        .map(|k| format!("DROP TRIGGER IF EXISTS {};\n", quote(&format!("_ferry_{k}_{table}"))))
        .collect()
}

/// The capture triggers for `table`.
pub fn triggers(table: &Table) -> String {
    let t = quote(&table.name);
    let name = |k: &str| quote(&format!("_ferry_{k}_{}", table.name));
    let tl = lit(&table.name);
    let pk = quote(&table.pk_column().name);
    let data: Vec<_> = table.data_columns().collect();
    let old_json = old_values_json(&data);
    let mut sql = format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {t} WHEN {QUIET} BEGIN
  INSERT INTO _ferry_outbox (tbl, pk, op, wall_ms) VALUES ({tl}, NEW.{pk}, 'I', {NOW_MS});
END;
CREATE TRIGGER {del} AFTER DELETE ON {t} WHEN {QUIET} BEGIN
  INSERT INTO _ferry_outbox (tbl, pk, op, old, wall_ms) VALUES ({tl}, OLD.{pk}, 'D', {old_json}, {NOW_MS});
END;
CREATE TRIGGER {key} AFTER UPDATE ON {t} WHEN {QUIET} AND OLD.{pk} IS NOT NEW.{pk} BEGIN
  INSERT INTO _ferry_outbox (tbl, pk, op, old, wall_ms) VALUES ({tl}, OLD.{pk}, 'D', {old_json}, {NOW_MS});
  INSERT INTO _ferry_outbox (tbl, pk, op, wall_ms) VALUES ({tl}, NEW.{pk}, 'I', {NOW_MS});
END;
",
        ins = name("ins"),
        del = name("del"),
        key = name("key"),
    );
    if !data.is_empty() {
        let changed: Vec<String> = data.iter().map(|c| differs(&c.name)).collect();
        // The changed columns as a JSON array built by concatenation (no function-argument
        // limit): `["a","c"]`.
        let which: Vec<String> = data
            .iter()
            .map(|c| {
                let name_json = serde_json::Value::String(c.name.clone()).to_string();
                format!("CASE WHEN {} THEN {} ELSE '' END", differs(&c.name), lit(&format!(",{name_json}")))
            })
            .collect();
        sql.push_str(&format!(
            "CREATE TRIGGER {upd} AFTER UPDATE ON {t} WHEN {QUIET} AND OLD.{pk} IS NEW.{pk} AND ({changed}) BEGIN
  INSERT INTO _ferry_outbox (tbl, pk, op, cols, wall_ms)
  VALUES ({tl}, NEW.{pk}, 'U', '[' || substr({which}, 2) || ']', {NOW_MS});
END;
",
            upd = name("upd"),
            changed = changed.join(" OR "),
            which = which.join(" || "),
        ));
    }
    sql
}

/// The names of the capture triggers [`triggers`] creates for `table`.
pub fn trigger_names(table: &Table) -> Vec<String> {
    let kinds: &[&str] =
        if table.data_columns().next().is_some() { &["ins", "upd", "key", "del"] } else { &["ins", "key", "del"] };
    kinds.iter().map(|k| format!("_ferry_{k}_{}", table.name)).collect()
}

/// Records, as captured inserts, every row of `table` that Ferry does not track yet.
pub fn adopt_untracked(table: &Table) -> String {
    let pk = quote(&table.pk_column().name);
    format!(
        "INSERT INTO _ferry_outbox (tbl, pk, op, wall_ms)
         SELECT {tl}, t.{pk}, 'I', {NOW_MS} FROM {t} t
         WHERE t.{pk} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM _ferry_rows r WHERE r.tbl = {tl} AND r.pk = t.{pk})",
        tl = lit(&table.name),
        t = quote(&table.name),
    )
}

/// The keys of rows the bookkeeping holds as alive but the application table lacks.
pub fn alive_but_missing(table: &Table) -> String {
    let pk = quote(&table.pk_column().name);
    format!(
        "SELECT r.pk FROM _ferry_rows r WHERE r.tbl = {tl} AND r.alive AND NOT EXISTS (SELECT 1 FROM {t} t WHERE t.{pk} = r.pk)",
        tl = lit(&table.name),
        t = quote(&table.name),
    )
}
