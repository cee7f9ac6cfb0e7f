//! Webhooks (`[[alerts.webhook]]`): the built-in alerts, raised and cleared, and full syncs'
//! outcomes, POSTed to each configured URL, signed with its secret (HMAC-SHA256), retried
//! with backoff, each delivery's outcome written to the sync log. docs/monitoring.md has the
//! body and how a receiver checks the signature.

use std::sync::Arc;
use std::time::Duration;

use ferry_protocol::SyncLogEntry;
use ferry_store::Store;

/// The kinds of event a hook can take (`events = [...]`).
pub const EVENTS: &[&str] = &["alert", "full_sync"];

/// The waits between the attempts of one delivery, unless a hook sets its own (`retry`):
/// five attempts over about 80 s.
pub const BACKOFF: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(4), Duration::from_secs(15), Duration::from_secs(60)];

/// The most waits a hook's `retry` may list, and the longest wait.
pub const MAX_RETRIES: usize = 10;
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

/// One `[[alerts.webhook]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    /// The HMAC key the receiver checks `Ferry-Signature` with.
    pub secret: String,
    /// Of [`EVENTS`]: what this hook takes.
    pub events: Vec<String>,
    /// The waits between attempts ([`BACKOFF`] by default): one attempt more than waits.
    pub retry: Vec<Duration>,
}

/// The configured hooks, cheap to clone; none by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks(Arc<Vec<Webhook>>);

/// What happened: `alert.raised`, `alert.cleared` or `full_sync.finished`, with its record.
pub struct Event {
    pub name: &'static str,
    /// The link it concerns (the sync log's `peer`).
    pub peer: String,
    pub data: serde_json::Value,
}

impl Hooks {
    pub fn new(hooks: Vec<Webhook>) -> Hooks {
        Hooks(Arc::new(hooks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Delivers `event` to every hook that takes its kind, at once, each retried after its
    /// `retry` waits while it fails (no answer, or not 2xx); returns when every delivery has
    /// succeeded or used its attempts. Each delivery's outcome goes to `store`'s sync log
    /// (kind `webhook`, kept `keep_ms`).
    pub async fn deliver<S: Store>(&self, store: &S, event: Event, keep_ms: u64) {
        let kind = event.name.split('.').next().unwrap_or_default();
        let at_ms = crate::now_ms();
        let delivery = format!("{at_ms:x}-{:x}", rand_u64());
        let body = serde_json::json!({
            "event": event.name,
            "delivery": delivery,
            "at_ms": at_ms,
            "peer": event.peer,
            "data": event.data,
        });
        let body = serde_json::to_vec(&body).expect("JSON values serialize");
        let sends = self.0.iter().filter(|h| h.events.iter().any(|e| e == kind)).map(|hook| {
            let body = body.clone();
            let delivery = delivery.as_str();
            let peer = event.peer.as_str();
            async move {
                let started = crate::now_ms();
                let (status, error) = attempts(hook, event.name, delivery, body).await;
                let entry = SyncLogEntry {
                    at_ms: started,
                    peer: peer.to_owned(),
                    kind: "webhook".into(),
                    direction: "push".into(),
                    status: status.into(),
                    duration_ms: crate::now_ms().saturating_sub(started),
                    error: Some(error),
                    ..SyncLogEntry::default()
                };
                if let Err(e) = store.log_sync(entry, keep_ms).await {
                    tracing::warn!(peer, "cannot write a webhook delivery to the sync log: {e}");
                }
            }
        });
        futures_util::future::join_all(sends).await;
    }
}

/// Sends one delivery until it succeeds or its attempts are used: the sync log's status and
/// what to say of it.
async fn attempts(hook: &Webhook, event: &str, delivery: &str, body: Vec<u8>) -> (&'static str, String) {
    let mut last = String::new();
    for n in 0..=hook.retry.len() {
        if n > 0 {
            tokio::time::sleep(hook.retry[n - 1]).await;
        }
        match ferry_client::remote::post_signed_webhook(&hook.url, &hook.secret, event, delivery, body.clone()).await {
            Ok(status) if (200..300).contains(&status) => {
                return (
                    "SUCCESS",
                    format!("{event} {delivery} to {}: answered {status}, attempt {}", hook.url, n + 1),
                );
            }
            Ok(status) => last = format!("answered {status}"),
            Err(e) => last = e.to_string(),
        }
        let attempt = n + 1;
        tracing::warn!(url = %hook.url, event, delivery, attempt, "webhook delivery failed: {last}");
    }
    (
        "FAILED",
        format!("{event} {delivery} to {}: {} attempts failed, the last: {last}", hook.url, hook.retry.len() + 1),
    )
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the system's random source");
    u64::from_le_bytes(b)
}
