//! The admin endpoints' bodies (`/v1/admin/…`): the conflict log, device revocation, the
//! server's status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One entry of the server's conflict log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictRecord {
    pub id: i64,
    pub table: String,
    pub key: String,
    pub kind: ConflictKind,
    /// The contested fields; `*` stands for the row's existence.
    pub fields: Vec<String>,
    pub strategy: Strategy,
    /// The stored version before the merge.
    pub stored: ConflictVersion,
    /// The incoming version.
    pub incoming: ConflictVersion,
    /// For each field, which side the merge kept.
    pub winner: BTreeMap<String, ConflictSide>,
    /// The strategy that settled it at once (every strategy but `manual`), `manual` after a
    /// resolve, `None` while open.
    pub resolved_by: Option<Strategy>,
    pub resolved_at: Option<String>,
    pub detected_at: String,
}

/// One side of a conflict: the whole row as that side had it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictVersion {
    /// The device that wrote it, `manual` for a resolution, `None` for a row written straight
    /// into the server's tables.
    pub origin: Option<String>,
    pub exists: bool,
    /// The data columns that side had written, in the wire form (as pushes and pulls carry
    /// them).
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Each written column's clock.
    pub clocks: BTreeMap<String, String>,
}

/// The kind of a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    /// Two writes to the same fields (under `row-lww` and `reject-stale`: to the same row),
    /// neither seeing the other.
    UpdateUpdate,
    /// The push deleted a row changed since its device saw it.
    DeleteUpdate,
    /// The push changed a row deleted since.
    UpdateDelete,
}

/// A table's conflict strategy, as the log names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Lww,
    RowLww,
    Authoritative,
    RejectStale,
    Manual,
}

/// Which version of a conflict: the one the server held, or the one pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictSide {
    Stored,
    Incoming,
}

impl ConflictKind {
    /// The kind's name, as the core names it.
    pub fn name(self) -> &'static str {
        ferry_core::strategy::ConflictKind::from(self).name()
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<ConflictKind> {
        [ConflictKind::UpdateUpdate, ConflictKind::DeleteUpdate, ConflictKind::UpdateDelete]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

impl From<ConflictKind> for ferry_core::strategy::ConflictKind {
    fn from(k: ConflictKind) -> Self {
        use ferry_core::strategy::ConflictKind as K;
        match k {
            ConflictKind::UpdateUpdate => K::UpdateUpdate,
            ConflictKind::DeleteUpdate => K::DeleteUpdate,
            ConflictKind::UpdateDelete => K::UpdateDelete,
        }
    }
}

impl From<ferry_core::strategy::ConflictKind> for ConflictKind {
    fn from(k: ferry_core::strategy::ConflictKind) -> Self {
        use ferry_core::strategy::ConflictKind as K;
        match k {
            K::UpdateUpdate => ConflictKind::UpdateUpdate,
            K::DeleteUpdate => ConflictKind::DeleteUpdate,
            K::UpdateDelete => ConflictKind::UpdateDelete,
        }
    }
}

impl Strategy {
    pub fn name(self) -> &'static str {
        ferry_core::schema::ConflictStrategy::from(self).name()
    }

    /// The strategy named `s`.
    pub fn parse(s: &str) -> Option<Strategy> {
        ferry_core::schema::ConflictStrategy::parse(s).ok().map(Strategy::from)
    }
}

impl From<ferry_core::schema::ConflictStrategy> for Strategy {
    fn from(s: ferry_core::schema::ConflictStrategy) -> Self {
        use ferry_core::schema::ConflictStrategy as C;
        match s {
            C::Lww => Strategy::Lww,
            C::RowLww => Strategy::RowLww,
            C::Authoritative => Strategy::Authoritative,
            C::RejectStale => Strategy::RejectStale,
            C::Manual => Strategy::Manual,
        }
    }
}

impl From<Strategy> for ferry_core::schema::ConflictStrategy {
    fn from(s: Strategy) -> Self {
        use ferry_core::schema::ConflictStrategy as C;
        match s {
            Strategy::Lww => C::Lww,
            Strategy::RowLww => C::RowLww,
            Strategy::Authoritative => C::Authoritative,
            Strategy::RejectStale => C::RejectStale,
            Strategy::Manual => C::Manual,
        }
    }
}

impl ConflictSide {
    pub fn name(self) -> &'static str {
        match self {
            ConflictSide::Stored => "stored",
            ConflictSide::Incoming => "incoming",
        }
    }

    /// The side named `s`.
    pub fn parse(s: &str) -> Option<ConflictSide> {
        [ConflictSide::Stored, ConflictSide::Incoming].into_iter().find(|k| k.name() == s)
    }
}

/// On the server, the receiver's side is the stored one.
impl From<ferry_core::strategy::Side> for ConflictSide {
    fn from(s: ferry_core::strategy::Side) -> Self {
        match s {
            ferry_core::strategy::Side::Ours => ConflictSide::Stored,
            ferry_core::strategy::Side::Theirs => ConflictSide::Incoming,
        }
    }
}

macro_rules! display_by_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}
display_by_name!(ConflictKind, Strategy, ConflictSide);

/// `POST /v1/admin/conflicts/{id}/resolve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Which version of the conflict's fields to keep.
    #[serde(rename = "use")]
    pub keep: ConflictSide,
}

/// `POST /v1/admin/devices/{id}/revoke`: the devices revoked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeResponse {
    pub revoked: Vec<String>,
}

/// One device, as `GET /v1/admin/devices` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub user_name: String,
    /// Its tokens may use the admin endpoints.
    pub admin: bool,
    /// Its role, for tables with `conflict = "authoritative"`.
    pub role: Option<String>,
    pub created_at: String,
    /// When it last made a request, to the minute; `None` before its first.
    pub last_seen: Option<String>,
    /// When it was revoked (its tokens no longer work); `None` while it is live.
    pub revoked_at: Option<String>,
}

/// `GET /v1/admin/devices`: the devices, by user name, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesResponse {
    pub devices: Vec<DeviceRecord>,
}

/// `GET /v1/admin/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerStatus {
    pub files: FilesStatus,
}

/// The file section of `GET /v1/admin/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesStatus {
    /// Where verified files are kept.
    pub store: String,
    pub stored: u64,
    pub stored_bytes: u64,
    /// Distinct hashes that file columns hold.
    pub referenced: u64,
    /// Of those, how many the store does not hold yet (their devices have not uploaded them).
    pub missing: u64,
    /// Interrupted or running uploads, and the bytes they still lack.
    pub uploading: u64,
    pub uploading_bytes_pending: u64,
    /// Transfers (uploads and downloads) running now, and the most at once since start.
    pub in_flight: u64,
    pub peak_in_flight: u64,
    pub uploads_completed: u64,
    pub downloads_completed: u64,
    /// Uploads whose bytes did not hash to their name, refused since start.
    pub uploads_refused: u64,
    pub max_upload_bytes: u64,
}
