//! The client engine: keeps a replica in sync for as long as it runs, and keeps working
//! through crashes, partitions and a server that comes and goes.
//!
//! - It syncs at start, soon after a local write (debounced; writes by other processes to
//!   the same file count too, seen through SQLite's `data_version`), when the realtime
//!   stream says rows changed, when the stream (re)connects, and at an interval.
//! - After a failure it waits by its backoff schedule ([`Backoff::device`]: 1 s, 2 s, 4 s …
//!   60 s; [`Backoff::server`]: 30 s, 1 min, 2 min, 5 min, 10 min … 1 h) and tries again;
//!   a success resets the schedule.
//! - Its connection state ([`ConnState`]) and every step are reported as [`Event`]s.
//! - Without a server it runs offline-only and says so.
//!
//! The queue never stops on a bad change: `sync` sets refused changes aside (see `queue`).
//! All waiting uses tokio's clock, so tests can run it on paused time.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::Result;
use crate::remote::Remote;
use crate::replica::{Key, Replica};
use crate::sync::{Progress, SyncOptions, SyncReport};

/// The engine's view of its connection to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnState {
    /// Syncs succeed and the realtime stream is up.
    Connected,
    /// Syncs succeed but the stream is down: changes arrive by polling at the interval.
    Degraded,
    /// The last attempt failed; waiting for the next one by the backoff schedule.
    Disconnected,
    /// Trying again.
    Reconnecting,
    /// No server configured: local changes wait in the queue.
    OfflineOnly,
    /// A failure that trying again cannot mend (a revoked token, a replica of another user,
    /// a table the server does not have): the engine stopped; `ferry status` says why.
    Stopped,
}

impl ConnState {
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Connected => "CONNECTED",
            ConnState::Degraded => "DEGRADED",
            ConnState::Disconnected => "DISCONNECTED",
            ConnState::Reconnecting => "RECONNECTING",
            ConnState::OfflineOnly => "OFFLINE_ONLY",
            ConnState::Stopped => "STOPPED",
        }
    }
}

/// Waits between attempts after failures: the n-th failure in a row waits `steps[n]`, the
/// last step repeating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub steps: Vec<Duration>,
}

impl Backoff {
    /// For devices: 1 s, 2 s, 4 s, 8 s, 16 s, 32 s, then every 60 s.
    pub fn device() -> Backoff {
        Backoff { steps: [1, 2, 4, 8, 16, 32, 60].map(Duration::from_secs).to_vec() }
    }

    /// For on-site servers: 30 s, 1 min, 2 min, 5 min, 10 min, 20 min, 40 min, then every hour.
    pub fn server() -> Backoff {
        Backoff { steps: [30, 60, 120, 300, 600, 1200, 2400, 3600].map(Duration::from_secs).to_vec() }
    }

    /// The wait after `failures` failures in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let i = (failures.max(1) as usize - 1).min(self.steps.len().saturating_sub(1));
        self.steps.get(i).copied().unwrap_or(Duration::from_secs(1))
    }

    /// Parses `1s,2s,4s,…` (units ms, s, m, h, d).
    ///
    /// # Errors
    /// A message naming the bad step.
    pub fn parse(text: &str) -> std::result::Result<Backoff, String> {
        ferry_core::duration::parse_schedule(text).map(|steps| Backoff { steps })
    }
}

/// Parses `500ms`, `2s`, `5m`, `1h`, `30d`.
///
/// # Errors
/// A message naming the value and the units.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    ferry_core::duration::parse_duration(s)
}

/// What the engine reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// The connection state changed; `why` says what happened.
    State {
        from: ConnState,
        to: ConnState,
        why: String,
        at: Instant,
    },
    /// A sync started; `reason` is what triggered it.
    Started {
        reason: &'static str,
        at: Instant,
    },
    Progress {
        percent: Option<u8>,
        message: String,
    },
    Completed(SyncReport),
    /// A sync failed; the engine tries again by its backoff schedule.
    Error {
        message: String,
        retry_in: Duration,
        at: Instant,
    },
    /// The realtime stream connected (`up`) or went down (`why`).
    Stream {
        up: bool,
        why: Option<String>,
    },
    /// Conflicts this sync recorded (settled here, or refused as stale).
    Conflict {
        settled: u64,
        refused: u64,
    },
    /// The stream says files that rows of this user reference arrived on the server (for
    /// the file worker: `FileOptions::wake`).
    Files,
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// `None`: offline-only.
    pub remote: Option<Remote>,
    /// Sync at least this often.
    pub interval: Duration,
    /// Push at most this long after the first local write not yet pushed (writes in the
    /// meantime go in the same push).
    pub debounce: Duration,
    pub backoff: Backoff,
    /// Use the realtime stream (else poll at `interval` only).
    pub stream: bool,
    pub sync: SyncOptions,
    /// How often to look for local writes.
    pub watch_every: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            remote: None,
            interval: Duration::from_secs(30),
            debounce: Duration::from_millis(300),
            backoff: Backoff::device(),
            stream: true,
            sync: SyncOptions::default(),
            watch_every: Duration::from_millis(100),
        }
    }
}

/// Messages from the stream task.
enum StreamNews {
    Up,
    Changed,
    Files,
    Down(String),
}

/// Runs the engine on `replica` until `shutdown` completes, reporting on `events`. Returns
/// the replica (the last sync's work is committed).
///
/// # Errors
/// Only when the replica file itself fails; network and server failures are retried.
pub async fn run(
    mut replica: Replica,
    opts: EngineOptions,
    events: mpsc::UnboundedSender<Event>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Replica> {
    tokio::pin!(shutdown);
    let _ = replica.set_meta(Key::EngineStoppedBecause, "");
    let mut state = ConnState::Reconnecting;
    let set_state = |state: &mut ConnState, to: ConnState, why: String, replica: &Replica| {
        if *state != to {
            let _ = events.send(Event::State { from: *state, to, why, at: Instant::now() });
            *state = to;
            let _ = replica.set_meta(Key::EngineState, to.name());
            let _ = replica.set_meta(Key::EnginePid, &std::process::id().to_string());
        }
    };
    let Some(remote) = opts.remote.clone() else {
        set_state(&mut state, ConnState::OfflineOnly, "no server configured".into(), &replica);
        (&mut shutdown).await;
        return Ok(replica);
    };
    let (news_tx, mut news) = mpsc::unbounded_channel();
    let stream_task = opts.stream.then(|| tokio::spawn(stream_loop(remote.clone(), opts.backoff.clone(), news_tx)));
    // The stream's state: `None` until its first connection attempt ends.
    let mut stream_up: Option<bool> = None;
    let mut failures: u32 = 0;
    // When to sync next, and why.
    let mut next: Option<(Instant, &'static str)> = Some((Instant::now(), "start"));
    let mut last_version = data_version(&replica).unwrap_or_default();
    let mut watch = tokio::time::interval(opts.watch_every);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        let due = next.map_or_else(|| Instant::now() + opts.interval, |(t, _)| t);
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tokio::time::sleep_until(due) => {
                let reason = next.map_or("interval", |(_, r)| r);
                if failures > 0 {
                    set_state(&mut state, ConnState::Reconnecting, format!("attempt {} after {failures} failures", failures + 1), &replica);
                }
                let _ = events.send(Event::Started { reason, at: Instant::now() });
                let mut progress = |p: Progress| {
                    let (percent, message) = match p {
                        Progress::Pushing { done, total } => (
                            Some((done * 100 / total.max(1)).min(100) as u8),
                            format!("pushed {done} of {total} rows"),
                        ),
                        Progress::Pulling { rows } => (None, format!("pulled {rows} rows")),
                        Progress::SetAside { table, key, message } => (None, format!("set aside {table} '{key}': {message}")),
                    };
                    let _ = events.send(Event::Progress { percent, message });
                };
                // Writes by others during the sync are news for the next look.
                let before = data_version(&replica).unwrap_or(last_version);
                let outcome = tokio::select! {
                    r = crate::sync(&mut replica, &remote, &opts.sync, &mut progress) => r,
                    // Stopping mid-sync is safe: every step is its own transaction, and an
                    // unanswered batch goes again under its id.
                    _ = &mut shutdown => break Ok(()),
                };
                last_version = before;
                match outcome {
                    Ok(report) => {
                        failures = 0;
                        if report.conflicts > 0 || report.refused > 0 {
                            let _ = events.send(Event::Conflict { settled: report.conflicts, refused: report.refused });
                        }
                        let _ = events.send(Event::Completed(report));
                        let (to, why) = if stream_up != Some(false) || !opts.stream {
                            let connecting = opts.stream && stream_up.is_none();
                            (ConnState::Connected, if connecting { "synced; the stream is connecting" } else { "synced" }.to_owned())
                        } else {
                            (ConnState::Degraded, format!("synced; the stream is down, polling every {:?}", opts.interval))
                        };
                        set_state(&mut state, to, why, &replica);
                        next = Some((Instant::now() + opts.interval, "interval"));
                    }
                    // What trying again cannot mend stops the engine, saying why; a locked
                    // replica file, an unreachable server and the like are retried below.
                    Err(e) if e.is_permanent() => {
                        let _ = replica.set_meta(Key::EngineStoppedBecause, &e.to_string());
                        set_state(&mut state, ConnState::Stopped, e.to_string(), &replica);
                        break Err(e);
                    }
                    Err(e) => {
                        failures += 1;
                        let retry_in = opts.backoff.delay(failures);
                        let _ = events.send(Event::Error { message: e.to_string(), retry_in, at: Instant::now() });
                        set_state(&mut state, ConnState::Disconnected, e.to_string(), &replica);
                        next = Some((Instant::now() + retry_in, "retry"));
                    }
                }
            }
            n = news.recv(), if opts.stream => match n {
                Some(StreamNews::Up) => {
                    stream_up = Some(true);
                    let _ = events.send(Event::Stream { up: true, why: None });
                    // Pull on reconnect: whatever changed while it was down. The server is
                    // reachable again, so a pending retry need not wait out its backoff.
                    next = Some((Instant::now(), "stream connected"));
                }
                Some(StreamNews::Changed) if failures == 0 => {
                    next = Some((Instant::now(), "stream: rows changed"));
                }
                Some(StreamNews::Changed) => {}
                Some(StreamNews::Files) => {
                    let _ = events.send(Event::Files);
                }
                Some(StreamNews::Down(why)) => {
                    stream_up = Some(false);
                    let _ = events.send(Event::Stream { up: false, why: Some(why.clone()) });
                    if state == ConnState::Connected {
                        set_state(&mut state, ConnState::Degraded, format!("stream down ({why}); polling every {:?}", opts.interval), &replica);
                    }
                }
                None => {}
            },
            _ = watch.tick() => {
                // A busy file (another program holding a write lock) is looked at next tick.
                let Ok(v) = data_version(&replica) else { continue };
                if v != last_version {
                    last_version = v;
                    // A local write (this process or another): push within `debounce` of the
                    // first unpushed one (later writes join it; a steady stream of writes
                    // cannot postpone the push forever).
                    let soon = Instant::now() + opts.debounce;
                    if failures == 0 && next.is_none_or(|(t, _)| soon < t) {
                        next = Some((soon, "local write"));
                    }
                }
            }
        }
    };
    if let Some(t) = stream_task {
        t.abort();
    }
    result.map(|()| replica)
}

/// SQLite's count of commits by other connections to the file: it moves when an
/// application (in this process or another) writes to the replica.
fn data_version(replica: &Replica) -> Result<i64> {
    Ok(replica.connection().query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Keeps the realtime stream open, reconnecting by the backoff schedule.
async fn stream_loop(remote: Remote, backoff: Backoff, news: mpsc::UnboundedSender<StreamNews>) {
    let mut failures = 0;
    loop {
        match remote.stream().await {
            Ok(mut s) => {
                failures = 0;
                if news.send(StreamNews::Up).is_err() {
                    return;
                }
                let why = loop {
                    match s.news().await {
                        Ok(n) => {
                            let n = if n == crate::News::Rows { StreamNews::Changed } else { StreamNews::Files };
                            if news.send(n).is_err() {
                                return;
                            }
                        }
                        Err(e) => break e.to_string(),
                    }
                };
                if news.send(StreamNews::Down(why)).is_err() {
                    return;
                }
            }
            Err(e) => {
                if news.send(StreamNews::Down(e.to_string())).is_err() {
                    return;
                }
            }
        }
        failures += 1;
        tokio::time::sleep(backoff.delay(failures)).await;
    }
}
