//! The dashboard in headless Chromium, as an operator uses it: signing in by typing a token,
//! resolving a conflict and revoking a device by clicking, pages that update themselves, a
//! full sync watched and cancelled, an integrity check and its repair, a phone-sized window.
//! Every page passes the accessibility check; screenshots go to target/test-artefacts.

use std::time::Duration;

use serde_json::Value;

use crate::chromium::Chromium;
use crate::full_sync::groups;
use crate::proxy::{Fault, Proxy};
use crate::*;

/// A browser signed in to `url`'s dashboard with `admin`, by typing the token and clicking.
fn signed_in(url: &str, admin: &str) -> Chromium {
    let mut b = Chromium::launch();
    b.viewport(1280, 900, false);
    b.goto(&format!("{url}/admin"));
    b.wait_for("the sign-in page", "location.pathname === '/admin/login'");
    b.type_into("#token", admin);
    b.click_text("button", "Sign in");
    b.wait_for("the overview", "document.querySelector('h1')?.textContent === 'Overview'");
    b
}

/// Waits until the page's heading reads `title`.
fn heading(b: &mut Chromium, title: &str) {
    let js = format!("document.querySelector('h1')?.textContent === {}", serde_json::json!(title));
    b.wait_for(&format!("the page '{title}'"), &js);
}

/// Marks the document: [`same_document`] then tells a live update from a reload.
fn mark(b: &mut Chromium) {
    b.eval("window.ferryMark = true");
}

fn same_document(b: &mut Chromium) {
    assert!(b.eval("window.ferryMark === true") == true, "the page was reloaded, not updated in place");
}

/// The page is no wider than its window (nothing to scroll sideways on a phone).
fn fits(b: &mut Chromium, page: &str) {
    let widths = b.eval("[document.documentElement.scrollWidth, window.innerWidth]");
    assert!(widths[0].as_f64() <= widths[1].as_f64(), "{page} is wider than the window: {widths}");
}

#[test]
fn an_operator_resolves_a_conflict_and_revokes_a_device_by_clicking() {
    let (p, g) = crate::sync::manual_group_conflict();
    let config = p.env.config();
    let admin = p.env.ok(&["token", "create", "--user", "alice", "--device", "console", "--admin", "-c", &config]);
    let mut b = signed_in(&p.server.url, &admin);
    b.wait_for("the red badge of one open conflict", "document.querySelector('.badge.alert')?.textContent === '1'");
    b.check_accessible("the overview");
    b.screenshot("overview");

    // The conflict: listed, opened, both versions side by side, the renamed field marked.
    b.click("nav a[href='/admin/conflicts']");
    heading(&mut b, "Conflicts");
    b.check_accessible("the conflicts");
    b.click("main table a");
    b.wait_for("the conflict's page", "document.querySelector('h1')?.textContent.startsWith('Conflict ')");
    let marked = b.eval("[...document.querySelectorAll('tr.differs th')].map((t) => t.textContent.trim())");
    assert_eq!(marked, serde_json::json!(["name (differs)"]), "only the name differs");
    let highlight = b.eval("getComputedStyle(document.querySelector('tr.differs td')).backgroundColor");
    assert_eq!(highlight, "rgb(255, 243, 196)", "the differing field is highlighted");
    b.check_accessible("a conflict");
    b.screenshot("conflict");
    b.click_text("button", "Keep the incoming version");
    b.wait_for("the resolution", "document.querySelector('.done')?.textContent.startsWith('Resolved')");
    b.wait_for("the badge at zero", "document.querySelector('.badge')?.textContent === '0'");
    assert!(b.eval("document.querySelector('.badge.alert')") == Value::Null, "no red badge");
    // As `ferry conflicts resolve --use incoming`: the laptop's name reaches the phone.
    p.sync_phone();
    let name: String =
        p.env.db("phone.db").query_row("SELECT name FROM groups WHERE id = ?1", [&g], |r| r.get(0)).unwrap();
    assert_eq!(name, "Laptop name");

    // The list is live: a new conflict shows up without a reload.
    b.click("nav a[href='/admin/conflicts']");
    b.wait_for("no open conflict", "document.querySelector('main')?.innerText.includes('No open conflicts.')");
    mark(&mut b);
    let (phone, laptop) = (p.env.db("phone.db"), p.env.db("laptop.db"));
    p.sync_laptop();
    laptop.execute("UPDATE groups SET name = 'Laptop again' WHERE id = ?1", [&g]).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    phone.execute("UPDATE groups SET name = 'Phone again' WHERE id = ?1", [&g]).unwrap();
    p.sync_phone();
    p.sync_laptop();
    b.wait_for("the new conflict in the list", "document.querySelectorAll('main table tbody tr').length === 1");
    same_document(&mut b);

    // Revoking the laptop: asked first, then its token stops working.
    b.click("nav a[href='/admin/devices']");
    heading(&mut b, "Devices");
    b.check_accessible("the devices");
    b.click("button[aria-label='Revoke laptop']");
    b.wait_for("the laptop revoked", "[...document.querySelectorAll('tr')].some((r) => r.innerText.startsWith('laptop') && r.innerText.includes('revoked'))");
    assert_eq!(b.dialogs, ["Revoke laptop? Its tokens stop working at once."]);
    let pull = p.server.http().get(format!("{}/v1/pull", p.server.url)).bearer_auth(&p.laptop).send().unwrap();
    assert_eq!(pull.status(), 401);
    b.screenshot("devices");

    // A phone-sized window: the same pages, nothing to scroll sideways.
    b.viewport(390, 844, true);
    for (page, name) in
        [("/admin", "phone-overview"), ("/admin/conflicts", "phone-conflicts"), ("/admin/devices", "phone-devices")]
    {
        b.goto(&format!("{}{page}", p.server.url));
        fits(&mut b, page);
        b.check_accessible(page);
        b.screenshot(name);
    }
    // Rows are cards there, each value named by its column, every button within reach.
    let labelled = b.eval("document.querySelector('table.cards td[data-label=\"Last seen\"]') !== null");
    assert!(labelled == true, "the devices' cells are labelled on a phone");
    let reach = b.eval(
        "[...document.querySelectorAll('main button')].every((x) => x.getBoundingClientRect().right <= innerWidth)",
    );
    assert!(reach == true, "a Revoke button lies beyond the phone's width");
    b.click_text("button", "Sign out");
    b.wait_for("the sign-in page", "location.pathname === '/admin/login'");
}

#[test]
fn the_overview_shows_a_linked_peer_and_updates_itself() {
    let (main, cloud) = crate::peering::pair_in(Env::new(), None, "", &|schema| schema.to_owned());
    let mut b = signed_in(&main.server.url, &main.admin);
    b.wait_for("the link connected", "document.querySelector('main table')?.innerText.includes('Connected')");
    let dot = b.eval("getComputedStyle(document.querySelector('.dot.up')).backgroundColor");
    assert_eq!(dot, "rgb(17, 99, 41)", "a green dot");
    let chart = b.wait_for("the lag chart", "document.querySelector('svg.chart')?.getAttribute('aria-label')");
    assert!(chart.as_str().unwrap().starts_with("Lag over the last hour: highest "), "{chart}");
    b.check_accessible("the overview with a peer");
    b.screenshot("overview-peer");

    // A row written on CLOUD crosses: the run that carried it shows in the sync log, in place.
    mark(&mut b);
    let group = uuid();
    cloud.psql(&format!("INSERT INTO groups (id, name, created_by) VALUES ('{group}', 'from cloud', '{}')", uuid()));
    b.wait_for(
        "the run that carried one row",
        "[...document.querySelectorAll('.log li')].some((li) => li.innerText.includes(' · 1 row'))",
    );
    same_document(&mut b);
}

#[test]
fn a_full_sync_is_watched_and_cancelled_and_an_integrity_check_repairs() {
    let proxy = std::cell::OnceCell::new();
    let (main, cloud) =
        crate::integrity::unlinked_pair_via(false, &|url| proxy.get_or_init(|| Proxy::start(url)).url.clone());
    let proxy = proxy.get().unwrap();
    groups(&main, 20_000, "from main");
    let mut b = signed_in(&main.server.url, &main.admin);

    // Started from the form, the transfer slowed down: its page follows the phases by itself.
    b.click("nav a[href='/admin/full-sync']");
    heading(&mut b, "Full sync");
    b.check_accessible("the full sync panel");
    // The panel is live, but what is being typed into its form stays while it is typed.
    b.type_into("#tables", "groups");
    b.wait_for("a refresh held back", "document.body.dataset.held === 'editing'");
    let kept = b.eval("[document.querySelector('#tables').value, document.activeElement.id]");
    assert_eq!(kept, serde_json::json!(["groups", "tables"]), "the field kept its text and focus");
    b.eval("document.querySelector('#tables').value = ''; document.activeElement.blur()");
    b.wait_for("refreshes again", "document.body.dataset.held === ''");
    proxy.set(Fault::Delay(Duration::from_millis(200)));
    b.click_text("button", "Start full sync");
    b.wait_for("the run's page", "document.querySelector('h1')?.textContent.startsWith('Full sync ')");
    mark(&mut b);
    b.wait_for(
        "the transfer under way",
        "[...document.querySelectorAll('tbody tr')].some((r) => r.querySelector('th')?.textContent === 'transfer' && r.innerText.includes('running'))",
    );
    let bar = b.eval("document.querySelector('progress[aria-label^=\"snapshot\"]').value");
    assert_eq!(bar, 100.0, "the snapshot is done before the transfer runs");
    b.check_accessible("a running full sync");
    b.screenshot("full-sync-running");
    same_document(&mut b);

    // Cancelled, after saying yes.
    b.click_text("a", "Cancel…");
    heading(&mut b, "Cancel the full sync?");
    b.check_accessible("the cancel confirmation");
    b.click_text("button", "Yes, cancel it");
    b.wait_for("the run cancelled", "document.querySelector('.status')?.textContent === 'CANCELLED'");
    assert_eq!(cloud.psql("SELECT count(*) FROM groups"), "0", "CLOUD holds nothing of a cancelled push");

    // Again at full speed, with verify: every phase to 100 %, SUCCESS, watched in place.
    proxy.set(Fault::Pass);
    b.click("nav a[href='/admin/full-sync']");
    heading(&mut b, "Full sync");
    b.click_text("button", "Start full sync");
    b.wait_for("the run's page", "document.querySelector('h1')?.textContent.startsWith('Full sync ')");
    mark(&mut b);
    b.wait_for("the run's success", "document.querySelector('.status')?.textContent === 'SUCCESS'");
    same_document(&mut b);
    assert!(b.text().contains("Both sides hold the same rows."), "{}", b.text());
    let bars = b.eval("[...document.querySelectorAll('progress')].map((p) => p.value)");
    let done = bars.as_array().unwrap().iter().filter(|v| v.as_f64() == Some(100.0)).count();
    assert_eq!(done, 4, "every phase done: {bars}");
    b.screenshot("full-sync-done");
    assert_eq!(cloud.psql("SELECT count(*) FROM groups"), "20000");
    b.click("a[href='/admin/full-sync']:not(nav a)");
    heading(&mut b, "Full sync");
    let states = b.eval("[...document.querySelectorAll('tbody .status')].map((s) => s.textContent)");
    assert_eq!(states, serde_json::json!(["SUCCESS", "CANCELLED"]), "the recent runs, newest first");

    // Three rows only MAIN holds: the check finds them, in red; the repair sends them over.
    groups(&main, 3, "main only");
    b.click("nav a[href='/admin/integrity']");
    heading(&mut b, "Integrity");
    b.check_accessible("the integrity panel");
    b.type_into("#tables", "groups");
    b.click_text("button", "Run the check");
    b.wait_for("the report", "document.querySelector('main .status')?.textContent === 'FAILED'");
    let rows = b.eval("document.querySelectorAll('table.mismatches tr.mismatch').length");
    assert_eq!(rows, 3);
    let red = b.eval("getComputedStyle(document.querySelector('tr.mismatch td')).color");
    assert_eq!(red, "rgb(179, 38, 30)", "mismatches in red");
    b.check_accessible("an integrity report with mismatches");
    b.screenshot("integrity-mismatches");
    b.click_text("button", "Repair these differences");
    b.wait_for("the repair", "document.querySelector('main .status')?.textContent === 'REPAIRED'");
    assert_eq!(cloud.psql("SELECT count(*) FROM groups WHERE name = 'main only'"), "3");

    b.viewport(390, 844, true);
    for page in ["/admin/full-sync", "/admin/integrity", "/admin/files"] {
        b.goto(&format!("{}{page}", main.server.url));
        fits(&mut b, page);
        b.check_accessible(page);
    }
    b.screenshot("phone-full-sync-history");
}
