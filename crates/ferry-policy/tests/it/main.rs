//! The sync policy's tests: properties of its decisions.

mod props;
