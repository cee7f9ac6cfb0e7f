//! Developer chores: `cargo xtask test` (everything CI runs) and `cargo xtask bench`.
//!
//! The test command starts whatever the tests need by itself; nothing has to be set up
//! by hand on a fresh machine.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const HELP: &str = "usage: cargo xtask <command>

commands:
  test            run every test of the workspace (what CI runs)
  bench [--quick] run the benchmarks; figures go to stdout (copy them to BENCHMARKS.md)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown xtask command '{other}'\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    let mut args = vec!["test", "--workspace", "--locked"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

fn bench(extra: &[String]) -> Result<()> {
    for a in extra {
        if a != "--quick" {
            bail!("unknown bench option '{a}'; the only option is --quick");
        }
    }
    let mut args = vec!["bench", "--locked", "-p", "ferry", "--bench", "sync", "--"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}
