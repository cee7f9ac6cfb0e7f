//! The one JSON codec of a [`Value`]: every crate that writes a value as JSON, or reads one
//! back, goes through here (the wire, the replica's bookkeeping, both stores' tombstones and
//! conflict logs).
//!
//! A value has two spellings, told apart by [`Form`], because JSON alone cannot carry every
//! value and SQL triggers cannot write every spelling:
//!
//! - [`Form::Wire`], what devices and servers exchange (`docs/schema.md`, "Type mapping"):
//!   booleans as `true`/`false`, blobs as base64, finite reals as numbers and infinities as
//!   the strings `"inf"`/`"-inf"`. Read strictly, by the column's type.
//! - [`Form::Stored`], what Ferry keeps inside its own tables as JSON text: blobs as hex and
//!   reals as text. This is what the capture triggers write (SQLite's `hex()` and
//!   `printf('%!.17g')`, PostgreSQL's `jsonb` of the row): SQL has no portable base64, and
//!   SQLite's JSON keeps only 15 digits of a real and writes infinities as invalid JSON. Read
//!   leniently, as Ferry has always read it, so that files of older versions still read:
//!   reals as numbers or text (`inf`, `Inf`, …), booleans as `true`/`false` or 0/1, a real
//!   written as `null` (older replicas' conflict logs) as null.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferry_core::Value;
use ferry_core::schema::{ColType, Table};
use serde::Serialize;

/// Which spelling (see the module's doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Wire,
    Stored,
}

/// `v`, of a column of type `ty`, as JSON in `form`.
pub fn to_json(form: Form, ty: ColType, v: &Value) -> serde_json::Value {
    match (form, ty, v) {
        (_, _, Value::Null) => serde_json::Value::Null,
        (Form::Wire, ColType::Boolean, Value::Integer(i)) => serde_json::Value::Bool(*i != 0),
        (_, _, Value::Integer(i)) => (*i).into(),
        // JSON has no infinities or NaN: those travel as the strings "inf", "-inf", "NaN".
        (Form::Wire, _, Value::Real(r)) => {
            serde_json::Number::from_f64(*r).map_or_else(|| format!("{r:?}").into(), Into::into)
        }
        // Stored: the shortest text that reads back bit for bit, infinities included.
        (Form::Stored, _, Value::Real(r)) => format!("{r:?}").into(),
        (_, _, Value::Text(s)) => s.clone().into(),
        (Form::Wire, _, Value::Blob(b)) => B64.encode(b).into(),
        (Form::Stored, _, Value::Blob(b)) => ferry_core::to_hex(b).into(),
    }
}

/// Reads JSON in `form` for a column of type `ty`.
///
/// # Errors
/// A short rule ("expects integer, got \"x\"") for the caller to put in context: on the
/// wire, a value that is not of the column's type; stored, a blob that is not hex.
pub fn from_json(form: Form, ty: ColType, j: &serde_json::Value) -> Result<Value, String> {
    match form {
        Form::Wire => wire_from_json(ty, j),
        Form::Stored => stored_from_json(ty, j),
    }
}

fn wire_from_json(ty: ColType, j: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    let wrong = || {
        let shown: String = j.to_string().chars().take(40).collect();
        Err(format!("expects {}, got {shown}", ty.name()))
    };
    Ok(match (ty, j) {
        (_, J::Null) => Value::Null,
        (ColType::Boolean, J::Bool(b)) => Value::Integer((*b).into()),
        (ColType::Boolean, J::Number(n)) => match n.as_i64() {
            Some(i @ (0 | 1)) => Value::Integer(i),
            _ => return wrong(),
        },
        (ColType::Integer | ColType::BigInt, J::Number(n)) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => return wrong(),
        },
        (ColType::Real, J::Number(n)) => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        (ColType::Real, J::String(s)) if matches!(s.as_str(), "inf" | "-inf" | "NaN") => {
            Value::Real(s.parse().unwrap_or(f64::NAN))
        }
        (ColType::Blob, J::String(s)) => match B64.decode(s) {
            Ok(b) => Value::Blob(b),
            Err(_) => return Err("expects base64 for bytea".into()),
        },
        (t, J::String(s)) if t.is_textual() => Value::Text(s.clone()),
        _ => return wrong(),
    })
}

fn stored_from_json(ty: ColType, j: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    Ok(match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Integer((*b).into()),
        J::Number(n) => match n.as_i64() {
            Some(i) if ty != ColType::Real => Value::Integer(i),
            _ => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) if ty == ColType::Real => match s.parse::<f64>() {
            Ok(r) => Value::Real(r),
            Err(_) => Value::Text(s.clone()),
        },
        J::String(s) if ty == ColType::Blob => Value::Blob(ferry_core::from_hex(s).ok_or("bad hex")?),
        J::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    })
}

/// A value serialized as [`to_json`] in [`Form::Wire`] converts it, without building the
/// JSON tree (pull pages and pushes of many rows).
pub(crate) struct WireValue<'a>(pub ColType, pub &'a Value);

impl Serialize for WireValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.0, self.1) {
            (_, Value::Null) => s.serialize_unit(),
            (ColType::Boolean, Value::Integer(i)) => s.serialize_bool(*i != 0),
            (_, Value::Integer(i)) => s.serialize_i64(*i),
            (_, Value::Real(r)) if r.is_finite() => s.serialize_f64(*r),
            (_, Value::Real(r)) => s.collect_str(&format_args!("{r:?}")),
            (_, Value::Text(t)) => s.serialize_str(t),
            (_, Value::Blob(b)) => s.serialize_str(&B64.encode(b)),
        }
    }
}

/// A row's data-column values (in the table's order) as a JSON object in [`Form::Stored`]:
/// the form of tombstones, which capture triggers also write for deleted rows.
pub fn encode_values(table: &Table, values: &[Value]) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        table.data_columns().zip(values).map(|(col, v)| (col.name.clone(), to_json(Form::Stored, col.ty, v))).collect();
    serde_json::Value::Object(map).to_string()
}

/// Reads [`encode_values`]' form (and the triggers'); columns the table does not have are
/// left out.
///
/// # Errors
/// JSON that is not an object, or a blob column that does not hold hex, named.
pub fn decode_values(table: &Table, json: &str) -> Result<BTreeMap<String, Value>, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("bad stored values: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, j) in map {
        let Some(col) = table.column(&name) else {
            continue;
        };
        let v = stored_from_json(col.ty, &j).map_err(|e| format!("column '{name}': {e}"))?;
        out.insert(name, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy as _;

    use super::*;

    const TYPES: [ColType; 10] = [
        ColType::Uuid,
        ColType::Text,
        ColType::Integer,
        ColType::BigInt,
        ColType::Real,
        ColType::Boolean,
        ColType::Timestamptz,
        ColType::Date,
        ColType::Json,
        ColType::Blob,
    ];

    fn value_of(ty: ColType) -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        match ty {
            ColType::Integer | ColType::BigInt => any::<i64>().prop_map(Value::Integer).boxed(),
            ColType::Boolean => (0i64..=1).prop_map(Value::Integer).boxed(),
            ColType::Real => proptest::num::f64::ANY
                .prop_filter("stored reals", |r| !(r.is_nan() || (*r == 0.0 && r.is_sign_negative())))
                .prop_map(Value::Real)
                .boxed(),
            ColType::Blob => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob).boxed(),
            _ => ".{0,20}".prop_map(Value::Text).boxed(),
        }
    }

    proptest::proptest! {
        /// Every value Ferry stores reads back as itself, in both forms, reals bit for bit.
        #[test]
        fn values_read_back_in_both_forms(
            (ty, v) in proptest::sample::select(TYPES.to_vec()).prop_flat_map(|t| (proptest::strategy::Just(t), value_of(t)))
        ) {
            for form in [Form::Wire, Form::Stored] {
                let json = to_json(form, ty, &v);
                let back = from_json(form, ty, &json).unwrap();
                match (&back, &v) {
                    (Value::Real(b), Value::Real(r)) => proptest::prop_assert_eq!(b.to_bits(), r.to_bits()),
                    _ => proptest::prop_assert_eq!(&back, &v, "{:?} {}", form, json),
                }
                if form == Form::Wire {
                    proptest::prop_assert_eq!(serde_json::to_value(WireValue(ty, &v)).unwrap(), json);
                }
            }
        }
    }

    /// What the capture triggers wrote, and what earlier versions kept, still reads.
    #[test]
    fn stored_values_of_triggers_and_older_files_read() {
        let read = |ty, j: serde_json::Value| from_json(Form::Stored, ty, &j).unwrap();
        // SQLite: hex() of a blob, printf('%!.17g') of a real (infinities as "Inf").
        assert_eq!(read(ColType::Blob, "0A0b".into()), Value::Blob(vec![10, 11]));
        assert_eq!(read(ColType::Real, "0.10000000000000001".into()), Value::Real(0.1));
        assert_eq!(read(ColType::Real, "-Inf".into()), Value::Real(f64::NEG_INFINITY));
        assert_eq!(read(ColType::Real, "inf".into()), Value::Real(f64::INFINITY));
        // Numbers and booleans as JSON wrote them; a real an older replica kept as null.
        assert_eq!(read(ColType::Real, 2.into()), Value::Real(2.0));
        assert_eq!(read(ColType::Integer, 2.into()), Value::Integer(2));
        assert_eq!(read(ColType::Boolean, true.into()), Value::Integer(1));
        assert_eq!(read(ColType::Real, serde_json::Value::Null), Value::Null);
        assert!(from_json(Form::Stored, ColType::Blob, &"not hex".into()).is_err());
        // The wire is strict: base64, not hex; typed.
        assert_eq!(from_json(Form::Wire, ColType::Blob, &"AQID".into()).unwrap(), Value::Blob(vec![1, 2, 3]));
        assert!(from_json(Form::Wire, ColType::Integer, &"2".into()).is_err());
    }
}
