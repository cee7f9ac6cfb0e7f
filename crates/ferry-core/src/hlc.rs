//! Hybrid logical clocks.
//!
//! An [`Hlc`] orders every change Ferry knows of: 48 bits of wall-clock milliseconds, a
//! 16-bit logical counter for events within one millisecond, and the [`SiteId`] of the
//! replica that made the change as the final tie-break. Two different replicas never
//! produce the same `Hlc`, so "the greater clock wins" is a total, deterministic rule.
//!
//! Time is an argument here: the [`Clock`] never reads the system clock itself, which is
//! what lets the simulation tests replay any interleaving.

use std::fmt;
use std::str::FromStr;

/// Identifies one replica (a device's SQLite file or a server store). Random, 64 bits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct SiteId(pub u64);

impl SiteId {
    /// A site id from 8 random bytes. Site 0 is reserved for [`Hlc::ZERO`], so it is never
    /// returned.
    pub fn from_bytes(bytes: [u8; 8]) -> SiteId {
        SiteId(u64::from_le_bytes(bytes).max(1))
    }

    /// The fixed site id of a writer that is no replica (a device's REST writes, a role's
    /// authority, a link's catch-up), derived from its `name`: the same every time.
    pub fn named(name: &str) -> SiteId {
        let f = crate::schema::fingerprint(name);
        SiteId::from_bytes(u64::from_str_radix(&f, 16).unwrap_or(1).to_be_bytes())
    }
}

/// `v` as 16 lowercase hex digits. Clocks are written for every row pushed, pulled and stored:
/// this is several times cheaper than `{:016x}` through the formatting machinery.
fn hex16(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out[..16].iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 16];
        hex16(self.0, &mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for SiteId {
    type Err = ClockError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(ClockError::Malformed(s.to_owned()));
        }
        u64::from_str_radix(s, 16).map(SiteId).map_err(|_| ClockError::Malformed(s.to_owned()))
    }
}

const COUNTER_BITS: u32 = 16;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

/// A hybrid logical clock reading: `(wall_ms, counter, site)`, ordered in that order.
///
/// Its text form is 32 hex digits (`time` then `site`), so text comparison and clock
/// comparison agree; that is the form stored in bookkeeping tables and sent on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Hlc {
    /// `wall_ms << 16 | counter`.
    time: u64,
    site: SiteId,
}

impl Hlc {
    /// The clock that precedes every real change.
    pub const ZERO: Hlc = Hlc { time: 0, site: SiteId(0) };

    pub fn new(wall_ms: u64, counter: u16, site: SiteId) -> Hlc {
        Hlc { time: (wall_ms << COUNTER_BITS) | u64::from(counter), site }
    }

    pub fn wall_ms(self) -> u64 {
        self.time >> COUNTER_BITS
    }

    pub fn counter(self) -> u16 {
        (self.time & COUNTER_MAX) as u16
    }

    pub fn site(self) -> SiteId {
        self.site
    }
}

impl Hlc {
    /// The text form (as [`Display`](fmt::Display) writes it), in `buf`, without allocating.
    pub fn encode<'b>(&self, buf: &'b mut [u8; 32]) -> &'b str {
        hex16(self.time, &mut buf[..16]);
        hex16(self.site.0, &mut buf[16..]);
        std::str::from_utf8(buf).expect("hex digits are ASCII")
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut [0u8; 32]))
    }
}

impl FromStr for Hlc {
    type Err = ClockError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ClockError::Malformed(s.to_owned());
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let time = u64::from_str_radix(&s[..16], 16).map_err(|_| bad())?;
        let site = s[16..].parse().map_err(|_| bad())?;
        Ok(Hlc { time, site })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    #[error("malformed clock '{0}'; expected 32 hex digits (16 for time, 16 for the site id)")]
    Malformed(String),
    #[error(
        "clock {remote} is {ahead_ms} ms ahead of this replica's wall clock; the most allowed is {max_ms} ms, check the sender's system time"
    )]
    TooFarAhead { remote: Hlc, ahead_ms: u64, max_ms: u64 },
}

/// The clock state of one replica. Persist [`Clock::last`] with the data it stamped.
#[derive(Clone, Debug)]
pub struct Clock {
    site: SiteId,
    last: u64,
}

/// How far ahead of our wall clock a remote clock may be before we refuse it: a device
/// whose system time is a year off would otherwise win every conflict until then.
pub const MAX_DRIFT_MS: u64 = 24 * 60 * 60 * 1000;

impl Clock {
    /// A clock for `site` that has already issued or observed `last`.
    pub fn new(site: SiteId, last: Hlc) -> Clock {
        Clock { site, last: last.time }
    }

    pub fn site(&self) -> SiteId {
        self.site
    }

    /// The greatest clock issued or observed so far (with this replica's site id).
    pub fn last(&self) -> Hlc {
        Hlc { time: self.last, site: self.site }
    }

    /// Issues a new clock for a local event that happened at `wall_ms`; strictly greater
    /// than every clock issued or observed before.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let wall = wall_ms << COUNTER_BITS;
        self.last = if wall > self.last { wall } else { self.last + 1 };
        Hlc { time: self.last, site: self.site }
    }

    /// Takes note of a clock from another replica so that later local events order after it.
    ///
    /// # Errors
    /// [`ClockError::TooFarAhead`] when `remote` is more than [`MAX_DRIFT_MS`] ahead of `now_ms`.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), ClockError> {
        let ahead_ms = remote.wall_ms().saturating_sub(now_ms);
        if ahead_ms > MAX_DRIFT_MS {
            return Err(ClockError::TooFarAhead { remote, ahead_ms, max_ms: MAX_DRIFT_MS });
        }
        self.last = self.last.max(remote.time);
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn clocks_print_as_32_lowercase_hex_digits_and_read_back() {
        for (wall, counter, site) in
            [(0, 0, 1), (1_795_000_000_000, 7, 0x0123_4567_89ab_cdef), (u64::MAX >> 16, u16::MAX, u64::MAX)]
        {
            let h = Hlc::new(wall, counter, SiteId(site));
            let text = h.to_string();
            assert_eq!(text, format!("{:016x}{:016x}", (wall << 16) | counter as u64, site));
            assert_eq!(text.parse::<Hlc>().unwrap(), h);
            assert_eq!(SiteId(site).to_string(), format!("{site:016x}"));
        }
    }

    use super::*;

    #[test]
    fn text_form_round_trips_and_sorts_like_the_clock() {
        let a = Hlc::new(1_700_000_000_000, 3, SiteId(7));
        let b = Hlc::new(1_700_000_000_000, 4, SiteId(1));
        assert_eq!(a.to_string().parse::<Hlc>().unwrap(), a);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.wall_ms(), 1_700_000_000_000);
        assert_eq!(a.counter(), 3);
    }

    #[test]
    fn malformed_text_is_named() {
        let err = "xyz".parse::<Hlc>().unwrap_err();
        assert!(err.to_string().contains("'xyz'"));
    }

    #[test]
    fn tick_is_strictly_increasing_even_when_wall_time_goes_back() {
        let mut c = Clock::new(SiteId(1), Hlc::ZERO);
        let a = c.tick(1000);
        let b = c.tick(999);
        let d = c.tick(1000);
        assert!(a < b && b < d);
    }

    #[test]
    fn observed_clocks_order_before_later_local_events() {
        let mut c = Clock::new(SiteId(1), Hlc::ZERO);
        let remote = Hlc::new(5000, 9, SiteId(2));
        c.observe(remote, 4000).unwrap();
        assert!(c.tick(10) > remote);
    }

    #[test]
    fn a_clock_from_far_in_the_future_is_refused() {
        let mut c = Clock::new(SiteId(1), Hlc::ZERO);
        let remote = Hlc::new(10 * MAX_DRIFT_MS, 0, SiteId(2));
        assert!(matches!(c.observe(remote, 0), Err(ClockError::TooFarAhead { .. })));
        assert_eq!(c.last(), Hlc::new(0, 0, SiteId(1)));
    }
}
