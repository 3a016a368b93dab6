//! The frame every console page shares, and small pieces of HTML used by
//! several pages. maud escapes every value written into a page; nothing
//! here writes raw HTML from data.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use maud::{html, Markup, DOCTYPE};

use super::session::Viewer;

/// Which part of the console a page belongs to (the tab shown as current).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Jobs,
    DeadLetters,
    Channels,
    Policy,
    None,
}

/// The headers every console page carries: no script may run at all (the
/// console needs none), no framing, no caching of pages that show payloads.
pub fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A whole page: the header with its tabs and who is logged in, then `body`.
pub fn page(viewer: Option<&Viewer>, title: &str, tab: Tab, body: Markup) -> Markup {
    page_refreshing(viewer, title, tab, body, None)
}

/// [`page`], loaded again by the browser every `refresh` seconds.
pub fn page_refreshing(
    viewer: Option<&Viewer>,
    title: &str,
    tab: Tab,
    body: Markup,
    refresh: Option<u32>,
) -> Markup {
    let tab_link = |href: &str, label: &str, this: Tab| {
        html! {
            a href=(href) class=[(tab == this).then_some("current")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh { meta http-equiv="refresh" content=(seconds); }
                title { (title) " · steadfast" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body {
                header.top {
                    a.brand href="/ui/" { "steadfast" }
                    nav {
                        (tab_link("/ui/", "Overview", Tab::Overview))
                        (tab_link("/ui/jobs", "Jobs", Tab::Jobs))
                        (tab_link("/ui/jobs?state=dead", "Dead letters", Tab::DeadLetters))
                        (tab_link("/ui/channels", "Channels", Tab::Channels))
                        (tab_link("/ui/policy", "Policy", Tab::Policy))
                    }
                    @if let Some(viewer) = viewer {
                        div.who {
                            span { (viewer.name) }
                            @if viewer.admin { span.badge { "admin" } }
                            @else { span.badge.readonly { "read-only" } }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page as a response, with the console's headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    secure((status, markup).into_response())
}

/// A page that says why a request was not done.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { (status.canonical_reason().unwrap_or("Refused")) }
        p.error role="alert" { (message) }
        p { a href="/ui/" { "Back to the overview" } }
    };
    respond(status, page(None, "Refused", Tab::None, body))
}

/// The CSRF field every form of a session carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A time as UTC to the second, with the full value on hover.
pub fn time(at: Timestamp) -> Markup {
    let text = at.strftime("%Y-%m-%d %H:%M:%S").to_string();
    html! { time datetime=(at.to_string()) title=(at.to_string()) { (text) } }
}

/// An optional time, a dash without one.
pub fn maybe_time(at: Option<Timestamp>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { "—" } },
    }
}

/// Milliseconds the way people read them: 850 ms, 12.5 s, 4 min, 2 h.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{:.0} min", ms as f64 / 60_000.0),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// A state word with its colour.
pub fn state_badge(state: &str) -> Markup {
    html! { span class={ "state " (state) } { (state) } }
}

/// A form field's text, `None` when left blank.
pub fn given(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A value for a query string or path segment.
pub fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_for_links() {
        assert_eq!(urlencode("orders-eu_1.x~"), "orders-eu_1.x~");
        assert_eq!(urlencode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_500), "12.5 s");
        assert_eq!(duration_ms(240_000), "4 min");
        assert_eq!(duration_ms(7_200_000), "2.0 h");
        assert_eq!(duration_ms(-5), "0 ms");
    }

    #[test]
    fn values_are_escaped() {
        let viewer = Viewer {
            name: "<script>alert(1)</script>".into(),
            admin: true,
            csrf: "x\"><b>".into(),
        };
        let html = page(Some(&viewer), "<t>", Tab::None, html! { "<i>" }).into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("x\"><b>"));
        assert!(html.contains("&lt;i&gt;"));
    }
}
