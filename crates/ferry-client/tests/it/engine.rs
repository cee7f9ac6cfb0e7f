//! The engine's state machine and backoff schedule, on tokio's paused clock: no real
//! waiting, exact delays.

use std::time::Duration;

use ferry_client::engine::{self, Backoff, ConnState, EngineOptions, Event};
use ferry_client::{Remote, Replica};
use tokio::time::Instant;

/// A local address nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_server_is_retried_by_the_backoff_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(&dir.path().join("r.db")).unwrap();
    let opts = EngineOptions {
        remote: Some(Remote::new(&closed_port(), "fry_x").unwrap()),
        backoff: Backoff::device(),
        ..EngineOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    // Five minutes of engine time, on the paused clock.
    let engine = tokio::spawn(engine::run(replica, opts, tx, tokio::time::sleep(Duration::from_secs(300))));
    engine.await.unwrap().unwrap();
    let mut errors = Vec::new();
    let mut states = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            Event::Error { retry_in, at, .. } => errors.push((at - start, retry_in)),
            Event::State { to, at, .. } => states.push((to, at - start)),
            _ => {}
        }
    }
    // Each attempt fails at once and waits by the schedule: 1, 2, 4, 8, 16, 32, 60, 60 s.
    let waits: Vec<u64> = errors.iter().map(|(_, w)| w.as_secs()).collect();
    assert_eq!(&waits[..8], &[1, 2, 4, 8, 16, 32, 60, 60], "{errors:?}");
    for pair in errors.windows(2) {
        let (at, wait) = pair[0];
        let next = pair[1].0;
        assert!(next - at >= wait && next - at < wait + Duration::from_millis(50), "{errors:?}");
    }
    // DISCONNECTED after each failure, RECONNECTING before each retry.
    assert_eq!(states[0].0, ConnState::Disconnected, "{states:?}");
    assert!(states.windows(2).all(|w| w[0].0 != w[1].0), "{states:?}");
    assert!(states.iter().skip(1).step_by(2).all(|s| s.0 == ConnState::Reconnecting), "{states:?}");
    let first_retry = states[1].1;
    assert!(first_retry >= Duration::from_secs(1) && first_retry < Duration::from_millis(1050), "{states:?}");
}

#[tokio::test(start_paused = true)]
async fn the_server_schedule_starts_at_30_seconds() {
    let b = Backoff::server();
    let secs: Vec<u64> = (1..=10).map(|n| b.delay(n).as_secs()).collect();
    assert_eq!(secs, [30, 60, 120, 300, 600, 1200, 2400, 3600, 3600, 3600]);
    assert_eq!(Backoff::parse("1s,500ms,2m").unwrap().steps, [1000, 500, 120_000].map(Duration::from_millis));
    assert!(Backoff::parse("1s,soon").unwrap_err().contains("'soon'"));
}

#[tokio::test(start_paused = true)]
async fn without_a_server_the_engine_is_offline_only() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(&dir.path().join("r.db")).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let replica =
        engine::run(replica, EngineOptions::default(), tx, tokio::time::sleep(Duration::from_secs(5))).await.unwrap();
    match rx.try_recv() {
        Ok(Event::State { to: ConnState::OfflineOnly, .. }) => {}
        other => panic!("expected OFFLINE_ONLY, got {other:?}"),
    }
    assert_eq!(replica.status().unwrap().connection.as_deref(), Some("OFFLINE_ONLY"));
}
