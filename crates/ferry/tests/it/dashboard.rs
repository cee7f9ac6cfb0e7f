//! The dashboard (`/admin`) over real HTTP, as a browser without JavaScript uses it: signing
//! in with an admin token only, the session cookie, CSRF on every form, resolving a conflict
//! and revoking a device by form, signing out, the event stream of live pages.

use std::io::Read;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};

use crate::*;

/// A browser without JavaScript: follows no redirect by itself, sends its session's cookie.
struct Browser {
    http: Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(server: &Server) -> Browser {
        let http = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: server.url.clone(), cookie: None }
    }

    fn get(&self, path: &str) -> Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().unwrap()
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().unwrap()
    }

    /// Signs in with `token`; keeps the session's cookie; returns the `Set-Cookie` line.
    fn sign_in(&mut self, token: &str) -> String {
        let answer = self.post("/admin/login", &[("token", token)]);
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        assert_eq!(answer.headers()["location"], "/admin");
        let set = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
        self.cookie = Some(set.split(';').next().unwrap().to_owned());
        set
    }

    /// A page's HTML, answered 200.
    fn page(&self, path: &str) -> String {
        let answer = self.get(path);
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        answer.text().unwrap()
    }
}

/// The value of the first hidden `csrf` field in `html`.
fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form with its CSRF token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

fn redirected_to(answer: &Response) -> &str {
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    answer.headers()["location"].to_str().unwrap()
}

#[test]
fn an_admin_signs_in_resolves_a_conflict_revokes_a_device_and_signs_out() {
    let (p, g) = crate::sync::manual_group_conflict();
    let config = p.env.config();
    let admin = p.env.ok(&["token", "create", "--user", "alice", "--device", "console", "--admin", "-c", &config]);
    let mut browser = Browser::new(&p.server);

    // Not signed in: every page leads to the sign-in form; device tokens and bad ones stay out.
    assert_eq!(redirected_to(&browser.get("/admin")), "/admin/login");
    assert_eq!(redirected_to(&browser.get("/admin/conflicts")), "/admin/login");
    let form = browser.page("/admin/login");
    assert!(form.contains("<label for=\"token\">Admin token</label>"), "{form}");
    let device = browser.post("/admin/login", &[("token", &p.phone)]);
    assert_eq!(device.status(), StatusCode::FORBIDDEN);
    assert!(device.text().unwrap().contains("that token is device &#39;phone&#39;&#39;s, not an admin&#39;s"));
    let bad = browser.post("/admin/login", &[("token", "fry_not_a_token")]);
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.text().unwrap().contains("unknown or revoked token"));

    let set = browser.sign_in(&admin);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains(&admin), "the token stays on the server");
    let overview = browser.page("/admin");
    assert!(overview.contains("<h1>Overview</h1>"), "{overview}");
    assert!(overview.contains("<span class=\"badge alert\" aria-label=\"1 open\">1</span>"), "{overview}");

    // The open conflict: listed, then both versions side by side, the renamed field marked.
    let list = browser.page("/admin/conflicts");
    let id = p.env.run(&["conflicts", "list", "--open", "--json", "-c", &config]).stdout;
    let id = serde_json::from_slice::<serde_json::Value>(&id).unwrap()[0]["id"].to_string();
    assert!(list.contains(&format!("<a href=\"/admin/conflicts/{id}\">{g}</a>")), "{list}");
    assert!(list.contains("<td>groups</td>") && list.contains("<td>manual</td>"), "{list}");
    let detail = browser.page(&format!("/admin/conflicts/{id}"));
    assert!(
        detail.contains("<tr class=\"differs\"><th scope=\"row\">name <span class=\"sr\">(differs)</span></th><td>Phone name</td><td>Laptop name</td></tr>"),
        "{detail}"
    );
    let resolve = format!("/admin/conflicts/{id}/resolve");
    // A form without the session's token (another site's, say) changes nothing.
    let forged = browser.post(&resolve, &[("use", "incoming"), ("csrf", "0000")]);
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(browser.post(&resolve, &[("use", "incoming")]).status(), StatusCode::FORBIDDEN);
    let open = p.env.ok_all(&["conflicts", "list", "--open", "--json", "-c", &config]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&open).unwrap().as_array().unwrap().len(), 1);
    // Clicked: the incoming version is kept, as `ferry conflicts resolve` keeps it.
    let token = csrf(&detail);
    assert_eq!(
        redirected_to(&browser.post(&resolve, &[("use", "incoming"), ("csrf", &token)])),
        format!("/admin/conflicts/{id}")
    );
    let done = browser.page(&format!("/admin/conflicts/{id}"));
    assert!(done.contains("Resolved") && !done.contains("Keep the stored version"), "{done}");
    assert!(browser.page("/admin/conflicts").contains("No open conflicts."));
    assert!(browser.page("/admin/conflicts?state=resolved").contains(&g));
    assert!(browser.page("/admin").contains("<span class=\"badge\" aria-label=\"0 open\">0</span>"));
    p.sync_phone();
    let name: String =
        p.env.db("phone.db").query_row("SELECT name FROM groups WHERE id = ?1", [&g], |r| r.get(0)).unwrap();
    assert_eq!(name, "Laptop name");

    // Revoking the laptop: its token stops working.
    let devices = browser.page("/admin/devices");
    let listed: serde_json::Value = browser
        .http
        .get(format!("{}/v1/admin/devices", p.server.url))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let laptop = listed["devices"].as_array().unwrap().iter().find(|d| d["name"] == "laptop").unwrap();
    let laptop_id = laptop["id"].as_str().unwrap().to_owned();
    assert!(devices.contains(&format!("action=\"/admin/devices/{laptop_id}/revoke\"")), "{devices}");
    let revoke = format!("/admin/devices/{laptop_id}/revoke");
    assert_eq!(browser.post(&revoke, &[]).status(), StatusCode::FORBIDDEN);
    assert_eq!(redirected_to(&browser.post(&revoke, &[("csrf", &csrf(&devices))])), "/admin/devices");
    let pull = browser.http.get(format!("{}/v1/pull", p.server.url)).bearer_auth(&p.laptop).send().unwrap();
    assert_eq!(pull.status(), StatusCode::UNAUTHORIZED);
    assert!(browser.page("/admin/devices").contains("<td>revoked "));

    // Signing out ends the session: the old cookie opens nothing.
    let out = browser.post("/admin/logout", &[("csrf", &csrf(&browser.page("/admin")))]);
    assert_eq!(redirected_to(&out), "/admin/login");
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(redirected_to(&browser.get("/admin")), "/admin/login");

    // An admin revoked elsewhere is signed out at their next page.
    browser.sign_in(&admin);
    browser.page("/admin");
    p.env.ok(&["token", "revoke", "--user", "alice", "--device", "console", "-c", &config]);
    assert_eq!(redirected_to(&browser.get("/admin")), "/admin/login");
}

#[test]
fn a_live_page_hears_of_a_change_by_its_event_stream() {
    let p = Pair::new();
    let config = p.env.config();
    let admin = p.env.ok(&["token", "create", "--user", "alice", "--device", "console", "--admin", "-c", &config]);
    let mut browser = Browser::new(&p.server);
    assert_eq!(redirected_to(&browser.get("/admin/events")), "/admin/login");
    browser.sign_in(&admin);
    let overview = browser.page("/admin");
    // Without JavaScript the page reloads itself; with it, the script follows the stream.
    assert!(overview.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
    assert!(overview.contains("<script src=\"/admin/assets/live.js\" defer></script>"));
    let script = browser.get("/admin/assets/live.js");
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.text().unwrap().contains("new EventSource(\"/admin/events\")"));
    let mut events = browser.get("/admin/events");
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    // A device writes: a `change` event comes before the 5 s tick would.
    let phone = p.env.db("phone.db");
    insert_jump(&phone, &p.user, 1, "seen live");
    let started = std::time::Instant::now();
    p.sync_phone();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("event: change") {
        assert!(started.elapsed() < Duration::from_secs(20), "no change event: {seen}");
        let n = events.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// `ferry admin passwd` with `password` on standard input (as a script sets it).
fn passwd(env: &Env, password: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(crate::support::FERRY)
        .args(["admin", "passwd", "-c", &env.config()])
        .current_dir(env.path(""))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_admin_password_signs_in_and_a_new_one_signs_its_sessions_out() {
    let p = Pair::new();
    let mut browser = Browser::new(&p.server);
    // No password yet: the sign-in page offers the token only, and a password is refused.
    assert!(!browser.page("/admin/login").contains("name=\"password\""));
    let none = browser.post("/admin/login", &[("password", "anything at all")]);
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.text().unwrap().contains("no admin password is set; set one with `ferry admin passwd`"));

    let short = passwd(&p.env, "too short");
    assert!(!short.status.success());
    let said = String::from_utf8_lossy(&short.stderr);
    assert!(said.contains("9 characters; use at least 12"), "{said}");
    let set = passwd(&p.env, "correct horse battery staple");
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let stored = p.env.db("ferry-data/ferry.db").query_row(
        "SELECT value FROM _ferry_store WHERE key = 'admin_password'",
        [],
        |r| r.get::<_, String>(0),
    );
    let stored = stored.expect("the hash is in the store");
    assert!(stored.starts_with("$argon2id$") && !stored.contains("correct horse"), "{stored}");

    let form = browser.page("/admin/login");
    assert!(form.contains("<label for=\"password\">Or the admin password</label>"), "{form}");
    let wrong = browser.post("/admin/login", &[("password", "correct horse battery")]);
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().unwrap().contains("that is not the admin password"));
    let right = browser.post("/admin/login", &[("password", "correct horse battery staple")]);
    assert_eq!(redirected_to(&right), "/admin");
    let set = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    browser.cookie = Some(set.split(';').next().unwrap().to_owned());
    assert!(browser.page("/admin").contains("<h1>Overview</h1>"));

    // Guessing pauses after ten wrong passwords within a minute, the right one included.
    for _ in 0..9 {
        let guess = browser.post("/admin/login", &[("password", "a wrong guess here")]);
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    let paused = browser.post("/admin/login", &[("password", "correct horse battery staple")]);
    assert_eq!(paused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(paused.text().unwrap().contains("10 wrong passwords within a minute"));

    // A new password signs out what the old one opened.
    assert!(passwd(&p.env, "a different long password").status.success());
    assert_eq!(redirected_to(&browser.get("/admin")), "/admin/login");
    // Removed: the password form goes, tokens still work.
    assert!(p.env.run(&["admin", "passwd", "--remove", "-c", &p.env.config()]).status.success());
    assert!(!browser.page("/admin/login").contains("name=\"password\""));
}

#[test]
fn the_panels_answer_without_javascript_and_their_forms_need_the_session() {
    let p = Pair::new();
    let config = p.env.config();
    let admin = p.env.ok(&["token", "create", "--user", "alice", "--device", "console", "--admin", "-c", &config]);
    let mut browser = Browser::new(&p.server);
    for page in ["/admin/full-sync", "/admin/integrity", "/admin/files"] {
        assert_eq!(redirected_to(&browser.get(page)), "/admin/login", "{page}");
    }
    browser.sign_in(&admin);
    // This server links to no peer: the panels say so rather than offer a form.
    let full = browser.page("/admin/full-sync");
    assert!(full.contains("No peers to sync with") && full.contains("No full syncs yet."), "{full}");
    assert!(browser.page("/admin/integrity").contains("No peers to compare with"));
    let forged = browser.post("/admin/full-sync", &[("peer", "cloud"), ("direction", "push")]);
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(browser.post("/admin/integrity", &[("peer", "cloud"), ("csrf", "00")]).status(), StatusCode::FORBIDDEN);
    let token = csrf(&full);
    let unknown = browser.post("/admin/full-sync", &[("peer", "nowhere"), ("direction", "push"), ("csrf", &token)]);
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.text().unwrap().contains("nowhere"));
    assert_eq!(browser.get("/admin/full-sync/no-such-run").status(), StatusCode::NOT_FOUND);

    // A file a synced row names but the phone has not uploaded: missing; uploaded: stored.
    let (_, content) = p.phone_adds_video(150_000, 7);
    p.sync_phone();
    let files = browser.page("/admin/files");
    assert!(files.contains("<th scope=\"row\">Stored</th><td>0 files, 0 bytes</td>"), "{files}");
    assert!(files.contains("<tr class=\"mismatch\"><th scope=\"row\">Missing</th><td>1 "), "{files}");
    assert!(files.contains("File columns: jump_log.video_sha256."), "{files}");
    assert!(files.contains("<meta http-equiv=\"refresh\""), "a live page");
    p.file_sync("phone.db", &p.phone, &p.server.url, &[]).unwrap();
    let files = browser.page("/admin/files");
    assert_eq!(content.len(), 150_000);
    assert!(files.contains("<th scope=\"row\">Stored</th><td>1 files, 150.0 kB</td>"), "{files}");
    assert!(files.contains("<th scope=\"row\">Missing</th><td>0 "), "{files}");
}
