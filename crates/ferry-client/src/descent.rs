//! The walk down two digest trees, one held here and the other on a server, asked a level at
//! a time (`ferry_core::digest::Descent`), within the server's limit per request. A device
//! catching up by difference and a server checking a peer's integrity both walk it.

use std::future::Future;

use ferry_core::digest::{self, Descent, Difference, Entry, Node, Tree};
use ferry_protocol::integrity::MAX_DIGEST_ASK;
use ferry_protocol::{DigestNode, DigestRow};

use crate::error::{Error, Result};

/// What one request of the walk returned: the summaries of the nodes asked for, in order,
/// and the rows under the nodes asked to be listed.
pub struct Answer {
    pub nodes: Vec<DigestNode>,
    pub rows: Vec<DigestRow>,
}

/// Walks down from the root, whose summary on the server is `root`, asking `ask(nodes, rows)`
/// for what the walk needs next; returns the rows that differ.
///
/// # Errors
/// What `ask` fails with, or an answer that does not answer what was asked.
pub async fn descend<F, Fut>(here: &Tree, root: Node, mut ask: F) -> Result<Vec<Difference>>
where
    F: FnMut(Vec<String>, Vec<String>) -> Fut,
    Fut: Future<Output = Result<Answer>>,
{
    let mut descent = Descent::start(here, root);
    while !descent.done() {
        let next = descent.ask();
        let mut nodes = Vec::with_capacity(next.nodes.len());
        let mut rows = Vec::new();
        let (mut asked_nodes, mut asked_rows) = (next.nodes.as_slice(), next.rows.as_slice());
        while !asked_nodes.is_empty() || !asked_rows.is_empty() {
            let (n, r) = (asked_nodes.len().min(MAX_DIGEST_ASK), asked_rows.len().min(MAX_DIGEST_ASK));
            let answer = ask(asked_nodes[..n].to_vec(), asked_rows[..r].to_vec()).await?;
            for p in &asked_nodes[..n] {
                nodes.push((p.clone(), node_of(&answer.nodes, p)?));
            }
            for row in answer.rows {
                let version = digest::parse_hex(&row.version).ok_or_else(|| unreadable(&row.version))?;
                rows.push(Entry::new(row.key, version, row.deleted));
            }
            (asked_nodes, asked_rows) = (&asked_nodes[n..], &asked_rows[r..]);
        }
        descent.answer(here, &nodes, &rows).map_err(|e| unreadable(&e))?;
    }
    Ok(descent.differences)
}

/// The summary of `prefix` among a server's answers.
///
/// # Errors
/// The answer lacks it, or its digest is not 16 hex digits.
pub fn node_of(nodes: &[DigestNode], prefix: &str) -> Result<Node> {
    let n = nodes.iter().find(|n| n.prefix == prefix).ok_or_else(|| unreadable(&format!("no node '{prefix}'")))?;
    let digest = digest::parse_hex(&n.digest).ok_or_else(|| unreadable(&n.digest))?;
    Ok(Node { count: n.count, digest })
}

fn unreadable(what: &str) -> Error {
    Error::Protocol(format!("the server's digest answer is unreadable: {what}"))
}
