//! `ferry-client`: keeps an application's SQLite file in sync with a Ferry server.
//!
//! - `capture`: the plain-SQL triggers that record every local write into the outbox.
//! - [`replica`]: the file and its bookkeeping; stamping, pending rows, applying pulls.
//! - [`remote`]: the HTTP calls, one per protocol endpoint.
//! - [`sync`]: one whole sync (schema, push, pull).
//! - [`files`]: the files rows point to, and the worker that moves them.
//!
//! It does not run a server, and it never holds an SQLite transaction open across a
//! network call.

mod capture;
pub mod descent;
pub mod engine;
pub mod error;
pub mod files;
pub mod queue;
pub mod remote;
pub mod replica;
pub mod sync;

pub use error::{Error, Result};
pub use remote::{News, Remote, Stream};
pub use replica::{ClientResolver, LocalConflict, Refused, Replica, ResolveFn, ResolveInput, Resolvers, Status};
pub use sync::{Direction, Progress, SyncOptions, SyncReport, hydrate, seed, sync};
