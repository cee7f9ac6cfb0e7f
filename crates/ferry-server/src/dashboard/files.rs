//! The files panel: what the file store holds, the files rows name that it lacks, and the
//! uploads and downloads under way (as `GET /v1/admin/status` reports them, docs/files.md).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use ferry_store::Store;

use super::html::{self, esc};
use super::{SignedIn, api_error, signed_page};
use crate::AppState;

/// `GET /admin/files`: live; the figures move with every upload.
pub async fn panel<S: Store>(State(state): State<Arc<AppState<S>>>, signed: SignedIn) -> Response {
    let s = match state.files.status(&state.store).await {
        Ok(s) => s,
        Err(e) => return api_error(e),
    };
    let columns: Vec<String> = state
        .store
        .schema()
        .tables
        .iter()
        .flat_map(|t| t.options.files.iter().map(move |c| format!("{}.{c}", t.name)))
        .collect();
    let mut body = format!("<p>Stored in {}.</p>", esc(&s.store));
    if columns.is_empty() {
        body.push_str(
            "<p>No synced table has file columns (<code>files = [\"column\"]</code> in a table's options).</p>",
        );
    } else {
        let _ = write!(body, "<p class=\"hint\">File columns: {}.</p>", esc(&columns.join(", ")));
    }
    let missing = if s.missing > 0 { " class=\"mismatch\"" } else { "" };
    let _ = write!(
        body,
        "<table class=\"figures\"><tbody>\
         <tr><th scope=\"row\">Stored</th><td>{} files, {}</td></tr>\
         <tr><th scope=\"row\">Named by rows</th><td>{} files</td></tr>\
         <tr{missing}><th scope=\"row\">Missing</th><td>{} (rows name them; their devices have not uploaded them yet)</td></tr>\
         <tr><th scope=\"row\">Uploads in progress</th><td>{}, {} still to come</td></tr>\
         <tr><th scope=\"row\">Transfers now</th><td>{} (at most {} at once since start)</td></tr>\
         <tr><th scope=\"row\">Since start</th><td>{} uploads, {} downloads, {} uploads refused (bytes did not match their hash)</td></tr>\
         <tr><th scope=\"row\">Largest upload</th><td>{}</td></tr>\
         </tbody></table>",
        s.stored,
        html::bytes(s.stored_bytes),
        s.referenced,
        s.missing,
        s.uploading,
        html::bytes(s.uploading_bytes_pending),
        s.in_flight,
        s.peak_in_flight,
        s.uploads_completed,
        s.downloads_completed,
        s.uploads_refused,
        html::bytes(s.max_upload_bytes)
    );
    signed_page(&state, &signed, "Files", "Files", true, &body).await
}
