//! The SQL the PostgreSQL store runs, generated once per table from the schema: reading
//! row states, bulk writes through `unnest`, and the PL/pgSQL capture of direct writes.
//!
//! Values cross the boundary in a few plain forms (text, int8, float8, bool, bytea) and are
//! cast to the column's type in SQL. Types whose PostgreSQL text form differs from what a
//! device wrote (`timestamptz`, `jsonb`) keep the device's text beside the row (`texts`),
//! used for as long as the column still holds that value; a direct write replaces it with
//! PostgreSQL's canonical rendering.

use ferry_core::schema::{ColType, Column, Table, fingerprint, quote, quote_literal as lit};

use super::ddl::column_type;
use ferry_core::rules::Dialect;

/// The plain form a column travels in between Rust and PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Text,
    Int,
    Float,
    Bool,
    Bytes,
}

pub fn wire(ty: ColType) -> Wire {
    match ty {
        ColType::Uuid | ColType::Text | ColType::Timestamptz | ColType::Date | ColType::Json => Wire::Text,
        ColType::Integer | ColType::BigInt => Wire::Int,
        ColType::Real => Wire::Float,
        ColType::Boolean => Wire::Bool,
        ColType::Blob => Wire::Bytes,
    }
}

/// The array type of a column's plain form, for `unnest($n::…[])`.
fn array_type(ty: ColType) -> &'static str {
    match wire(ty) {
        Wire::Text => "text[]",
        Wire::Int => "int8[]",
        Wire::Float => "float8[]",
        Wire::Bool => "bool[]",
        Wire::Bytes => "bytea[]",
    }
}

/// Whether the device's own text is kept beside the row for this type.
pub fn keeps_text(ty: ColType) -> bool {
    matches!(ty, ColType::Timestamptz | ColType::Json)
}

/// `expr` (of the column's type) as its plain form. `texts` is a jsonb expression holding
/// device texts, or `None`.
fn render(col: &Column, expr: &str, texts: Option<&str>) -> String {
    let name = lit(&col.name);
    let canonical = match col.ty {
        ColType::Uuid => format!("{expr}::text"),
        ColType::Timestamptz => format!("to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
        ColType::Date => format!("to_char({expr}, 'YYYY-MM-DD')"),
        ColType::Json => format!("{expr}::text"),
        ColType::Integer | ColType::BigInt => format!("{expr}::int8"),
        ColType::Real => format!("{expr}::float8"),
        ColType::Text | ColType::Boolean | ColType::Blob => expr.to_owned(),
    };
    match texts {
        Some(t) if keeps_text(col.ty) => format!(
            "CASE WHEN {expr} = ({t}->>{name})::{ty} THEN {t}->>{name} ELSE {canonical} END",
            ty = column_type(col.ty)
        ),
        _ => canonical,
    }
}

/// A plain-form expression cast to the column's type.
fn cast(col: &Column, expr: &str) -> String {
    match col.ty {
        ColType::Text | ColType::BigInt | ColType::Real | ColType::Boolean | ColType::Blob => expr.to_owned(),
        ty => format!("{expr}::{}", column_type(ty)),
    }
}

/// The SQL for one table.
pub struct PgTable {
    pub table: Table,
    /// `$1` tbl, `$2` keys: the whole stored state of those rows.
    pub select: String,
    /// As `select`, for every row of the table (`$1`: its name).
    pub select_all: String,
    /// As `select`, locking the bookkeeping rows for the push transaction.
    pub select_for_update: String,
    /// `$1` keys: lock those application rows, in key order.
    pub lock_rows: String,
    /// `$1..` one array per column (key first): insert or update application rows.
    pub upsert: String,
    /// `$1` keys: delete application rows.
    pub delete: String,
    /// `COPY` of application rows (key first, then the data columns in schema order), in
    /// text format.
    pub copy_in: String,
    /// `$1` keys: those of them an application row has.
    pub present: String,
}

impl PgTable {
    pub fn new(table: &Table) -> PgTable {
        let t = quote(&table.name);
        let pk_col = table.pk_column();
        let pk = quote(&pk_col.name);
        let data: Vec<&Column> = table.data_columns().collect();
        let rendered: Vec<String> =
            data.iter().map(|c| render(c, &format!("t.{}", quote(&c.name)), Some("r.texts"))).collect();
        let values = if rendered.is_empty() { String::new() } else { format!(", {}", rendered.join(", ")) };
        let select = format!(
            "SELECT r.pk, r.alive, r.alive_at, r.clock, r.clocks, r.dead, r.owner, t.{pk} IS NOT NULL{values}
             FROM _ferry_rows r LEFT JOIN {t} t ON r.alive AND t.{pk} = {key}
             WHERE r.tbl = $1 AND r.pk = ANY($2::text[])",
            key = cast(pk_col, "r.pk"),
        );
        let select_for_update = format!("{select} ORDER BY r.pk FOR UPDATE OF r");
        // In key order: a restore that writes them in that order appends to its indexes
        // (the bookkeeping's and the link's bases are keyed by it) instead of landing each
        // row on a random page.
        let select_all = select.replace(" AND r.pk = ANY($2::text[])", " ORDER BY r.pk");
        debug_assert_ne!(select_all, select, "the key filter is left out");
        let all: Vec<&Column> = std::iter::once(pk_col).chain(data.iter().copied()).collect();
        let names: Vec<String> = all.iter().map(|c| quote(&c.name)).collect();
        let arrays: Vec<String> =
            all.iter().enumerate().map(|(i, c)| format!("${}::{}", i + 1, array_type(c.ty))).collect();
        let aliases: Vec<String> = (0..all.len()).map(|i| format!("c{i}")).collect();
        let casts: Vec<String> = all.iter().zip(&aliases).map(|(c, a)| cast(c, &format!("u.{a}"))).collect();
        let on_conflict = if data.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            let sets: Vec<String> = data.iter().map(|c| format!("{q} = excluded.{q}", q = quote(&c.name))).collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        };
        let upsert = format!(
            "INSERT INTO {t} ({}) SELECT {} FROM unnest({}) AS u({}) ON CONFLICT ({pk}) {on_conflict}",
            names.join(", "),
            casts.join(", "),
            arrays.join(", "),
            aliases.join(", "),
        );
        let delete =
            format!("DELETE FROM {t} WHERE {pk} IN (SELECT {} FROM unnest($1::text[]) AS u(k))", cast(pk_col, "u.k"));
        let lock_rows = format!(
            "SELECT 1 FROM {t} WHERE {pk} IN (SELECT {} FROM unnest($1::text[]) AS u(k)) ORDER BY {pk} FOR UPDATE",
            cast(pk_col, "u.k")
        );
        let copy_in = format!("COPY {t} ({}) FROM STDIN", names.join(", "));
        let present = format!(
            "SELECT u.k FROM unnest($1::text[]) AS u(k) WHERE EXISTS (SELECT 1 FROM {t} WHERE {pk} = {})",
            cast(pk_col, "u.k")
        );
        PgTable {
            table: table.clone(),
            select,
            select_all,
            select_for_update,
            lock_rows,
            upsert,
            delete,
            copy_in,
            present,
        }
    }

    /// The names of the capture's functions: capture, tombstone, truncate. PostgreSQL cuts
    /// names at 63 bytes: a fingerprint keeps long table names apart.
    pub fn functions(&self) -> [String; 3] {
        let tag = fingerprint(&self.table.name);
        ["capture", "tomb", "truncate"].map(|f| format!("_ferry_{f}_{tag}"))
    }

    /// The capture of direct writes: PL/pgSQL functions and the row and TRUNCATE triggers
    /// that call them. Writes made by Ferry itself set `ferry.applying` for their
    /// transaction and are skipped, by the row trigger's `WHEN`, so the function is not even
    /// called for each row a push writes.
    ///
    /// The functions run as their owner (`SECURITY DEFINER`, with a fixed `search_path`), so
    /// another application's role needs no rights on Ferry's bookkeeping and its own
    /// `search_path` does not matter. They read rows through `to_jsonb`, never by column
    /// name, so an application that alters the table does not make its own statements fail.
    /// Values the schema does not allow are refused with an error naming the column.
    pub fn capture(&self, schema: &str) -> String {
        let table = &self.table;
        let t = quote(&table.name);
        let tl = lit(&table.name);
        let [capture_fn, tomb_fn, truncate_fn] = self.functions().map(|f| quote(&f));
        let pk = lit(&table.pk_column().name);
        let settings =
            format!("SECURITY DEFINER SET search_path = {}, pg_temp SET extra_float_digits = 3", quote(schema));
        // Owned tables: a row without an owner belongs to nobody ('' matches no user).
        let owner = |rec: &str| match &table.options.owner {
            Some(o) => format!("coalesce({rec}->>{}, '')", lit(o)),
            None => "NULL".to_owned(),
        };
        // Tables with a `read` rule: the row's reach, from the row as jsonb.
        let reach = |rec: &str| match crate::scope::read_rule(table) {
            Some(rule) => crate::scope::reach_sql(rule, table, Dialect::Postgres, |c| format!("({rec}->>{})", lit(c))),
            None => "NULL::jsonb".to_owned(),
        };
        let data: Vec<&Column> = table.data_columns().collect();
        let old_json = if data.is_empty() {
            "'{}'".to_owned()
        } else {
            let pairs: Vec<String> = data
                .iter()
                .map(|c| {
                    let v = jsonb_field(c, "o", "tx");
                    format!("{}, {v}", lit(&c.name))
                })
                .collect();
            // jsonb_build_object takes at most 100 arguments: merge groups of 50 pairs.
            pairs
                .chunks(50)
                .map(|g| format!("jsonb_build_object({})", g.join(", ")))
                .reduce(|a, b| format!("({a} || {b})"))
                .map(|j| format!("({j})::text"))
                .unwrap_or_default()
        };
        let changed: Vec<String> =
            data.iter().map(|c| format!("(o->{n}) IS DISTINCT FROM (n->{n})", n = lit(&c.name))).collect();
        let any_changed = if changed.is_empty() { "false".to_owned() } else { changed.join(" OR ") };
        let per_column: String = data
            .iter()
            .map(|c| {
                format!(
                    "    IF (o->{n}) IS DISTINCT FROM (n->{n}) THEN cl := cl || jsonb_build_object({n}, h); END IF;\n",
                    n = lit(&c.name)
                )
            })
            .collect();
        let checks: String = table
            .columns
            .iter()
            .filter_map(|c| {
                let n = lit(&c.name);
                let mut rules = Vec::new();
                if c.not_null || c.name == table.pk_column().name {
                    rules.push(format!(
                        "  IF n->{n} IS NULL OR n->{n} = 'null'::jsonb THEN
    RAISE EXCEPTION 'ferry: %.% is NOT NULL in the synced schema', {tl}, {n} USING ERRCODE = '23502';
  END IF;\n"
                    ));
                }
                if let Some(allowed) = &c.allowed {
                    let list: Vec<String> = allowed.iter().map(|a| lit(a)).collect();
                    let shown = lit(&allowed.join(", "));
                    rules.push(format!(
                        "  IF n->>{n} IS NOT NULL AND NOT (n->>{n} = ANY (ARRAY[{}]::text[])) THEN
    RAISE EXCEPTION 'ferry: %.% allows only %, got %', {tl}, {n}, {shown}, n->>{n} USING ERRCODE = '23514';
  END IF;\n",
                        list.join(", ")
                    ));
                }
                rules.extend(limit_rules(table, c, &tl, &n));
                (!rules.is_empty()).then(|| rules.concat())
            })
            .collect();
        format!(
            r#"CREATE OR REPLACE FUNCTION {tomb_fn}(o jsonb) RETURNS void LANGUAGE plpgsql {settings} AS $ferry$
DECLARE
  k text := o->>{pk};
  h text;
  tx jsonb;
BEGIN
  h := _ferry_next_clock({tl}, k);
  SELECT texts INTO tx FROM _ferry_rows WHERE tbl = {tl} AND pk = k;
  INSERT INTO _ferry_rows (tbl, pk, alive, alive_at, clock, dead, owner, reach, xid)
  VALUES ({tl}, k, false, h, h, {old_json}, {old_owner}, {old_reach}, pg_current_xact_id())
  ON CONFLICT (tbl, pk) DO UPDATE SET alive = false, alive_at = h, dead = excluded.dead, origin = NULL,
    xid = excluded.xid;
END
$ferry$;
CREATE OR REPLACE FUNCTION {capture_fn}() RETURNS trigger LANGUAGE plpgsql {settings} AS $ferry$
DECLARE
  h text;
  cl jsonb;
  o jsonb;
  n jsonb;
BEGIN
  IF coalesce(current_setting('ferry.applying', true), '') = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    o := to_jsonb(OLD);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    n := to_jsonb(NEW);
{checks}  END IF;
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND (o->{pk}) IS DISTINCT FROM (n->{pk})) THEN
    PERFORM {tomb_fn}(o);
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' OR (o->{pk}) IS DISTINCT FROM (n->{pk}) THEN
    h := _ferry_next_clock({tl}, n->>{pk});
    INSERT INTO _ferry_rows (tbl, pk, alive, alive_at, clock, owner, reach, xid)
    VALUES ({tl}, n->>{pk}, true, h, h, {new_owner}, {new_reach}, pg_current_xact_id())
    ON CONFLICT (tbl, pk) DO UPDATE SET alive = true, alive_at = h, clock = h, clocks = NULL, dead = NULL,
      owner = excluded.owner, reach = excluded.reach, origin = NULL, texts = NULL, xid = excluded.xid;
  ELSIF {any_changed} THEN
    h := _ferry_next_clock({tl}, n->>{pk});
    SELECT coalesce(clocks::jsonb, '{{}}'::jsonb) INTO cl FROM _ferry_rows WHERE tbl = {tl} AND pk = n->>{pk};
    IF NOT FOUND THEN
      -- A row Ferry never tracked: its first appearance is the whole row.
      INSERT INTO _ferry_rows (tbl, pk, alive, alive_at, clock, owner, reach, xid)
      VALUES ({tl}, n->>{pk}, true, h, h, {new_owner}, {new_reach}, pg_current_xact_id()) ON CONFLICT DO NOTHING;
      RETURN NULL;
    END IF;
{per_column}    UPDATE _ferry_rows SET clocks = cl::text, owner = {new_owner}, reach = {new_reach}, origin = NULL,
      xid = pg_current_xact_id()
    WHERE tbl = {tl} AND pk = n->>{pk};
  END IF;
  RETURN NULL;
END
$ferry$;
CREATE OR REPLACE FUNCTION {truncate_fn}() RETURNS trigger LANGUAGE plpgsql {settings} AS $ferry$
DECLARE
  r record;
BEGIN
  IF coalesce(current_setting('ferry.applying', true), '') = 'on' THEN
    RETURN NULL;
  END IF;
  -- Every row becomes a tombstone; the rows can still be read before the truncation.
  FOR r IN SELECT to_jsonb(x) AS o FROM {t} x LOOP
    PERFORM {tomb_fn}(r.o);
  END LOOP;
  RETURN NULL;
END
$ferry$;
CREATE OR REPLACE TRIGGER _ferry_capture AFTER INSERT OR UPDATE OR DELETE ON {t}
  FOR EACH ROW WHEN (current_setting('ferry.applying', true) IS DISTINCT FROM 'on')
  EXECUTE FUNCTION {capture_fn}();
CREATE OR REPLACE TRIGGER _ferry_truncate BEFORE TRUNCATE ON {t}
  FOR EACH STATEMENT EXECUTE FUNCTION {truncate_fn}();
CREATE OR REPLACE TRIGGER _ferry_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t}
  FOR EACH STATEMENT WHEN (current_setting('ferry.applying', true) IS DISTINCT FROM 'on')
  EXECUTE FUNCTION _ferry_notify_direct();
"#,
            old_owner = owner("o"),
            new_owner = owner("n"),
            old_reach = reach("o"),
            new_reach = reach("n"),
        )
    }

    /// Every row's reach as the table's `read` rule makes it, from the table for live rows,
    /// from the kept values for deleted ones (`SELECT pk, was, reach`); without a rule, only
    /// the rows that still hold one (no join: start-up reads this for every table).
    fn expected_reach(&self) -> String {
        let table = &self.table;
        let (t, pk, tl) = (quote(&table.name), quote(&table.pk_column().name), lit(&table.name));
        let reach = match crate::scope::read_rule(table) {
            None => {
                return format!(
                    "SELECT r.pk, r.reach AS was, NULL::jsonb AS reach FROM _ferry_rows r
                     WHERE r.tbl = {tl} AND r.reach IS NOT NULL"
                );
            }
            Some(rule) => {
                let live = crate::scope::reach_sql(rule, table, Dialect::Postgres, |c| format!("t.{}", quote(c)));
                let dead = crate::scope::reach_sql(rule, table, Dialect::Postgres, |c| {
                    if c == table.pk_column().name {
                        "r.pk".to_owned()
                    } else {
                        format!("(r.dead::jsonb->>{})", lit(c))
                    }
                });
                format!("CASE WHEN t.{pk} IS NOT NULL THEN {live} ELSE {dead} END")
            }
        };
        format!(
            "SELECT r.pk, r.reach AS was, {reach} AS reach FROM _ferry_rows r LEFT JOIN {t} t ON r.pk = t.{pk}::text
             WHERE r.tbl = {tl}"
        )
    }

    /// Whether [`PgTable::backfill_reach`] has anything to do (read only).
    pub fn reaches_differ(&self) -> String {
        format!("SELECT EXISTS (SELECT 1 FROM ({}) x WHERE x.was IS DISTINCT FROM x.reach)", self.expected_reach())
    }

    /// Sets every row's reach from the table's `read` rule where it disagrees (after the rule
    /// was added or changed), moving those rows to the end of the feed so that the users who
    /// may now read them receive them.
    pub fn backfill_reach(&self) -> String {
        format!(
            "UPDATE _ferry_rows r SET reach = x.reach, xid = pg_current_xact_id()
             FROM ({}) x WHERE r.tbl = {} AND r.pk = x.pk AND x.was IS DISTINCT FROM x.reach",
            self.expected_reach(),
            lit(&self.table.name)
        )
    }

    /// Sets the bookkeeping owner of every row from the owner column (or clears it when the
    /// table has no owner), for rows whose owner disagrees: after the `owner` option was
    /// added, removed or changed. Rows without an owner belong to nobody.
    pub fn backfill_owner(&self) -> String {
        let table = &self.table;
        let tl = lit(&table.name);
        match &table.options.owner {
            None => format!(
                "UPDATE _ferry_rows SET owner = NULL, xid = pg_current_xact_id() WHERE tbl = {tl} AND owner IS NOT NULL"
            ),
            Some(o) => format!(
                "UPDATE _ferry_rows r SET owner = coalesce(t.{o}::text, ''), xid = pg_current_xact_id()
                 FROM {t} t WHERE r.tbl = {tl} AND r.pk = t.{pk}::text AND r.owner IS DISTINCT FROM coalesce(t.{o}::text, '');
                 UPDATE _ferry_rows SET owner = '' WHERE tbl = {tl} AND owner IS NULL",
                o = quote(o),
                t = quote(&table.name),
                pk = quote(&table.pk_column().name),
            ),
        }
    }

    /// Whether [`PgTable::backfill_owner`] has anything to do (read only).
    pub fn owners_differ(&self) -> String {
        let table = &self.table;
        let tl = lit(&table.name);
        match &table.options.owner {
            None => format!("SELECT EXISTS (SELECT 1 FROM _ferry_rows WHERE tbl = {tl} AND owner IS NOT NULL)"),
            Some(o) => format!(
                "SELECT EXISTS (SELECT 1 FROM _ferry_rows r JOIN {t} t ON r.pk = t.{pk}::text
                                WHERE r.tbl = {tl} AND r.owner IS DISTINCT FROM coalesce(t.{o}::text, ''))
                     OR EXISTS (SELECT 1 FROM _ferry_rows WHERE tbl = {tl} AND owner IS NULL)",
                o = quote(o),
                t = quote(&table.name),
                pk = quote(&table.pk_column().name),
            ),
        }
    }

    /// Whether the table holds rows Ferry does not track yet (read only).
    pub fn untracked(&self) -> String {
        let table = &self.table;
        format!(
            "SELECT EXISTS (SELECT 1 FROM {t} t
                            WHERE NOT EXISTS (SELECT 1 FROM _ferry_rows r WHERE r.tbl = {tl} AND r.pk = t.{pk}::text))",
            tl = lit(&table.name),
            t = quote(&table.name),
            pk = quote(&table.pk_column().name),
        )
    }

    /// Records every row Ferry does not track yet (a table adopted with its data) as
    /// inserted at clock `$1`.
    pub fn adopt(&self) -> String {
        let table = &self.table;
        let pk = quote(&table.pk_column().name);
        let owner = match &table.options.owner {
            Some(o) => format!("coalesce(t.{}::text, '')", quote(o)),
            None => "NULL".to_owned(),
        };
        format!(
            "INSERT INTO _ferry_rows (tbl, pk, alive, alive_at, clock, owner, xid)
             SELECT {tl}, t.{pk}::text, true, $1, $1, {owner}, pg_current_xact_id() FROM {t} t
             WHERE NOT EXISTS (SELECT 1 FROM _ferry_rows r WHERE r.tbl = {tl} AND r.pk = t.{pk}::text)",
            tl = lit(&table.name),
            t = quote(&table.name),
        )
    }
}

/// The tables [`BOOKKEEPING`] creates.
pub const BOOKKEEPING_TABLES: [&str; 14] = [
    "_ferry_store",
    "_ferry_users",
    "_ferry_devices",
    "_ferry_batches",
    "_ferry_rows",
    "_ferry_exits",
    "_ferry_scopes",
    "_ferry_sites",
    "_ferry_conflicts",
    "_ferry_peer_bases",
    "_ferry_links",
    "_ferry_sync_log",
    "_ferry_full_syncs",
    "_ferry_link_starts",
];
/// The functions [`BOOKKEEPING`] creates.
pub const BOOKKEEPING_FUNCTIONS: [&str; 3] = ["_ferry_exit", "_ferry_notify_direct", "_ferry_next_clock"];

/// The catalog's definitions of Ferry's objects, hashed: `$1` tables whose columns count,
/// `$1` and `$2` tables whose `_ferry` indexes and triggers count, `$3` functions. Reading
/// the catalog takes no lock that an application's statement could be waiting for.
pub const CATALOG: &str = r#"
SELECT md5(coalesce(string_agg(d, E'\n' ORDER BY d), '')) FROM (
  SELECT c.relname || ' column ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') AS d
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
  WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[])
  UNION ALL
  SELECT pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[] || $2::text[]) AND ic.relname LIKE '\_ferry%'
  UNION ALL
  SELECT pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[] || $2::text[])
    AND NOT t.tgisinternal AND t.tgname LIKE '\_ferry%'
  UNION ALL
  SELECT pg_get_functiondef(p.oid)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = current_schema() AND p.proname = ANY($3::text[])
) x"#;

/// Bookkeeping tables and the clock function, created once per database.
pub const BOOKKEEPING: &str = r#"
CREATE TABLE IF NOT EXISTS _ferry_store (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS _ferry_users (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS _ferry_devices (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES _ferry_users(id),
    name text NOT NULL,
    token_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz,
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS _ferry_batches (
    device_id text NOT NULL,
    batch_id text NOT NULL,
    received integer NOT NULL,
    changed integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, batch_id)
);
CREATE TABLE IF NOT EXISTS _ferry_rows (
    tbl text NOT NULL,
    pk text NOT NULL,
    alive boolean NOT NULL,
    alive_at text NOT NULL,
    clock text NOT NULL,
    clocks text,
    dead text,
    owner text,
    origin text,
    texts jsonb,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (tbl, pk)
);
CREATE INDEX IF NOT EXISTS _ferry_rows_feed ON _ferry_rows (xid, tbl, pk);
ALTER TABLE _ferry_devices ADD COLUMN IF NOT EXISTS admin boolean NOT NULL DEFAULT false;
ALTER TABLE _ferry_devices ADD COLUMN IF NOT EXISTS role text;
ALTER TABLE _ferry_batches ADD COLUMN IF NOT EXISTS refused text;
ALTER TABLE _ferry_rows ADD COLUMN IF NOT EXISTS reach jsonb;
CREATE TABLE IF NOT EXISTS _ferry_exits (
    tbl text NOT NULL,
    pk text NOT NULL,
    reach jsonb NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS _ferry_exits_row ON _ferry_exits (tbl, pk);
CREATE INDEX IF NOT EXISTS _ferry_exits_feed ON _ferry_exits (tbl, xid);
CREATE TABLE IF NOT EXISTS _ferry_scopes (hash text PRIMARY KEY, body text NOT NULL);
CREATE OR REPLACE FUNCTION _ferry_exit() RETURNS trigger LANGUAGE plpgsql AS $ferry$
BEGIN
  -- A row's reach changed: the old one is kept for the devices that held the row.
  INSERT INTO _ferry_exits (tbl, pk, reach) VALUES (OLD.tbl, OLD.pk, OLD.reach);
  RETURN NULL;
END
$ferry$;
CREATE OR REPLACE TRIGGER _ferry_rows_exit AFTER UPDATE OF reach ON _ferry_rows
  FOR EACH ROW WHEN (OLD.reach IS NOT NULL AND OLD.reach IS DISTINCT FROM NEW.reach)
  EXECUTE FUNCTION _ferry_exit();
CREATE TABLE IF NOT EXISTS _ferry_sites (
    site text PRIMARY KEY,
    device_id text NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry_conflicts (
    id bigserial PRIMARY KEY,
    tbl text NOT NULL,
    pk text NOT NULL,
    kind text NOT NULL,
    fields text NOT NULL,
    strategy text NOT NULL,
    stored text NOT NULL,
    incoming text NOT NULL,
    winner text NOT NULL,
    resolved_by text,
    resolved_at timestamptz,
    detected_at timestamptz NOT NULL DEFAULT now(),
    dedupe text NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS _ferry_conflicts_row ON _ferry_conflicts (tbl, pk);
CREATE TABLE IF NOT EXISTS _ferry_peer_bases (
    device_id text NOT NULL,
    tbl text NOT NULL,
    pk text NOT NULL,
    clocks text NOT NULL,
    PRIMARY KEY (device_id, tbl, pk)
);
CREATE TABLE IF NOT EXISTS _ferry_links (peer text PRIMARY KEY, status text NOT NULL, resync boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS _ferry_sync_log (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    peer text NOT NULL,
    entry text NOT NULL
);
CREATE INDEX IF NOT EXISTS _ferry_sync_log_at ON _ferry_sync_log (at_ms);
CREATE TABLE IF NOT EXISTS _ferry_full_syncs (
    id text PRIMARY KEY,
    started_ms bigint NOT NULL,
    run text NOT NULL,
    cancel boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS _ferry_link_starts (
    peer text NOT NULL,
    way text NOT NULL,
    cursor text NOT NULL,
    PRIMARY KEY (peer, way)
);
CREATE OR REPLACE FUNCTION _ferry_notify_direct() RETURNS trigger LANGUAGE plpgsql AS $ferry$
BEGIN
  -- A direct SQL write: the realtime stream tells every device to pull.
  PERFORM pg_notify('ferry_changes', '*');
  RETURN NULL;
END
$ferry$;
CREATE OR REPLACE FUNCTION _ferry_next_clock(t text, k text) RETURNS text LANGUAGE plpgsql AS $ferry$
DECLARE
  last text;
  wall bigint;
  prev bigint := 0;
  site text;
BEGIN
  SELECT greatest(r.alive_at, r.clock, (SELECT max(value) FROM jsonb_each_text(coalesce(r.clocks::jsonb, '{}'::jsonb))))
    INTO last FROM _ferry_rows r WHERE r.tbl = t AND r.pk = k FOR UPDATE;
  wall := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 16;
  IF last IS NOT NULL THEN
    prev := ('x' || substr(last, 1, 16))::bit(64)::bigint + 1;
  END IF;
  SELECT value INTO site FROM _ferry_store WHERE key = 'site';
  RETURN lpad(to_hex(greatest(wall, prev)), 16, '0') || site;
END
$ferry$;
"#;

/// One column of a row read as jsonb (`rec`), in the stored tombstone form: blobs as hex,
/// reals as exact text, timestamps and JSON as the device wrote them (from `texts`) while
/// unchanged, else canonical.
fn jsonb_field(c: &Column, rec: &str, texts: &str) -> String {
    let n = lit(&c.name);
    let raw = format!("({rec}->>{n})");
    match c.ty {
        ColType::Blob => format!("substr({raw}, 3)"),
        ColType::Real | ColType::Uuid | ColType::Text | ColType::Date => raw,
        ColType::Integer | ColType::BigInt | ColType::Boolean => format!("({rec}->{n})"),
        ColType::Timestamptz | ColType::Json => {
            let typed = format!("{raw}::{}", column_type(c.ty));
            render(c, &typed, Some(texts))
        }
    }
}

/// The capture trigger's checks for the values the door refuses (docs/schema.md, "Limits";
/// `Table::check_storable`): keys and values over their size limits, NaN and -0.0. `n` is
/// `to_jsonb(NEW)`, which turns -0 into 0, so reals are read through `row_to_json(NEW)`
/// (json keeps float8's text). JSON nesting is not checked here (it would parse every
/// document again); `ferry audit` finds such rows, and devices set them aside.
fn limit_rules(table: &Table, c: &ferry_core::schema::Column, tl: &str, n: &str) -> Vec<String> {
    use ferry_core::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
    let size = match c.ty {
        ColType::Blob => format!("(octet_length(n->>{n}) - 2) / 2"),
        t if t.is_textual() => format!("octet_length(n->>{n})"),
        _ => String::new(),
    };
    let mut rules = Vec::new();
    let (max, what) =
        if c.name == table.pk_column().name { (MAX_KEY_BYTES, "a key") } else { (MAX_VALUE_BYTES, "a value") };
    if !size.is_empty() {
        rules.push(format!(
            "  IF {size} > {max} THEN
    RAISE EXCEPTION 'ferry: %.% holds % bytes; {what} may be at most {max} bytes (docs/schema.md, Limits)', {tl}, {n}, {size} USING ERRCODE = '22001';
  END IF;\n"
        ));
    }
    if c.ty == ColType::Real {
        rules.push(format!(
            "  IF row_to_json(NEW)->>{n} IN ('NaN', '-0') THEN
    RAISE EXCEPTION 'ferry: %.% is %, which Ferry does not store (SQLite cannot keep it); store NULL or a number (0 for -0)', {tl}, {n}, row_to_json(NEW)->>{n} USING ERRCODE = '22023';
  END IF;\n"
        ));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start-up compares these objects with the catalog to find the bookkeeping current.
    #[test]
    fn the_bookkeeping_lists_name_everything_it_creates() {
        let named = |prefix: &str| -> Vec<String> {
            BOOKKEEPING
                .split(prefix)
                .skip(1)
                .map(|rest| rest.split([' ', '(']).next().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(named("CREATE TABLE IF NOT EXISTS "), BOOKKEEPING_TABLES);
        assert_eq!(named("CREATE OR REPLACE FUNCTION "), BOOKKEEPING_FUNCTIONS);
    }
}
