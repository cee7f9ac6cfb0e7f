//! `ferry serve --database postgres://…`: the PostgreSQL store end to end, with a real
//! throwaway cluster, real `psql` writes from "another application", and real processes.

use std::time::{Duration, Instant};

use crate::*;

#[test]
fn direct_writes_in_postgres_reach_devices_and_device_writes_are_ordinary_rows() {
    let p = Pair::in_env(Env::postgres());
    let phone = p.env.db("phone.db");
    let id = insert_jump(&phone, &p.user, 1, "from the phone");
    p.sync_phone();
    // The device's row is an ordinary, typed PostgreSQL row.
    let row = p.env.psql(&format!(
        "SELECT jump_number, notes, jumped_at = '2026-11-21T10:00:00Z'::timestamptz, pg_typeof(jumped_at) FROM jump_log WHERE id = '{id}'"
    ));
    assert_eq!(row.trim(), "1|from the phone|t|timestamp with time zone");

    // Another application writes straight into PostgreSQL.
    let web = uuid();
    p.env.psql(&format!(
        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at, notes) VALUES ('{web}', '{}', 2, '2026-11-22 09:30:00+01', 'from the web app');
         UPDATE jump_log SET dropzone = 'Skydive Spa' WHERE id = '{id}';",
        p.user
    ));
    p.sync_laptop();
    let laptop = p.env.db("laptop.db");
    let rows = jumps(&laptop);
    assert!(rows.contains(&(id.clone(), 1, Some("from the phone".into()), Some("Skydive Spa".into()))), "{rows:?}");
    assert!(rows.iter().any(|r| r.0 == web && r.2.as_deref() == Some("from the web app")), "{rows:?}");
    // The device's own timestamp text comes back as it wrote it; the web app's in canonical UTC.
    let text = |db: &rusqlite::Connection, id: &str| -> String {
        db.query_row("SELECT jumped_at FROM jump_log WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    };
    assert_eq!(text(&laptop, &id), "2026-11-21T10:00:00Z");
    assert_eq!(text(&laptop, &web), "2026-11-22T08:30:00.000000Z");

    p.env.psql(&format!("DELETE FROM jump_log WHERE id = '{web}'"));
    p.sync_phone();
    p.sync_laptop();
    assert_eq!(jumps(&phone), jumps(&laptop));
    assert_eq!(jumps(&phone).len(), 1, "the web app's delete reached both devices");
}

#[test]
fn concurrent_column_edits_from_a_device_and_from_sql_both_survive() {
    let p = Pair::in_env(Env::postgres());
    let phone = p.env.db("phone.db");
    let id = insert_jump(&phone, &p.user, 1, "original");
    p.sync_phone();
    phone.execute("UPDATE jump_log SET notes = 'phone notes' WHERE id = ?1", [&id]).unwrap();
    p.env.psql(&format!("UPDATE jump_log SET aircraft = 'Twin Otter' WHERE id = '{id}'"));
    p.sync_phone();
    let aircraft: Option<String> =
        phone.query_row("SELECT aircraft FROM jump_log WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(aircraft.as_deref(), Some("Twin Otter"));
    assert_eq!(
        p.env.psql(&format!("SELECT notes, aircraft FROM jump_log WHERE id = '{id}'")).trim(),
        "phone notes|Twin Otter"
    );
}

#[test]
fn existing_tables_with_data_are_adopted_and_differences_are_named() {
    let url = ferry_pgtemp::PgCluster::fresh_db();
    let env = Env::with_database(&url);
    // The application's own migration created the table and rows before Ferry.
    let schema = ferry_core::schema::Schema::parse(
        &std::fs::read_to_string(env.path("schema.sql")).unwrap(),
        &Default::default(),
    )
    .unwrap();
    env.psql(&ferry_store::PgStore::create_table_sql(schema.table("groups").unwrap()));
    let g = uuid();
    env.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES ('{g}', 'Legacy group', '{}')", uuid()));
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let server = env.serve();
    env.sync(&server, "phone.db", &token);
    let name: String =
        env.db("phone.db").query_row("SELECT name FROM groups WHERE id = ?1", [&g], |r| r.get(0)).unwrap();
    assert_eq!(name, "Legacy group");

    // A table that differs is refused at start-up, every difference named.
    let env = Env::with_database(&ferry_pgtemp::PgCluster::fresh_db());
    env.psql("CREATE TABLE formations (id uuid PRIMARY KEY, group_id text NOT NULL, name text, slots integer, planned_for date, notes text, colour text NOT NULL)");
    let out = env.run(&["serve", "-c", &env.config(), "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("table 'formations' in PostgreSQL does not match the schema"), "{err}");
    assert!(err.contains("column 'group_id' is text in PostgreSQL but uuid (uuid) in the schema"), "{err}");
    assert!(err.contains("column 'colour' is not in the schema and is NOT NULL without a default"), "{err}");
}

#[test]
fn two_server_processes_on_one_database_serve_clients_that_converge() {
    let env = Env::postgres();
    let user = env.add_user("alice");
    let (phone, laptop) = (env.token("alice", "phone"), env.token("alice", "laptop"));
    let a = env.serve();
    let b = env.serve();
    env.sync(&a, "phone.db", &phone);
    env.sync(&b, "laptop.db", &laptop);
    let x = insert_jump(&env.db("phone.db"), &user, 1, "via server a");
    let y = insert_jump(&env.db("laptop.db"), &user, 2, "via server b");
    env.sync(&a, "phone.db", &phone);
    env.sync(&b, "laptop.db", &laptop);
    env.sync(&a, "phone.db", &phone);
    let (p, l) = (jumps(&env.db("phone.db")), jumps(&env.db("laptop.db")));
    assert_eq!(p, l);
    assert!(p.iter().any(|r| r.0 == x) && p.iter().any(|r| r.0 == y));
}

#[test]
fn while_postgres_is_down_clients_get_a_clear_503_and_the_server_recovers_by_itself() {
    // A cluster of its own: stopping the shared one would break the other tests.
    let cluster = ferry_pgtemp::PgCluster::start().unwrap();
    let url = cluster.create_db("ferry").unwrap();
    let p = Pair::in_env(Env::with_database(&url));
    insert_jump(&p.env.db("phone.db"), &p.user, 1, "before the outage");
    p.sync_phone();

    cluster.stop().unwrap();
    let started = Instant::now();
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("{}/v1/pull?cursor=0", p.server.url))
        .bearer_auth(&p.phone)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(started.elapsed() < Duration::from_secs(15), "answered, not hung: {:?}", started.elapsed());
    assert_eq!(resp.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("5"));
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    insert_jump(&p.env.db("phone.db"), &p.user, 2, "during the outage");
    let out = p.env.run(&["sync", "--db", &p.env.path("phone.db").display().to_string(), "--token", &p.phone]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("(503)"), "{}", String::from_utf8_lossy(&out.stderr));

    cluster.start_again().unwrap();
    p.sync_phone();
    p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")).len(), 2, "nothing lost across the outage");
    assert_eq!(jumps(&p.env.db("phone.db")), jumps(&p.env.db("laptop.db")));
}

/// The realtime stream on PostgreSQL: a device connected to one server process hears of a
/// change accepted by another process, and of a direct SQL write, but not of another user's
/// private rows.
#[test]
fn the_stream_tells_of_changes_accepted_by_any_server_process_and_of_direct_writes() {
    let env = Env::postgres();
    let user = env.add_user("alice");
    let bob = env.add_user("bob");
    let (phone, laptop, bobs) = (env.token("alice", "phone"), env.token("alice", "laptop"), env.token("bob", "phone"));
    let (a, b) = (env.serve(), env.serve());
    env.sync(&a, "laptop.db", &laptop);
    env.sync(&b, "phone.db", &phone);
    env.sync(&b, "bob.db", &bobs);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let remote = ferry_client::Remote::new(&a.url, &laptop).unwrap();
    let mut stream = rt.block_on(remote.stream()).unwrap();
    let next = |stream: &mut ferry_client::Stream, within: Duration| {
        rt.block_on(async { tokio::time::timeout(within, stream.changed()).await })
    };
    // Bob's private row, through server b: nothing for alice.
    insert_jump(&env.db("bob.db"), &bob, 1, "bob's");
    env.sync(&b, "bob.db", &bobs);
    assert!(next(&mut stream, Duration::from_millis(500)).is_err(), "alice heard of bob's private row");
    // Alice's phone, through server b: the laptop, on server a, hears of it.
    insert_jump(&env.db("phone.db"), &user, 1, "via b");
    env.sync(&b, "phone.db", &phone);
    assert!(matches!(next(&mut stream, Duration::from_secs(10)), Ok(Ok(()))), "no notice of a change through server b");
    // A direct SQL write: heard too.
    env.psql(&format!(
        "INSERT INTO jump_log (id, user_id, jump_number, jumped_at) VALUES ('{}', '{user}', 2, now())",
        uuid()
    ));
    assert!(matches!(next(&mut stream, Duration::from_secs(10)), Ok(Ok(()))), "no notice of a direct write");
    // Nothing else is pending: a quiet stream stays quiet.
    assert!(next(&mut stream, Duration::from_millis(300)).is_err(), "a notice without a change");
    // The laptop's own push is no news to the laptop (it has the change).
    insert_jump(&env.db("laptop.db"), &user, 3, "the laptop's own");
    env.sync(&b, "laptop.db", &laptop);
    assert!(next(&mut stream, Duration::from_millis(500)).is_err(), "told of its own push");
}
