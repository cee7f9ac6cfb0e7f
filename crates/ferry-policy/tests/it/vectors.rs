//! The policy's decisions as JSON test vectors, for other implementations (the browser
//! client) to be held to: `vectors/*.json` at the repository's root.
//!
//! Each file holds the table the cases use (its DDL) and cases of one decision: `input` and
//! `expected`, rows in the protocol's wire form (`docs/protocol.md`), clocks as the protocol
//! writes them. This test replays every case from its JSON alone and compares with
//! `expected`, and checks that the files hold exactly the cases generated here: after a
//! change of the policy, `cargo xtask vectors` writes them again (review the diff).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_core::schema::{Schema, Table};
use ferry_core::strategy::{Contest, Resolver, RowClocks, Side};
use ferry_core::{Clock, Hlc, RowState, SiteId, Stamped, Value};
use ferry_policy::pull::{self, Action, Found, Meeting, Settler};
use ferry_policy::stamp::{self, Before, Captured};
use ferry_policy::{push, settle};
use serde_json::{Value as Json, json};

use crate::Rng;

const DDL: &str = "CREATE TABLE t (id uuid PRIMARY KEY, x integer, y text);";
const KEY: &str = "0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b";
const EPOCH: u64 = 1_700_000_000_000;
/// Cases of each kind drawn at random (besides the hand-picked ones).
const DRAWN: usize = 60;

fn schema() -> Schema {
    Schema::parse(DDL, &BTreeMap::new()).expect("the vectors' table parses")
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors")
}

// ---- JSON forms ----------------------------------------------------------------------

fn row_json(t: &Table, state: &RowState) -> Json {
    serde_json::to_value(ferry_protocol::encode_row(t, KEY, state)).expect("wire rows serialize")
}

fn row_from(schema: &Schema, j: &Json) -> RowState {
    let wire: ferry_protocol::WireRow = serde_json::from_value(j.clone()).expect("a wire row");
    ferry_protocol::decode_row(schema, &wire).expect("a valid wire row").1
}

fn opt_row_json(t: &Table, state: Option<&RowState>) -> Json {
    state.map_or(Json::Null, |s| row_json(t, s))
}

fn clocks_json(t: &Table, c: &RowClocks) -> Json {
    serde_json::to_value(ferry_protocol::encode_clocks(t, c)).expect("clocks serialize")
}

/// Wire clocks back to a version's clocks: every data column's clock is `clocks[col]` or
/// else `clock` (as the protocol reads `seen`).
fn clocks_from(t: &Table, j: &Json) -> RowClocks {
    let w: ferry_protocol::WireClocks = serde_json::from_value(j.clone()).expect("wire clocks");
    let hlc = |s: &str| s.parse::<Hlc>().expect("a clock");
    RowClocks {
        exists: hlc(&w.exists_at),
        cols: t.data_columns().map(|c| (c.name.clone(), hlc(w.clocks.get(&c.name).unwrap_or(&w.clock)))).collect(),
    }
}

fn values_json(t: &Table, values: &BTreeMap<String, Value>) -> Json {
    let mut m = serde_json::Map::new();
    for (c, v) in values {
        let ty = t.column(c).expect("a column").ty;
        m.insert(c.clone(), ferry_protocol::value_to_json(ty, v));
    }
    Json::Object(m)
}

fn values_from(t: &Table, j: &Json) -> BTreeMap<String, Value> {
    j.as_object()
        .expect("values")
        .iter()
        .map(|(c, v)| (c.clone(), ferry_protocol::value_from_json(t.column(c).expect("a column").ty, v).unwrap()))
        .collect()
}

fn hlc_from(j: &Json) -> Hlc {
    j.as_str().expect("a clock").parse().expect("a clock")
}

fn clock_json(c: &Clock) -> Json {
    json!({"site": c.site().to_string(), "last": c.last().to_string()})
}

fn clock_from(j: &Json) -> Clock {
    Clock::new(j["site"].as_str().unwrap().parse().unwrap(), hlc_from(&j["last"]))
}

fn contest_json(c: &Contest) -> Json {
    let winner: BTreeMap<&str, &str> =
        c.winner.iter().map(|(f, s)| (f.as_str(), if *s == Side::Ours { "local" } else { "pulled" })).collect();
    json!({"kind": c.kind.name(), "fields": c.fields, "winner": winner})
}

// ---- Random inputs -------------------------------------------------------------------

fn hlc(rng: &mut Rng) -> Hlc {
    Hlc::new(EPOCH + 1 + rng.below(6), rng.below(2) as u16, SiteId(1 + rng.below(3)))
}

fn value(rng: &mut Rng, col: &str) -> Value {
    match (col, rng.below(4)) {
        (_, 0) => Value::Null,
        ("x", n) => Value::Integer(n as i64),
        (_, n) => Value::Text(["a", "b", "c"][n as usize - 1].to_owned()),
    }
}

fn state(rng: &mut Rng) -> RowState {
    RowState {
        exists: Stamped::new(rng.below(4) != 0, hlc(rng)),
        cols: ["x", "y"].iter().map(|c| (c.to_string(), Stamped::new(value(rng, c), hlc(rng)))).collect(),
    }
}

/// A version `state` grew from: some registers at their clock, the others earlier.
fn earlier(rng: &mut Rng, state: &RowState) -> RowClocks {
    let lower =
        |rng: &mut Rng, h: Hlc| if rng.below(2) == 0 { h } else { Hlc::new(EPOCH, 0, SiteId(1 + rng.below(3))) };
    RowClocks {
        exists: lower(rng, state.exists.at),
        cols: state.cols.iter().map(|(c, s)| (c.clone(), lower(rng, s.at))).collect(),
    }
}

const RESOLVERS: [&str; 3] = ["newest-wins", "local-wins", "remote-wins"];

fn resolver(name: &str) -> Resolver<'static> {
    match name {
        "newest-wins" => Resolver::NewestWins,
        "local-wins" => Resolver::LocalWins,
        "remote-wins" => Resolver::RemoteWins,
        other => panic!("resolver {other}"),
    }
}

// ---- Decisions: run one case from its JSON input -------------------------------------

fn run_stamp(s: &Schema, input: &Json) -> Json {
    let t = s.table("t").unwrap();
    let before = &input["before"];
    let ops: Vec<(Captured, Hlc)> = input["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let cols = o.get("cols").map(|c| c.to_string());
            (Captured::parse(o["op"].as_str().unwrap(), cols.as_deref()).unwrap(), hlc_from(&o["at"]))
        })
        .collect();
    let b = Before {
        state: if before["state"].is_null() { RowState::unknown() } else { row_from(s, &before["state"]) },
        base: before["base"].as_object().unwrap().iter().map(|(c, h)| (c.clone(), hlc_from(h))).collect(),
        seen_recorded: before["seen_recorded"].as_bool().unwrap(),
    };
    let values = values_from(t, &input["values"]);
    let out = stamp::fold(b, &values, &ops);
    let base: BTreeMap<&str, String> = out.base.iter().map(|(c, h)| (c.as_str(), h.to_string())).collect();
    json!({
        "state": row_json(t, &out.state),
        "base": base,
        "seen": out.seen.as_ref().map_or(Json::Null, |c| clocks_json(t, c)),
    })
}

fn run_pull(s: &Schema, input: &Json) -> Json {
    let t = s.table("t").unwrap();
    let pulled = row_from(s, &input["pulled"]);
    let mut clock = clock_from(&input["clock"]);
    let now = input["now_ms"].as_u64().unwrap();
    if let Err(reason) = pull::admit(&mut clock, "t", KEY, &pulled, now) {
        return json!({"action": {"kind": "set-aside", "reason": reason}, "clock": clock.last().to_string()});
    }
    let f = &input["found"];
    let (found_state, current, seen);
    let found = match f["kind"].as_str().unwrap() {
        "nothing" => Found::Nothing,
        "refused" => {
            current = row_from(s, &f["current"]);
            Found::Refused { current: &current }
        }
        _ => {
            found_state = row_from(s, &f["state"]);
            seen = (!f["seen"].is_null()).then(|| clocks_from(t, &f["seen"]));
            Found::Row { state: &found_state, pending: f["pending"].as_bool().unwrap(), seen: seen.as_ref() }
        }
    };
    let r = resolver(input["resolver"].as_str().unwrap());
    let settler = if input["settler"] == "device" { Settler::Device } else { Settler::Server };
    let m = Meeting { table: "t", key: KEY, pulled: &pulled, found, settler, resolver: &r, now_ms: now };
    let action = match pull::meet(&m, &mut clock) {
        Action::Insert => json!({"kind": "insert"}),
        Action::Hold => json!({"kind": "hold"}),
        Action::JoinRefused { current } => json!({"kind": "join-refused", "current": row_json(t, &current)}),
        Action::Write(w) => json!({
            "kind": "write",
            "state": row_json(t, &w.state),
            "changed": w.changed,
            "push": w.push,
            "seen": w.seen.as_ref().map_or(Json::Null, |c| clocks_json(t, c)),
            "conflict": w.conflict.as_ref().map_or(Json::Null, contest_json),
        }),
    };
    json!({"action": action, "clock": clock.last().to_string()})
}

fn run_split(input: &Json) -> Json {
    let n = input["rows"].as_u64().unwrap() as usize;
    let bad: Vec<usize> =
        input["refused_rows"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
    let mut split = push::Split::new(n, ());
    let mut steps = Vec::new();
    loop {
        match split.step() {
            push::Step::Push(r) => {
                let refused = bad.iter().any(|i| r.contains(i));
                steps.push(json!({"push": [r.start, r.end], "refused": refused}));
                if refused {
                    split.refused(r, ());
                }
            }
            push::Step::SetAside(i, ()) => steps.push(json!({"set_aside": i})),
            push::Step::Done => break,
        }
    }
    json!({"steps": steps})
}

fn run_ack(s: &Schema, input: &Json) -> Json {
    let t = s.table("t").unwrap();
    let local = row_from(s, &input["local"]);
    let held = row_from(s, &input["held"]);
    let merged = push::merge_held(&local, &held);
    let current = push::refused_current(&held, Some(&local));
    json!({
        "merge_held": {
            "state": row_json(t, &merged.state),
            "push_seen": merged.push.as_ref().map_or(Json::Null, |c| clocks_json(t, c)),
        },
        "refused_current": row_json(t, &current),
        "rebased_seen": clocks_json(t, &push::rebased_seen(&local)),
    })
}

fn run_settle(s: &Schema, input: &Json) -> Json {
    let t = s.table("t").unwrap();
    let local = row_from(s, &input["local"]);
    let seen = clocks_from(t, &input["seen"]);
    let current = row_from(s, &input["current"]);
    let mut clock = clock_from(&input["clock"]);
    let (state, seen) = settle::keep_local(&local, &seen, &current, &mut clock, input["now_ms"].as_u64().unwrap());
    json!({"state": row_json(t, &state), "seen": clocks_json(t, &seen), "clock": clock.last().to_string()})
}

// ---- Cases ---------------------------------------------------------------------------

fn stamp_inputs(t: &Table, rng: &mut Rng) -> Vec<(String, Json)> {
    let mut out = Vec::new();
    let op_json = |rng: &mut Rng, at: Hlc| match rng.below(3) {
        0 => json!({"op": "I", "at": at.to_string()}),
        1 => json!({"op": "D", "at": at.to_string()}),
        _ => {
            let cols: Vec<&str> = ["x", "y"].into_iter().filter(|_| rng.below(2) == 0).collect();
            json!({"op": "U", "cols": cols, "at": at.to_string()})
        }
    };
    for i in 0..DRAWN {
        let known = rng.below(3) != 0;
        let before = known.then(|| state(rng));
        let mut clock = Clock::new(SiteId(9), before.as_ref().map_or(Hlc::ZERO, |s| s.max_clock()));
        let ops: Vec<Json> = (0..1 + rng.below(3))
            .map(|_| {
                let at = clock.tick(EPOCH + 10);
                op_json(rng, at)
            })
            .collect();
        let mut values = BTreeMap::new();
        for c in ["x", "y"] {
            values.insert(c.to_owned(), value(rng, c));
        }
        let base: BTreeMap<String, String> = before
            .as_ref()
            .filter(|_| rng.below(2) == 0)
            .map(|b| b.cols.iter().take(1).map(|(c, s)| (c.clone(), s.at.to_string())).collect())
            .unwrap_or_default();
        let name = format!("drawn {i}: {} ops on a {} row", ops.len(), if known { "known" } else { "new" });
        out.push((
            name,
            json!({
                "before": {"state": opt_row_json(t, before.as_ref()), "base": base, "seen_recorded": known && rng.below(2) == 0},
                "values": values_json(t, &values),
                "ops": ops,
            }),
        ));
    }
    out
}

fn pull_inputs(t: &Table, rng: &mut Rng) -> Vec<(String, Json)> {
    let mut out = Vec::new();
    let site = SiteId(7);
    // Hand-picked: a pulled row beyond the drift limit ahead of this device's time.
    let ahead = EPOCH + ferry_core::hlc::MAX_DRIFT_MS + 3_600_000;
    let ahead = RowState::inserted([("x".to_owned(), Value::Integer(1))], Hlc::new(ahead, 0, SiteId(2)));
    out.push((
        "a row 25 hours ahead of this device is set aside".to_owned(),
        json!({
            "pulled": row_json(t, &ahead),
            "found": {"kind": "nothing"},
            "settler": "device",
            "resolver": "newest-wins",
            "clock": clock_json(&Clock::new(site, Hlc::ZERO)),
            "now_ms": EPOCH + 10,
        }),
    ));
    for i in 0..DRAWN * 2 {
        let pulled = state(rng);
        let local = state(rng);
        let found = match rng.below(6) {
            0 => json!({"kind": "nothing"}),
            1 => json!({"kind": "refused", "current": row_json(t, &state(rng))}),
            2 => json!({"kind": "row", "state": row_json(t, &local), "pending": false, "seen": null}),
            3 => json!({"kind": "row", "state": row_json(t, &local), "pending": true, "seen": null}),
            _ => {
                let seen = earlier(rng, &local);
                json!({"kind": "row", "state": row_json(t, &local), "pending": true, "seen": clocks_json(t, &seen)})
            }
        };
        let settler = if rng.below(4) == 0 { "server" } else { "device" };
        let resolver = RESOLVERS[rng.below(3) as usize];
        out.push((
            format!("drawn {i}: {} row, {settler} settles, {resolver}", found["kind"].as_str().unwrap()),
            json!({
                "pulled": row_json(t, &pulled),
                "found": found,
                "settler": settler,
                "resolver": resolver,
                "clock": clock_json(&Clock::new(site, Hlc::new(EPOCH + rng.below(8), 0, site))),
                "now_ms": EPOCH + 10,
            }),
        ));
    }
    out
}

fn split_inputs(rng: &mut Rng) -> Vec<(String, Json)> {
    let mut out = vec![
        ("one row, refused".to_owned(), json!({"rows": 1, "refused_rows": [0]})),
        ("the last of eight".to_owned(), json!({"rows": 8, "refused_rows": [7]})),
        ("every row of four".to_owned(), json!({"rows": 4, "refused_rows": [0, 1, 2, 3]})),
    ];
    for i in 0..DRAWN / 2 {
        let n = 2 + rng.below(20) as usize;
        let mut bad: Vec<usize> = (0..1 + rng.below(3)).map(|_| rng.below(n as u64) as usize).collect();
        bad.sort_unstable();
        bad.dedup();
        out.push((format!("drawn {i}: {n} rows"), json!({"rows": n, "refused_rows": bad})));
    }
    out
}

fn ack_inputs(t: &Table, rng: &mut Rng) -> Vec<(String, Json)> {
    (0..DRAWN)
        .map(|i| (format!("drawn {i}"), json!({"local": row_json(t, &state(rng)), "held": row_json(t, &state(rng))})))
        .collect()
}

fn settle_inputs(t: &Table, rng: &mut Rng) -> Vec<(String, Json)> {
    (0..DRAWN)
        .map(|i| {
            let local = state(rng);
            let seen = earlier(rng, &local);
            let site = SiteId(7);
            (
                format!("drawn {i}"),
                json!({
                    "local": row_json(t, &local),
                    "seen": clocks_json(t, &seen),
                    "current": row_json(t, &state(rng)),
                    "clock": clock_json(&Clock::new(site, Hlc::new(EPOCH + rng.below(8), 0, site))),
                    "now_ms": EPOCH + 10,
                }),
            )
        })
        .collect()
}

/// Every vector file: its name, what its cases decide, and the cases (input, expected).
fn files() -> Vec<(&'static str, &'static str, Vec<Json>)> {
    let s = schema();
    let t = s.table("t").unwrap();
    let mut rng = Rng(0x5EED_F022_7EC7_0125);
    let cases = |inputs: Vec<(String, Json)>, run: &dyn Fn(&Json) -> Json| -> Vec<Json> {
        inputs.into_iter().map(|(name, input)| json!({"name": name, "expected": run(&input), "input": input})).collect()
    };
    vec![
        (
            "stamp",
            "ferry_policy::stamp::fold: a row's captured writes (op I, U with its columns, or D; each with its clock) and its values after them become its state, the base clock of each column changed first, and (when none is recorded) the version the change started from",
            cases(stamp_inputs(t, &mut rng), &|i| run_stamp(&s, i)),
        ),
        (
            "pull",
            "ferry_policy::pull::admit then ::meet: a pulled row meets what the replica holds of it; the action and this replica's clock after",
            cases(pull_inputs(t, &mut rng), &|i| run_pull(&s, i)),
        ),
        (
            "split",
            "ferry_policy::push::Split: a refused batch of `rows` is split until the rows the server refuses (`refused_rows`) are alone and set aside; each step, with whether the server refused that push",
            cases(split_inputs(&mut rng), &run_split),
        ),
        (
            "acknowledge",
            "ferry_policy::push: an acknowledged row meets the version pulled while its push was out (merge_held); the version kept beside a refused change (refused_current of `held` as the server's and `local` as pulled meanwhile); a row changed again since its push (rebased_seen)",
            cases(ack_inputs(t, &mut rng), &|i| run_ack(&s, i)),
        ),
        (
            "settle",
            "ferry_policy::settle::keep_local: a person keeps a local change the server refused as stale",
            cases(settle_inputs(t, &mut rng), &|i| run_settle(&s, i)),
        ),
    ]
}

fn document(name: &str, about: &str, cases: Vec<Json>) -> Json {
    json!({
        "decision": name,
        "about": about,
        "table": DDL,
        "key": KEY,
        "cases": cases,
    })
}

/// `cargo xtask vectors` sets `FERRY_WRITE_VECTORS=1`: the files are written from the cases
/// above. Otherwise each file must hold exactly them, and each case's `expected` must be
/// what replaying its `input` from JSON gives.
#[test]
fn the_vectors_hold_the_policys_decisions() {
    let s = schema();
    let write = std::env::var("FERRY_WRITE_VECTORS").is_ok_and(|v| v == "1");
    for (name, about, cases) in files() {
        let path = dir().join(format!("{name}.json"));
        let doc = document(name, about, cases);
        if write {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
            eprintln!("wrote {} ({} cases)", path.display(), doc["cases"].as_array().unwrap().len());
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; `cargo xtask vectors` writes it", path.display()));
        let stored: Json = serde_json::from_str(&text).unwrap();
        for case in stored["cases"].as_array().unwrap() {
            let input = &case["input"];
            let got = match name {
                "stamp" => run_stamp(&s, input),
                "pull" => run_pull(&s, input),
                "split" => run_split(input),
                "acknowledge" => run_ack(&s, input),
                _ => run_settle(&s, input),
            };
            assert_eq!(got, case["expected"], "{name}.json, case '{}'", case["name"]);
        }
        assert!(
            stored == doc,
            "{} is not what the policy decides now; run `cargo xtask vectors` and review the diff",
            path.display()
        );
    }
}
