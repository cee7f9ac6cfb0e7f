//! Sharing rules at scale (issue 16, point 7): 1 000 users in 100 groups, a table of rows
//! read by group membership and a table of the same size read by an owner column, each
//! holding as many rows for the measured user. A member's first sync and an incremental pull
//! beside the same user's through the owner rule, and the pull after a membership change
//! that moves a group's rows in, then out. Measured on the PostgreSQL store, straight through
//! `ferry_store` (no HTTP: what the rules cost the store).
//!
//! `cargo bench -p ferry --bench sharing` (`-- --quick`: 20 000 rows a table). With
//! `FERRY_BENCH_EXPLAIN=1` PostgreSQL logs the plan of every statement over 50 ms, copied to
//! `/tmp/ferry-explain.log`.

use std::time::{Duration, Instant};

use ferry_core::schema::{Schema, TableOptions};
use ferry_store::{PgStore, Principal, Store};

mod common;

const USERS: usize = 1_000;
const GROUPS: usize = 100;

fn schema() -> Schema {
    let options = std::collections::BTreeMap::from([
        (
            "items".to_owned(),
            TableOptions {
                read: Some("group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)".into()),
                ..TableOptions::default()
            },
        ),
        ("notes".to_owned(), TableOptions { owner: Some("user_id".into()), ..TableOptions::default() }),
        (
            "group_members".to_owned(),
            TableOptions {
                read: Some("group_id IN (SELECT group_id FROM group_members WHERE user_id = :user)".into()),
                ..TableOptions::default()
            },
        ),
    ]);
    Schema::parse(
        "CREATE TABLE group_members (id uuid PRIMARY KEY, group_id uuid NOT NULL, user_id uuid NOT NULL, role text);
         CREATE TABLE items (id uuid PRIMARY KEY, group_id uuid NOT NULL, title text);
         CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, title text);",
        &options,
    )
    .unwrap()
}

/// A whole pull of one table from `cursor`: rows, removals, the cursor after, the time.
async fn pull_all(store: &PgStore, who: &Principal, table: &str, cursor: &str) -> (usize, usize, String, Duration) {
    let tables = [table.to_owned()];
    let (mut rows, mut removed, mut cursor) = (0, 0, cursor.to_owned());
    let started = Instant::now();
    loop {
        let page = store.pull_tables(who, &cursor, 1000, Some(&tables)).await.unwrap();
        rows += page.rows.len();
        removed += page.removed.len();
        cursor = page.cursor;
        if !page.more {
            return (rows, removed, cursor, started.elapsed());
        }
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 20_000 } else { 1_000_000 };
    common::header(
        "sharing",
        &format!("rows a table: {n}, users: {USERS}, groups: {GROUPS}{}", if quick { " (--quick)" } else { "" }),
    );
    println!("| scenario | read rule | owner rule (baseline) | ratio |");
    println!("|---|---|---|---|");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let cluster = ferry_pgtemp::PgCluster::start().unwrap();
    let url = cluster.create_db("ferry").unwrap();
    if std::env::var_os("FERRY_BENCH_EXPLAIN").is_some() {
        use std::io::Write as _;
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(cluster.dir().join("data/postgresql.conf")).unwrap();
        writeln!(
            conf,
            "session_preload_libraries = 'auto_explain'\nauto_explain.log_min_duration = '50ms'\nauto_explain.log_analyze = on"
        )
        .unwrap();
        cluster.psql("ferry", "SELECT pg_reload_conf()").unwrap();
    }
    let store = PgStore::open(&url, schema()).await.unwrap();
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        users.push(store.add_user(&format!("u{i}")).await.unwrap().id);
    }
    let token = store.create_token(&users[0], "phone").await.unwrap();
    let who = store.authenticate(&token.token).await.unwrap().unwrap();
    drop(store);
    // The rows, loaded by SQL the way another application would (Ferry's capture off), then
    // adopted by the store's start-up: user i is in group i mod 100; items spread evenly over
    // the groups, notes over the first 100 users, so user 0 reads n/100 of each.
    let load = format!(
        "{}
         INSERT INTO group_members SELECT gen_random_uuid(), ('01900000-0000-7000-8000-' || lpad(to_hex(i % {GROUPS}), 12, '0'))::uuid, id, 'member' FROM u;
         INSERT INTO items SELECT ('01910000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
             ('01900000-0000-7000-8000-' || lpad(to_hex(i % {GROUPS}), 12, '0'))::uuid, 'item ' || i
           FROM generate_series(0, {n} - 1) i;",
        load_notes(&users, n)
    );
    cluster.psql("ferry", &load).unwrap();
    let started = Instant::now();
    let store = PgStore::open(&url, schema()).await.unwrap();
    // As autovacuum would after such a load: the planner's statistics.
    cluster.psql("ferry", "ANALYZE").unwrap();
    println!(
        "| start-up adopting {} rows (bookkeeping, owners, reaches) | {:.1} s | | |",
        2 * n + USERS,
        started.elapsed().as_secs_f64()
    );

    // First syncs: n/100 rows through each rule.
    let (items, _, item_cursor, first_ruled) = pull_all(&store, &who, "items", "0").await;

    let (notes, _, note_cursor, first_owned) = pull_all(&store, &who, "notes", "0").await;
    assert_eq!((items, notes), (n / GROUPS, n / GROUPS));
    report(&format!("first sync, {items} of {n} rows"), first_ruled, first_owned);

    // Incremental: 1 000 rows changed by others, 10 of them readable by user 0.
    cluster
        .psql(
            "ferry",
                "UPDATE items SET title = title || '!' WHERE id IN (SELECT ('01910000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid FROM generate_series(0, 999) i);
                 UPDATE notes SET title = title || '!' WHERE id IN (SELECT ('01920000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid FROM generate_series(0, 999) i);"
        )
        .unwrap();
    let (items, _, item_cursor, next_ruled) = pull_all(&store, &who, "items", &item_cursor).await;
    let (notes, _, _, next_owned) = pull_all(&store, &who, "notes", &note_cursor).await;
    assert_eq!((items, notes), (10, 10));
    report("incremental pull, 10 of 1 000 changed rows", next_ruled, next_owned);

    // Membership: user 0 joins group 1 (n/100 rows move in), then leaves it (they move out).
    cluster
        .psql(
            "ferry",
            &format!(
                "INSERT INTO group_members VALUES ('01930000-0000-7000-8000-000000000001', '01900000-0000-7000-8000-000000000001', '{}', 'member')",
                users[0]
            ),
        )
        .unwrap();
    let (moved_in, _, item_cursor, join) = pull_all(&store, &who, "items", &item_cursor).await;
    assert_eq!(moved_in, n / GROUPS);
    cluster.psql("ferry", "DELETE FROM group_members WHERE id = '01930000-0000-7000-8000-000000000001'").unwrap();
    let (_, moved_out, _, leave) = pull_all(&store, &who, "items", &item_cursor).await;
    assert_eq!(moved_out, n / GROUPS);
    println!(
        "| membership change: {moved_in} rows move in, then out | {:.0} ms, {:.0} ms | | |",
        join.as_secs_f64() * 1e3,
        leave.as_secs_f64() * 1e3
    );
    drop(store);
    without_rules(&cluster, n).await;
    if std::env::var_os("FERRY_BENCH_EXPLAIN").is_some() {
        std::fs::copy(cluster.dir().join("postgres.log"), "/tmp/ferry-explain.log").unwrap();
    }
    common::record(
        "sharing",
        &format!("membership change in a table of {n} rows: {moved_in} rows in, then out"),
        &format!("{:.0} ms / {:.0} ms", join.as_secs_f64() * 1e3, leave.as_secs_f64() * 1e3),
        "–",
        "–",
        "–",
    );
}

/// The owner rule in a schema without `read` rules (the feed path every pull took before
/// rules): the same notes, the same user, first sync and incremental pull.
async fn without_rules(cluster: &ferry_pgtemp::PgCluster, n: usize) {
    let url = cluster.create_db("plain").unwrap();
    let schema = Schema::parse(
        "CREATE TABLE notes (id uuid PRIMARY KEY, user_id uuid NOT NULL, title text);",
        &std::collections::BTreeMap::from([(
            "notes".to_owned(),
            TableOptions { owner: Some("user_id".into()), ..TableOptions::default() },
        )]),
    )
    .unwrap();
    let store = PgStore::open(&url, schema.clone()).await.unwrap();
    let mut users = Vec::new();
    for i in 0..GROUPS {
        users.push(store.add_user(&format!("u{i}")).await.unwrap().id);
    }
    let token = store.create_token(&users[0], "phone").await.unwrap();
    let who = store.authenticate(&token.token).await.unwrap().unwrap();
    drop(store);
    cluster.psql("plain", &load_notes(&users, n)).unwrap();
    let store = PgStore::open(&url, schema).await.unwrap();
    cluster.psql("plain", "ANALYZE").unwrap();
    let (notes, _, cursor, first) = pull_all(&store, &who, "notes", "0").await;
    assert_eq!(notes, n / GROUPS);
    cluster
        .psql(
            "plain",
            "UPDATE notes SET title = title || '!' WHERE id IN (SELECT ('01920000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid FROM generate_series(0, 999) i)",
        )
        .unwrap();
    let (notes, _, _, next) = pull_all(&store, &who, "notes", &cursor).await;
    assert_eq!(notes, 10);
    for (what, took) in [
        (format!("first sync, {} of {n} rows", n / GROUPS), first),
        ("incremental pull, 10 of 1 000 changed rows".to_owned(), next),
    ] {
        println!("| {what}, owner rule in a schema without read rules | | {:.0} ms | |", took.as_secs_f64() * 1e3);
        common::record(
            "sharing",
            &format!("{what}: owner rule, schema without read rules"),
            &format!("{:.0} ms", took.as_secs_f64() * 1e3),
            "–",
            "–",
            "–",
        );
    }
}

/// SQL that loads `n` notes with Ferry's capture off, spread over the first 100 `users`
/// (user 0 owns n/100), leaving the users in a temporary table `u (i, id)`.
fn load_notes(users: &[String], n: usize) -> String {
    format!(
        "SET ferry.applying = 'on';
         CREATE TEMP TABLE u (i int, id uuid);
         INSERT INTO u SELECT ordinality - 1, id::uuid FROM unnest(ARRAY['{}']) WITH ORDINALITY AS id;
         INSERT INTO notes SELECT ('01920000-0000-7000-8000-' || lpad(to_hex(g.i), 12, '0'))::uuid, u.id, 'note ' || g.i
           FROM generate_series(0, {n} - 1) AS g(i) JOIN u ON u.i = g.i % {GROUPS};",
        users.join("','")
    )
}

fn report(what: &str, ruled: Duration, owned: Duration) {
    let ratio = ruled.as_secs_f64() / owned.as_secs_f64();
    println!("| {what} | {:.0} ms | {:.0} ms | {ratio:.2}× |", ruled.as_secs_f64() * 1e3, owned.as_secs_f64() * 1e3);
    common::record(
        "sharing",
        &format!("{what}: read rule by membership vs owner rule, same user"),
        &format!("{:.0} ms", ruled.as_secs_f64() * 1e3),
        &format!("{:.0} ms", owned.as_secs_f64() * 1e3),
        &format!("{ratio:.2}×"),
        "–",
    );
}
