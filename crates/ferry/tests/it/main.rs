//! End-to-end tests: the real `ferry` binary, real SQLite files, real HTTP over loopback,
//! real processes killed with SIGKILL. Each test gets its own directory and server.

mod browser;
mod capture;
mod chromium;
mod dashboard;
mod door;
mod errors;
mod faults;
mod files;
mod full_sync;
mod http;
mod integrity;
mod monitoring;
mod openapi;
mod peering;
mod postgres;
mod proxy;
mod queue;
mod rest;
mod sharing;
mod support;
mod sync;
mod watch;

pub use support::*;
