//! `/admin`: the operator's dashboard, server-rendered HTML that works without JavaScript
//! (a live page reloads itself every 5 s; with JavaScript it refreshes when the event stream
//! says something changed). Assets are compiled into the binary. Signing in: [`session`].
//! Documented in docs/dashboard.md.

mod files;
mod full_sync;
mod html;
mod integrity;
pub mod session;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ferry_protocol::ConflictSide;
use ferry_store::{ConflictFilter, Store};

use crate::AppState;
use html::{Frame, esc};
use session::{Credential, NotSignedIn, SignedIn};

/// The dashboard's routes (HTML, not the JSON API: docs/dashboard.md, not docs/openapi.json).
pub fn routes<S: Store>() -> Router<Arc<AppState<S>>> {
    Router::new()
        .route("/admin", get(overview::<S>))
        .route("/admin/login", get(login_form::<S>).post(login::<S>))
        .route("/admin/logout", post(logout::<S>))
        .route("/admin/events", get(events::<S>))
        .route("/admin/conflicts", get(conflicts::<S>))
        .route("/admin/conflicts/{id}", get(conflict::<S>))
        .route("/admin/conflicts/{id}/resolve", post(resolve::<S>))
        .route("/admin/devices", get(devices::<S>))
        .route("/admin/devices/{id}/revoke", post(revoke::<S>))
        .route("/admin/full-sync", get(full_sync::panel::<S>).post(full_sync::start::<S>))
        .route("/admin/full-sync/{id}", get(full_sync::run::<S>))
        .route("/admin/full-sync/{id}/cancel", get(full_sync::confirm_cancel::<S>).post(full_sync::cancel::<S>))
        .route("/admin/integrity", get(integrity::panel::<S>).post(integrity::check::<S>))
        .route("/admin/files", get(files::panel::<S>))
        .route("/admin/assets/{name}", get(asset))
}

/// An HTML answer.
fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}

/// The signed-in operator, or the answer to give instead: to the sign-in page, or the store's
/// error as a page. As an extractor, a page handler's first check.
impl<S: Store> axum::extract::FromRequestParts<Arc<AppState<S>>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState<S>>,
    ) -> Result<SignedIn, Response> {
        match session::signed_in(state, &parts.headers).await {
            Ok(s) => Ok(s),
            Err(NotSignedIn::Out) => Err(Redirect::to("/admin/login").into_response()),
            Err(NotSignedIn::Store(e)) => Err(api_error(e)),
        }
    }
}

/// A form posted by the signed-in operator, its CSRF token the session's (else 403, nothing
/// done): the extractor of every handler that changes something.
pub(crate) struct Posted {
    pub signed: SignedIn,
    pub form: HashMap<String, String>,
}

impl<S: Store> axum::extract::FromRequest<Arc<AppState<S>>> for Posted {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &Arc<AppState<S>>) -> Result<Posted, Response> {
        use axum::extract::FromRequestParts as _;
        let (mut parts, body) = req.into_parts();
        let signed = SignedIn::from_request_parts(&mut parts, state).await?;
        let req = axum::extract::Request::from_parts(parts, body);
        let Form(form) = Form::<HashMap<String, String>>::from_request(req, state)
            .await
            .map_err(|e| error_page(StatusCode::BAD_REQUEST, &format!("unreadable form: {e}")))?;
        if !session::csrf_ok(&signed, form.get("csrf").map(String::as_str)) {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "this form is out of date or did not come from this dashboard (its CSRF token is not this session's); reload the page and try again",
            ));
        }
        Ok(Posted { signed, form })
    }
}

/// A form's choice of peer (`[peers.NAME]`): the full sync's and the integrity check's.
fn peer_field(links: &[crate::config::PeerConfig]) -> String {
    let mut out = String::from("<label for=\"peer\">Peer</label><select id=\"peer\" name=\"peer\" required>");
    for p in links {
        let off = if p.enabled { "" } else { " (link disabled)" };
        let _ = write!(out, "<option value=\"{n}\">{n}{off}</option>", n = esc(&p.name));
    }
    out.push_str("</select>");
    out
}

/// A form's choice of tables, read by [`tables`]: the full sync's and the integrity check's.
const TABLES_FIELD: &str = "<label for=\"tables\">Tables (optional)</label>\
    <input id=\"tables\" name=\"tables\" type=\"text\" placeholder=\"every table that crosses the link\" aria-describedby=\"tables-hint\">\
    <p class=\"hint\" id=\"tables-hint\">Separated by commas; empty for every table that crosses the link.</p>";

/// A form's `tables` field ([`TABLES_FIELD`]): names separated by commas, `None` when empty.
fn tables(form: &HashMap<String, String>) -> Option<Vec<String>> {
    let names: Vec<String> =
        form.get("tables")?.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    (!names.is_empty()).then_some(names)
}

/// A store's refusal or failure as a page, with the status the API would answer.
fn store_error(e: ferry_store::StoreError) -> Response {
    api_error(crate::ApiError::from(e))
}

fn api_error(e: crate::ApiError) -> Response {
    let status = StatusCode::from_u16(e.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_page(status, &e.to_string())
}

/// A page that says what went wrong (a 5xx says only that the log has it). Marked
/// [`Deliberate`](crate::guard::Deliberate): the guard leaves it HTML.
fn error_page(status: StatusCode, message: &str) -> Response {
    let message = if status.is_server_error() {
        tracing::error!(status = status.as_u16(), "dashboard: {message}");
        "the server cannot answer this now; its log says why"
    } else {
        message
    };
    let f = Frame { title: "Something went wrong", nav: "", csrf: None, open_conflicts: 0, live: false };
    let body = format!(
        "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/admin\">Back to the overview</a></p>",
        esc(message)
    );
    let mut answer = html(status, html::page(&f, &body));
    answer.extensions_mut().insert(crate::guard::Deliberate);
    answer
}

/// A signed-in page: `body` in the frame, its navigation naming `nav` and counting the open
/// conflicts; `live` pages update themselves.
async fn signed_page<S: Store>(
    state: &AppState<S>,
    signed: &SignedIn,
    title: &str,
    nav: &str,
    live: bool,
    body: &str,
) -> Response {
    let open_conflicts =
        state.store.conflict_counts().await.map_or(0, |c| c.iter().filter(|c| c.open).map(|c| c.count).sum());
    let f = Frame { title, nav, csrf: Some(&signed.csrf), open_conflicts, live };
    html(StatusCode::OK, html::page(&f, body))
}

async fn login_form<S: Store>(State(state): State<Arc<AppState<S>>>) -> Response {
    sign_in_page(&state, StatusCode::OK, None).await
}

/// The sign-in page (with `problem` said on top): a token's form, and a password's when
/// `ferry admin passwd` set one.
async fn sign_in_page<S: Store>(state: &AppState<S>, status: StatusCode, problem: Option<&str>) -> Response {
    let password = match state.store.admin_password().await {
        Ok(p) => p.is_some(),
        Err(e) => return store_error(e),
    };
    let f = Frame { title: "Sign in", nav: "", csrf: None, open_conflicts: 0, live: false };
    let mut body = String::new();
    if let Some(p) = problem {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", esc(p));
    }
    body.push_str(
        "<form method=\"post\" action=\"/admin/login\" class=\"signin\">\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>\
         <p class=\"hint\">Made with <code>ferry token create --admin</code>.</p>\
         <button type=\"submit\">Sign in</button></form>",
    );
    if password {
        body.push_str(
            "<form method=\"post\" action=\"/admin/login\" class=\"signin\">\
             <label for=\"password\">Or the admin password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <p class=\"hint\">Set with <code>ferry admin passwd</code>.</p>\
             <button type=\"submit\">Sign in with the password</button></form>",
        );
    }
    let mut answer = html(status, html::page(&f, &body));
    answer.extensions_mut().insert(crate::guard::Deliberate);
    answer
}

/// A new session for `by`: to the overview, with its cookie.
fn signed_in_as(state: &AppState<impl Store>, by: Credential) -> Response {
    let id = state.dashboard.open(by);
    let mut answer = Redirect::to("/admin").into_response();
    if let Ok(v) = session::set_cookie(Some(&id)).parse() {
        answer.headers_mut().insert(header::SET_COOKIE, v);
    }
    answer
}

/// `POST /admin/login`: an admin token, or the admin password, opens a session; anything
/// else is refused by name.
async fn login<S: Store>(State(state): State<Arc<AppState<S>>>, Form(form): Form<HashMap<String, String>>) -> Response {
    if let Some(password) = form.get("password") {
        if let Err(wait) = state.dashboard.password_allowed() {
            let problem = format!(
                "{} wrong passwords within a minute; signing in by password pauses for {} s (an admin token still works)",
                session::WRONG_PASSWORDS,
                wait.as_secs() + 1
            );
            return sign_in_page(&state, StatusCode::TOO_MANY_REQUESTS, Some(&problem)).await;
        }
        return match state.store.admin_password().await {
            Ok(Some(hash)) if session::password_matches_async(password.clone(), hash.clone()).await => {
                tracing::info!("signed in to the dashboard with the admin password");
                signed_in_as(&state, Credential::Password(hash))
            }
            Ok(Some(_)) => {
                state.dashboard.password_was_wrong();
                tracing::warn!("a dashboard sign-in with a wrong admin password");
                sign_in_page(&state, StatusCode::UNAUTHORIZED, Some("that is not the admin password")).await
            }
            Ok(None) => {
                let no = "no admin password is set; set one with `ferry admin passwd`, or sign in with an admin token";
                sign_in_page(&state, StatusCode::UNAUTHORIZED, Some(no)).await
            }
            Err(e) => store_error(e),
        };
    }
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    if token.is_empty() {
        return sign_in_page(&state, StatusCode::BAD_REQUEST, Some("enter an admin token")).await;
    }
    match state.store.authenticate(token).await {
        Ok(Some(who)) if who.admin => {
            tracing::info!(device = %who.device_id, "signed in to the dashboard");
            signed_in_as(&state, Credential::Token(token.to_owned()))
        }
        Ok(Some(who)) => sign_in_page(
            &state,
            StatusCode::FORBIDDEN,
            Some(&format!(
                "that token is device '{}''s, not an admin's; sign in with a token from `ferry token create --admin`",
                who.device_name
            )),
        )
        .await,
        Ok(None) => {
            sign_in_page(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("unknown or revoked token; make one with `ferry token create --admin`"),
            )
            .await
        }
        Err(e) => store_error(e),
    }
}

/// `POST /admin/logout`: the session ends here and in the browser.
async fn logout<S: Store>(State(state): State<Arc<AppState<S>>>, headers: HeaderMap, _: Posted) -> Response {
    if let Some(id) = session::cookie(&headers) {
        state.dashboard.close(&id);
    }
    let mut answer = Redirect::to("/admin/login").into_response();
    if let Ok(v) = session::set_cookie(None).parse() {
        answer.headers_mut().insert(header::SET_COOKIE, v);
    }
    answer
}

/// `GET /admin`: active alerts first, each link's state, lag and files, the last 20 sync-log
/// entries.
async fn overview<S: Store>(State(state): State<Arc<AppState<S>>>, signed: SignedIn) -> Response {
    let now = crate::peer::now_ms();
    let (links, log) = match (state.store.links().await, state.store.sync_log(None, 20).await) {
        (Ok(l), Ok(g)) => (l.into_iter().map(|p| crate::peer::seen_at(p, now)).collect::<Vec<_>>(), g),
        (Err(e), _) | (_, Err(e)) => return store_error(e),
    };
    let mut body = String::new();
    let alerts = crate::peer::alerts(&links, &state.alerts, now);
    if !alerts.is_empty() {
        body.push_str("<section aria-labelledby=\"alerts\"><h2 id=\"alerts\">Alerts</h2><ul class=\"alerts\">");
        for a in &alerts {
            let _ = write!(
                body,
                "<li class=\"{}\" role=\"alert\"><strong>{}</strong> {}</li>",
                a.severity.to_ascii_lowercase(),
                esc(&a.severity),
                esc(&a.message)
            );
        }
        body.push_str("</ul></section>");
    }
    body.push_str("<section aria-labelledby=\"peers\"><h2 id=\"peers\">Peers</h2>");
    if links.is_empty() {
        body.push_str("<p>No links to peer servers (<code>[peers.NAME]</code> in ferry.toml).</p>");
    } else {
        body.push_str(&html::table(
            "",
            &["Peer", "Connection", "Lag", "Lag, last hour", "Files pending", "Last successful sync"],
        ));
        for p in links.iter().filter(|p| p.enabled) {
            let up = crate::peer::is_up(p);
            let (dot, said) = if up { ("up", "Connected") } else { ("down", "Disconnected") };
            let last = p.last_success_ms.map_or("never".to_owned(), |at| html::ago(now.saturating_sub(at)));
            let _ = write!(
                body,
                "<tr><td>{}</td><td><span class=\"dot {dot}\" aria-hidden=\"true\"></span>{said}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                html::duration(crate::peer::lag_at(p, now)),
                html::lag_chart(&crate::lag::HISTORY.of(&p.name), now),
                p.file_queue,
                esc(&last)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section><section aria-labelledby=\"log\"><h2 id=\"log\">Sync log</h2>");
    if log.is_empty() {
        body.push_str("<p>Nothing yet.</p>");
    } else {
        body.push_str("<ul class=\"log\">");
        for e in &log {
            let status = e.status.to_ascii_lowercase();
            let _ = write!(
                body,
                "<li><span class=\"status {status}\">{}</span> {} · {} · {} · {}",
                esc(&e.status),
                esc(&html::ago(now.saturating_sub(e.at_ms))),
                esc(&e.peer),
                esc(&e.kind),
                html::plural(e.rows, "row")
            );
            if let Some(error) = &e.error {
                let _ = write!(body, "<details><summary>Details</summary><pre>{}</pre></details>", esc(error));
            }
            body.push_str("</li>");
        }
        body.push_str("</ul>");
    }
    body.push_str("</section>");
    signed_page(&state, &signed, "Overview", "Overview", true, &body).await
}

/// `GET /admin/conflicts?state=open|resolved`: the conflict log, newest first.
async fn conflicts<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    signed: SignedIn,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let resolved = q.get("state").is_some_and(|s| s == "resolved");
    let filter = if resolved { ConflictFilter::Resolved } else { ConflictFilter::Open };
    let list = match state.store.conflicts(filter).await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    let mut body = String::from("<nav class=\"tabs\" aria-label=\"Which conflicts\">");
    for (on, href, name) in
        [(!resolved, "/admin/conflicts", "Open"), (resolved, "/admin/conflicts?state=resolved", "Resolved")]
    {
        let current = if on { " aria-current=\"page\"" } else { "" };
        let _ = write!(body, "<a href=\"{href}\"{current}>{name}</a>");
    }
    body.push_str("</nav>");
    if list.is_empty() {
        body.push_str(if resolved { "<p>No resolved conflicts.</p>" } else { "<p>No open conflicts.</p>" });
    } else {
        body.push_str(&html::table("", &["Table", "Row", "Kind", "When", "Strategy"]));
        for c in &list {
            let _ = write!(
                body,
                "<tr><td>{}</td><td><a href=\"/admin/conflicts/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.table),
                c.id,
                esc(&c.key),
                c.kind.name(),
                esc(&c.detected_at),
                c.strategy.name()
            );
        }
        body.push_str("</tbody></table>");
    }
    signed_page(&state, &signed, "Conflicts", "Conflicts", true, &body).await
}

/// `GET /admin/conflicts/{id}`: both versions side by side, the differing fields marked, and
/// (while open) a button for each.
async fn conflict<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let n = match crate::admin::conflict_id(&id) {
        Ok(n) => n,
        Err(e) => return api_error(e),
    };
    let c = match state.store.conflict(n).await {
        Ok(Some(c)) => c,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, &format!("no conflict with id {n}")),
        Err(e) => return store_error(e),
    };
    let mut body = format!(
        "<p>{} row <code>{}</code> · {} · detected {} · strategy {}</p>",
        esc(&c.table),
        esc(&c.key),
        c.kind.name(),
        esc(&c.detected_at),
        c.strategy.name()
    );
    let mut columns: Vec<&String> = c.stored.values.keys().chain(c.incoming.values.keys()).collect();
    columns.sort();
    columns.dedup();
    let shown = |side: &ferry_protocol::ConflictVersion, col: &str| match side.values.get(col) {
        None => "—".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    body.push_str(&html::table("versions", &["Field", "Stored", "Incoming"]));
    for col in columns {
        let (a, b) = (shown(&c.stored, col), shown(&c.incoming, col));
        let differs = a != b;
        let mark = if differs { " class=\"differs\"" } else { "" };
        let note = if differs { " <span class=\"sr\">(differs)</span>" } else { "" };
        let _ = write!(
            body,
            "<tr{mark}><th scope=\"row\">{}{note}</th><td>{}</td><td>{}</td></tr>",
            esc(col),
            esc(&a),
            esc(&b)
        );
    }
    let origin = |v: &ferry_protocol::ConflictVersion| v.origin.clone().unwrap_or_else(|| "the server's tables".into());
    let _ = write!(
        body,
        "<tr><th scope=\"row\">Written by</th><td>{}</td><td>{}</td></tr></tbody></table>",
        esc(&origin(&c.stored)),
        esc(&origin(&c.incoming))
    );
    match &c.resolved_at {
        Some(at) => {
            let by = c.resolved_by.map_or("", ferry_protocol::Strategy::name);
            let _ = write!(body, "<p class=\"done\">Resolved {} by {by}.</p>", esc(at));
        }
        None => {
            for (side, label) in [("stored", "Keep the stored version"), ("incoming", "Keep the incoming version")] {
                let _ = write!(
                    body,
                    "<form method=\"post\" action=\"/admin/conflicts/{}/resolve\" class=\"choice\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"use\" value=\"{side}\">\
                     <button type=\"submit\">{label}</button></form>",
                    c.id,
                    esc(&signed.csrf)
                );
            }
        }
    }
    let title = format!("Conflict {}", c.id);
    signed_page(&state, &signed, &title, "Conflicts", false, &body).await
}

/// `POST /admin/conflicts/{id}/resolve` (`use=stored|incoming`): as `ferry conflicts resolve`.
async fn resolve<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Path(id): Path<String>,
    Posted { signed, form }: Posted,
) -> Response {
    let n = match crate::admin::conflict_id(&id) {
        Ok(n) => n,
        Err(e) => return api_error(e),
    };
    let sent = form.get("use").map_or("", String::as_str);
    let Some(keep) = ConflictSide::parse(sent) else {
        let sent = ferry_core::shown(sent);
        return error_page(StatusCode::BAD_REQUEST, &format!("use '{sent}' is neither stored nor incoming"));
    };
    match state.store.resolve_conflict(n, keep).await {
        Ok(_) => {
            tracing::info!(conflict = n, by = %signed.by, "conflict resolved from the dashboard");
            Redirect::to(&format!("/admin/conflicts/{n}")).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `GET /admin/devices`: every device, its user, when it was last seen, and a revoke button.
async fn devices<S: Store>(State(state): State<Arc<AppState<S>>>, signed: SignedIn) -> Response {
    let list = match state.store.devices(None).await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    let mut body = html::table("", &["Device", "User", "Last seen", "State", "<span class=\"sr\">Action</span>"]);
    for d in &list {
        let kind = if d.admin { " (admin)" } else { "" };
        let _ = write!(
            body,
            "<tr><td>{}{kind}</td><td>{}</td><td>{}</td>",
            esc(&d.name),
            esc(&d.user_name),
            esc(d.last_seen.as_deref().unwrap_or("never"))
        );
        match &d.revoked_at {
            Some(at) => {
                let _ = write!(body, "<td>revoked {}</td><td></td></tr>", esc(at));
            }
            None => {
                let _ = write!(
                    body,
                    "<td>live</td><td><form method=\"post\" action=\"/admin/devices/{id}/revoke\" data-confirm=\"Revoke {name}? Its tokens stop working at once.\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\" aria-label=\"Revoke {name}\">Revoke</button></form></td></tr>",
                    id = esc(&d.id),
                    name = esc(&d.name),
                    csrf = esc(&signed.csrf)
                );
            }
        }
    }
    body.push_str("</tbody></table>");
    signed_page(&state, &signed, "Devices", "Devices", false, &body).await
}

/// `POST /admin/devices/{id}/revoke`: as `POST /v1/admin/devices/{id}/revoke`.
async fn revoke<S: Store>(
    State(state): State<Arc<AppState<S>>>,
    Path(id): Path<String>,
    Posted { signed, .. }: Posted,
) -> Response {
    match crate::admin::revoke(&state, &id).await {
        Ok(_) => {
            tracing::info!(device = %id, by = %signed.by, "device revoked from the dashboard");
            Redirect::to("/admin/devices").into_response()
        }
        Err(e) => api_error(e),
    }
}

/// `GET /admin/events`: server-sent events for live pages: `change` when the store announces
/// written rows, and every 5 s a `tick` (links' lag and state move on their own).
async fn events<S: Store>(State(state): State<Arc<AppState<S>>>, _: SignedIn) -> Response {
    let notices = state.store.notices();
    let stream = futures_util::stream::unfold(
        (notices, tokio::time::interval(Duration::from_secs(5))),
        |(mut notices, mut tick)| async move {
            let name = tokio::select! {
                n = notices.recv() => match n {
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    _ => "change",
                },
                _ = tick.tick() => "tick",
            };
            let frame = format!("event: {name}\ndata: {}\n\n", crate::peer::now_ms());
            Some((Ok::<_, Infallible>(frame), (notices, tick)))
        },
    );
    (
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-store")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /admin/assets/{name}`: the stylesheet and the live script, from the binary.
async fn asset(Path(name): Path<String>) -> Response {
    let (kind, text) = match name.as_str() {
        "style.css" => ("text/css; charset=utf-8", include_str!("style.css")),
        "live.js" => ("text/javascript; charset=utf-8", include_str!("live.js")),
        _ => return error_page(StatusCode::NOT_FOUND, &format!("no asset '{}'", ferry_core::shown(&name))),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], text).into_response()
}
