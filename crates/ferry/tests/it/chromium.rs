//! The dashboard in a real browser: a small synchronous driver for the system's headless
//! Chromium over the DevTools protocol (real clicks and typing, `confirm()` dialogs, screenshots
//! a person can look at) and an accessibility check the dashboard's pages must pass.
//!
//! Deliberately no browser download and no async runtime: Debian's `chromium` (`cargo xtask
//! test` installs it) and one blocking WebSocket.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::*;

/// How long any single wait may take before the test fails saying what it waited for.
const PATIENCE: Duration = Duration::from_secs(30);

/// A headless Chromium showing one page; killed, and its profile removed, when dropped.
pub(crate) struct Chromium {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    accept_dialogs: bool,
    /// Every DevTools event received so far (`{"method", "params"}`), oldest first.
    pub events: Vec<Value>,
    /// The message of every JavaScript dialog the page opened, oldest first.
    pub dialogs: Vec<String>,
    _process: Process,
}

/// The browser and its profile directory: killed even when [`Chromium::launch`] panics halfway.
struct Process {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromium {
    /// Starts `$FERRY_CHROMIUM` (default `/usr/bin/chromium`) on `about:blank` and connects to
    /// its page. Panics when it is not installed, or not ready within 30 s.
    pub(crate) fn launch() -> Chromium {
        let bin = std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&bin).exists(),
            "chromium is not installed (no {bin}); `cargo xtask test` installs it (apt-get install -y chromium)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&bin)
            .args(["--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .args(["--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        // Chromium says on stderr where it listens; the rest is drained so that it never
        // blocks on a full pipe.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let process = Process { child, _profile: profile };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut read = Vec::new();
        let port: u16 = loop {
            let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|e| {
                panic!("{bin} never said `DevTools listening on ws://…` ({e}); its stderr:\n{}", read.join("\n"))
            });
            if let Some(at) = line.strip_prefix("DevTools listening on ws://") {
                let host = at.split('/').next().unwrap_or_default();
                break host
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("no port in {line}"));
            }
            read.push(line);
        };
        let list = format!("http://127.0.0.1:{port}/json/list");
        let page = loop {
            let targets: Value = reqwest::blocking::get(&list).and_then(|r| r.json()).unwrap_or_default();
            let page = targets.as_array().into_iter().flatten().find(|t| t["type"] == "page");
            if let Some(url) = page.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
                break url.to_owned();
            }
            assert!(Instant::now() < deadline, "no page among chromium's targets at {list}: {targets}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connecting to {page}: {e}"));
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let (socket, _) = tungstenite::client(page.as_str(), stream)
            .unwrap_or_else(|e| panic!("websocket handshake with {page}: {e}"));
        let mut browser = Chromium {
            socket,
            next_id: 0,
            accept_dialogs: true,
            events: Vec::new(),
            dialogs: Vec::new(),
            _process: process,
        };
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends a DevTools command and returns its result; events read meanwhile go to
    /// [`Chromium::events`]. Panics naming `method` and the error the browser answered, or
    /// after 30 s without an answer.
    pub(crate) fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send(method, params);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let message = self.read(deadline, method);
            if message["id"] == id {
                return message.get("error").cloned().map_or(Ok(message["result"].clone()), Err);
            }
            // Other answers are to dialogs' replies, which nothing waits for.
            if message.get("method").is_some() {
                self.event(message);
            }
        }
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let command = json!({"id": self.next_id, "method": method, "params": params});
        self.socket.send(Message::text(command.to_string())).unwrap_or_else(|e| panic!("sending {method}: {e}"));
        self.next_id
    }

    fn read(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "chromium did not answer {waiting_for} within {PATIENCE:?}");
            self.socket.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(&text).unwrap_or_else(|e| panic!("chromium sent {text}: {e}"));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading chromium's answer to {waiting_for}: {e}"),
            }
        }
    }

    fn event(&mut self, event: Value) {
        if event["method"] == "Page.javascriptDialogOpening" {
            self.dialogs.push(event["params"]["message"].as_str().unwrap_or_default().to_owned());
            // Answered at once: while a dialog is open the page runs nothing, and the click
            // that opened it is not answered either.
            self.send("Page.handleJavaScriptDialog", json!({"accept": self.accept_dialogs}));
        }
        self.events.push(event);
    }

    /// Whether the page's next dialogs are accepted (the default) or dismissed.
    pub(crate) fn answer_dialogs(&mut self, accept: bool) {
        self.accept_dialogs = accept;
    }

    /// Opens `url` and waits until its page (or the one it redirects to) has loaded.
    pub(crate) fn goto(&mut self, url: &str) {
        // The page being left is marked, so that its own `complete` is not taken for the next's.
        let _ = self.try_eval("window.ferryLeaving = true");
        let answer = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = answer["errorText"].as_str() {
            panic!("cannot open {url}: {e}");
        }
        let loaded = "!window.ferryLeaving && document.readyState === 'complete'";
        self.poll(&format!("{url} to load"), Duration::from_millis(50), loaded);
    }

    /// The value of the expression `js` (promises awaited). Panics when it throws.
    pub(crate) fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| panic!("{e}\nthrown by: {js}"))
    }

    fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let params = json!({"expression": js, "returnByValue": true, "awaitPromise": true});
        let answer = self.try_call("Runtime.evaluate", params).map_err(|e| e.to_string())?;
        match answer.get("exceptionDetails") {
            Some(e) => Err(e["exception"]["description"].as_str().or(e["text"].as_str()).unwrap_or_default().into()),
            None => Ok(answer["result"]["value"].clone()),
        }
    }

    /// Waits until `js` is truthy and returns its value; panics after 30 s naming `what`, the
    /// last value and the page it was on.
    pub(crate) fn wait_for(&mut self, what: &str, js: &str) -> Value {
        self.poll(what, Duration::from_millis(100), js)
    }

    fn poll(&mut self, what: &str, every: Duration, js: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Between two documents there is nothing to evaluate in: not there yet.
            let last = self.try_eval(js);
            if let Ok(value) = &last
                && !matches!(value, Value::Null | Value::Bool(false))
                && value.as_f64() != Some(0.0)
                && value.as_str() != Some("")
            {
                return value.clone();
            }
            if Instant::now() > deadline {
                let page = self.try_eval("[location.href, document.body.innerText.slice(0, 2000)]");
                let page = page.unwrap_or_default();
                panic!(
                    "waited {PATIENCE:?} for {what}; last {last:?} at {}:\n{}",
                    page[0],
                    page[1].as_str().unwrap_or("")
                );
            }
            std::thread::sleep(every);
        }
    }

    /// A real mouse click in the middle of the element `selector`, scrolled into view. Panics
    /// when there is no such element, it has no size, or something else covers its middle.
    pub(crate) fn click(&mut self, selector: &str) {
        self.click_found(&format!("document.querySelector({})", json!(selector)), selector);
    }

    /// Clicks the first `tag_selector` whose trimmed text is `text`, as [`Chromium::click`].
    pub(crate) fn click_text(&mut self, tag_selector: &str, text: &str) {
        let find = format!(
            "[...document.querySelectorAll({})].find((e) => e.innerText.trim() === {})",
            json!(tag_selector),
            json!(text)
        );
        self.click_found(&find, &format!("the {tag_selector} reading {text:?}"));
    }

    /// Clicks the element the expression `find` gives (`what`, for a panic): found and
    /// measured in one evaluation, so a live page that replaces its content in between cannot
    /// take it away.
    fn click_found(&mut self, find: &str, what: &str) {
        let js = format!(
            "(() => {{ const el = {find}; if (!el) return 'no such element';
                el.scrollIntoView({{block: 'center'}}); const r = el.getBoundingClientRect();
                if (!r.width || !r.height) return 'a zero-sized element';
                const x = r.x + r.width / 2, y = r.y + r.height / 2, top = document.elementFromPoint(x, y);
                return el.contains(top) ? [x, y] : 'covered by ' + (top ? top.outerHTML.slice(0, 80) : 'nothing'); }})()"
        );
        let at = self.eval(&js);
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            panic!("cannot click {what}: {at}\nthe page reads:\n{}", self.text())
        };
        for (kind, button, buttons, clicks) in
            [("mouseMoved", "none", 0, 0), ("mousePressed", "left", 1, 1), ("mouseReleased", "left", 0, 1)]
        {
            let event =
                json!({"type": kind, "x": x, "y": y, "button": button, "buttons": buttons, "clickCount": clicks});
            self.call("Input.dispatchMouseEvent", event);
        }
    }

    /// Clicks into the field `selector` and types `text` there.
    pub(crate) fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Chooses `value` in the `<select>` `selector`, as a person would (a `change` event).
    pub(crate) fn select(&mut self, selector: &str, value: &str) {
        let js = format!(
            "(() => {{ const el = document.querySelector({0});
                if (!el || ![...el.options].some((o) => o.value === {1})) return false;
                el.value = {1}; el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
            json!(selector),
            json!(value)
        );
        assert!(self.eval(&js) == true, "no <select> {selector} with an option {value:?}");
    }

    /// A window `width` × `height` CSS pixels; `mobile` is a phone's (touch, twice the pixels).
    pub(crate) fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        let scale = if mobile { 2 } else { 1 };
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", metrics);
        self.call("Emulation.setTouchEmulationEnabled", json!({"enabled": mobile, "maxTouchPoints": 5}));
    }

    /// Writes the whole page as `<name>.png` in `$FERRY_ARTEFACTS` (default
    /// `target/test-artefacts/dashboard`), for a person to look at; returns its path.
    pub(crate) fn screenshot(&mut self, name: &str) -> PathBuf {
        let size = self.call("Page.getLayoutMetrics", json!({}))["cssContentSize"].clone();
        let clip = json!({"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1});
        let params = json!({"format": "png", "captureBeyondViewport": true, "clip": clip});
        let shot = self.call("Page.captureScreenshot", params);
        let png = STANDARD.decode(shot["data"].as_str().unwrap_or_default()).expect("a screenshot in base64");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap();
        let dir = std::env::var_os("FERRY_ARTEFACTS")
            .map_or_else(|| workspace.join("target/test-artefacts/dashboard"), PathBuf::from);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The page's text as it reads (`document.body.innerText`).
    pub(crate) fn text(&mut self) -> String {
        self.eval("document.body.innerText").as_str().unwrap_or_default().to_owned()
    }

    /// What [`ACCESSIBILITY`] finds wrong with the page, one sentence each; empty when nothing.
    pub(crate) fn accessibility(&mut self) -> Vec<String> {
        let found = self.eval(ACCESSIBILITY);
        serde_json::from_value(found.clone())
            .unwrap_or_else(|e| panic!("the accessibility check returned {found}: {e}"))
    }

    /// Panics listing what [`Chromium::accessibility`] finds on the current page, `page`.
    pub(crate) fn check_accessible(&mut self, page: &str) {
        let problems = self.accessibility();
        assert!(problems.is_empty(), "{page} is not accessible:\n{}", problems.join("\n"));
    }
}

/// The accessibility check, run in the page: labels of fields, names of controls, text
/// alternatives of images, the page's language, title and heading, and WCAG 2.1 text contrast.
const ACCESSIBILITY: &str = r##"(() => {
  const out = [];
  const visible = (el) => el.checkVisibility({ visibilityProperty: true }) && el.getClientRects().length > 0;
  const describe = (el) => {
    const name = el.localName + (el.id ? "#" + el.id : "") + [...el.classList].map((c) => "." + c).join("");
    const text = (el.innerText || el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 40);
    return text ? `${name} "${text}"` : name;
  };
  const ariaLabel = (el) => (el.getAttribute("aria-label") || "").trim() !== "";
  const labelledBy = (el) => {
    const ids = (el.getAttribute("aria-labelledby") || "").split(/\s+/).filter(Boolean);
    const refs = ids.map((id) => document.getElementById(id));
    return ids.length > 0 && refs.every(Boolean) && refs.map((r) => r.textContent).join("").trim() !== "";
  };
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (["hidden", "submit", "button"].includes(el.type) || !visible(el)) continue;
    if (![...el.labels].some((l) => l.textContent.trim()) && !ariaLabel(el) && !labelledBy(el))
      out.push(`label: ${describe(el)} has no label (<label for>, enclosing <label>, aria-label, aria-labelledby)`);
  }
  for (const el of document.querySelectorAll("button, a[href], summary")) {
    if (visible(el) && !el.textContent.trim() && !ariaLabel(el) && !labelledBy(el))
      out.push(`name: ${describe(el)} has no accessible name`);
  }
  for (const el of document.querySelectorAll("img:not([alt])")) out.push(`alt: ${describe(el)} has no alt`);
  for (const el of document.querySelectorAll("svg")) {
    if (el.closest('[aria-hidden="true"]')) continue;
    const titled = [...el.children].some((c) => c.localName === "title" && c.textContent.trim());
    if (el.getAttribute("role") !== "img" || !(ariaLabel(el) || titled))
      out.push(`svg: ${describe(el)} needs role="img" and an aria-label or a <title>, or aria-hidden="true"`);
  }
  if (!document.documentElement.lang) out.push("page: <html> has no lang");
  if (!document.title.trim()) out.push("page: no <title>");
  const h1s = document.querySelectorAll("h1").length;
  if (h1s !== 1) out.push(`page: ${h1s} <h1>, not one`);

  // Contrast: colours as getComputedStyle gives them, `rgb(r, g, b)` or `rgba(r, g, b, a)`.
  const colour = (el, css) => {
    const m = /^rgba?\(([^)]*)\)$/.exec(css);
    const v = m ? m[1].split(/[\s,\/]+/).filter(Boolean).map(Number) : [];
    if ((v.length === 3 || v.length === 4) && v.every((x) => !isNaN(x))) return { r: v[0], g: v[1], b: v[2], a: v[3] ?? 1 };
    out.push(`contrast: cannot read the colour ${css} of ${describe(el)}`);
    return null;
  };
  const over = (top, below) => {
    const mix = (t, b) => t * top.a + b * (1 - top.a);
    return { r: mix(top.r, below.r), g: mix(top.g, below.g), b: mix(top.b, below.b), a: 1 };
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = colour(e, getComputedStyle(e).backgroundColor);
      if (!c) return null;
      if (c.a > 0) layers.push(c);
      if (c.a >= 1) break;
    }
    return layers.reverse().reduce((below, top) => over(top, below), { r: 255, g: 255, b: 255, a: 1 });
  };
  const luminance = (c) => {
    const f = (v) => (v /= 255) <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const hex = (c) => "#" + [c.r, c.g, c.b].map((v) => Math.round(v).toString(16).padStart(2, "0")).join("");
  // Screen-reader-only text (`.sr`) sits in a 1px box with its overflow hidden.
  const clipped = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const r = e.getBoundingClientRect();
      if (r.width <= 1 && r.height <= 1 && getComputedStyle(e).overflow === "hidden") return true;
    }
    return false;
  };
  for (const el of [document.body, ...document.body.querySelectorAll("*")]) {
    if (![...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim())) continue;
    if (!visible(el) || clipped(el)) continue;
    const style = getComputedStyle(el);
    const bg = background(el), fg = colour(el, style.color);
    if (!bg || !fg) continue;
    const text = over(fg, bg);
    const [hi, lo] = [luminance(text), luminance(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
    if (ratio < needed)
      out.push(`contrast: ${describe(el)} is ${hex(text)} on ${hex(bg)}, ${ratio.toFixed(2)}:1 where ${needed}:1 is needed`);
  }
  return out;
})()"##;

/// `html` as a URL the browser opens without a server.
fn page(html: &str) -> String {
    format!("data:text/html;base64,{}", STANDARD.encode(html))
}

#[test]
fn the_checker_finds_what_it_should() {
    let mut browser = Chromium::launch();
    browser.goto(&page(
        "<!doctype html><html><body><h1>One</h1><h1>Two</h1>
         <input id=\"q\"> <button id=\"x\"></button> <p style=\"color: #bbbbbb\">Faint words</p>
         <img src=\"data:image/gif;base64,R0lGODlhAQABAAAAACw=\"> <svg width=\"10\" height=\"10\"></svg>",
    ));
    assert_eq!(
        browser.accessibility(),
        [
            "label: input#q has no label (<label for>, enclosing <label>, aria-label, aria-labelledby)",
            "name: button#x has no accessible name",
            "alt: img has no alt",
            "svg: svg needs role=\"img\" and an aria-label or a <title>, or aria-hidden=\"true\"",
            "page: <html> has no lang",
            "page: no <title>",
            "page: 2 <h1>, not one",
            "contrast: p \"Faint words\" is #bbbbbb on #ffffff, 1.92:1 where 4.5:1 is needed",
        ]
    );

    // Well formed: labelled fields, named buttons, text dark enough (#595959 is 7:1, and the
    // light screen-reader-only words are not seen); then used with real clicks and typing.
    browser.goto(&page(
        "<!doctype html><html lang=\"en\"><title>Good</title><body><h1>Good</h1>
         <label for=\"who\">Name</label> <input id=\"who\">
         <label>Colour <select id=\"colour\"><option>red</option><option>blue</option></select></label>
         <button type=\"button\" id=\"save\">Save</button> <button type=\"button\" id=\"remove\">Delete</button>
         <p id=\"out\" style=\"color: #595959\">Not saved <span class=\"sr\" style=\"position: absolute; width: 1px;
           height: 1px; overflow: hidden; color: #eeeeee\">yet</span></p>
         <svg aria-hidden=\"true\" width=\"10\" height=\"10\"></svg>
         <script>
           let asked = 0;
           save.onclick = () => { out.textContent = `Saved ${who.value} in ${colour.value}`; };
           remove.onclick = () => { asked++; if (confirm('Delete it?')) remove.textContent = 'Deleted'; };
         </script>",
    ));
    assert_eq!(browser.accessibility(), Vec::<String>::new());
    browser.type_into("#who", "Kim");
    browser.select("#colour", "blue");
    browser.click_text("button", "Save");
    browser.wait_for("the saved line", "out.textContent === 'Saved Kim in blue'");

    browser.answer_dialogs(false);
    browser.click("#remove");
    browser.wait_for("the question", "asked === 1");
    assert_eq!(browser.eval("remove.textContent"), "Delete", "declined, nothing deleted");
    browser.answer_dialogs(true);
    browser.click("#remove");
    browser.wait_for("the deletion", "remove.textContent === 'Deleted'");
    assert_eq!(browser.dialogs, ["Delete it?", "Delete it?"]);
}

#[test]
fn signs_in_to_the_dashboard() {
    let env = Env::new();
    env.add_user("ops");
    let admin = env.ok(&["token", "create", "--user", "ops", "--device", "console", "--admin", "-c", &env.config()]);
    let server = env.serve();
    let mut browser = Chromium::launch();
    browser.viewport(1280, 800, false);

    browser.goto(&format!("{}/admin", server.url));
    browser.wait_for("the sign-in page", "location.pathname === '/admin/login'");
    browser.check_accessible("the sign-in page");
    browser.type_into("#token", "fry_not_a_token");
    browser.click_text("button", "Sign in");
    browser.wait_for("the refusal", "document.querySelector('.error')?.textContent");
    assert!(browser.text().contains("unknown or revoked token"), "{}", browser.text());
    browser.check_accessible("the sign-in page with its error");

    browser.type_into("#token", &admin);
    browser.click_text("button", "Sign in");
    browser.wait_for("the overview", "document.querySelector('h1')?.textContent === 'Overview'");
    browser.screenshot("signed-in");
    browser.check_accessible("the overview");
    let thrown: Vec<&Value> = browser.events.iter().filter(|e| e["method"] == "Runtime.exceptionThrown").collect();
    assert!(thrown.is_empty(), "the dashboard's script threw: {thrown:?}");

    browser.viewport(390, 844, true);
    let here = browser.eval("location.href");
    browser.goto(here.as_str().unwrap());
    browser.screenshot("signed-in-phone");
    let fits = browser.eval("document.documentElement.scrollWidth <= window.innerWidth");
    let widths = browser.eval("[document.documentElement.scrollWidth, window.innerWidth]");
    assert!(fits == true, "wider than a phone (scroll width, window width): {widths}");
}
