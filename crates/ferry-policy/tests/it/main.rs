//! The sync policy's tests: properties of its decisions, the whole sync loop simulated for
//! every conflict strategy with the replicas deciding through this crate, and the JSON test
//! vectors.

mod props;
mod sim;
mod vectors;

/// A small deterministic generator (xorshift), so a seed replays a case exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
