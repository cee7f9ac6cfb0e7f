//! The S3-compatible server for the file store tests: moto's server mode (PyPI), installed on
//! first use into a virtual environment under the target directory and started on 127.0.0.1.
//!
//! The tests learn its address from `FERRY_TEST_S3_ENDPOINT` and make their own buckets. The
//! server script is the one the tests use when they start moto themselves
//! (`crates/ferry-files/tests/it/moto_server.py`); it exits when its standard input closes,
//! so it goes away with this process even when this process is killed.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The variable the S3 tests read; an endpoint already set is used as it is.
pub const ENDPOINT_VAR: &str = "FERRY_TEST_S3_ENDPOINT";

const SCRIPT: &str = include_str!("../../crates/ferry-files/tests/it/moto_server.py");

/// What pip installs: moto with its server dependencies (Flask, Werkzeug), major version 5.
const REQUIREMENT: &str = "moto[server]>=5,<6";

/// A running moto server, stopped on drop.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto for the tests, unless [`ENDPOINT_VAR`] already names a server (`None`).
///
/// Uses the first Python that has moto: the environment this command installed before, then
/// `python3`. When neither has it, installs it into `TARGET/test-tools/moto` (once; about
/// half a minute on a clean machine).
pub fn start() -> Result<Option<Moto>> {
    if std::env::var(ENDPOINT_VAR).is_ok_and(|v| !v.is_empty()) {
        return Ok(None);
    }
    let venv = target_dir().join("test-tools/moto");
    let venv_python = venv.join("bin/python");
    let mut missing = Vec::new();
    for python in [venv_python.clone(), PathBuf::from("python3")] {
        match spawn(&python)? {
            Ok(moto) => return Ok(Some(moto)),
            Err(why) => missing.push(format!("{}: {why}", python.display())),
        }
    }
    install(&venv).with_context(|| format!("no Python here has moto ({})", missing.join("; ")))?;
    match spawn(&venv_python)? {
        Ok(moto) => Ok(Some(moto)),
        Err(why) => bail!("moto was installed into {} but does not start: {why}", venv.display()),
    }
}

/// Cargo's target directory (where the benchmarks' results go too).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Runs the server script with `python`. The outer error is a failure to run at all; the inner
/// one is a Python that cannot start moto (usually: not installed), so the next may be tried.
fn spawn(python: &Path) -> Result<Result<Moto, String>> {
    let mut child = match Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Ok(Err(format!("cannot run it ({e})"))),
    };
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).context("reading from moto")?;
    let mut stderr = child.stderr.take().expect("piped");
    let Some(port) = line.trim().strip_prefix("listening on ") else {
        let mut why = String::new();
        let _ = stderr.read_to_string(&mut why);
        let _ = child.wait();
        return Ok(Err(why.trim().to_owned()));
    };
    // Moto's own errors belong in the test output; draining the pipe also keeps it from
    // blocking on a full one.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::stderr()));
    let endpoint = format!("http://127.0.0.1:{port}");
    eprintln!("moto (S3 for the file store tests) listening at {endpoint}");
    Ok(Ok(Moto { endpoint, child }))
}

fn install(venv: &Path) -> Result<()> {
    let started = Instant::now();
    eprintln!("installing {REQUIREMENT} into {} (once) ...", venv.display());
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(venv)).context(
            "cannot create a Python virtual environment; cargo xtask test needs python3 with its venv module \
             (Debian: apt-get install python3 python3-venv)",
        )?;
    }
    run(Command::new(venv.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        REQUIREMENT,
    ]))
    .with_context(|| format!("cannot install {REQUIREMENT} from PyPI"))?;
    eprintln!("installed moto in {:.0?}", started.elapsed());
    Ok(())
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
