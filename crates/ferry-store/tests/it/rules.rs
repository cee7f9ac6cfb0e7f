//! Sharing rules as the stores evaluate them: random rules over random rows and memberships,
//! compiled for SQLite and for PostgreSQL and run on real tables, must select exactly the
//! rows the naive evaluator in `ferry_core::rules` allows, for every user; so must the rules
//! with their subqueries' values given in their place (`Rule::compile_given`).

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::Value;
use ferry_core::rules::{Dialect, Rule, Tables};
use ferry_core::schema::{ColType, Schema};
use ferry_store::PgStore;

const GROUPS: [&str; 3] = [
    "0190a3c4-0000-7000-8000-0000000000a1",
    "0190a3c4-0000-7000-8000-0000000000a2",
    "0190a3c4-0000-7000-8000-0000000000a3",
];
const USERS: [&str; 3] = [
    "0190a3c4-0000-7000-8000-0000000000b1",
    "0190a3c4-0000-7000-8000-0000000000b2",
    "0190a3c4-0000-7000-8000-0000000000b3",
];
const TITLES: [&str; 4] = ["a", "b", "B", "é"];
const DAYS: [&str; 3] = ["2025-12-31", "2026-01-01", "2026-02-10"];

fn schema() -> Schema {
    Schema::parse(
        "CREATE TABLE members (id uuid PRIMARY KEY, group_id uuid, user_id uuid, role text);
         CREATE TABLE items (id uuid PRIMARY KEY, group_id uuid, owner uuid, title text, n integer, flag boolean, day date);",
        &BTreeMap::new(),
    )
    .unwrap()
}

/// A small xorshift generator: the cases are the same on every run, and a failure names its
/// case number.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// One of `items`, or NULL one time in five.
    fn maybe(&mut self, items: &[&str]) -> Value {
        if self.below(5) == 0 { Value::Null } else { Value::Text(self.pick(items).to_owned()) }
    }
}

fn op(rng: &mut Rng) -> &'static str {
    ["=", "<>", "<", "<=", ">", ">="][rng.below(6)]
}

/// A random condition over `items`, at most `depth` operators deep.
fn condition(rng: &mut Rng, depth: u32) -> String {
    if depth > 0 && rng.below(3) > 0 {
        let (a, b) = (condition(rng, depth - 1), condition(rng, depth - 1));
        return match rng.below(3) {
            0 => format!("({a} AND {b})"),
            1 => format!("({a} OR {b})"),
            _ => format!("NOT ({a})"),
        };
    }
    let g = rng.pick(&GROUPS);
    let inner = [
        "user_id = :user".to_owned(),
        "user_id = :user AND role = 'owner'".to_owned(),
        "role IS NULL OR user_id <> :user".to_owned(),
        format!("group_id = '{g}'"),
    ];
    match rng.below(14) {
        0 => format!("group_id {} '{g}'", ["=", "<>"][rng.below(2)]),
        1 => format!("group_id IS {}NULL", ["", "NOT "][rng.below(2)]),
        2 => format!("owner {} :user", ["=", "<>"][rng.below(2)]),
        3 => format!("title {} '{}'", op(rng), rng.pick(&TITLES)),
        4 => format!("n {} {}", op(rng), rng.below(4) as i64 - 1),
        5 => ["flag", "flag = TRUE", "flag = FALSE", "flag <> TRUE"][rng.below(4)].to_owned(),
        6 => format!("day {} '{}'", op(rng), rng.pick(&DAYS)),
        7 => format!("title {}IN ('a', 'b')", ["", "NOT "][rng.below(2)]),
        8 => format!("n {}IN (0, 1)", ["", "NOT "][rng.below(2)]),
        9 | 10 => {
            let filter = &inner[rng.below(inner.len())];
            format!("group_id {}IN (SELECT group_id FROM members WHERE {filter})", ["", "NOT "][rng.below(2)])
        }
        11 => format!("owner IN (SELECT user_id FROM members WHERE group_id = '{g}')"),
        12 => format!("{} < n", rng.below(3)),
        _ => ["TRUE", "FALSE"][rng.below(2)].to_owned(),
    }
}

fn uuid(n: usize) -> String {
    format!("0190a3c4-0000-7000-8000-{n:012x}")
}

/// Random members and items, as rows by table (the naive evaluator's input).
fn data(rng: &mut Rng) -> Tables {
    let mut tables = Tables::new();
    let members = (0..rng.below(6))
        .map(|i| {
            BTreeMap::from([
                ("id".to_owned(), Value::Text(uuid(100 + i))),
                ("group_id".to_owned(), rng.maybe(&GROUPS)),
                ("user_id".to_owned(), rng.maybe(&USERS)),
                ("role".to_owned(), rng.maybe(&["owner", "member"])),
            ])
        })
        .collect();
    let items = (0..12)
        .map(|i| {
            let n = if rng.below(5) == 0 { Value::Null } else { Value::Integer(rng.below(4) as i64 - 1) };
            let flag = if rng.below(5) == 0 { Value::Null } else { Value::Integer(rng.below(2) as i64) };
            BTreeMap::from([
                ("id".to_owned(), Value::Text(uuid(i))),
                ("group_id".to_owned(), rng.maybe(&GROUPS)),
                ("owner".to_owned(), rng.maybe(&USERS)),
                ("title".to_owned(), rng.maybe(&TITLES)),
                ("n".to_owned(), n),
                ("flag".to_owned(), flag),
                ("day".to_owned(), rng.maybe(&DAYS)),
            ])
        })
        .collect();
    tables.insert("members".into(), members);
    tables.insert("items".into(), items);
    tables
}

fn pg_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Uuid => "uuid",
        ColType::Integer => "bigint",
        ColType::Boolean => "boolean",
        ColType::Date => "date",
        _ => "text",
    }
}

fn text(v: &Value, ty: ColType) -> Option<String> {
    match (v, ty) {
        (Value::Null, _) => None,
        (Value::Integer(i), ColType::Boolean) => Some((*i != 0).to_string()),
        (Value::Integer(i), _) => Some(i.to_string()),
        (Value::Text(s), _) => Some(s.clone()),
        (other, _) => panic!("no such test value {other:?}"),
    }
}

fn sqlite_value(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        other => panic!("no such test value {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_rules_select_in_both_stores_what_the_naive_evaluator_allows() {
    let schema = schema();
    let items = schema.table("items").unwrap();
    let lite = rusqlite::Connection::open_in_memory().unwrap();
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for t in &schema.tables {
        lite.execute_batch(&ferry_sqlite::ddl::create_table(t)).unwrap();
        pg.batch_execute(&PgStore::create_table_sql(t)).await.unwrap();
    }
    lite.execute_batch("CREATE TABLE reaches (id TEXT PRIMARY KEY, reach TEXT NOT NULL)").unwrap();
    pg.batch_execute("CREATE TABLE reaches (id text PRIMARY KEY, reach text NOT NULL)").await.unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cases = 150;
    for case in 0..cases {
        let tables = data(&mut rng);
        lite.execute_batch("DELETE FROM members; DELETE FROM items;").unwrap();
        pg.batch_execute("DELETE FROM members; DELETE FROM items;").await.unwrap();
        for (name, rows) in &tables {
            let t = schema.table(name).unwrap();
            let names: Vec<String> = t.columns.iter().map(|c| ferry_core::schema::quote(&c.name)).collect();
            for row in rows {
                let lite_sql = format!(
                    "INSERT INTO {name} ({}) VALUES ({})",
                    names.join(", "),
                    (1..=names.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
                );
                let values: Vec<rusqlite::types::Value> =
                    t.columns.iter().map(|c| sqlite_value(&row[&c.name])).collect();
                lite.execute(&lite_sql, rusqlite::params_from_iter(values)).unwrap();
                let pg_sql = format!(
                    "INSERT INTO {name} ({}) VALUES ({})",
                    names.join(", "),
                    t.columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("(${}::text)::{}", i + 1, pg_type(c.ty)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let texts: Vec<Option<String>> = t.columns.iter().map(|c| text(&row[&c.name], c.ty)).collect();
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                pg.execute(&pg_sql, &params).await.unwrap();
            }
        }
        let source = condition(&mut rng, 3);
        let rule = Rule::parse(&source, items, &schema.tables).unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(
            Rule::parse(&rule.expr.to_string(), items, &schema.tables).unwrap().expr,
            rule.expr,
            "case {case}: {source} prints back as itself"
        );
        let lite_rule = rule.compile(Dialect::Sqlite, "t", 1);
        let pg_rule = rule.compile(Dialect::Postgres, "t", 1);
        // Each row's reach, kept apart from the row as a store's bookkeeping keeps it.
        lite.execute_batch("DELETE FROM reaches").unwrap();
        pg.batch_execute("DELETE FROM reaches").await.unwrap();
        for row in &tables["items"] {
            let (id, reach) = (text(&row["id"], ColType::Uuid).unwrap(), rule.reach(row));
            lite.execute("INSERT INTO reaches (id, reach) VALUES (?1, ?2)", rusqlite::params![id, reach]).unwrap();
            pg.execute("INSERT INTO reaches (id, reach) VALUES ($1, $2)", &[&id, &reach]).await.unwrap();
        }
        for user in USERS {
            let expected: BTreeSet<String> = tables["items"]
                .iter()
                .filter(|r| rule.allows(r, user, &tables))
                .map(|r| text(&r["id"], ColType::Uuid).unwrap())
                .collect();
            let values: Vec<rusqlite::types::Value> =
                lite_rule.slots.iter().map(|s| sqlite_value(&s.value(user, &[]))).collect();
            let mut stmt = lite.prepare(&format!("SELECT id FROM items t WHERE {}", lite_rule.sql)).unwrap();
            let in_sqlite: BTreeSet<String> =
                stmt.query_map(rusqlite::params_from_iter(values), |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            assert_eq!(
                in_sqlite, expected,
                "case {case}, SQLite, user {user}: {source}\n{}\n{tables:?}",
                lite_rule.sql
            );
            let texts: Vec<String> = pg_rule.slots.iter().map(|s| s.text(user, &[])).collect();
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let rows = pg.query(&format!("SELECT id::text FROM items t WHERE {}", pg_rule.sql), &params).await.unwrap();
            let in_pg: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(in_pg, expected, "case {case}, PostgreSQL, user {user}: {source}\n{}", pg_rule.sql);
            // The subqueries run on their own, and the rule decided over their values.
            let mut sets = Vec::new();
            for select in rule.subqueries() {
                let q = select.compile(Dialect::Postgres, 1);
                let texts: Vec<String> = q.slots.iter().map(|s| s.text(user, &[])).collect();
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                let sql = format!("SELECT v::text FROM ({}) AS q (v, k)", q.sql);
                let values = pg.query(&sql, &params).await.unwrap();
                sets.push(
                    values.iter().map(|r| r.get::<_, Option<String>>(0).map_or(Value::Null, Value::Text)).collect(),
                );
            }
            let given: BTreeSet<String> = tables["items"]
                .iter()
                .filter(|r| rule.allows_given(r, user, &sets))
                .map(|r| text(&r["id"], ColType::Uuid).unwrap())
                .collect();
            assert_eq!(given, expected, "case {case}, subqueries apart, user {user}: {source}");
            // The rule with those values bound in place of its subqueries, in both stores.
            let lite_given = rule.compile_given(Dialect::Sqlite, "t", 1);
            let values: Vec<rusqlite::types::Value> =
                lite_given.slots.iter().map(|s| sqlite_value(&s.value(user, &sets))).collect();
            let mut stmt = lite.prepare(&format!("SELECT id FROM items t WHERE {}", lite_given.sql)).unwrap();
            let in_sqlite: BTreeSet<String> =
                stmt.query_map(rusqlite::params_from_iter(values), |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            assert_eq!(
                in_sqlite, expected,
                "case {case}, SQLite given sets, user {user}: {source}\n{}",
                lite_given.sql
            );
            let pg_given = rule.compile_given(Dialect::Postgres, "t", 1);
            let texts: Vec<String> = pg_given.slots.iter().map(|s| s.text(user, &sets)).collect();
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let rows =
                pg.query(&format!("SELECT id::text FROM items t WHERE {}", pg_given.sql), &params).await.unwrap();
            let in_pg: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(in_pg, expected, "case {case}, PostgreSQL given sets, user {user}: {source}\n{}", pg_given.sql);
            // Decided from each row's reach alone: in memory, and as both stores' SQL.
            let from_reach: BTreeSet<String> = tables["items"]
                .iter()
                .filter(|r| rule.allows_given(&Rule::reach_row(&rule.reach(r)), user, &sets))
                .map(|r| text(&r["id"], ColType::Uuid).unwrap())
                .collect();
            assert_eq!(from_reach, expected, "case {case}, reach in memory, user {user}: {source}");
            let lite_reach = rule.compile_reach(Dialect::Sqlite, "r.reach", 1);
            let values: Vec<rusqlite::types::Value> =
                lite_reach.slots.iter().map(|s| sqlite_value(&s.value(user, &sets))).collect();
            let mut stmt = lite.prepare(&format!("SELECT id FROM reaches r WHERE {}", lite_reach.sql)).unwrap();
            let in_sqlite: BTreeSet<String> =
                stmt.query_map(rusqlite::params_from_iter(values), |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            assert_eq!(in_sqlite, expected, "case {case}, SQLite reach, user {user}: {source}\n{}", lite_reach.sql);
            let pg_reach = rule.compile_reach(Dialect::Postgres, "r.reach", 1);
            let texts: Vec<String> = pg_reach.slots.iter().map(|s| s.text(user, &sets)).collect();
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let rows = pg.query(&format!("SELECT id FROM reaches r WHERE {}", pg_reach.sql), &params).await.unwrap();
            let in_pg: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(in_pg, expected, "case {case}, PostgreSQL reach, user {user}: {source}\n{}", pg_reach.sql);
        }
    }
}
