//! The REST data API's bodies (`/v1/rows/{table}/{key}`, `/v1/changes`): one row at a time,
//! with its version, for clients that do not run a replica.

use ferry_core::RowState;
use ferry_core::schema::Table;
use serde::{Deserialize, Serialize};

/// One row as the REST API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowDoc {
    pub table: String,
    pub key: String,
    /// Changes whenever the row does; send it back in `If-Match` (or `version`).
    pub version: String,
    pub deleted: bool,
    /// The columns other than the key, in the wire form; a deleted row shows its last values.
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl RowDoc {
    pub fn new(table: &Table, key: &str, state: &RowState) -> RowDoc {
        RowDoc {
            table: table.name.clone(),
            key: key.to_owned(),
            version: state.version(),
            deleted: !state.is_alive(),
            values: crate::encode_row(table, key, state).values,
        }
    }
}

/// `PUT /v1/rows/{table}/{key}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRowRequest {
    /// The columns to write, in the wire form.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// The version the write was made on (409 `stale` when the row has another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `GET /v1/changes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesResponse {
    pub changes: Vec<RowDoc>,
    /// Pass as `since` next time.
    pub cursor: String,
    pub more: bool,
    /// Rows that left what the user may read (a `read` rule, a membership changed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<crate::RemovedRow>,
}
