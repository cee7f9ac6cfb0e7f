//! Invariants of the code that a compiler does not check, checked before the tests
//! (`cargo xtask check`, and first thing in `cargo xtask test`). ARCHITECTURE.md states them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The pure crates: they decide, and do no I/O.
const PURE: [&str; 2] = ["ferry-core", "ferry-policy"];

/// Crates that do I/O (files, sockets, the system's clock or randomness).
const IO_CRATES: [&str; 16] = [
    "rusqlite",
    "libsqlite3-sys",
    "tokio",
    "mio",
    "socket2",
    "reqwest",
    "hyper",
    "axum",
    "tokio-postgres",
    "postgres-protocol",
    "object_store",
    "tungstenite",
    "getrandom",
    "rustix",
    "tempfile",
    "libc",
];

/// Paths in the pure crates' sources that reach the outside world.
const IO_PATHS: [&str; 8] = [
    "std::fs",
    "std::net",
    "std::env",
    "std::process",
    "std::io::stdin",
    "SystemTime",
    "Instant::now",
    "thread::sleep",
];

fn root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The pure crates depend on no I/O crate (their normal dependencies, transitively) and
/// name no I/O in their sources (tests excepted).
fn pure_crates_do_no_io(problems: &mut Vec<String>) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for krate in PURE {
        let out = Command::new(&cargo)
            .args(["tree", "--locked", "-p", krate, "-e", "normal", "--prefix", "none"])
            .current_dir(root())
            .output()
            .with_context(|| format!("cannot run {cargo} tree"))?;
        if !out.status.success() {
            bail!("cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if IO_CRATES.contains(&name) {
                problems.push(format!("{krate} depends on {name}, a crate that does I/O; it must stay pure"));
            }
        }
        let mut files = Vec::new();
        rust_files(&root().join("crates").join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if let Some(p) = IO_PATHS.iter().find(|p| code.contains(*p)) {
                    problems.push(format!(
                        "{}:{}: {krate} uses {p}; time and I/O come in as arguments",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Serde types of the wire are defined in ferry-protocol only: the server and the client's
/// HTTP side use them, and define none of their own (the server's config file excepted).
fn wire_types_live_in_the_protocol(problems: &mut Vec<String>) -> Result<()> {
    let mut files = Vec::new();
    rust_files(&root().join("crates/ferry-server/src"), &mut files);
    rust_files(&root().join("crates/ferry-peer/src"), &mut files);
    files.push(root().join("crates/ferry-client/src/remote.rs"));
    for file in files {
        if file.ends_with("config.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[derive(")
                && (line.contains("Serialize") || line.contains("Deserialize"))
            {
                problems.push(format!(
                    "{}:{}: a serde type outside ferry-protocol; wire types belong in ferry-protocol",
                    file.display(),
                    n + 1
                ));
            }
        }
    }
    Ok(())
}

/// The client makes HTTP calls in `remote.rs` only: no other file of it, nor the peer link
/// (which calls the other server through `ferry_client::Remote`), builds a client.
fn http_calls_go_through_remote(problems: &mut Vec<String>) -> Result<()> {
    let mut files = Vec::new();
    rust_files(&root().join("crates/ferry-client/src"), &mut files);
    rust_files(&root().join("crates/ferry-peer/src"), &mut files);
    for file in files.iter().filter(|f| !f.ends_with("remote.rs")) {
        let text = std::fs::read_to_string(file)?;
        for (n, line) in text.lines().enumerate() {
            if line.contains("reqwest::Client") {
                problems.push(format!("{}:{}: an HTTP client outside ferry-client's remote.rs", file.display(), n + 1));
            }
        }
    }
    Ok(())
}

pub fn run() -> Result<()> {
    let mut problems = Vec::new();
    pure_crates_do_no_io(&mut problems)?;
    wire_types_live_in_the_protocol(&mut problems)?;
    http_calls_go_through_remote(&mut problems)?;
    if !problems.is_empty() {
        bail!("{} invariant(s) broken:\n  {}", problems.len(), problems.join("\n  "));
    }
    eprintln!(
        "invariants hold: {} do no I/O; wire types live in ferry-protocol; the client's and the peer link's HTTP calls in remote.rs",
        PURE.join(" and ")
    );
    Ok(())
}
