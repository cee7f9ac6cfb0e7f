//! The schema in PostgreSQL: the column type each logical type is stored as (and the name
//! the catalog gives it), and the `CREATE TABLE` of a synced table.

use ferry_core::Value;
use ferry_core::schema::{ColType, Table, quote};

/// The PostgreSQL column type of a logical type, as written in DDL and casts.
pub fn column_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Uuid => "uuid",
        ColType::Text => "text",
        ColType::Integer => "integer",
        ColType::BigInt => "bigint",
        ColType::Real => "double precision",
        ColType::Boolean => "boolean",
        ColType::Timestamptz => "timestamptz",
        ColType::Date => "date",
        ColType::Json => "jsonb",
        ColType::Blob => "bytea",
    }
}

/// The PostgreSQL type name (`udt_name`) a schema column must have.
pub fn udt(ty: ColType, max_len: Option<u32>) -> &'static str {
    match ty {
        ColType::Uuid => "uuid",
        ColType::Text if max_len.is_some() => "varchar",
        ColType::Text => "text",
        ColType::Integer => "int4",
        ColType::BigInt => "int8",
        ColType::Real => "float8",
        ColType::Boolean => "bool",
        ColType::Timestamptz => "timestamptz",
        ColType::Date => "date",
        ColType::Json => "jsonb",
        ColType::Blob => "bytea",
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
    let ty = match (c.ty, c.max_len) {
        (ColType::Text, Some(n)) => format!("varchar({n})"),
        (ty, _) => column_type(ty).to_owned(),
    };
    let mut out = format!("{} {ty}", quote(&c.name));
    if i == table.pk {
        out.push_str(" PRIMARY KEY");
    }
    out.push_str(&c.rules_sql(|v| literal(v, c.ty)));
    out
}

/// A default value as a PostgreSQL literal: booleans as `true`/`false`, blobs as `'\x…'`.
fn literal(v: &Value, ty: ColType) -> String {
    ferry_core::schema::sql_literal(v, ty, |hex| format!("'\\x{hex}'"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_core::schema::Schema;

    #[test]
    fn create_table_uses_postgresql_types_and_literals() {
        let s = Schema::parse(
            "CREATE TABLE jump_log (
                id uuid PRIMARY KEY,
                kind varchar(20) NOT NULL CHECK (kind IN ('belly', 'freefly')),
                visible boolean NOT NULL DEFAULT false,
                altitude_ft real,
                video bytea
            );",
            &BTreeMap::new(),
        )
        .unwrap();
        let pg = super::create_table(s.table("jump_log").unwrap());
        assert!(pg.starts_with("CREATE TABLE IF NOT EXISTS \"jump_log\" ("), "{pg}");
        assert!(pg.contains("\"id\" uuid PRIMARY KEY"), "{pg}");
        assert!(pg.contains("\"kind\" varchar(20) NOT NULL CHECK (\"kind\" IN ('belly', 'freefly'))"), "{pg}");
        assert!(pg.contains("\"visible\" boolean NOT NULL DEFAULT false"), "{pg}");
        assert!(pg.contains("\"altitude_ft\" double precision"), "{pg}");
    }
}
