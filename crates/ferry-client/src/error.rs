//! Client errors, grouped by who is at fault.

/// Why a sync (or a replica operation) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the token (401).
    #[error("unauthorized (401): {0}")]
    Unauthorized(String),
    /// The server refused a request as invalid or forbidden (4xx other than 401).
    #[error("server refused the request ({status}): {message}")]
    Refused { status: u16, code: String, message: String },
    /// The server could not be reached or failed (5xx, connection errors).
    #[error("{0}")]
    Unreachable(String),
    /// The server answered with something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The schema cannot be installed in this replica.
    #[error("schema: {0}")]
    Schema(String),
    /// This replica belongs to another user or server.
    #[error("{0}")]
    Mismatch(String),
    /// The replica file itself.
    #[error("replica: {0}")]
    Local(String),
    /// Another program holds the replica file locked; trying again later works.
    #[error("replica: {0}")]
    Busy(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => Error::Busy(e.to_string()),
            _ => Error::Local(e.to_string()),
        }
    }
}

impl From<ferry_sqlite::Error> for Error {
    fn from(e: ferry_sqlite::Error) -> Self {
        match e {
            ferry_sqlite::Error::Sqlite(e) => e.into(),
            other => Error::Local(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
