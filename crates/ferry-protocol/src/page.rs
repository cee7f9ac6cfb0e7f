//! Pull pages and push requests decoded straight from their JSON into row states, with
//! every check of [`decode_row`](crate::decode_row) (and [`decode_seen`](crate::decode_seen))
//! and the same messages, without building a [`WireRow`](crate::WireRow) (and its map of
//! JSON values) for each row first: on a hydrate that intermediate form cost a quarter of
//! the device's CPU, on a push a third of the server's.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use ferry_core::schema::{ColType, Schema, Table};
use ferry_core::{RowState, Value};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::{DecodeError, Decoded, RowHead, WireClocks, build_row};
use ferry_core::strategy::RowClocks;

/// A decoded pull page: rows as (table, key, state), the cursor, and whether more wait.
#[derive(Debug)]
pub struct DecodedPage {
    pub rows: Vec<(String, String, RowState)>,
    /// Rows of the page that [`decode_row`](crate::decode_row) refuses (from an older server,
    /// or stored before a check existed): the device sets them aside and applies the rest.
    pub refused: Vec<RefusedPull>,
    pub cursor: String,
    pub more: bool,
    /// Rows (table, key) that left what the user may read: removed locally.
    pub removed: Vec<(String, String)>,
}

/// A pulled row that breaks a rule: its table and key as sent, and the refusal (which names
/// them, the column and the rule).
///
/// The table and key are cut to [`MAX_KEY_BYTES`](ferry_core::limits::MAX_KEY_BYTES) + 1
/// bytes: a key within the limit stays whole (a later good version of the row finds its
/// entry by it), and a longer one, refused for its length, stays bounded wherever it is kept
/// or shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedPull {
    pub table: String,
    pub key: String,
    pub reason: String,
}

impl RefusedPull {
    fn new(mut table: String, mut key: String, reason: String) -> RefusedPull {
        for s in [&mut table, &mut key] {
            s.truncate(s.floor_char_boundary(ferry_core::limits::MAX_KEY_BYTES + 1));
        }
        RefusedPull { table, key, reason }
    }
}

/// Decodes a [`PullResponse`](crate::PullResponse) body against `schema`. A row that
/// [`decode_row`](crate::decode_row) would refuse is returned among
/// [`DecodedPage::refused`] with the same message; the rest of the page decodes.
///
/// # Errors
/// Malformed JSON, or a page or row not shaped as the protocol says (a missing field, a
/// field of the wrong JSON type).
pub fn decode_page(schema: &Schema, json: &[u8]) -> Result<DecodedPage, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let page = PageSeed(schema).deserialize(&mut de).map_err(refusal)?;
    de.end().map_err(refusal)?;
    Ok(page)
}

/// A decoded push request ([`PushRequest`](crate::PushRequest)).
#[derive(Debug)]
pub struct DecodedPush {
    pub batch_id: String,
    pub cursor: Option<String>,
    pub rows: Vec<PushedRow>,
}

/// A pushed row: its state and the clocks of the version its change started from
/// ([`decode_seen`](crate::decode_seen)).
#[derive(Debug)]
pub struct PushedRow {
    pub table: String,
    pub key: String,
    pub state: RowState,
    pub seen: RowClocks,
}

/// Why a push body was not decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// Not a push request: bad JSON, a missing or mistyped field (serde_json's message).
    Malformed(String),
    /// A row [`decode_row`](crate::decode_row) or [`decode_seen`](crate::decode_seen) would
    /// refuse, with their message.
    Refused(String),
}

/// Decodes a [`PushRequest`](crate::PushRequest) body against `schema`.
///
/// # Errors
/// [`PushError`]: malformed, or the first row refused.
pub fn decode_push(schema: &Schema, json: &[u8]) -> Result<DecodedPush, PushError> {
    let refused = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(json);
    let push = PushSeed { schema, refused: &refused }.deserialize(&mut de).and_then(|p| de.end().map(|()| p));
    push.map_err(|e| match refused.take() {
        Some(message) => PushError::Refused(message),
        None => PushError::Malformed(e.to_string()),
    })
}

struct PushSeed<'s> {
    schema: &'s Schema,
    refused: &'s RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for PushSeed<'_> {
    type Value = DecodedPush;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DecodedPush, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PushSeed<'_> {
    type Value = DecodedPush;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a push request")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DecodedPush, A::Error> {
        let (mut batch_id, mut cursor, mut rows) = (None, None, None);
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            match k.as_ref() {
                "batch_id" => batch_id = Some(map.next_value::<String>()?),
                "cursor" => cursor = map.next_value::<Option<String>>()?,
                "rows" => rows = Some(map.next_value_seed(RowsSeed { schema: self.schema, push: Some(self.refused) })?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let rows: Vec<RowParts> = rows.ok_or_else(|| serde::de::Error::missing_field("rows"))?;
        Ok(DecodedPush {
            batch_id: batch_id.ok_or_else(|| serde::de::Error::missing_field("batch_id"))?,
            cursor,
            rows: rows
                .into_iter()
                .map(|r| {
                    // A push's refused row ended the decoding (RowSeed), so every state is here.
                    let state = r.state.map_err(|e| serde::de::Error::custom(e.0))?;
                    Ok(PushedRow { table: r.table, key: r.key, state, seen: r.seen.unwrap_or_default() })
                })
                .collect::<Result<_, A::Error>>()?,
        })
    }
}

/// A refused row reads as [`decode_row`](crate::decode_row) says it (without the position
/// serde_json adds); malformed JSON keeps its position.
fn refusal(e: serde_json::Error) -> DecodeError {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match (e.classify(), text.strip_suffix(&position)) {
        (serde_json::error::Category::Data, Some(message)) => DecodeError(message.to_owned()),
        _ => DecodeError(text),
    }
}

struct PageSeed<'s>(&'s Schema);

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = DecodedPage;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DecodedPage, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = DecodedPage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pull page")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DecodedPage, A::Error> {
        let (mut rows, mut cursor, mut more, mut removed) = (None, None, None, Vec::new());
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match k.as_ref() {
                "removed" => {
                    removed =
                        map.next_value::<Vec<crate::RemovedRow>>()?.into_iter().map(|r| (r.table, r.key)).collect();
                }
                "rows" => rows = Some(map.next_value_seed(RowsSeed { schema: self.0, push: None })?),
                "cursor" => cursor = Some(map.next_value::<String>()?),
                "more" => more = Some(map.next_value::<bool>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let parts: Vec<RowParts> = rows.ok_or_else(|| serde::de::Error::missing_field("rows"))?;
        let (mut rows, mut refused) = (Vec::with_capacity(parts.len()), Vec::new());
        for r in parts {
            match r.state {
                Ok(state) => rows.push((r.table, r.key, state)),
                Err(e) => refused.push(RefusedPull::new(r.table, r.key, e.0)),
            }
        }
        Ok(DecodedPage {
            rows,
            refused,
            cursor: cursor.ok_or_else(|| serde::de::Error::missing_field("cursor"))?,
            more: more.ok_or_else(|| serde::de::Error::missing_field("more"))?,
            removed,
        })
    }
}

/// The rows of a page, or of a push (`push` given: see [`RowSeed`]).
struct RowsSeed<'s> {
    schema: &'s Schema,
    push: Option<&'s RefCell<Option<String>>>,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = Vec<RowParts>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = Vec<RowParts>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(row) = seq.next_element_seed(RowSeed { schema: self.schema, push: self.push })? {
            rows.push(row);
        }
        Ok(rows)
    }
}

/// A row as read: its table, key and state (or, in a pull page, why it was refused), and
/// for a pushed row the version its change started from.
struct RowParts {
    table: String,
    key: String,
    state: Result<RowState, DecodeError>,
    seen: Option<RowClocks>,
}

/// One row. With `push` given, a pushed row: its version is read too
/// ([`decode_seen`](crate::decode_seen)), and a refusal's message is also left in `push`.
struct RowSeed<'s> {
    schema: &'s Schema,
    push: Option<&'s RefCell<Option<String>>>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = RowParts;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = RowParts;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut table: Option<String> = None;
        let mut key: Option<String> = None;
        let mut exists = None;
        let mut exists_at: Option<String> = None;
        let mut clock: Option<String> = None;
        let mut clocks = BTreeMap::new();
        // A pushed row's `base` and `seen`, as sent.
        let (mut base, mut sent_seen): (BTreeMap<String, String>, Option<WireClocks>) = (BTreeMap::new(), None);
        // Values are decoded by column type as they are read when the table came first
        // (as Ferry's server writes it); otherwise kept as JSON and decoded at the end.
        let mut values: Vec<(String, Result<Value, String>)> = Vec::new();
        let mut later: Option<serde_json::Map<String, serde_json::Value>> = None;
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match k.as_ref() {
                "table" => table = Some(map.next_value()?),
                "key" => key = Some(map.next_value()?),
                "exists" => exists = Some(map.next_value::<bool>()?),
                "exists_at" => exists_at = Some(map.next_value()?),
                "clock" => clock = Some(map.next_value()?),
                "clocks" => clocks = map.next_value()?,
                "base" => base = map.next_value()?,
                "seen" => sent_seen = map.next_value()?,
                "values" => match table.as_deref().and_then(|t| self.schema.table(t)) {
                    Some(t) => values = map.next_value_seed(ValuesSeed(t))?,
                    None => later = Some(map.next_value()?),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = serde::de::Error::missing_field;
        let (table, key) = (table.ok_or_else(|| missing("table"))?, key.ok_or_else(|| missing("key"))?);
        let (exists_at, clock) =
            (exists_at.ok_or_else(|| missing("exists_at"))?, clock.ok_or_else(|| missing("clock"))?);
        let head = RowHead {
            table: &table,
            key: &key,
            exists: exists.ok_or_else(|| missing("exists"))?,
            exists_at: &exists_at,
            clock: &clock,
            clocks: &clocks,
        };
        let decoded = match &later {
            Some(json) => {
                build_row(self.schema, &head, json.iter().map(|(n, j)| (Cow::Borrowed(n.as_str()), Decoded::Json(j))))
            }
            None => build_row(self.schema, &head, values.into_iter().map(|(n, v)| (Cow::Owned(n), Decoded::Read(v)))),
        };
        let refuse = |e: DecodeError| {
            if let Some(refused) = self.push {
                *refused.borrow_mut() = Some(e.0.clone());
            }
            serde::de::Error::custom(e.0)
        };
        let Some(_) = self.push else {
            // A page's bad row is set aside by the device; the rest of the page goes on.
            return Ok(RowParts { table, key, state: decoded.map(|(_, state)| state), seen: None });
        };
        let (t, state) = decoded.map_err(refuse)?;
        let seen = Some(crate::seen_of(t, &key, &base, sent_seen.as_ref(), &state).map_err(refuse)?);
        Ok(RowParts { table, key, state: Ok(state), seen })
    }
}

/// The `values` object of a row of `table`: each value decoded by its column's type (the
/// rule it breaks when it does not fit); columns the table lacks are named by the check.
struct ValuesSeed<'t>(&'t Table);

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = Vec<(String, Result<Value, String>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed<'_> {
    type Value = Vec<(String, Result<Value, String>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of column values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.0.columns.len());
        while let Some(name) = map.next_key::<String>()? {
            let decoded = match self.0.column(&name) {
                Some(c) => map.next_value_seed(ValueSeed(c.ty))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                    Err(String::new())
                }
            };
            out.push((name, decoded));
        }
        Ok(out)
    }
}

/// One value for a column of this type, as [`value_from_json`](crate::value_from_json)
/// reads it (same rules and messages).
struct ValueSeed(ColType);

impl ValueSeed {
    /// A value the fast paths below do not take (base64 blobs, "inf" reals, 0/1 booleans, and
    /// every misfit, whose message quotes the JSON), read by the general rule.
    fn general(&self, json: serde_json::Value) -> Result<Value, String> {
        crate::value_from_json(self.0, &json)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Result<Value, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Result<Value, String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Value::Null))
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Value::Null))
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(match self.0 {
            ColType::Boolean => Ok(Value::Integer(b.into())),
            _ => self.general(b.into()),
        })
    }
    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Self::Value, E> {
        Ok(match self.0 {
            ColType::Integer | ColType::BigInt => Ok(Value::Integer(i)),
            ColType::Real => Ok(Value::Real(i as f64)),
            _ => self.general(i.into()),
        })
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Self::Value, E> {
        match i64::try_from(u) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Ok(self.general(u.into())),
        }
    }
    fn visit_f64<E: serde::de::Error>(self, r: f64) -> Result<Self::Value, E> {
        Ok(match self.0 {
            ColType::Real => Ok(Value::Real(r)),
            _ => self.general(r.into()),
        })
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(match self.0 {
            t if t.is_textual() => Ok(Value::Text(s.to_owned())),
            _ => self.general(s.into()),
        })
    }
    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(match self.0 {
            t if t.is_textual() => Ok(Value::Text(s)),
            _ => self.general(s.into()),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let shown = serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(self.general(shown))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let shown = serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(self.general(shown))
    }
}
