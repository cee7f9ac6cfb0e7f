//! The schema in SQLite: the column type each logical type is stored as, and the
//! `CREATE TABLE` of a synced table (in replicas and in the embedded server store alike).

use ferry_core::schema::{ColType, Table, quote, quote_literal};
use ferry_core::{Value, to_hex};

/// The SQLite column type of a logical type (its storage class affinity).
pub fn column_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Uuid | ColType::Text | ColType::Timestamptz | ColType::Date | ColType::Json => "TEXT",
        ColType::Integer | ColType::BigInt | ColType::Boolean => "INTEGER",
        ColType::Real => "REAL",
        ColType::Blob => "BLOB",
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `table`.
pub fn create_table(table: &Table) -> String {
    let defs: Vec<String> = (0..table.columns.len()).map(|i| column_def(table, i)).collect();
    format!("CREATE TABLE IF NOT EXISTS {} ({})", quote(&table.name), defs.join(", "))
}

/// The definition of column `i` of `table` as in `CREATE TABLE` (and `ALTER TABLE ADD COLUMN`).
pub fn column_def(table: &Table, i: usize) -> String {
    let c = &table.columns[i];
    let mut out = format!("{} {}", quote(&c.name), column_type(c.ty));
    if i == table.pk {
        out.push_str(" PRIMARY KEY");
    }
    out.push_str(&c.rules_sql(literal));
    out
}

/// A default value as an SQLite literal: booleans as 0 and 1, blobs as `X'…'`.
fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => format!("{r:?}"),
        Value::Text(s) => quote_literal(s),
        Value::Blob(b) => format!("X'{}'", to_hex(b)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_core::schema::Schema;

    #[test]
    fn create_table_uses_sqlite_types_and_literals() {
        let s = Schema::parse(
            "CREATE TABLE jump_log (
                id uuid PRIMARY KEY,
                kind varchar(20) NOT NULL CHECK (kind IN ('belly', 'freefly')),
                visible boolean NOT NULL DEFAULT false,
                video bytea
            );",
            &BTreeMap::new(),
        )
        .unwrap();
        let lite = super::create_table(s.table("jump_log").unwrap());
        assert!(lite.starts_with("CREATE TABLE IF NOT EXISTS \"jump_log\" ("), "{lite}");
        assert!(lite.contains("\"id\" TEXT PRIMARY KEY NOT NULL"), "{lite}");
        assert!(lite.contains("\"kind\" TEXT NOT NULL CHECK (\"kind\" IN ('belly', 'freefly'))"), "{lite}");
        assert!(lite.contains("\"visible\" INTEGER NOT NULL DEFAULT 0"), "{lite}");
        assert!(lite.contains("\"video\" BLOB"), "{lite}");
    }
}
