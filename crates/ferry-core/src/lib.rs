//! Ferry's pure core: hybrid logical clocks, the row merge rule, values, and the schema
//! (parsing, canonical text, value checks). The stores write their own DDL from it.
//!
//! Nothing here does I/O: no SQLite, no PostgreSQL, no sockets, no system clock. Time
//! comes in as an argument. That is what lets the tests replay any interleaving of
//! changes between replicas, and it keeps the rules readable in one place.

pub mod digest;
pub mod duration;
pub mod hlc;
pub mod limits;
pub mod row;
pub mod rules;
pub mod schema;
pub mod strategy;
pub mod value;

pub use hlc::{Clock, ClockError, Hlc, SiteId};
pub use row::{ColumnConflict, MergeReport, RowState, Stamped};
pub use value::{Value, from_hex, shown, to_hex};
