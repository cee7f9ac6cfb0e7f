//! Client-side resolvers on a real replica file: a pulled change meets a local change not
//! yet pushed, and the table's resolver decides the field both changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_client::replica::PulledRow;
use ferry_client::{ClientResolver, Replica, Resolvers};
use ferry_core::schema::Schema;
use ferry_core::{Hlc, SiteId, Value};
use ferry_protocol::SchemaResponse;

const KEY: &str = "01900000-0000-7000-8000-000000000001";

/// A replica whose row `KEY` was synced (title and body "synced"), then changed locally
/// (title "local") and not pushed; and the remote version: title "remote" written by
/// another site at `remote_ms`.
fn setup(dir: &std::path::Path) -> (Replica, PulledRow) {
    let schema =
        Schema::parse("CREATE TABLE notes (id uuid PRIMARY KEY, title text, body text);", &BTreeMap::new()).unwrap();
    let mut replica = Replica::open(&dir.join("r.db")).unwrap();
    replica.install_schema(&SchemaResponse::from_schema(&schema)).unwrap();
    replica.connection().execute("INSERT INTO notes (id, title, body) VALUES (?1, 'synced', 'synced')", [KEY]).unwrap();
    let pushed = replica.pending(10).unwrap();
    replica.acknowledge(&pushed, None).unwrap();
    let synced = pushed[0].state.clone();
    replica.connection().execute("UPDATE notes SET title = 'local' WHERE id = ?1", [KEY]).unwrap();
    replica.stamp().unwrap();
    let mut remote = synced;
    // An hour later than the local change: newest-wins keeps the remote title.
    let later =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 3_600_000;
    remote.update([("title".to_owned(), Value::Text("remote".into()))], Hlc::new(later, 0, SiteId(99)));
    (replica, PulledRow { table: "notes".into(), key: KEY.into(), state: remote })
}

fn title(replica: &Replica) -> String {
    replica.connection().query_row("SELECT title FROM notes WHERE id = ?1", [KEY], |r| r.get(0)).unwrap()
}

/// A logged conflict: field, local value, remote value, resolver.
type Logged = (String, String, String, String);

fn logged(replica: &Replica) -> Vec<Logged> {
    let mut stmt = replica
        .connection()
        .prepare("SELECT col, local_value, remote_value, resolved_by FROM _ferry_conflicts ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
}

fn run(resolver: ClientResolver) -> (String, Option<String>, Vec<Logged>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut replica, remote) = setup(dir.path());
    replica.apply_with(&[remote], "1", &Resolvers::default().table("notes", resolver)).unwrap();
    // The replica's own view keeps both full versions with their clocks.
    let view = replica.local_conflicts().unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].kind, "update-update");
    assert_eq!(
        (&view[0].local["values"]["title"], &view[0].remote["values"]["title"]),
        (&"local".into(), &"remote".into())
    );
    assert_eq!(view[0].local["values"]["body"], "synced");
    let pending = replica.pending(10).unwrap();
    let pushed_title = pending.first().map(|p| match &p.state.cols["title"].value {
        Value::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    });
    (title(&replica), pushed_title, logged(&replica))
}

#[test]
fn newest_wins_keeps_the_later_clock_and_logs_the_local_value() {
    let (title, _, log) = run(ClientResolver::NewestWins);
    assert_eq!(title, "remote");
    assert_eq!(log, vec![("title".into(), "\"local\"".into(), "\"remote\"".into(), "newest-wins".into())]);
}

#[test]
fn local_wins_keeps_the_local_value_and_pushes_it_with_a_later_clock() {
    let (title, pushed, log) = run(ClientResolver::LocalWins);
    assert_eq!(title, "local");
    assert_eq!(pushed.as_deref(), Some("local"), "the local value is pushed again");
    assert_eq!(log[0].3, "local-wins");
}

#[test]
fn remote_wins_drops_the_local_change_to_the_field() {
    let (title, pushed, log) = run(ClientResolver::RemoteWins);
    assert_eq!(title, "remote");
    assert_eq!(pushed.as_deref(), Some("remote"), "what is pushed no longer carries the local title");
    assert_eq!(log[0].3, "remote-wins");
}

#[test]
fn a_callback_decides_the_value() {
    let merge = ClientResolver::Callback(Arc::new(|input: &ferry_client::ResolveInput<'_>| {
        assert_eq!((input.table, input.key, input.fields), ("notes", KEY, &["title".to_owned()][..]));
        let text = |s: &ferry_core::RowState| match &s.cols["title"].value {
            Value::Text(t) => t.clone(),
            _ => String::new(),
        };
        Some(BTreeMap::from([(
            "title".to_owned(),
            Value::Text(format!("{} + {}", text(input.local), text(input.remote))),
        )]))
    }));
    let (title, pushed, log) = run(merge);
    assert_eq!(title, "local + remote");
    assert_eq!(pushed.as_deref(), Some("local + remote"));
    assert_eq!(log[0].3, "callback");
}
