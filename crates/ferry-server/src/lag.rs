//! The links' lag over the last hour, for the dashboard's chart: the alert watcher samples
//! every link each time it looks; the highest lag of every [`BUCKET_MS`] is kept, in this
//! process's memory (a restarted server's chart starts empty).

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};

use ferry_protocol::PeerStatus;

/// How much history is kept.
pub const KEPT_MS: u64 = 3_600_000;
/// Samples within one bucket keep their highest lag: 240 points an hour, a link.
pub const BUCKET_MS: u64 = 15_000;

/// Each link's samples, oldest first: (bucket's start, highest lag in it).
#[derive(Default)]
pub struct History(Mutex<HashMap<String, VecDeque<(u64, u64)>>>);

/// This process's history, written by [`crate::peer::watch_alerts`].
pub static HISTORY: LazyLock<History> = LazyLock::new(History::default);

impl History {
    /// Records each enabled link's lag at `now` (`links` as `peer::seen_at` shows them).
    pub fn record(&self, links: &[PeerStatus], now: u64) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|name, _| links.iter().any(|p| p.enabled && &p.name == name));
        let bucket = now - now % BUCKET_MS;
        for p in links.iter().filter(|p| p.enabled) {
            let lag = crate::peer::lag_at(p, now);
            let samples = all.entry(p.name.clone()).or_default();
            match samples.back_mut() {
                Some((at, highest)) if *at == bucket => *highest = (*highest).max(lag),
                _ => samples.push_back((bucket, lag)),
            }
            while samples.front().is_some_and(|(at, _)| *at + KEPT_MS < now) {
                samples.pop_front();
            }
        }
    }

    /// `peer`'s samples of the last hour, oldest first.
    pub fn of(&self, peer: &str) -> Vec<(u64, u64)> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get(peer).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(lag: u64) -> PeerStatus {
        PeerStatus {
            name: "cloud".into(),
            state: "CONNECTED".into(),
            enabled: true,
            lag_ms_in: lag,
            ..Default::default()
        }
    }

    #[test]
    fn a_bucket_keeps_its_highest_lag_and_an_hour_is_kept() {
        let h = History::default();
        let start = 1_800_000_000_000 - 1_800_000_000_000 % BUCKET_MS;
        h.record(&[link(5)], start);
        h.record(&[link(900)], start + 5_000);
        h.record(&[link(40)], start + 10_000);
        h.record(&[link(7)], start + BUCKET_MS);
        assert_eq!(h.of("cloud"), [(start, 900), (start + BUCKET_MS, 7)]);
        h.record(&[link(1)], start + KEPT_MS + BUCKET_MS + 1);
        assert_eq!(h.of("cloud"), [(start + KEPT_MS + BUCKET_MS, 1)], "samples older than an hour go");
        let mut off = link(1);
        off.enabled = false;
        h.record(&[off], start + KEPT_MS + 2 * BUCKET_MS);
        assert!(h.of("cloud").is_empty(), "a link disabled or removed has no chart");
    }
}
