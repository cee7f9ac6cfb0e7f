//! The full sync panel: start a run with a peer, watch its phases (bytes, speed, time left),
//! cancel it after a confirmation, and the recent runs. Runs are the API's
//! (`/v1/admin/full-sync`, docs/full-sync.md), started and cancelled the same way.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use ferry_protocol::{FullSyncOptions, FullSyncRequest, FullSyncRun};
use ferry_store::Store;

use super::html::{self, esc};
use super::{Posted, SignedIn, TABLES_FIELD, api_error, peer_field, signed_page, store_error, tables};
use crate::AppState;

/// How many runs the panel lists.
const RECENT: usize = 20;

/// `GET /admin/full-sync`: the form that starts a run, the run in progress, the recent runs.
pub async fn panel<S: Store>(State(state): State<Arc<AppState<S>>>, signed: SignedIn) -> Response {
    let runs = match state.store.full_syncs(RECENT).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let mut body = String::new();
    if let Some(r) = runs.iter().find(|r| r.state == "RUNNING") {
        let _ = write!(
            body,
            "<p class=\"running\" role=\"status\">Full sync <a href=\"/admin/full-sync/{id}\">{id}</a> ({} with {}) \
             is running: phase {}.</p>",
            esc(&r.direction),
            esc(&r.peer),
            esc(&r.phase),
            id = esc(&r.id)
        );
    }
    body.push_str("<section aria-labelledby=\"start\"><h2 id=\"start\">Start a full sync</h2>");
    if state.links.is_empty() {
        body.push_str("<p>No peers to sync with (<code>[peers.NAME]</code> in ferry.toml).</p>");
    } else {
        start_form(&mut body, &state, &signed.csrf);
    }
    body.push_str("</section><section aria-labelledby=\"recent\"><h2 id=\"recent\">Recent runs</h2>");
    if runs.is_empty() {
        body.push_str("<p>No full syncs yet.</p>");
    } else {
        body.push_str(&html::table("", &["Run", "Started", "Peer", "Direction", "State", "Rows", "Size", "Took"]));
        let now = crate::peer::now_ms();
        for r in &runs {
            let took = r.finished_ms.unwrap_or(now).saturating_sub(r.started_ms);
            let _ = write!(
                body,
                "<tr><td><a href=\"/admin/full-sync/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><span class=\"status {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&html::ago(now.saturating_sub(r.started_ms))),
                esc(&r.peer),
                esc(&r.direction),
                r.state.to_ascii_lowercase(),
                esc(&r.state),
                r.rows,
                html::bytes(r.bytes),
                html::duration(took),
                id = esc(&r.id)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    signed_page(&state, &signed, "Full sync", "Full sync", true, &body).await
}

fn start_form<S: Store>(body: &mut String, state: &AppState<S>, csrf: &str) {
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/admin/full-sync\" class=\"stack\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}\
         <fieldset><legend>Direction</legend>\
         <label><input type=\"radio\" name=\"direction\" value=\"push\" checked> Push: this server's data set to the peer</label>\
         <label><input type=\"radio\" name=\"direction\" value=\"pull\"> Pull: the peer's data set to this server</label>\
         </fieldset>{}\
         <label><input type=\"checkbox\" name=\"compress\" value=\"1\"> Compress the chunks (zstd)</label>\
         <label><input type=\"checkbox\" name=\"verify\" value=\"1\" checked> Compare both sides afterwards</label>\
         <button type=\"submit\">Start full sync</button></form>",
        esc(csrf),
        peer_field(&state.links),
        TABLES_FIELD
    );
}

/// `POST /admin/full-sync`: starts a run as `POST /v1/admin/full-sync` does, then shows it.
pub async fn start<S: Store>(State(state): State<Arc<AppState<S>>>, Posted { signed, form }: Posted) -> Response {
    let req = FullSyncRequest {
        direction: form.get("direction").cloned().unwrap_or_default(),
        peer: form.get("peer").cloned().unwrap_or_default(),
        options: FullSyncOptions {
            tables: tables(&form),
            compress: form.contains_key("compress"),
            verify: form.contains_key("verify"),
            notify: None,
        },
    };
    match crate::full_sync::begin(&state, req).await {
        Ok(run) => {
            tracing::info!(run = %run.id, by = %signed.by, "full sync started from the dashboard");
            Redirect::to(&format!("/admin/full-sync/{}", run.id)).into_response()
        }
        Err(e) => api_error(e),
    }
}

/// `GET /admin/full-sync/{id}`: one run, live while it runs: each phase's progress, bytes,
/// speed and time left.
pub async fn run<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let r = match crate::full_sync::found(&state, &id).await {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    let mut body = summary(&r);
    body.push_str(&html::table("", &["Phase", "State", "Progress", "Rows", "Bytes", "Speed", "Time left"]));
    for p in &r.phases {
        let bytes = if p.bytes_total > 0 {
            format!("{} of {}", html::bytes(p.bytes_done), html::bytes(p.bytes_total))
        } else {
            "—".into()
        };
        // Speed is bytes a second, or rows where the phase moves no bytes.
        let speed = match (p.speed > 0.0, p.bytes_total > 0) {
            (false, _) => "—".to_owned(),
            (true, true) => format!("{}/s", html::bytes(p.speed as u64)),
            (true, false) => format!("{:.0} rows/s", p.speed),
        };
        let left = match (p.state.as_str(), p.eta_ms) {
            ("running", Some(ms)) => html::duration(ms),
            _ => "—".into(),
        };
        let _ = write!(
            body,
            "<tr><th scope=\"row\">{name}</th><td>{}</td><td><progress max=\"100\" value=\"{pct:.0}\" \
             aria-label=\"{name} {pct:.0}%\"></progress> {pct:.0}%</td><td>{} of {}</td><td>{bytes}</td>\
             <td>{speed}</td><td>{left}</td></tr>",
            esc(&p.state),
            p.rows_done,
            p.rows_total,
            name = esc(&p.name),
            pct = p.percent.clamp(0.0, 100.0),
        );
    }
    body.push_str("</tbody></table>");
    if r.state == "RUNNING" {
        // live.js refreshes a page holding this every second, not only on the store's news.
        body.push_str("<div data-refresh hidden></div>");
        if r.cancel_requested {
            body.push_str("<p role=\"status\">Cancel asked; the run stops within a second.</p>");
        } else {
            let _ = write!(
                body,
                "<p><a class=\"button danger\" href=\"/admin/full-sync/{}/cancel\">Cancel…</a></p>",
                esc(&r.id)
            );
        }
    }
    body.push_str("<p><a href=\"/admin/full-sync\">All runs</a></p>");
    let title = format!("Full sync {}", r.id);
    signed_page(&state, &signed, &title, "Full sync", r.state == "RUNNING", &body).await
}

/// What a run is and how it stands, above its phases.
fn summary(r: &FullSyncRun) -> String {
    let mut out = format!(
        "<p><span class=\"status {}\" role=\"status\">{}</span> · {} with <strong>{}</strong> · phase {} · \
         {} rows, {} ({} sent)",
        r.state.to_ascii_lowercase(),
        esc(&r.state),
        esc(&r.direction),
        esc(&r.peer),
        esc(&r.phase),
        r.rows,
        html::bytes(r.bytes),
        html::bytes(r.bytes_sent)
    );
    if r.speed > 0.0 {
        let _ = write!(out, " · {}/s", html::bytes(r.speed as u64));
    }
    out.push_str("</p>");
    let options: Vec<&str> =
        [(r.compress, "compressed"), (r.verify, "verified")].into_iter().filter(|o| o.0).map(|o| o.1).collect();
    let _ = write!(
        out,
        "<p class=\"hint\">Tables: {}{}{}</p>",
        esc(&r.tables.join(", ")),
        if options.is_empty() { "" } else { " · " },
        options.join(", ")
    );
    if r.excluded > 0 {
        let _ = write!(out, "<p>{} rows left out by <code>[full_sync.exclude]</code>.</p>", r.excluded);
    }
    match (r.verified_equal, r.differences) {
        (Some(true), _) => out.push_str("<p class=\"done\">Both sides hold the same rows.</p>"),
        (Some(false), d) => {
            let _ = write!(
                out,
                "<p class=\"error\">{} rows differ after the restore; an integrity check with repair mends them.</p>",
                d.unwrap_or(0)
            );
        }
        (None, _) => {}
    }
    if let Some(e) = &r.error {
        let _ = write!(out, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    out
}

/// `GET /admin/full-sync/{id}/cancel`: asks before cancelling (works without JavaScript).
pub async fn confirm_cancel<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let r = match crate::full_sync::found(&state, &id).await {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    if r.state != "RUNNING" {
        return Redirect::to(&format!("/admin/full-sync/{}", r.id)).into_response();
    }
    let body = format!(
        "<p>Cancel the full sync {dir} with <strong>{peer}</strong> (phase {phase})? A restore in progress \
         rolls back the table it is writing; what is already restored stays.</p>\
         <form method=\"post\" action=\"/admin/full-sync/{id}/cancel\" class=\"choice\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" class=\"danger\">Yes, cancel it</button></form>\
         <a href=\"/admin/full-sync/{id}\">No, let it run</a>",
        dir = esc(&r.direction),
        peer = esc(&r.peer),
        phase = esc(&r.phase),
        id = esc(&r.id),
        csrf = esc(&signed.csrf)
    );
    signed_page(&state, &signed, "Cancel the full sync?", "Full sync", false, &body).await
}

/// `POST /admin/full-sync/{id}/cancel`: as `POST /v1/admin/full-sync/{id}/cancel`.
pub async fn cancel<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Path(id): Path<String>,
    Posted { signed, .. }: Posted,
) -> Response {
    match crate::full_sync::stop(&state, &id).await {
        Ok(run) => {
            tracing::info!(run = %run.id, by = %signed.by, "full sync cancelled from the dashboard");
            Redirect::to(&format!("/admin/full-sync/{}", run.id)).into_response()
        }
        Err(e) => api_error(e),
    }
}
