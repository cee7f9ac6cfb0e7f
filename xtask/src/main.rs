//! Developer chores: `cargo xtask test` (everything CI runs) and `cargo xtask bench`.
//!
//! The test command starts whatever the tests need by itself; nothing has to be set up
//! by hand on a fresh machine. PostgreSQL clusters are started by the tests themselves
//! (`ferry-pgtemp`); the S3-compatible server for the file stores is started here (`moto`).

mod checks;
mod moto;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const HELP: &str = "usage: cargo xtask <command>

commands:
  check           the invariants a compiler does not check (ferry-core and ferry-policy do
                  no I/O; serde wire types live in ferry-protocol); also the first step of test
  test            run every test of the workspace (what CI runs); starts moto (S3) for the
                  file store tests, installing it under target/test-tools on first use; then,
                  unless test arguments were given, the benchmarks' smoke run (bench --quick)
  bench [--quick] run the benchmarks (sync, realtime, files, changes, sharing, peering, integrity, full_sync, catch_up); each prints its tables,
                  and the run ends with one summary table of every scenario (figure, baseline,
                  ratio, SPEC target, command, machine), also written to
                  target/tmp/bench-results/summary.md (copy it to BENCHMARKS.md)
  sim [--runs N | --seed N]
                  the long mode of the deterministic simulations (merge, and every conflict
                  strategy): N seeds each (default 20000) in release mode, or replay one seed
  vectors         write the sync policy's decisions as JSON test vectors (vectors/*.json) for
                  other implementations; the tests check the files against the policy
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("sim") => sim(&args[1..]),
        Some("vectors") => vectors(&args[1..]),
        Some("check") => checks::run(),
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
    cargo_with_env(args, &[])
}

fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("$ {}cargo {}", shown.concat(), args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    checks::run()?;
    ensure_chromium()?;
    let mut args = vec!["test", "--workspace", "--locked"];
    args.extend(extra.iter().map(String::as_str));
    // Stopped when `moto` drops, whether the tests passed or not.
    let moto = moto::start().context("cannot start the S3-compatible server for the file store tests")?;
    let env: Vec<(&str, &str)> = moto.iter().map(|m| (moto::ENDPOINT_VAR, m.endpoint.as_str())).collect();
    cargo_with_env(&args, &env)?;
    drop(moto);
    if extra.is_empty() {
        // Every benchmark at a small size, so that CI sees them run (their own checks
        // included: a hydrate that comes back short fails).
        eprintln!("benchmark smoke run:");
        bench(&["--quick".to_owned()])?;
    }
    Ok(())
}

/// The dashboard's tests drive a real Chromium (`crates/ferry/tests/it/chromium.rs`): Debian's
/// package is installed when it is missing, without asking, as CI runs as root with no stdin.
fn ensure_chromium() -> Result<()> {
    let given = std::env::var_os("FERRY_CHROMIUM").is_some_and(|p| std::path::Path::new(&p).exists());
    if given || std::path::Path::new("/usr/bin/chromium").exists() {
        return Ok(());
    }
    let apt_get = |args: &[&str]| {
        eprintln!("$ DEBIAN_FRONTEND=noninteractive apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .status();
        status.is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "chromium"];
    // A fresh image often has no package lists yet: fetched once, then tried again.
    if apt_get(&install) || (apt_get(&["update"]) && apt_get(&install)) {
        return Ok(());
    }
    bail!(
        "chromium is missing (no /usr/bin/chromium, FERRY_CHROMIUM unset or not a file) and apt-get could not \
         install it; install it as root with `apt-get install -y chromium`, or set FERRY_CHROMIUM to a Chromium binary"
    )
}

fn sim(extra: &[String]) -> Result<()> {
    let (var, value) = match extra {
        [] => ("FERRY_SIM_RUNS", "20000"),
        [flag, n] if flag == "--runs" || flag == "--seed" => {
            n.parse::<u64>().map_err(|_| anyhow::anyhow!("{flag} '{n}' is not a number"))?;
            (if flag == "--runs" { "FERRY_SIM_RUNS" } else { "FERRY_SIM_SEED" }, n.as_str())
        }
        _ => bail!("usage: cargo xtask sim [--runs N | --seed N]"),
    };
    eprintln!("{var}={value}");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The merge's simulation lives with the core, the whole sync loop's with the policy.
    let args = [
        "test",
        "--release",
        "--locked",
        "-p",
        "ferry-core",
        "-p",
        "ferry-policy",
        "--test",
        "it",
        "--",
        "--nocapture",
    ];
    eprintln!("$ cargo {}", args.join(" "));
    let status =
        Command::new(&cargo).args(args).env(var, value).status().with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!(
            "the simulation failed ({status}); the failing seed is printed above (cargo xtask sim --seed N replays it, FERRY_SIM_DEBUG=1 prints every decision)"
        );
    }
    Ok(())
}

/// Writes the sync policy's test vectors (`vectors/*.json`) from its cases; `cargo xtask
/// test` checks that the files still hold what the policy decides.
fn vectors(extra: &[String]) -> Result<()> {
    if let Some(a) = extra.first() {
        bail!("unknown vectors option '{a}'; `cargo xtask vectors` takes none");
    }
    cargo_with_env(
        &["test", "--locked", "-p", "ferry-policy", "--test", "it", "vectors::", "--", "--nocapture"],
        &[("FERRY_WRITE_VECTORS", "1")],
    )?;
    eprintln!("vectors written to vectors/; review them with `git diff vectors/`");
    Ok(())
}

fn bench(extra: &[String]) -> Result<()> {
    for a in extra {
        if a != "--quick" {
            bail!("unknown bench option '{a}'; the only option is --quick");
        }
    }
    // Each benchmark appends its scenarios here; the whole run is printed as one table.
    let summary = moto::target_dir().join("tmp/bench-results/summary.tsv");
    let _ = std::fs::remove_file(&summary);
    for bench in ["sync", "realtime", "files", "changes", "sharing", "peering", "integrity", "full_sync", "catch_up"] {
        let mut args = vec!["bench", "--locked", "-p", "ferry", "--bench", bench, "--"];
        args.extend(extra.iter().map(String::as_str));
        cargo(&args)?;
    }
    let text = std::fs::read_to_string(&summary).with_context(|| format!("reading {}", summary.display()))?;
    let mut table = String::from(
        "| scenario | Ferry | baseline (same run) | ratio | SPEC target | command |\n|---|---|---|---|---|---|\n",
    );
    let mut machine = String::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let [scenario, figure, baseline, ratio, target, command, m] = f[..] {
            table.push_str(&format!("| {scenario} | {figure} | {baseline} | {ratio} | {target} | `{command}` |\n"));
            machine = m.to_owned();
        }
    }
    let out = format!(
        "Summary of `cargo xtask bench{}` (git {}), machine: {machine}\n\n{table}",
        if extra.is_empty() { "" } else { " --quick" },
        git_head().unwrap_or_else(|| "unknown".into())
    );
    let md = summary.with_extension("md");
    std::fs::write(&md, &out).with_context(|| format!("writing {}", md.display()))?;
    println!("\n{out}\n(written to {})", md.display());
    Ok(())
}

/// The commit being measured, with `+dirty` when the tree has changes.
fn git_head() -> Option<String> {
    let head = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    let dirty = Command::new("git").args(["status", "--porcelain"]).output().ok()?;
    let head = String::from_utf8(head.stdout).ok()?.trim().to_owned();
    Some(if dirty.stdout.is_empty() { head } else { format!("{head}+dirty") })
}
