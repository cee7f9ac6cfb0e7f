//! The values a synced column can hold, as SQLite stores them.

use std::cmp::Ordering;

/// Lowercase hex of `bytes`: the text form of blobs in stored JSON and of random ids.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads [`to_hex`]'s form (either case); `None` for odd lengths or non-hex digits.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// One column value. The five storage classes SQLite knows; the schema's logical type
/// (uuid, boolean, timestamptz …) decides which one a column uses, see [`crate::schema`].
///
/// Equality is bit for bit (as [`Value::same`]): `NaN == NaN` and `0.0 != -0.0`, so that a
/// state compares equal to itself and a change of sign is a change.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.same(other)
    }
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Integer(_) => 1,
            Value::Real(_) => 2,
            Value::Text(_) => 3,
            Value::Blob(_) => 4,
        }
    }

    /// A total order over values. Merge rules only fall back to it when two changes carry
    /// the same clock, which a correct replica never produces, so that even then every
    /// replica picks the same value.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Integer(a), Value::Integer(b)) => a.cmp(b),
            (Value::Real(a), Value::Real(b)) => a.total_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Blob(a), Value::Blob(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// Same value, bit for bit (so `NaN == NaN` and `0.0 != -0.0`), as merge needs.
    pub fn same(&self, other: &Value) -> bool {
        self.total_cmp(other) == Ordering::Equal
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The storage class name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

/// `s` for an error message: whole when short, else its first 100 characters and how long
/// it was. Messages name the bad value, but must not echo a megabyte of it back.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    const MAX_CHARS: usize = 100;
    match s.char_indices().nth(MAX_CHARS) {
        None => s.into(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &s[..cut], s.len()).into(),
    }
}
