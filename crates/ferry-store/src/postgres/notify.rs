//! Announcing changes on a PostgreSQL channel, and listening to it.

use std::time::Duration;

use tokio_postgres::NoTls;

use super::Inner;

/// The channel every change is announced on: pushes and resolutions (with the owners of the
/// changed rows) and direct SQL writes (`*`, by a statement trigger).
pub(super) const NOTIFY_CHANNEL: &str = "ferry_changes";

/// A NOTIFY payload: `[owners, origin, reaches, tables]` as JSON (the owners of the changed
/// rows, `null` for shared rows; the pushing device; the changed rows of tables with a `read`
/// rule as `[table, reach]`; the tables touched), or `*` when it would be too long
/// (PostgreSQL limits payloads to 8000 bytes).
pub(super) fn notice_payload(notice: &crate::Notice) -> String {
    let payload = serde_json::to_string(&(&notice.owners, &notice.origin, &notice.reaches, &notice.tables))
        .expect("strings serialize");
    if payload.len() > 7000 { "*".to_owned() } else { payload }
}

type Payload = (Option<Vec<Option<String>>>, Option<String>, Vec<(String, String)>, Vec<String>);

/// Forwards this database's change notifications to the store's subscribers, reconnecting
/// after a lost connection (and then announcing a change to everyone, since some may have
/// been missed).
pub(super) async fn listen(inner: std::sync::Weak<Inner>) {
    use futures_util::StreamExt;
    let mut first = true;
    loop {
        let Some(cfg) = inner.upgrade().map(|i| i.listen_cfg.clone()) else { return };
        if let Ok((client, mut conn)) = cfg.connect(NoTls).await {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            let listening = async { client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).await.ok() };
            tokio::pin!(listening);
            let (reconnected, mut listened) = (!first, false);
            first = false;
            loop {
                tokio::select! {
                    r = &mut listening, if !listened => match r {
                        Some(()) => {
                            listened = true;
                            // Changes made while no LISTEN was in place may have been missed:
                            // once it is in place again, everyone pulls.
                            if reconnected && let Some(i) = inner.upgrade() {
                                let _ = i.notices.send(crate::Notice::anyone());
                            }
                        }
                        None => break,
                    },
                    m = messages.next() => match m {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let Some(i) = inner.upgrade() else { return };
                            let notice = match serde_json::from_str::<Payload>(n.payload()) {
                                Ok((owners, origin, reaches, tables)) => {
                                    crate::Notice { owners, reaches, tables, origin }
                                }
                                Err(_) => crate::Notice::anyone(),
                            };
                            let _ = i.notices.send(notice);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
