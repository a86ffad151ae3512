//! The admin listener's live status page (`GET /`, `balancer/src/status_page.html`) in headless
//! Chromium ([`rondo_tests::browser`]): it lists every endpoint under its upstream, follows the
//! counters, shows when the balancer cannot be reached and recovers, and loads nothing from
//! outside. The page's contract for readers is in the comment at its top.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use balancer::discovery::StaticResolver;
use rondo_tests::browser::{attr, load_page, tag_with};
use rondo_tests::*;
use serde_json::Value;

/// The page as the admin listener serves it.
const PAGE: &str = include_str!("../../balancer/src/status_page.html");

/// Virtual time for one page load: polls at 0, 1 and 2 s, so `/status` is fetched three times.
const THREE_POLLS_MS: u32 = 2500;

/// Every endpoint shows up under its upstream with its health, and 60 requests sent between two
/// page loads raise the page's counters by exactly 60 (20 per endpoint).
#[actix_web::test]
async fn the_page_lists_endpoints_by_upstream_and_follows_the_counters() {
    let backends: Vec<_> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .enumerate()
        .map(|(i, ip)| start_backend_on(&format!("{ip}:0"), "hello", &format!("b{i}")))
        .collect();
    // Two upstreams: "pair" resolves to the first two backends, "solo" to the third.
    let resolver = StaticResolver::new();
    resolver.set("pair", vec![backends[0].addr, backends[1].addr]);
    resolver.set("solo", vec![backends[2].addr]);
    let groups = [
        ("pair:8080", vec![backends[0].addr, backends[1].addr]),
        ("solo:8080", vec![backends[2].addr]),
    ];
    let lb = start_balancer(
        &config_for(&["pair:8080".into(), "solo:8080".into()]),
        resolver,
    )
    .await;
    let admin = lb.admin_addrs()[0];
    let page_url = format!("http://{admin}/");
    let client = client();

    let before = load_page(&page_url, THREE_POLLS_MS, None).await;
    assert_polled(&before, 2);
    let status = status_json(&client, admin).await;
    for (upstream, addrs) in &groups {
        let section = upstream_section(&before, upstream)
            .unwrap_or_else(|| panic!("no section for upstream {upstream}:\n{before}"));
        for addr in addrs {
            let addr = addr.to_string();
            assert!(
                section.contains(&format!("data-endpoint=\"{addr}\"")),
                "{addr} is not listed under {upstream}"
            );
            let health = endpoint_field(&before, &addr, "health");
            assert_eq!(health, json_health(&status, &addr), "the health of {addr}");
            assert!(
                row_of(&before, &addr).contains(&format!("health-{health}")),
                "the health of {addr} is not coloured"
            );
        }
    }

    for _ in 0..60 {
        let (code, _, _) = get(&client, &url_of(&lb, "/")).await;
        assert_eq!(code, 200);
    }

    let shot = screenshot_path();
    let after = load_page(&page_url, THREE_POLLS_MS, Some(&shot)).await;
    assert_polled(&after, 2);
    let rise = |field: &str| total(&after, field) - total(&before, field);
    assert_eq!(rise("requests"), 60, "totals.requests");
    assert_eq!(rise("2xx"), 60, "totals.by_class.2xx");
    for backend in &backends {
        let addr = backend.addr.to_string();
        let count = |dom: &str| -> i64 { endpoint_field(dom, &addr, "requests").parse().unwrap() };
        assert_eq!(
            count(&after) - count(&before),
            20,
            "requests sent to {addr}"
        );
    }

    let png = std::fs::read(&shot).expect("the screenshot was written");
    println!("status page screenshot: {}", shot.display());
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        shot.display()
    );
    assert!(
        png.len() > 10_000,
        "the screenshot has content ({} bytes)",
        png.len()
    );
}

/// While `/status` fails the page says it cannot reach the balancer, it recovers by itself once
/// `/status` answers again, and an error's reason is shown as text, never as markup.
#[actix_web::test]
async fn the_page_shows_an_unreachable_balancer_and_recovers() {
    let failures_left = Arc::new(AtomicUsize::new(usize::MAX));
    let fake = fake_admin(failures_left.clone());
    let url = format!("http://{fake}/");

    let down = load_page(&url, 1500, None).await;
    assert_eq!(root_attr(&down, "data-state"), "offline", "{down}");
    assert_eq!(root_attr(&down, "data-polls"), "0");
    let banner = tag_with(&down, "id", "offline").expect("an #offline banner");
    assert!(!banner.contains(" hidden"), "the banner is shown: {banner}");
    assert!(down.contains("Cannot reach the balancer"));
    assert!(down.contains("HTTP 503"), "the banner says why");

    // One page load: two failed polls, then /status answers.
    failures_left.store(2, Ordering::SeqCst);
    let back = load_page(&url, 3500, None).await;
    assert_eq!(root_attr(&back, "data-failures"), "2", "{back}");
    assert_polled(&back, 2);
    let banner = tag_with(&back, "id", "offline").expect("an #offline banner");
    assert!(banner.contains(" hidden"), "the banner is gone: {banner}");
    assert_eq!(endpoint_field(&back, "10.0.0.1:80", "health"), "down");
    assert_eq!(
        endpoint_field(&back, "10.0.0.1:80", "last_error"),
        "reset <b>by</b> peer"
    );
    assert!(
        row_of(&back, "10.0.0.1:80").contains(">reset &lt;b&gt;by&lt;/b&gt; peer (2s ago)<"),
        "the error reason is shown as text, with its age in the balancer's clock"
    );
}

/// The page loads no script, style, image or font from another origin (it must work offline).
#[test]
fn the_page_references_nothing_outside_itself() {
    let references = references(PAGE);
    // The scanner sees the page's one reference, so an external one would not slip past.
    assert!(references.contains(&"status".to_string()), "{references:?}");
    let external: Vec<_> = references
        .iter()
        .filter(|r| {
            let r = r.to_ascii_lowercase();
            r.starts_with("http:") || r.starts_with("https:") || r.starts_with("//")
        })
        .collect();
    assert!(external.is_empty(), "external references: {external:?}");
    for tag in [
        "<link",
        "<script src",
        "<iframe",
        "<img",
        "<object",
        "<embed",
    ] {
        assert!(
            !PAGE.to_ascii_lowercase().contains(tag),
            "the page has {tag}"
        );
    }
}

/// `target/status-page.png` (the target directory Cargo builds in).
fn screenshot_path() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let path = target.join("status-page.png");
    let _ = std::fs::remove_file(&path);
    path
}

// ---- The fake admin listener and /status ----

/// Serves the page at `/` and a fixed `/status` that answers 503 while `failures_left` > 0.
fn fake_admin(failures_left: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let failures_left = web::Data::from(failures_left);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(failures_left.clone())
            .route(
                "/",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(PAGE)
                }),
            )
            .route("/status", web::get().to(fake_status))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    addr
}

async fn fake_status(failures_left: web::Data<AtomicUsize>) -> HttpResponse {
    let failing = failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let classes = serde_json::json!({"1xx": 0, "2xx": 5, "3xx": 0, "4xx": 0, "5xx": 1});
    HttpResponse::Ok().json(serde_json::json!({
        "version": "0.1.0",
        "started_at": "2026-11-25T20:00:00Z",
        "uptime_seconds": 12.5,
        "totals": {"requests": 6, "by_class": classes, "in_flight": 0, "retries": 0,
                   "client_connections": 1},
        "upstreams": [{"name": "svc:80", "endpoints": [{
            "address": "10.0.0.1:80", "health": "down", "active": "off", "passive": "out",
            "enabled": true, "draining": false, "in_flight": 0, "requests": 6, "errors": 1,
            "by_class": classes,
            "last_error": {"reason": "reset <b>by</b> peer", "at": "2026-11-25T20:00:10Z"},
            "health_since": "2026-11-25T20:00:10Z"
        }]}]
    }))
}

/// `GET /status` of the real admin listener at `admin`.
async fn status_json(client: &awc::Client, admin: SocketAddr) -> Value {
    let mut res = client
        .get(format!("http://{admin}/status"))
        .send()
        .await
        .expect("GET /status");
    assert_eq!(res.status().as_u16(), 200);
    res.json::<Value>().limit(1 << 20).await.expect("JSON")
}

fn json_health(status: &Value, addr: &str) -> String {
    status["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|u| u["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["address"] == addr)
        .and_then(|e| e["health"].as_str())
        .unwrap_or_else(|| panic!("{addr} is not in /status: {status}"))
        .to_string()
}

// ---- Reading the dumped DOM ----
// The page's contract for readers: #status[data-state][data-polls][data-failures],
// [data-total=NAME][data-value], section[data-upstream=NAME], tr[data-endpoint=ADDRESS] holding
// td[data-field=NAME][data-value]. Chromium serialises attributes in double quotes.

fn assert_polled(dom: &str, at_least: u32) {
    assert_eq!(
        root_attr(dom, "data-state"),
        "ok",
        "the page is live:\n{dom}"
    );
    let polls: u32 = root_attr(dom, "data-polls").parse().unwrap();
    assert!(
        polls >= at_least,
        "the page fetched /status {polls} time(s)"
    );
}

fn root_attr(dom: &str, name: &str) -> String {
    let tag = tag_with(dom, "id", "status").expect("the #status element");
    attr(tag, name).unwrap_or_else(|| panic!("#status has no {name}: {tag}"))
}

fn total(dom: &str, name: &str) -> i64 {
    let tag = tag_with(dom, "data-total", name).unwrap_or_else(|| panic!("no total {name}"));
    attr(tag, "data-value").unwrap().parse().unwrap()
}

/// The markup of upstream `name`'s section, up to the next upstream's.
fn upstream_section<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!("data-upstream=\"{name}\""))?;
    let rest = &dom[start + 1..];
    Some(&dom[start..start + 1 + rest.find("data-upstream=\"").unwrap_or(rest.len())])
}

/// The markup of the row of endpoint `addr`.
fn row_of<'a>(dom: &'a str, addr: &str) -> &'a str {
    let start = dom
        .find(&format!("data-endpoint=\"{addr}\""))
        .unwrap_or_else(|| panic!("no row for {addr}:\n{dom}"));
    let end = dom[start..].find("</tr>").expect("the end of the row");
    &dom[start..start + end]
}

/// The raw value (`data-value`) of `field` in the row of endpoint `addr`.
fn endpoint_field(dom: &str, addr: &str, field: &str) -> String {
    let row = row_of(dom, addr);
    let tag = tag_with(row, "data-field", field)
        .unwrap_or_else(|| panic!("the row of {addr} has no {field}: {row}"));
    attr(tag, "data-value").unwrap_or_else(|| panic!("{field} of {addr} has no value: {tag}"))
}

/// Every address the page could load: values of src, href, action, url(), @import and fetch().
fn references(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for key in ["src=", "href=", "action=", "url(", "@import", "fetch("] {
        for (at, _) in lower.match_indices(key) {
            let value = html[at + key.len()..].trim_start();
            let value = value.trim_start_matches(['"', '\'', '`', '(']);
            let end = value
                .find(['"', '\'', '`', ')', ' ', '>', ';'])
                .unwrap_or(value.len());
            found.push(value[..end].to_string());
        }
    }
    found
}
