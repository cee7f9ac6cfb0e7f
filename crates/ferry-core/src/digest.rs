//! Order-independent digests of a table's rows, and the tree two stores compare to find the
//! rows that differ without sending them all (integrity checks, catching up by difference).
//!
//! Each row is placed by a 64-bit hash of its key and summarised by a 64-bit digest of its
//! key and version (every register's clock and whether it exists). A set of rows is
//! summarised by its count and the wrapping sum of its digests: the order rows were read in
//! does not matter, and two sets with equal sums hold the same versions (up to a chance of
//! 2⁻⁶⁴ per differing set).
//!
//! The rows are the leaves of a tree with sixteen children per node: a node is a prefix of
//! key hashes written in hex (`""` is the root, `"a"` one sixteenth, `"a3"` one 256th). Two
//! sides compare the root, then the children of the nodes that differ, down to nodes small
//! enough to list; what is exchanged grows with the number of differing rows times the depth,
//! not with the table ([`Descent`]).

use std::collections::BTreeMap;

use crate::Hlc;

/// Rows a node may hold on each side to be listed instead of split further.
pub const LEAF_ROWS: u64 = 32;

/// The longest prefix (hex digits of a 64-bit hash).
pub const MAX_PREFIX: usize = 16;

/// Where a key sits in the tree: a hash of its text.
pub fn key_hash(key: &str) -> u64 {
    mix(fnv(0xcbf2_9ce4_8422_2325, key.as_bytes()))
}

/// The digest of one version of a row: its key, whether it exists and when that was decided,
/// and the clock of each column that was ever written (`cols`, any order of distinct names).
///
/// Each register adds a mixed term of its name and clock, so the columns' order does not
/// matter and nothing is sorted or formatted: a table of a million rows is digested in well
/// under a second.
pub fn row_digest<'a>(key: &str, alive: bool, exists: Hlc, cols: impl Iterator<Item = (&'a str, Hlc)>) -> u64 {
    let mut sum = mix(fnv(0x6c62_272e_07bb_0142, key.as_bytes()) ^ u64::from(alive)).wrapping_add(register(0, exists));
    for (name, at) in cols {
        sum = sum.wrapping_add(register(fnv(0xcbf2_9ce4_8422_2325, name.as_bytes()), at));
    }
    mix(sum)
}

/// One register's term: its name's hash (0 for the existence register) and its clock.
fn register(name: u64, at: Hlc) -> u64 {
    let time = (at.wall_ms() << 16) | u64::from(at.counter());
    mix(name.wrapping_add(mix(time ^ 0x9e37_79b9_7f4a_7c15)).wrapping_add(mix(at.site().0 ^ 0xbf58_476d_1ce4_e5b9)))
}

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A finalizer that spreads every input bit over the output (MurmurHash3's), so that a
/// hash's leading digits, which place a key in the tree, are as well spread as its last.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One row as the tree holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: u64,
    pub digest: u64,
    /// The row is a tombstone.
    pub deleted: bool,
    pub key: String,
}

impl Entry {
    pub fn new(key: String, digest: u64, deleted: bool) -> Entry {
        Entry { hash: key_hash(&key), digest, deleted, key }
    }
}

/// What a node of the tree summarises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub count: u64,
    pub digest: u64,
}

/// A table's rows ordered by key hash: any node's summary is a binary search away.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    entries: Vec<Entry>,
}

/// A prefix that is not 0 to 16 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a digest prefix; a prefix is 0 to 16 hex digits (lowercase), e.g. \"\" for the root or \"a3\"")]
pub struct BadPrefix(pub String);

/// The range of key hashes under `prefix`.
pub fn prefix_range(prefix: &str) -> Result<std::ops::RangeInclusive<u64>, BadPrefix> {
    let bad = || BadPrefix(crate::shown(prefix).into_owned());
    if prefix.len() > MAX_PREFIX || !prefix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad());
    }
    if prefix.is_empty() {
        return Ok(0..=u64::MAX);
    }
    let value = u64::from_str_radix(prefix, 16).map_err(|_| bad())?;
    let free = 64 - 4 * prefix.len() as u32;
    let low = value.checked_shl(free).unwrap_or(0);
    let high = low | if free == 64 { u64::MAX } else { (1u64 << free) - 1 };
    Ok(low..=high)
}

/// The sixteen children of `prefix` (none below the longest prefix).
pub fn children(prefix: &str) -> Vec<String> {
    if prefix.len() >= MAX_PREFIX {
        return Vec::new();
    }
    "0123456789abcdef".chars().map(|c| format!("{prefix}{c}")).collect()
}

impl Tree {
    pub fn new(mut entries: Vec<Entry>) -> Tree {
        entries.sort_unstable_by(|a, b| a.hash.cmp(&b.hash).then_with(|| a.key.cmp(&b.key)));
        Tree { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The rows under `prefix`.
    ///
    /// # Errors
    /// A prefix that is not 0 to 16 lowercase hex digits.
    pub fn rows(&self, prefix: &str) -> Result<&[Entry], BadPrefix> {
        let range = prefix_range(prefix)?;
        let start = self.entries.partition_point(|e| e.hash < *range.start());
        let end = self.entries.partition_point(|e| e.hash <= *range.end());
        Ok(&self.entries[start..end])
    }

    /// The summary of the rows under `prefix`.
    ///
    /// # Errors
    /// As [`Tree::rows`].
    pub fn node(&self, prefix: &str) -> Result<Node, BadPrefix> {
        let rows = self.rows(prefix)?;
        Ok(Node { count: rows.len() as u64, digest: rows.iter().fold(0u64, |d, e| d.wrapping_add(e.digest)) })
    }
}

/// How one row differs between here and there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Both sides hold the row, in different versions.
    Changed { here: Entry, there: Entry },
    /// Only this side holds the row (alive or a tombstone).
    OnlyHere(Entry),
    /// Only the other side holds the row.
    OnlyThere(Entry),
}

impl Difference {
    pub fn key(&self) -> &str {
        match self {
            Difference::Changed { here, .. } | Difference::OnlyHere(here) => &here.key,
            Difference::OnlyThere(there) => &there.key,
        }
    }
}

/// Compares a node's rows as both sides listed them.
pub fn compare_rows(here: &[Entry], there: &[Entry]) -> Vec<Difference> {
    let theirs: BTreeMap<&str, &Entry> = there.iter().map(|e| (e.key.as_str(), e)).collect();
    let ours: BTreeMap<&str, &Entry> = here.iter().map(|e| (e.key.as_str(), e)).collect();
    let mut out = Vec::new();
    for (k, e) in &ours {
        match theirs.get(k) {
            None => out.push(Difference::OnlyHere((*e).clone())),
            Some(t) if t.digest != e.digest => {
                out.push(Difference::Changed { here: (*e).clone(), there: (*t).clone() });
            }
            Some(_) => {}
        }
    }
    for (k, t) in &theirs {
        if !ours.contains_key(k) {
            out.push(Difference::OnlyThere((*t).clone()));
        }
    }
    out.sort_by(|a, b| a.key().cmp(b.key()));
    out
}

/// The walk down two trees, one side held here and the other asked for node summaries and
/// row lists a level at a time: [`Descent::ask`] says what to ask next, [`Descent::answer`]
/// takes the answers, until [`Descent::done`]. Pure: the caller does the asking.
#[derive(Debug)]
pub struct Descent {
    /// Nodes to summarise on the other side next.
    nodes: Vec<String>,
    /// Nodes whose rows the other side lists next.
    lists: Vec<String>,
    /// Rows found to differ so far.
    pub differences: Vec<Difference>,
}

/// What to ask the other side for next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// Node summaries.
    pub nodes: Vec<String>,
    /// Row lists.
    pub rows: Vec<String>,
}

impl Descent {
    /// Starts at the root; `there` is the other side's root summary.
    pub fn start(here: &Tree, there: Node) -> Descent {
        let mut d = Descent { nodes: Vec::new(), lists: Vec::new(), differences: Vec::new() };
        d.judge(here, String::new(), there);
        d
    }

    /// Both sides are known to hold the same rows, or every differing row is found.
    pub fn done(&self) -> bool {
        self.nodes.is_empty() && self.lists.is_empty()
    }

    /// What to ask for next (then hand the answers to [`Descent::answer`]).
    pub fn ask(&self) -> Ask {
        Ask { nodes: self.nodes.clone(), rows: self.lists.clone() }
    }

    /// Takes the other side's answers to the last [`Ask`]: a summary per asked node and the
    /// rows of each asked list, all together.
    ///
    /// # Errors
    /// An answer for a node that was not asked for, or a node left unanswered.
    pub fn answer(&mut self, here: &Tree, nodes: &[(String, Node)], rows: &[Entry]) -> Result<(), String> {
        let asked_nodes = std::mem::take(&mut self.nodes);
        let asked_lists = std::mem::take(&mut self.lists);
        if nodes.len() != asked_nodes.len() || nodes.iter().zip(&asked_nodes).any(|((p, _), a)| p != a) {
            return Err(format!(
                "asked for nodes {asked_nodes:?}, the answer names {:?}",
                nodes.iter().map(|n| &n.0).collect::<Vec<_>>()
            ));
        }
        for (prefix, there) in nodes {
            self.judge(here, prefix.clone(), *there);
        }
        for prefix in &asked_lists {
            let range = prefix_range(prefix).map_err(|e| e.to_string())?;
            let theirs: Vec<Entry> = rows.iter().filter(|e| range.contains(&e.hash)).cloned().collect();
            let ours = here.rows(prefix).map_err(|e| e.to_string())?;
            self.differences.extend(compare_rows(ours, &theirs));
        }
        self.differences.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(())
    }

    /// A node whose summaries differ is listed when both sides hold few rows under it, else
    /// split into its children.
    fn judge(&mut self, here: &Tree, prefix: String, there: Node) {
        let ours = here.node(&prefix).unwrap_or_default();
        if ours == there {
            return;
        }
        if (ours.count <= LEAF_ROWS && there.count <= LEAF_ROWS) || prefix.len() >= MAX_PREFIX {
            self.lists.push(prefix);
        } else {
            self.nodes.extend(children(&prefix));
        }
    }
}

/// A digest as written on the wire and in reports: 16 hex digits.
pub fn hex(digest: u64) -> String {
    format!("{digest:016x}")
}

/// Reads a digest written by [`hex`].
pub fn parse_hex(text: &str) -> Option<u64> {
    (text.len() == 16).then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SiteId;

    fn entry(key: &str, version: u64) -> Entry {
        let at = Hlc::new(1_000 + version, 0, SiteId(7));
        Entry::new(key.to_owned(), row_digest(key, true, at, [("body", at)].into_iter()), false)
    }

    fn tree(n: u64, changed: &[u64]) -> Tree {
        Tree::new((0..n).map(|i| entry(&format!("row-{i}"), u64::from(changed.contains(&i)))).collect())
    }

    /// Runs a descent between two trees, as two servers would; returns the differing keys and
    /// how many node summaries and rows were exchanged.
    fn descend(here: &Tree, there: &Tree) -> (Vec<String>, usize, usize) {
        let mut d = Descent::start(here, there.node("").unwrap());
        let (mut nodes, mut rows) = (1, 0);
        while !d.done() {
            let ask = d.ask();
            let answers: Vec<(String, Node)> = ask.nodes.iter().map(|p| (p.clone(), there.node(p).unwrap())).collect();
            let listed: Vec<Entry> = ask.rows.iter().flat_map(|p| there.rows(p).unwrap().to_vec()).collect();
            nodes += answers.len();
            rows += listed.len();
            d.answer(here, &answers, &listed).unwrap();
        }
        (d.differences.iter().map(|d| d.key().to_owned()).collect(), nodes, rows)
    }

    #[test]
    fn digests_do_not_depend_on_order_and_see_every_register() {
        let at = Hlc::new(5, 0, SiteId(1));
        let later = Hlc::new(6, 0, SiteId(1));
        let a = row_digest("k", true, at, [("a", at), ("b", later)].into_iter());
        assert_eq!(a, row_digest("k", true, at, [("b", later), ("a", at)].into_iter()));
        assert_ne!(a, row_digest("k", false, at, [("a", at), ("b", later)].into_iter()), "alive counts");
        assert_ne!(a, row_digest("k", true, at, [("a", later), ("b", later)].into_iter()), "a column's clock");
        assert_ne!(a, row_digest("k", true, at, [("a", at)].into_iter()), "a column never written");
        assert_ne!(a, row_digest("j", true, at, [("a", at), ("b", later)].into_iter()), "the key");
        let rows = vec![entry("x", 1), entry("y", 2), entry("z", 3)];
        let mut shuffled = rows.clone();
        shuffled.reverse();
        assert_eq!(Tree::new(rows).node("").unwrap(), Tree::new(shuffled).node("").unwrap());
    }

    #[test]
    fn prefixes_split_the_hash_space_in_sixteen() {
        assert_eq!(prefix_range("").unwrap(), 0..=u64::MAX);
        assert_eq!(prefix_range("f").unwrap(), 0xf000_0000_0000_0000..=u64::MAX);
        assert_eq!(prefix_range("a3").unwrap(), 0xa300_0000_0000_0000..=0xa3ff_ffff_ffff_ffff);
        assert_eq!(prefix_range("0123456789abcdef").unwrap(), 0x0123_4567_89ab_cdef..=0x0123_4567_89ab_cdef);
        for bad in ["A", "g", "0123456789abcdef0", " 1"] {
            assert!(prefix_range(bad).unwrap_err().to_string().contains("is not a digest prefix"), "{bad}");
        }
        let t = tree(5000, &[]);
        let sum = children("").iter().map(|c| t.node(c).unwrap().count).sum::<u64>();
        assert_eq!(sum, 5000);
        // Keys spread over the sixteen children.
        assert!(
            children("").iter().all(|c| t.node(c).unwrap().count > 200),
            "{:?}",
            children("").iter().map(|c| t.node(c).unwrap().count).collect::<Vec<_>>()
        );
    }

    #[test]
    fn equal_trees_need_one_summary() {
        let (diff, nodes, rows) = descend(&tree(10_000, &[]), &tree(10_000, &[]));
        assert_eq!((diff.len(), nodes, rows), (0, 1, 0));
    }

    #[test]
    fn a_descent_finds_exactly_the_differing_rows_and_its_cost_follows_them() {
        let here = tree(100_000, &[]);
        let mut theirs: Vec<Entry> =
            (0..100_000u64).map(|i| entry(&format!("row-{i}"), u64::from([7, 42_000, 99_999].contains(&i)))).collect();
        theirs.retain(|e| e.key != "row-500");
        theirs.push(entry("extra", 0));
        let there = Tree::new(theirs);
        let (diff, nodes, rows) = descend(&here, &there);
        assert_eq!(diff, ["extra", "row-42000", "row-500", "row-7", "row-99999"]);
        // Five rows at depth four or five: about 16 summaries a level each, and a leaf's rows.
        assert!(nodes < 5 * 16 * 5 + 1, "{nodes} summaries");
        assert!(rows < 5 * LEAF_ROWS as usize, "{rows} rows listed");
        let (one, nodes_one, _) = descend(&tree(100_000, &[3]), &here);
        assert_eq!(one, ["row-3"]);
        assert!(nodes_one * 3 < nodes + 16 * 3, "one difference costs a third of five: {nodes_one} vs {nodes}");
    }

    #[test]
    fn differences_say_which_side_holds_what() {
        let here = [entry("a", 1), entry("b", 1), entry("c", 1)];
        let there = [entry("b", 2), entry("c", 1), entry("d", 1)];
        let d = compare_rows(&here, &there);
        assert!(matches!(&d[0], Difference::OnlyHere(e) if e.key == "a"));
        assert!(matches!(&d[1], Difference::Changed { here, there } if here.key == "b" && there.key == "b"));
        assert!(matches!(&d[2], Difference::OnlyThere(e) if e.key == "d"));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn digests_read_back_from_hex() {
        assert_eq!(parse_hex(&hex(0xdead_beef)), Some(0xdead_beef));
        assert_eq!(parse_hex("xyz"), None);
    }
}
