//! What both benchmarks share: a real `ferry serve` on a free loopback port.

use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Starts `ferry serve -c ferry.toml` in `dir`; returns the process and its URL.
pub fn serve(dir: &Path) -> (Child, String) {
    let mut server = Command::new(FERRY)
        .args(["serve", "-c", "ferry.toml", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    (server, url)
}
