//! The integrity panel: compare this store with a peer's (`POST /v1/admin/integrity`,
//! docs/integrity.md), per table the rows and digests on each side, the differing rows in red,
//! and a repair of what differs.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use ferry_protocol::{IntegrityReport, IntegrityRequest};
use ferry_store::Store;

use super::html::{self, esc};
use super::{Posted, SignedIn, TABLES_FIELD, api_error, peer_field, signed_page, tables};
use crate::AppState;

/// Differing rows listed per table (the API's report has them all).
const ROWS_SHOWN: usize = 50;

/// `GET /admin/integrity`: the form that runs a check.
pub async fn panel<S: Store>(State(state): State<Arc<AppState<S>>>, signed: SignedIn) -> Response {
    let mut body = String::new();
    if state.links.is_empty() {
        body.push_str("<p>No peers to compare with (<code>[peers.NAME]</code> in ferry.toml).</p>");
    } else {
        check_form(&mut body, &state, &signed.csrf);
    }
    signed_page(&state, &signed, "Integrity", "Integrity", false, &body).await
}

fn check_form<S: Store>(body: &mut String, state: &AppState<S>, csrf: &str) {
    let _ = write!(
        body,
        "<p>Compares every row's version here and on the peer by digest trees; only what differs is \
         listed. A repair sends the newer version of each differing row both ways, through the merge rules.</p>\
         <form method=\"post\" action=\"/admin/integrity\" class=\"stack\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}{}\
         <label><input type=\"checkbox\" name=\"repair\" value=\"1\"> Repair what differs</label>\
         <button type=\"submit\">Run the check</button></form>",
        esc(csrf),
        peer_field(&state.links),
        TABLES_FIELD
    );
}

/// `POST /admin/integrity`: runs the check (and the repair) as the API does and shows its
/// report, with a button to repair what differs.
pub async fn check<S: Store>(State(state): State<Arc<AppState<S>>>, Posted { signed, form }: Posted) -> Response {
    let req = IntegrityRequest {
        peer: form.get("peer").cloned().unwrap_or_default(),
        tables: tables(&form),
        repair: form.contains_key("repair"),
    };
    let report = match crate::integrity::check(&state, &req).await {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    tracing::info!(peer = %req.peer, status = %report.status, by = %signed.by, "integrity check from the dashboard");
    let mut body = report_html(&report);
    if report.status == "FAILED" {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/admin/integrity\" class=\"choice\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"peer\" value=\"{}\">\
             <input type=\"hidden\" name=\"tables\" value=\"{}\"><input type=\"hidden\" name=\"repair\" value=\"1\">\
             <button type=\"submit\">Repair these differences</button></form>",
            esc(&signed.csrf),
            esc(&req.peer),
            esc(&req.tables.unwrap_or_default().join(","))
        );
    }
    body.push_str("<h2 id=\"again\">Check again</h2>");
    check_form(&mut body, &state, &signed.csrf);
    signed_page(&state, &signed, "Integrity", "Integrity", false, &body).await
}

fn report_html(r: &IntegrityReport) -> String {
    let mut out = format!(
        "<p><span class=\"status {}\" role=\"status\">{}</span> · peer <strong>{}</strong> · {} · {} requests, \
         {} sent, {} received</p>",
        r.status.to_ascii_lowercase(),
        esc(&r.status),
        esc(&r.peer),
        html::duration(r.duration_ms),
        r.requests,
        html::bytes(r.bytes_sent),
        html::bytes(r.bytes_received)
    );
    out.push_str(&html::table("", &["Table", "Rows here", "Rows there", "Digest here", "Digest there", "Result"]));
    for t in &r.tables {
        let (class, result) = match (t.equal, t.repaired_out + t.repaired_in) {
            (true, _) => ("", "equal".to_owned()),
            (false, 0) => (" class=\"mismatch\"", format!("{} rows differ", t.differences.len())),
            (false, n) => (" class=\"mismatch\"", format!("{} rows differ; {n} repaired", t.differences.len())),
        };
        let _ = write!(
            out,
            "<tr{class}><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td>\
             <td>{result}</td></tr>",
            esc(&t.table),
            t.here_rows,
            t.there_rows,
            esc(&t.here_digest),
            esc(&t.there_digest)
        );
    }
    out.push_str("</tbody></table>");
    for t in r.tables.iter().filter(|t| !t.differences.is_empty()) {
        let _ = write!(out, "<h2>{} rows of {} differ</h2>", t.differences.len(), esc(&t.table));
        out.push_str(&html::table("mismatches", &["Row", "How", "Here", "There"]));
        let side = |v: &Option<String>, deleted: bool| match (v, deleted) {
            (None, _) => "absent".to_owned(),
            (Some(d), true) => format!("deleted ({d})"),
            (Some(d), false) => d.clone(),
        };
        for d in t.differences.iter().take(ROWS_SHOWN) {
            let _ = write!(
                out,
                "<tr class=\"mismatch\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.key),
                esc(&d.kind),
                esc(&side(&d.here, d.here_deleted)),
                esc(&side(&d.there, d.there_deleted))
            );
        }
        out.push_str("</tbody></table>");
        if t.differences.len() > ROWS_SHOWN {
            let _ = write!(
                out,
                "<p class=\"hint\">and {} more (<code>ferry integrity --json</code> lists them all).</p>",
                t.differences.len() - ROWS_SHOWN
            );
        }
        for w in &t.repair_warnings {
            let _ = write!(out, "<p class=\"error\">{}</p>", esc(w));
        }
    }
    out
}
