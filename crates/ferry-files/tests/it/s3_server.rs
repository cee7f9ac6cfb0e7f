//! The S3-compatible server the S3 tests run against.
//!
//! `cargo xtask test` starts moto and passes its address in `FERRY_TEST_S3_ENDPOINT`. Without
//! that variable (a developer running `cargo test -p ferry-files`) the tests start moto
//! themselves from the Python that has it: the environment `cargo xtask test` installs under
//! the target directory, or `python3`. Without moto anywhere they fail and say how to get it;
//! they never skip, since a skipped S3 suite looks exactly like a passing one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The moto script, shared with `cargo xtask test`.
const MOTO_SCRIPT: &str = include_str!("moto_server.py");

struct Server {
    endpoint: String,
    /// Held for the life of the test process: moto exits when its stdin closes, which is
    /// when this process exits, however it exits.
    _moto: Option<Child>,
}

/// The endpoint URL, e.g. `http://127.0.0.1:41234`.
///
/// # Panics
/// When no endpoint is configured and moto cannot be started, with the fix in the message.
pub fn endpoint() -> &'static str {
    static SERVER: OnceLock<Server> = OnceLock::new();
    &SERVER
        .get_or_init(|| match std::env::var("FERRY_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => Server { endpoint, _moto: None },
            _ => start_moto().unwrap_or_else(|why| {
                panic!(
                    "the S3 tests need an S3-compatible server and none could be started: {why}\n\
                     run `cargo xtask test` (it installs moto and starts it), or install moto \
                     (`pip install 'moto[server]'`), or set FERRY_TEST_S3_ENDPOINT=http://127.0.0.1:PORT \
                     to a running S3-compatible server that accepts any credentials"
                )
            }),
        })
        .endpoint
}

/// Pythons that may have moto, best first: the environment `cargo xtask test` makes, then the
/// system's.
fn pythons() -> Vec<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let venv = target.join("test-tools/moto/bin/python");
    let mut found: Vec<PathBuf> = venv.exists().then_some(venv).into_iter().collect();
    found.push("python3".into());
    found
}

fn start_moto() -> Result<Server, String> {
    let mut failures = Vec::new();
    for python in pythons() {
        match spawn(&python) {
            Ok(server) => return Ok(server),
            Err(why) => failures.push(format!("{}: {why}", python.display())),
        }
    }
    Err(failures.join("; "))
}

fn spawn(python: &PathBuf) -> Result<Server, String> {
    let mut child = Command::new(python)
        .args(["-c", MOTO_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it ({e})"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).map_err(|e| e.to_string())?;
    let mut stderr = child.stderr.take().expect("piped");
    let Some(port) = line.trim().strip_prefix("listening on ") else {
        let mut why = String::new();
        let _ = stderr.read_to_string(&mut why);
        let _ = child.wait();
        return Err(why.trim().to_owned());
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    // Moto's errors go to the test output; draining the pipe also keeps moto from blocking
    // on a full one.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::stderr()));
    eprintln!("started moto at {endpoint} ({})", python.display());
    Ok(Server { endpoint, _moto: Some(child) })
}

/// Creates a bucket with a name no other test (or test process) uses, and returns the name.
///
/// A raw HTTP/1.1 request, since moto does not check signatures and the crate under test has
/// no call for creating buckets (the server never creates them).
pub fn new_bucket() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let bucket = format!("ferry-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let host = endpoint().strip_prefix("http://").expect("the test endpoint is http://host:port");
    let mut conn = TcpStream::connect(host).unwrap_or_else(|e| panic!("cannot connect to {host}: {e}"));
    write!(conn, "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "creating bucket {bucket} at {host} failed:\n{answer}");
    bucket
}
