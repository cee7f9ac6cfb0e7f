//! The change feed and its cursor.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ferry_core::RowState;
use tokio_postgres::Transaction;

use super::{PgStore, load, pg, pool_err};
use crate::{FeedRow, PullPage, Result, StoreError};

/// A cursor into the feed: the snapshot of the last complete pull (`prev`), and while a
/// window is being paged, the window's end snapshot and the last row given out.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Cursor {
    /// The store's epoch when the cursor was given out.
    #[serde(default)]
    pub(super) epoch: String,
    /// [`FEED_VERSION`] when the cursor was given out.
    #[serde(default)]
    pub(super) v: u32,
    pub(super) prev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cur: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) after: Option<(String, String, String)>,
    /// Under `read` rules: the hash of the scope the device was served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) s0: Option<String>,
    /// While a window is paged: the hash of the scope it is served under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) s1: Option<String>,
}

const EMPTY_SNAPSHOT: &str = "1:1:";

/// Raised when a change to the feed means cursors given out before it may have skipped rows:
/// such a cursor starts over (merging makes the repeats harmless).
pub(super) const FEED_VERSION: u32 = 1;

impl Cursor {
    fn start(epoch: &str) -> Cursor {
        Cursor {
            epoch: epoch.to_owned(),
            v: FEED_VERSION,
            prev: EMPTY_SNAPSHOT.into(),
            cur: None,
            after: None,
            s0: None,
            s1: None,
        }
    }

    /// Parses a cursor; one from another epoch means "start over" (every row again, which
    /// merging makes harmless) and cannot produce itself again.
    pub(super) fn parse(c: &str, epoch: &str) -> Result<Cursor> {
        if c.is_empty() || c == "0" {
            return Ok(Cursor::start(epoch));
        }
        let bad = || {
            StoreError::Invalid(format!(
                "cursor '{}' is not a cursor this server gave out; start over from the beginning (cursor=0; since=0 on /v1/changes)",
                ferry_core::shown(c)
            ))
        };
        let body = c.strip_prefix("pg.").ok_or_else(bad)?;
        let json = B64.decode(body).map_err(|_| bad())?;
        let cursor: Cursor = serde_json::from_slice(&json).map_err(|_| bad())?;
        let snapshot_ok = |s: &str| {
            let mut parts = s.splitn(3, ':');
            let num = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            num(parts.next())
                && num(parts.next())
                && parts
                    .next()
                    .is_some_and(|x| x.split(',').all(|p| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit())))
        };
        let hash_ok =
            |h: &Option<String>| h.as_deref().is_none_or(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !snapshot_ok(&cursor.prev)
            || cursor.cur.as_deref().is_some_and(|s| !snapshot_ok(s))
            || !hash_ok(&cursor.s0)
            || !hash_ok(&cursor.s1)
        {
            return Err(bad());
        }
        if cursor.epoch != epoch || cursor.v != FEED_VERSION {
            return Ok(Cursor::start(epoch));
        }
        Ok(cursor)
    }

    pub(super) fn encode(&self) -> String {
        format!("pg.{}", B64.encode(serde_json::to_vec(self).expect("cursor serializes")))
    }
}

/// The output column is named `at`: were it `xid`, `ORDER BY xid` would sort by the text
/// (`'1000' < '999'`) while the cursor compares numbers, skipping rows.
/// The feed query, with the rule for which owners' rows it returns (`$3` is the user).
macro_rules! feed {
    ($owners:literal) => {
        concat!(
            "
SELECT xid::text AS at, tbl, pk FROM _ferry_rows
WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot)
  AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot)
  AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
  AND ",
            $owners,
            "
  AND tbl = ANY($8::text[])
  AND (xid, tbl, pk) > (greatest($4::text::xid8, pg_snapshot_xmin($1::text::pg_snapshot)), $5, $6)
ORDER BY xid, tbl, pk
LIMIT $7"
        )
    };
}
/// A device's feed: its user's rows and rows without an owner.
const FEED: &str = feed!("(owner IS NULL OR owner = $3)");
/// Every row, for operators' commands (`$3` is unused).
const FEED_ALL: &str = feed!("($3::text IS NULL OR TRUE)");
/// A peer's feed: every row but those the peer (`$3`, its device id) brought itself.
const FEED_PEER: &str = feed!("origin IS DISTINCT FROM $3");

/// Whose feed a page is.
pub(super) enum Whose<'a> {
    /// A device's user: the rows they may read.
    User(&'a str),
    /// A peer (its device id here): every row but those it brought itself.
    Peer(&'a str),
    /// Every row (operators' commands).
    All,
}

/// Refuses a cursor older than the compaction horizon: its snapshot may not have seen
/// deletions that are gone. The removed tombstones' transactions lie between `horizon_low`
/// and `horizon`; the snapshot saw them all when the newest is below its `xmax` and none of
/// that range was still running then (transaction ids are the cluster's: other databases'
/// long transactions below the range do not count). The start is never too old.
pub(super) async fn check_horizon(tx: &Transaction<'_>, c: &Cursor, text: &str) -> Result<()> {
    if c.prev == EMPTY_SNAPSHOT {
        return Ok(());
    }
    let row = tx
        .query_opt(
            "SELECT h.value FROM _ferry_store h
             WHERE h.key = 'horizon' AND (
               h.value::xid8 >= pg_snapshot_xmax($1::text::pg_snapshot)
               OR EXISTS (SELECT 1 FROM pg_snapshot_xip($1::text::pg_snapshot) AS x
                          WHERE x <= h.value::xid8
                            AND x >= coalesce((SELECT value::xid8 FROM _ferry_store WHERE key = 'horizon_low'), '0'::xid8)))",
            &[&c.prev],
        )
        .await
        .map_err(pg)?;
    match row {
        Some(r) => Err(crate::expired(text, r.get(0))),
        None => Ok(()),
    }
}

impl PgStore {
    /// A page of the feed: of `user`'s rows and rows without an owner, or of every row.
    pub(super) async fn feed_page(
        &self,
        whose: Whose<'_>,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
    ) -> Result<PullPage> {
        if let Whose::User(user) = whose
            && crate::scope::has_read_rules(&self.inner.schema)
        {
            return self.feed_page_ruled(user, cursor, limit, tables, &BTreeMap::new()).await;
        }
        let (query, who) = match whose {
            Whose::User(u) => (FEED, Some(u)),
            Whose::Peer(d) => (FEED_PEER, Some(d)),
            Whose::All => (FEED_ALL, None),
        };
        let selection = crate::selected_tables(&self.inner.schema, tables)?;
        let c = Cursor::parse(cursor, &self.inner.epoch)?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        check_horizon(&tx, &c, cursor).await?;
        let cur = match &c.cur {
            Some(cur) => cur.clone(),
            None => tx.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0),
        };
        let (after_xid, after_tbl, after_pk) = c.after.clone().unwrap_or(("0".into(), String::new(), String::new()));
        let keys = tx
            .query(query, &[&c.prev, &cur, &who, &after_xid, &after_tbl, &after_pk, &(limit as i64 + 1), &selection])
            .await
            .map_err(pg)?;
        let more = keys.len() > limit;
        let keys: Vec<(String, String, String)> =
            keys.iter().take(limit).map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let rows = self.page_rows(&tx, keys.iter().map(|(_, t, k)| (t.as_str(), k.as_str()))).await?;
        tx.commit().await.map_err(pg)?;
        let next = if more {
            Cursor { prev: c.prev.clone(), cur: Some(cur), after: keys.last().cloned(), ..c }
        } else {
            Cursor { prev: cur, cur: None, after: None, ..c }
        };
        Ok(PullPage { rows, removed: Vec::new(), cursor: next.encode(), more })
    }

    /// A page of a user's feed under `read` rules: the rows they may read that changed in
    /// the window, and when what their rules select changed since the cursor, the rows that
    /// moved in (whatever their age) and out (as removals); see [`crate::scope`].
    pub(super) async fn feed_page_ruled(
        &self,
        user: &str,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
        subs: &BTreeMap<String, Vec<ferry_core::rules::Rule>>,
    ) -> Result<PullPage> {
        use crate::scope::{FeedPlaces, FeedSql};
        let selection = crate::selected_tables(&self.inner.schema, tables)?;
        let c = Cursor::parse(cursor, &self.inner.epoch)?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        check_horizon(&tx, &c, cursor).await?;
        // The page's query is planned for each page; compiling it to machine code (PostgreSQL's
        // JIT, for costly plans) took longer than running it.
        tx.batch_execute("SET LOCAL jit = off").await.map_err(pg)?;
        let cur = match &c.cur {
            Some(cur) => cur.clone(),
            None => tx.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0),
        };
        // The scope of this window: pinned while it is paged, else what the rules select now.
        let pinned = match (&c.cur, &c.s1) {
            (Some(_), Some(h)) => stored_scope(&tx, h).await?,
            _ => None,
        };
        let s1 = match pinned {
            Some(s) => s,
            None => {
                let mut s = self.scope_in(&tx, user, None).await?;
                let mut sets = BTreeMap::new();
                for (table, rules) in subs {
                    let mut per = Vec::with_capacity(rules.len());
                    for rule in rules {
                        let mut given = Vec::new();
                        for select in rule.subqueries() {
                            given.push(self.selected(&tx, select, user).await?);
                        }
                        per.push(given);
                    }
                    sets.insert(table.clone(), per);
                }
                s.subscribe(subs, &sets);
                s
            }
        };
        let s0 = match &c.s0 {
            Some(h) => stored_scope(&tx, h).await?.map_or_else(|| s1.clone(), |s| s.under(&s1)),
            None => s1.clone(),
        };
        let moving = s0 != s1;
        let (after_xid, after_tbl, after_pk) = c.after.clone().unwrap_or(("0".into(), String::new(), String::new()));
        let places = FeedPlaces {
            dialect: ferry_core::rules::Dialect::Postgres,
            window: "NOT pg_visible_in_snapshot(r.xid, $1::text::pg_snapshot)",
            window_range: "r.xid >= pg_snapshot_xmin($1::text::pg_snapshot)",
            exit_window: "e.xid >= pg_snapshot_xmin($1::text::pg_snapshot)
                AND NOT pg_visible_in_snapshot(e.xid, $1::text::pg_snapshot)
                AND pg_visible_in_snapshot(e.xid, $2::text::pg_snapshot)",
            user: "$3",
            first: 9,
        };
        let f = FeedSql::new(&self.inner.schema, &places, &s0, &s1, &selection);
        // Where the page starts in the feed index: past the last row given out, and in a
        // window (not moving) never before the window's start, so that the index is entered
        // there rather than walked from its beginning.
        let start = if moving {
            "(r.xid, r.tbl, r.pk) > ($4::text::xid8, $5, $6)"
        } else {
            "(r.xid, r.tbl, r.pk) > (greatest($4::text::xid8, pg_snapshot_xmin($1::text::pg_snapshot)), $5, $6)"
        };
        let branches: Vec<String> = f
            .branches
            .iter()
            .map(|b| {
                format!(
                    "SELECT r.xid, r.tbl, r.pk, {} AS visible FROM _ferry_rows r {}
                     WHERE pg_visible_in_snapshot(r.xid, $2::text::pg_snapshot) AND $3::text IS NOT NULL
                       AND r.tbl = ANY($8::text[]) AND {start} AND {}",
                    b.visible, b.join, b.cond
                )
            })
            .collect();
        let sql = format!(
            "SELECT q.xid::text AS at, q.tbl, q.pk, q.visible FROM ({}) q ORDER BY q.xid, q.tbl, q.pk LIMIT $7",
            branches.join(" UNION ")
        );
        let texts = f.texts(user, &s0, &s1);
        let limit_plus = limit as i64 + 1;
        let user_param = user.to_owned();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&c.prev, &cur, &user_param, &after_xid, &after_tbl, &after_pk, &limit_plus, &selection];
        params.extend(texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)));
        let found = tx.query(&sql, &params).await.map_err(pg)?;
        let more = found.len() > limit;
        let keys: Vec<(String, String, String, bool)> =
            found.iter().take(limit).map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
        let visible = keys.iter().filter(|k| k.3).map(|(_, t, k, _)| (t.as_str(), k.as_str()));
        let rows = self.page_rows(&tx, visible).await?;
        let h1 = s1.hash();
        let fresh = stored_scope(&tx, &h1).await?.is_none();
        tx.commit().await.map_err(pg)?;
        if fresh {
            keep_scope(&client, &s1).await?;
        }
        let removed = keys.iter().filter(|k| !k.3).map(|(_, t, k, _)| (t.clone(), k.clone())).collect();
        let last = keys.last().map(|(x, t, k, _)| (x.clone(), t.clone(), k.clone()));
        let next = if more {
            Cursor { prev: c.prev.clone(), cur: Some(cur), after: last, s1: Some(h1), ..c }
        } else {
            Cursor { prev: cur, cur: None, after: None, s0: Some(h1), s1: None, ..c }
        };
        Ok(PullPage { rows, removed, cursor: next.encode(), more })
    }

    /// The stored states of a page's rows (table, key), in the page's order, read with one
    /// query per table; a row no longer stored is left out.
    async fn page_rows<'k>(
        &self,
        tx: &Transaction<'_>,
        keys: impl Iterator<Item = (&'k str, &'k str)> + Clone,
    ) -> Result<Vec<FeedRow>> {
        let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (t, k) in keys.clone() {
            by_table.entry(t).or_default().push(k.to_owned());
        }
        let mut states: HashMap<(&str, String), RowState> = HashMap::new();
        for (table, ks) in by_table {
            let pt = self.table(table)?;
            for (k, s) in load(tx, pt, &ks, false).await? {
                states.insert((table, k), s.state);
            }
        }
        Ok(keys
            .filter_map(|(t, k)| {
                let state = states.remove(&(t, k.to_owned()))?;
                Some(FeedRow { table: t.to_owned(), key: k.to_owned(), state })
            })
            .collect())
    }

    /// What the `read` rules' subqueries (of `only`, when given) select for `user` now.
    pub(super) async fn scope_in(&self, tx: &Transaction<'_>, user: &str, only: Option<&str>) -> Result<crate::Scope> {
        let mut scope = crate::Scope::default();
        for (table, selects) in crate::scope::read_subqueries(&self.inner.schema) {
            if only.is_some_and(|o| o != table.name) {
                continue;
            }
            let mut sets = Vec::with_capacity(selects.len());
            for select in selects {
                sets.push(self.selected(tx, select, user).await?);
            }
            scope.insert(table, sets);
        }
        Ok(scope)
    }

    /// What `select` selects for `user` now.
    async fn selected(
        &self,
        tx: &Transaction<'_>,
        select: &ferry_core::rules::Select,
        user: &str,
    ) -> Result<Vec<ferry_core::Value>> {
        let q = select.compile(ferry_core::rules::Dialect::Postgres, 1);
        let texts: Vec<String> = q.slots.iter().map(|s| s.text(user, &[])).collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let sql = format!("SELECT DISTINCT v::text FROM ({}) AS q (v, k)", q.sql);
        let found = tx.query(&sql, &params).await.map_err(pg)?;
        Ok(found.iter().map(|r| super::push::value_of_text(select.ty, r.get(0))).collect())
    }
}

/// Stores a scope a cursor names by its hash.
pub(super) async fn keep_scope(client: &tokio_postgres::Client, scope: &crate::Scope) -> Result<()> {
    client
        .execute(
            "INSERT INTO _ferry_scopes (hash, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&scope.hash(), &scope.json()],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// A scope stored under its hash, if it is.
async fn stored_scope(tx: &Transaction<'_>, hash: &str) -> Result<Option<crate::Scope>> {
    let row = tx.query_opt("SELECT body FROM _ferry_scopes WHERE hash = $1", &[&hash]).await.map_err(pg)?;
    Ok(row.and_then(|r| crate::Scope::from_json(r.get::<_, &str>(0))))
}

/// A read-only transaction that sees one snapshot throughout.
/// The cursor of a reader that has seen everything visible in `snapshot` (a full sync's
/// export): a feed read from it starts with what committed after.
pub(super) fn snapshot_cursor(epoch: &str, snapshot: String) -> String {
    Cursor { prev: snapshot, ..Cursor::start(epoch) }.encode()
}

/// As [`snapshot_cursor`], for a device whose feed was served under the scope hashed `s0`
/// (`None` without `read` rules): a feed read from it sees rows move in and out when the
/// scope changes after.
pub(super) fn device_snapshot_cursor(epoch: &str, snapshot: String, s0: Option<String>) -> String {
    Cursor { prev: snapshot, s0, ..Cursor::start(epoch) }.encode()
}

pub(super) async fn snapshot(client: &mut tokio_postgres::Client) -> Result<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::{B64, Cursor, FEED_VERSION};
    use base64::Engine as _;

    const EPOCH: &str = "7000000000000000001";

    fn refused(c: &str) -> String {
        match Cursor::parse(c, EPOCH) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("cursor {c:?} was taken"),
        }
    }

    fn encoded(json: &str) -> String {
        format!("pg.{}", B64.encode(json))
    }

    /// A cursor given out reads back as itself: its snapshots, its window and last row.
    #[test]
    fn a_cursor_reads_back_as_it_was_given_out() {
        let c = Cursor {
            epoch: EPOCH.into(),
            v: FEED_VERSION,
            prev: "100:105:101,103".into(),
            cur: Some("110:112:".into()),
            after: Some(("104".into(), "notes".into(), "0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b".into())),
            s0: Some("0123456789abcdef0123456789abcdef".into()),
            s1: None,
        };
        let text = c.encode();
        assert!(text.starts_with("pg."), "{text}");
        let back = Cursor::parse(&text, EPOCH).unwrap();
        assert_eq!(back.encode(), text);
        assert_eq!((back.prev.as_str(), back.cur.as_deref()), ("100:105:101,103", Some("110:112:")));
        assert_eq!(back.after.unwrap().1, "notes");
        assert_eq!(back.s0.as_deref(), Some("0123456789abcdef0123456789abcdef"));
    }

    /// The start, a cursor of another store epoch (a restored or moved database) and one of
    /// an older feed version all start over from the beginning.
    #[test]
    fn the_start_another_epoch_and_an_older_version_start_over() {
        for c in ["", "0"] {
            let start = Cursor::parse(c, EPOCH).unwrap();
            assert_eq!((start.prev.as_str(), start.cur.is_none()), (super::EMPTY_SNAPSHOT, true));
        }
        let other = Cursor { epoch: "other".into(), ..Cursor::parse("0", EPOCH).unwrap() };
        let other = Cursor { prev: "100:105:".into(), ..other };
        assert_eq!(Cursor::parse(&other.encode(), EPOCH).unwrap().prev, super::EMPTY_SNAPSHOT);
        let old = encoded(&format!(r#"{{"epoch":"{EPOCH}","v":0,"prev":"100:105:"}}"#));
        assert_eq!(Cursor::parse(&old, EPOCH).unwrap().prev, super::EMPTY_SNAPSHOT);
    }

    /// Anything else is refused with the cursor named (cut when long) and the fix.
    #[test]
    fn a_cursor_the_server_never_gave_out_is_refused_naming_it() {
        let long = "x".repeat(5000);
        for bad in [
            "12345".to_owned(),
            "pg.***".to_owned(),
            encoded("not json"),
            encoded(&format!(r#"{{"epoch":"{EPOCH}","v":{FEED_VERSION},"prev":"1:x:"}}"#)),
            encoded(&format!(r#"{{"epoch":"{EPOCH}","v":{FEED_VERSION},"prev":"1:2:","cur":"a:b:"}}"#)),
            encoded(&format!(r#"{{"epoch":"{EPOCH}","v":{FEED_VERSION},"prev":"1:2:","s0":"not a hash"}}"#)),
            long.clone(),
        ] {
            let e = refused(&bad);
            assert!(e.contains("cursor=0"), "{e}");
            assert!(e.contains(&bad.chars().take(20).collect::<String>()), "{e}");
            assert!(e.len() < 400, "the cursor is cut in the message: {} bytes", e.len());
        }
    }
}
