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
    // The script asks before forms marked `data-confirm` on every page, and keeps live ones
    // up to date.
    out.push_str("<script src=\"/admin/assets/live.js\" defer></script>");
    if f.live {
        out.push_str("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript></head><body data-live>");
    } else {
        out.push_str("</head><body>");
    }
    if let Some(csrf) = f.csrf {
        out.push_str("<header><nav aria-label=\"Sections\"><span class=\"brand\">Ferry</span>");
        for (href, name) in [
            ("/admin", "Overview"),
            ("/admin/conflicts", "Conflicts"),
            ("/admin/full-sync", "Full sync"),
            ("/admin/integrity", "Integrity"),
            ("/admin/devices", "Devices"),
            ("/admin/files", "Files"),
        ] {
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

/// A table's opening, up to its body: `class` (none when empty) and a column heading for each
/// of `headings` (markup, as written here).
pub fn table(class: &str, headings: &[&str]) -> String {
    let mut out = String::from("<table");
    if !class.is_empty() {
        let _ = write!(out, " class=\"{class}\"");
    }
    out.push_str("><thead><tr>");
    for h in headings {
        let _ = write!(out, "<th scope=\"col\">{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
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
    format!("{} ago", plural(n, unit))
}

/// A lag or a time left as people read it: "0 ms", "850 ms", "12 seconds", "4 minutes",
/// "3 hours".
pub fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..120_000 => plural(ms / 1000, "second"),
        120_000..7_200_000 => plural(ms / 60_000, "minute"),
        _ => plural(ms / 3_600_000, "hour"),
    }
}

/// A small chart of a link's lag over the hour up to `now` (`samples` as
/// [`crate::lag::History::of`] gives them), as inline SVG that needs no script: a line scaled
/// to the hour's highest lag (a second at least), labelled with the highest and the latest.
pub fn lag_chart(samples: &[(u64, u64)], now: u64) -> String {
    let (Some(highest), Some(&last)) = (samples.iter().map(|s| s.1).max(), samples.last()) else {
        return "<span class=\"hint\">no samples yet</span>".into();
    };
    let (width, height) = (240.0, 40.0);
    let top = highest.max(1000) as f64;
    let from = now.saturating_sub(crate::lag::KEPT_MS);
    let point = |(at, lag): (u64, u64)| {
        let x = at.saturating_sub(from) as f64 / crate::lag::KEPT_MS as f64 * width;
        let y = height - 2.0 - lag as f64 / top * (height - 4.0);
        (x.min(width), y)
    };
    let mut line = String::new();
    for &s in samples {
        let (x, y) = point(s);
        let _ = write!(line, "{x:.1},{y:.1} ");
    }
    let (x, y) = point(last);
    let label = format!("Lag over the last hour: highest {}, latest {}", duration(highest), duration(last.1));
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" width=\"120\" height=\"20\" role=\"img\" aria-label=\"{label}\">\
         <title>{label}</title><polyline points=\"{}\"/><circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"/></svg>",
        line.trim_end()
    )
}

/// A size as people read it: "512 bytes", "1.5 kB", "12.3 MB", "4.0 GB" (powers of 1000).
pub fn bytes(n: u64) -> String {
    match n {
        0..1000 => plural(n, "byte"),
        1000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

/// "1 row", "2 rows".
pub fn plural(n: u64, unit: &str) -> String {
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
        assert_eq!(super::duration(850), "850 ms");
        assert_eq!(super::duration(1_000), "1 second");
        assert_eq!(super::duration(42_000), "42 seconds");
        assert_eq!(super::duration(3 * 3_600_000), "3 hours");
        assert_eq!(super::bytes(1), "1 byte");
        assert_eq!(super::bytes(1_536), "1.5 kB");
        assert_eq!(super::bytes(12_345_678), "12.3 MB");
    }

    #[test]
    fn the_lag_chart_spans_the_hour_and_says_what_it_shows() {
        let now = 1_800_000_000_000;
        assert!(super::lag_chart(&[], now).contains("no samples yet"));
        let chart = super::lag_chart(&[(now - 3_600_000, 0), (now - 1_800_000, 4_000), (now, 850)], now);
        assert!(chart.contains("aria-label=\"Lag over the last hour: highest 4 seconds, latest 850 ms\""), "{chart}");
        // The hour's start at the left, its highest at the top, now at the right.
        assert!(chart.contains("points=\"0.0,38.0 120.0,2.0 240.0,30.4\""), "{chart}");
    }
}
