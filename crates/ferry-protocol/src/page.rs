//! A pull page decoded straight from its JSON into row states, with every check of
//! [`decode_row`](crate::decode_row) and the same messages, without building a
//! [`WireRow`](crate::WireRow) (and its map of JSON values) for each row first: on a
//! hydrate that intermediate form cost a quarter of the device's CPU.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use ferry_core::schema::{ColType, Schema, Table};
use ferry_core::{RowState, Value};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::{DecodeError, Decoded, RowHead, build_row};

/// A decoded pull page: rows as (table, key, state), the cursor, and whether more wait.
#[derive(Debug)]
pub struct DecodedPage {
    pub rows: Vec<(String, String, RowState)>,
    pub cursor: String,
    pub more: bool,
}

/// Decodes a [`PullResponse`](crate::PullResponse) body against `schema`.
///
/// # Errors
/// Malformed JSON, or a row [`decode_row`](crate::decode_row) would refuse (same message).
pub fn decode_page(schema: &Schema, json: &[u8]) -> Result<DecodedPage, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let page = PageSeed(schema).deserialize(&mut de).map_err(refusal)?;
    de.end().map_err(refusal)?;
    Ok(page)
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
        let (mut rows, mut cursor, mut more) = (None, None, None);
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match k.as_ref() {
                "rows" => rows = Some(map.next_value_seed(RowsSeed(self.0))?),
                "cursor" => cursor = Some(map.next_value::<String>()?),
                "more" => more = Some(map.next_value::<bool>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(DecodedPage {
            rows: rows.ok_or_else(|| serde::de::Error::missing_field("rows"))?,
            cursor: cursor.ok_or_else(|| serde::de::Error::missing_field("cursor"))?,
            more: more.ok_or_else(|| serde::de::Error::missing_field("more"))?,
        })
    }
}

struct RowsSeed<'s>(&'s Schema);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = Vec<(String, String, RowState)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = Vec<(String, String, RowState)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(row) = seq.next_element_seed(RowSeed(self.0))? {
            rows.push(row);
        }
        Ok(rows)
    }
}

struct RowSeed<'s>(&'s Schema);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = (String, String, RowState);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = (String, String, RowState);
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
                "values" => match table.as_deref().and_then(|t| self.0.table(t)) {
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
                build_row(self.0, &head, json.iter().map(|(n, j)| (Cow::Borrowed(n.as_str()), Decoded::Json(j))))
            }
            None => build_row(self.0, &head, values.into_iter().map(|(n, v)| (Cow::Owned(n), Decoded::Read(v)))),
        };
        let (_, state) = decoded.map_err(|e| serde::de::Error::custom(e.0))?;
        Ok((table, key, state))
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
