//! The rules a value must follow to be stored, alike in SQLite and PostgreSQL: the column's
//! type and constraints, the limits, and the text forms of timestamps, dates and uuids.

use super::{ColType, Column, Table, ValueError};
use crate::limits;
use crate::value::Value;

impl Table {
    /// Checks that a value can be stored at all, alike in both stores, whether the row is
    /// live or a tombstone: the [`limits`] (key and value size, JSON nesting), no NUL in
    /// text, and reals that both stores keep bit for bit (no NaN, no negative zero).
    ///
    /// # Errors
    /// A [`ValueError`] naming the column, the limit or rule, and the fix.
    pub fn check_storable(&self, column: &Column, value: &Value) -> Result<(), ValueError> {
        let fail = |rule: String| Err(ValueError { column: column.name.clone(), rule });
        let size = match value {
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
            _ => 0,
        };
        if column.name == self.pk_column().name {
            if size > limits::MAX_KEY_BYTES {
                return fail(format!(
                    "is {size} bytes long; a key may be at most {} bytes (docs/schema.md, Limits)",
                    limits::MAX_KEY_BYTES
                ));
            }
        } else if size > limits::MAX_VALUE_BYTES {
            return fail(format!(
                "holds {size} bytes; a value may be at most {} bytes (docs/schema.md, Limits): keep large content in a file column (files = [...])",
                limits::MAX_VALUE_BYTES
            ));
        }
        match value {
            Value::Real(r) if r.is_nan() => {
                return fail(
                    "is NaN, which Ferry does not store (SQLite keeps NaN as NULL); send null or a number".into(),
                );
            }
            Value::Real(r) if *r == 0.0 && r.is_sign_negative() => {
                return fail("is -0.0, which Ferry does not store (SQLite keeps it as 0.0); send 0.0".into());
            }
            Value::Text(s) => {
                if s.contains('\0') {
                    return fail("contains a NUL character, which PostgreSQL text cannot hold".into());
                }
                if column.ty == ColType::Json {
                    if s.contains("\\u0000") {
                        return fail("holds JSON with \\u0000, which PostgreSQL jsonb cannot hold".into());
                    }
                    let depth = limits::json_depth(s);
                    if depth > limits::MAX_JSON_DEPTH {
                        return fail(format!(
                            "holds JSON nested {depth} levels deep; the most allowed is {} (docs/schema.md, Limits)",
                            limits::MAX_JSON_DEPTH
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks one value against the column's type and rules (NOT NULL, allowed values,
    /// maximum length, uuid and boolean form), after [`Table::check_storable`].
    ///
    /// # Errors
    /// A [`ValueError`] naming the column and the rule broken.
    pub fn check_value(&self, column: &Column, value: &Value) -> Result<(), ValueError> {
        let fail = |rule: String| Err(ValueError { column: column.name.clone(), rule });
        self.check_storable(column, value)?;
        if value.is_null() {
            if column.not_null || column.name == self.pk_column().name {
                return fail("is NOT NULL, got null".into());
            }
            return Ok(());
        }
        if !kind_fits(column.ty, value) {
            return fail(format!("expects {}, got {}", column.ty.name(), value.kind()));
        }
        match (column.ty, value) {
            (ColType::Boolean, Value::Integer(i)) if *i != 0 && *i != 1 => {
                return fail(format!("is boolean, got {i}; use true/false or 1/0"));
            }
            (ColType::Integer, Value::Integer(i)) if i32::try_from(*i).is_err() => {
                return fail(format!("is a 32-bit integer, got {i}; make the column bigint for larger numbers"));
            }
            (ColType::Timestamptz, Value::Text(s)) if !is_timestamptz(s) => {
                return fail(format!(
                    "expects an ISO-8601 timestamp with a zone like 2026-11-21T10:00:00Z or 2026-11-21T11:00:00.5+01:00, got '{s}'"
                ));
            }
            (ColType::Date, Value::Text(s)) if !is_date(s) => {
                return fail(format!("expects a date like 2026-11-21, got '{s}'"));
            }
            (ColType::Json, Value::Text(s)) if serde_json::from_str::<serde::de::IgnoredAny>(s).is_err() => {
                let shown: String = s.chars().take(40).collect();
                return fail(format!("expects JSON text, got '{shown}'"));
            }
            (ColType::Uuid, Value::Text(s)) if !is_uuid(s) => {
                return fail(format!("expects a lowercase uuid like 0190f5a2-7c1e-7d3a-9b1f-2c3d4e5f6a7b, got '{s}'"));
            }
            _ => {}
        }
        if let Value::Text(s) = value
            && self.options.files.contains(&column.name)
            && !is_file_hash(s)
        {
            let shown: String = s.chars().take(70).collect();
            return fail(format!(
                "is a file column and holds a SHA-256 in 64 lowercase hex digits (what `ferry file add` prints), got '{shown}'"
            ));
        }
        if let (Some(max), Value::Text(s)) = (column.max_len, value) {
            let n = s.chars().count();
            if n > max as usize {
                return fail(format!("is varchar({max}), got {n} characters"));
            }
        }
        if let (Some(allowed), Value::Text(s)) = (&column.allowed, value)
            && !allowed.iter().any(|a| a == s)
        {
            return fail(format!("allows only {}, got '{s}'", allowed.join(", ")));
        }
        Ok(())
    }
}

/// Whether `value` is of the kind that columns of type `ty` hold (the storage class SQLite
/// keeps them in).
fn kind_fits(ty: ColType, value: &Value) -> bool {
    match ty {
        ColType::Uuid | ColType::Text | ColType::Timestamptz | ColType::Date | ColType::Json => {
            matches!(value, Value::Text(_))
        }
        ColType::Integer | ColType::BigInt | ColType::Boolean => matches!(value, Value::Integer(_)),
        ColType::Real => matches!(value, Value::Real(_)),
        ColType::Blob => matches!(value, Value::Blob(_)),
    }
}

fn digits(s: &[u8], n: usize) -> Option<(u32, &[u8])> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = s[..n].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    Some((v, &s[n..]))
}

fn date_prefix(s: &[u8]) -> Option<&[u8]> {
    let (year, s) = digits(s, 4)?;
    let s = s.strip_prefix(b"-")?;
    let (month, s) = digits(s, 2)?;
    let s = s.strip_prefix(b"-")?;
    let (day, s) = digits(s, 2)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (year >= 1 && (1..=days).contains(&day)).then_some(s)
}

/// Whether `s` is a calendar date `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    date_prefix(s.as_bytes()).is_some_and(<[u8]>::is_empty)
}

/// Whether `s` is an ISO-8601 timestamp with a zone: `YYYY-MM-DD`, `T` (or a space),
/// `HH:MM[:SS[.fraction]]`, then `Z` or `±HH[:MM]`. A zone is required: without one, SQLite
/// and PostgreSQL would read the same text as different instants.
pub fn is_timestamptz(s: &str) -> bool {
    let time = |s: &[u8]| -> Option<()> {
        let s = date_prefix(s)?;
        let s = s.strip_prefix(b"T").or_else(|| s.strip_prefix(b"t")).or_else(|| s.strip_prefix(b" "))?;
        let (h, s) = digits(s, 2)?;
        let (m, mut s) = digits(s.strip_prefix(b":")?, 2)?;
        if let Some(rest) = s.strip_prefix(b":") {
            let (sec, rest) = digits(rest, 2)?;
            if sec > 60 {
                return None;
            }
            s = rest;
            if let Some(frac) = s.strip_prefix(b".") {
                let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
                if n == 0 {
                    return None;
                }
                s = &frac[n..];
            }
        }
        if h > 23 || m > 59 {
            return None;
        }
        match s {
            b"Z" | b"z" => Some(()),
            [b'+' | b'-', zone @ ..] => {
                let (zh, rest) = digits(zone, 2)?;
                let rest = rest.strip_prefix(b":").unwrap_or(rest);
                let ok = rest.is_empty() || digits(rest, 2).is_some_and(|(zm, r)| zm < 60 && r.is_empty());
                // PostgreSQL accepts offsets up to ±15:59.
                (zh <= 15 && ok).then_some(())
            }
            _ => None,
        }
    };
    time(s.as_bytes()).is_some()
}

/// Whether `s` is a UUID in its canonical form: hyphenated, lowercase. Lowercase only,
/// because SQLite compares keys as text (`'ABC…'` and `'abc…'` would be two rows) while
/// PostgreSQL compares them as uuids (one row).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// Whether `s` is a file hash as file columns hold it: SHA-256, 64 lowercase hex digits.
pub fn is_file_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a device role name (`ferry token create --role`, `authority = "…"`): 1 to 64
/// characters, letters, digits, `-` and `_`.
///
/// # Errors
/// A message naming the rule.
pub fn check_role(role: &str) -> Result<(), String> {
    if role.is_empty() || role.len() > 64 || !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("role '{role}' must be 1 to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::schema::parse::tests::JUMPS;
    use crate::schema::{Schema, TableOptions};

    #[test]
    fn values_are_checked_against_the_column_rules() {
        let s = Schema::parse(JUMPS, &BTreeMap::new()).unwrap();
        let t = s.table("jump_log").unwrap();
        let kind = t.column("kind").unwrap();
        assert!(t.check_value(kind, &Value::Text("belly".into())).is_ok());
        let err = t.check_value(kind, &Value::Text("tandem".into())).unwrap_err();
        assert_eq!(err.to_string(), "column 'kind': allows only belly, freefly, got 'tandem'");
        let err = t.check_value(kind, &Value::Null).unwrap_err();
        assert!(err.to_string().contains("NOT NULL"));
        let n = t.column("jump_number").unwrap();
        let err = t.check_value(n, &Value::Text("x".into())).unwrap_err();
        assert_eq!(err.to_string(), "column 'jump_number': expects integer, got text");
        let user = t.column("user_id").unwrap();
        assert!(t.check_value(user, &Value::Text("nope".into())).is_err());
    }

    #[test]
    fn timestamps_need_a_zone_and_sane_fields() {
        for ok in [
            "2026-11-21T10:00:00Z",
            "2026-11-21 10:00Z",
            "2026-11-21T10:00:00.123456+01:00",
            "2026-11-21T23:59:60-0530",
        ] {
            assert!(is_timestamptz(ok), "{ok}");
        }
        for bad in
            ["2026-11-21T10:00:00", "2026-13-01T00:00Z", "yesterday", "2026-11-21T24:00Z", "2026-11-21T10:00:00.Z", ""]
        {
            assert!(!is_timestamptz(bad), "{bad}");
        }
        assert!(is_date("2026-02-28") && !is_date("2026-2-28") && !is_date("2026-02-28T00:00Z"));
    }

    #[test]
    fn values_postgresql_would_refuse_are_refused_everywhere() {
        for bad in ["2026-02-30", "2026-02-29", "2026-04-31", "0000-01-01"] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(is_date("2024-02-29"));
        assert!(!is_timestamptz("2026-11-21T10:00:00+20:00"));
        assert!(is_timestamptz("2026-11-21T10:00:00+14:00"));
        let s = Schema::parse("CREATE TABLE t (id uuid PRIMARY KEY, note text, doc jsonb);", &BTreeMap::new()).unwrap();
        let t = s.table("t").unwrap();
        let err = t.check_value(t.column("note").unwrap(), &Value::Text("a\0b".into())).unwrap_err();
        assert!(err.rule.contains("NUL"), "{err}");
        let err = t.check_value(t.column("doc").unwrap(), &Value::Text(r#"{"a":"\u0000"}"#.into())).unwrap_err();
        assert!(err.rule.contains("\\u0000"), "{err}");
    }

    #[test]
    fn file_columns_must_be_text_and_hold_hashes() {
        let sql = "CREATE TABLE notes (id uuid PRIMARY KEY, n integer, photo text);";
        let opts = |files: &[&str]| {
            let mut o = BTreeMap::new();
            o.insert(
                "notes".to_owned(),
                TableOptions { files: files.iter().map(|f| f.to_string()).collect(), ..TableOptions::default() },
            );
            o
        };
        let schema = Schema::parse(sql, &opts(&["photo"])).unwrap();
        let t = schema.table("notes").unwrap();
        let photo = t.column("photo").unwrap();
        assert!(t.check_value(photo, &Value::Text("ab".repeat(32))).is_ok());
        assert!(t.check_value(photo, &Value::Null).is_ok());
        let bad = t.check_value(photo, &Value::Text("IMG_0001.jpg".into())).unwrap_err();
        assert!(bad.to_string().contains("IMG_0001.jpg") && bad.to_string().contains("SHA-256"), "{bad}");
        assert!(t.check_value(photo, &Value::Text("AB".repeat(32))).is_err(), "uppercase is refused");
        for (files, needle) in
            [(&["nope"][..], "does not exist"), (&["n"][..], "must be a text column"), (&["id"][..], "primary key")]
        {
            let e = Schema::parse(sql, &opts(files)).unwrap_err().to_string();
            assert!(e.contains(needle), "{files:?}: {e}");
        }
        assert_ne!(
            Schema::parse(sql, &opts(&["photo"])).unwrap().version(),
            Schema::parse(sql, &opts(&[])).unwrap().version()
        );
    }
}
