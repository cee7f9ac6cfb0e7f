//! What a replica does with what happened, decided without I/O.
//!
//! A replica (the SQLite one in `ferry-client`, and any other executor: a server peering with
//! another, a browser) reads its bookkeeping, asks this crate what to do, and carries the
//! answer out in its own transaction. Nothing here touches a file, a socket or the system
//! clock: time comes in as an argument (`now_ms`) and a [`ferry_core::Clock`] is a value the
//! caller keeps.
//!
//! - [`stamp`]: captured operations on a row become its new state and change record.
//! - [`pull`]: a pulled row meets what the replica holds of it (nothing, a change refused as
//!   stale, a row with or without a change not pushed yet).
//! - [`push`]: the server's answer to a pushed batch, and a refused batch split until the rows
//!   at fault are found.
//! - [`settle`]: a person settles a change the server refused as stale.
//!
//! The same decisions are written as JSON test vectors (`cargo xtask vectors`, into
//! `vectors/`) so that another implementation can be held to them.

pub mod pull;
pub mod push;
pub mod settle;
pub mod stamp;
