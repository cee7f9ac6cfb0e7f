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
}

const EMPTY_SNAPSHOT: &str = "1:1:";

/// Raised when a change to the feed means cursors given out before it may have skipped rows:
/// such a cursor starts over (merging makes the repeats harmless).
pub(super) const FEED_VERSION: u32 = 1;

impl Cursor {
    fn start(epoch: &str) -> Cursor {
        Cursor { epoch: epoch.to_owned(), v: FEED_VERSION, prev: EMPTY_SNAPSHOT.into(), cur: None, after: None }
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
        if !snapshot_ok(&cursor.prev) || cursor.cur.as_deref().is_some_and(|s| !snapshot_ok(s)) {
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
  AND (xid, tbl, pk) > ($4::text::xid8, $5, $6)
ORDER BY xid, tbl, pk
LIMIT $7"
        )
    };
}
/// A device's feed: its user's rows and rows without an owner.
const FEED: &str = feed!("(owner IS NULL OR owner = $3)");
/// Every row, for operators' commands (`$3` is unused).
const FEED_ALL: &str = feed!("($3::text IS NULL OR TRUE)");

impl PgStore {
    /// A page of the feed: of `user`'s rows and rows without an owner, or of every row.
    pub(super) async fn feed_page(
        &self,
        user: Option<&str>,
        cursor: &str,
        limit: usize,
        tables: Option<&[String]>,
    ) -> Result<PullPage> {
        let selection = crate::selected_tables(&self.inner.schema, tables)?;
        let c = Cursor::parse(cursor, &self.inner.epoch)?;
        let mut client = self.inner.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let cur = match &c.cur {
            Some(cur) => cur.clone(),
            None => tx.query_one("SELECT pg_current_snapshot()::text", &[]).await.map_err(pg)?.get(0),
        };
        let (after_xid, after_tbl, after_pk) = c.after.clone().unwrap_or(("0".into(), String::new(), String::new()));
        let keys = tx
            .query(
                if user.is_some() { FEED } else { FEED_ALL },
                &[&c.prev, &cur, &user, &after_xid, &after_tbl, &after_pk, &(limit as i64 + 1), &selection],
            )
            .await
            .map_err(pg)?;
        let more = keys.len() > limit;
        let keys: Vec<(String, String, String)> =
            keys.iter().take(limit).map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let mut by_table: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (_, t, k) in &keys {
            by_table.entry(t.as_str()).or_default().push(k.clone());
        }
        let mut states: HashMap<(String, String), RowState> = HashMap::new();
        for (table, ks) in by_table {
            let pt = self.table(table)?;
            for (k, s) in load(&tx, pt, &ks, false).await? {
                states.insert((table.to_owned(), k), s.state);
            }
        }
        tx.commit().await.map_err(pg)?;
        let rows = keys
            .iter()
            .filter_map(|(_, t, k)| {
                states.remove(&(t.clone(), k.clone())).map(|state| FeedRow { table: t.clone(), key: k.clone(), state })
            })
            .collect();
        let next = if more {
            Cursor { epoch: c.epoch, v: FEED_VERSION, prev: c.prev, cur: Some(cur), after: keys.last().cloned() }
        } else {
            Cursor { epoch: c.epoch, v: FEED_VERSION, prev: cur, cur: None, after: None }
        };
        Ok(PullPage { rows, cursor: next.encode(), more })
    }
}

/// A read-only transaction that sees one snapshot throughout.
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
        };
        let text = c.encode();
        assert!(text.starts_with("pg."), "{text}");
        let back = Cursor::parse(&text, EPOCH).unwrap();
        assert_eq!(back.encode(), text);
        assert_eq!((back.prev.as_str(), back.cur.as_deref()), ("100:105:101,103", Some("110:112:")));
        assert_eq!(back.after.unwrap().1, "notes");
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
            long.clone(),
        ] {
            let e = refused(&bad);
            assert!(e.contains("cursor=0"), "{e}");
            assert!(e.contains(&bad.chars().take(20).collect::<String>()), "{e}");
            assert!(e.len() < 400, "the cursor is cut in the message: {} bytes", e.len());
        }
    }
}
