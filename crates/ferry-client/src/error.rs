//! Client errors, grouped by who is at fault.

use ferry_protocol::ErrorCode;

/// Why a sync (or a replica operation) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the token (401).
    #[error("unauthorized (401): {0}")]
    Unauthorized(String),
    /// The server refused a request as invalid or forbidden (4xx other than 401): its
    /// status, its code (one of [`ErrorCode`]'s names, or a newer server's), its message, and
    /// where a resumable upload must resume (409 `upload_offset`).
    #[error("server refused the request ({status}): {message}")]
    Refused { status: u16, code: String, message: String, offset: Option<u64> },
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
    /// What this sync was asked to do cannot work (a table in `--tables` that the server's
    /// schema does not have).
    #[error("{0}")]
    Config(String),
    /// The replica file itself.
    #[error("replica: {0}")]
    Local(String),
    /// Another program holds the replica file locked; trying again later works.
    #[error("replica: {0}")]
    Busy(String),
}

impl Error {
    /// The refusal's code, when it is one this version knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Unauthorized(_) => Some(ErrorCode::Unauthorized),
            Error::Refused { code, .. } => ErrorCode::parse(code),
            _ => None,
        }
    }

    /// Whether trying again cannot help until a person acts: a token the server refuses (a
    /// revoked device), a replica of another user or server, a table the server does not
    /// have, a replica file that is not one. Anything else (an unreachable server, a locked
    /// file, a schema that changed during the sync) may pass later.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Unauthorized(_) | Error::Mismatch(_) | Error::Config(_) | Error::Local(_))
    }
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
