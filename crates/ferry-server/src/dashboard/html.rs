//! The dashboard's HTML: escaping, the page around each view, and times as people read them.

use std::fmt::Write as _;

/// `text` safe inside HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page around a view needs.
pub struct Frame<'a> {
    pub title: &'a str,
    /// Which navigation link is current.
    pub nav: &'a str,
    /// The signed-in session's CSRF token (for the sign-out form); `None` on the sign-in page.
    pub csrf: Option<&'a str>,
    /// Open conflicts, for the navigation's badge.
    pub open_conflicts: u64,
    /// Whether the view updates itself (by the event stream, or a reload without JavaScript).
    pub live: bool,
}

/// A whole page: `body` inside the dashboard's frame.
pub fn page(f: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Ferry</title><link rel=\"stylesheet\" href=\"/admin/assets/style.css\">",
        esc(f.title)
    );
    if f.live {
        out.push_str("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>");
        out.push_str("<script src=\"/admin/assets/live.js\" defer></script>");
    }
    out.push_str("</head><body>");
    if let Some(csrf) = f.csrf {
        out.push_str("<header><nav aria-label=\"Sections\"><span class=\"brand\">Ferry</span>");
        for (href, name) in [("/admin", "Overview"), ("/admin/conflicts", "Conflicts"), ("/admin/devices", "Devices")] {
            let current = if name == f.nav { " aria-current=\"page\"" } else { "" };
            let _ = write!(out, "<a href=\"{href}\"{current}>{name}");
            if name == "Conflicts" {
                let class = if f.open_conflicts > 0 { "badge alert" } else { "badge" };
                let _ =
                    write!(out, " <span class=\"{class}\" aria-label=\"{n} open\">{n}</span>", n = f.open_conflicts);
            }
            out.push_str("</a>");
        }
        let _ = write!(
            out,
            "</nav><form method=\"post\" action=\"/admin/logout\" class=\"signout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></header>",
            esc(csrf)
        );
    }
    let _ = write!(out, "<main id=\"main\"><h1>{}</h1>{body}</main></body></html>", esc(f.title));
    out
}

/// "just now", "42 seconds ago", "3 minutes ago", "5 hours ago", "2 days ago".
pub fn ago(ms: u64) -> String {
    let s = ms / 1000;
    let (n, unit) = match s {
        0..5 => return "just now".into(),
        5..120 => (s, "second"),
        120..7200 => (s / 60, "minute"),
        7200..172_800 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// A lag as people read it: "0 ms", "850 ms", "12 seconds", "4 minutes", "3 hours".
pub fn lag(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..120_000 => plural(ms / 1000, "second"),
        120_000..7_200_000 => plural(ms / 60_000, "minute"),
        _ => plural(ms / 3_600_000, "hour"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_is_escaped_and_times_read_as_people_say_them() {
        assert_eq!(super::esc("<b a='1'>&\"</b>"), "&lt;b a=&#39;1&#39;&gt;&amp;&quot;&lt;/b&gt;");
        assert_eq!(super::ago(1_000), "just now");
        assert_eq!(super::ago(61_000), "61 seconds ago");
        assert_eq!(super::ago(180_000), "3 minutes ago");
        assert_eq!(super::ago(3_600_000 * 26), "26 hours ago");
        assert_eq!(super::ago(86_400_000 * 3), "3 days ago");
        assert_eq!(super::lag(850), "850 ms");
        assert_eq!(super::lag(1_000), "1 second");
        assert_eq!(super::lag(42_000), "42 seconds");
        assert_eq!(super::lag(3 * 3_600_000), "3 hours");
    }
}
