//! `ferry`: the one binary. `serve` runs the sync server; `user` and `token` manage who
//! may sync; `sync` and `status` work on a device's replica file.
//!
//! - [`cli`]: the command line (clap), every flag and its help text.
//! - [`commands`]: one module per command, doing what it says and printing the result.

mod cli;
mod commands;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => commands::serve::run(args).await,
        Command::User { command } => commands::user::run(command).await,
        Command::Token { command } => commands::token::run(command).await,
        Command::Admin { command } => commands::admin::run(command).await,
        Command::Device { command } => commands::device::run(command).await,
        Command::Peer { command } => commands::peer::run(command).await,
        Command::Compact(args) => commands::compact::run(args).await,
        Command::Integrity(args) => commands::integrity::run(args).await,
        Command::FullSync { command } => commands::full_sync::run(command).await,
        Command::Sync(args) => commands::sync::run(args).await,
        Command::Status(args) => commands::status::run(args),
        Command::Queue(args) => commands::queue::run(args),
        Command::Conflicts { command } => commands::conflicts::run(command).await,
        Command::File { command } => commands::file::run(command).await,
        Command::ServerStatus(args) => commands::server_status::run(args).await,
        Command::Audit(args) => commands::audit::run(args).await,
    }
}
