//! The admin listener's live status page (`GET /`, `balancer/src/status_page.html`) in headless
//! Chromium: it lists every endpoint under its upstream, follows the counters, shows when the
//! balancer cannot be reached and recovers, and loads nothing from outside.
//!
//! Each Chromium run is one process group, bounded by [`CHROMIUM_TIMEOUT`] and killed at the
//! end whatever happens. `--virtual-time-budget` lets the page's one-second poll run a few times
//! without waiting for the wall clock; `--dump-dom` then prints the page as its script left it.
//! Chromium is needed (`scripts/ensure-test-tools` installs Debian's): without it these tests
//! fail, in CI and outside.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};

/// The page as the admin listener serves it.
const PAGE: &str = include_str!("../../balancer/src/status_page.html");

/// The longest one Chromium run may take; each takes about 3 to 5 s here.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(25);

/// While `/status` fails the page says it cannot reach the balancer, and it recovers by itself
/// once `/status` answers again; text from `/status` is shown as text, never as markup.
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
        row_of(&back, "10.0.0.1:80").contains(">reset &lt;b&gt;by&lt;/b&gt; peer ("),
        "the error reason is shown as text"
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

// ---- Chromium ----

/// Loads `url` in headless Chromium for `budget_ms` of virtual time and returns the DOM as the
/// page's script left it; with `screenshot`, also saves a 1280×900 PNG there.
async fn load_page(url: &str, budget_ms: u32, screenshot: Option<&Path>) -> String {
    let url = url.to_string();
    let screenshot = screenshot.map(Path::to_path_buf);
    actix_web::rt::task::spawn_blocking(move || run_chromium(&url, budget_ms, screenshot))
        .await
        .expect("the Chromium run panicked")
}

fn run_chromium(url: &str, budget_ms: u32, screenshot: Option<PathBuf>) -> String {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let work = scratch_dir();
    let profile = work.join("profile");
    std::fs::create_dir_all(&profile).unwrap();
    let mut command = Command::new(&binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom");
    if let Some(path) = &screenshot {
        command.arg(format!("--screenshot={}", path.display()));
    }
    let stdout = std::fs::File::create(work.join("stdout")).unwrap();
    let stderr = std::fs::File::create(work.join("stderr")).unwrap();
    command
        .arg(url)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group, so the renderer and helpers are killed with it.
        .process_group(0);
    let started = Instant::now();
    let child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {binary} ({e}): install Chromium with scripts/ensure-test-tools \
             (Debian: apt-get install chromium) or point CHROMIUM at its binary"
        )
    });
    let mut chromium = Group(child);
    let status = loop {
        if let Some(status) = chromium.0.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            drop(chromium);
            panic!(
                "Chromium did not finish within {CHROMIUM_TIMEOUT:?}; its stderr:\n{}",
                read_tail(&work.join("stderr"))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(chromium);
    eprintln!("chromium loaded {url} in {:?}", started.elapsed());
    let dom = std::fs::read_to_string(work.join("stdout")).unwrap();
    assert!(
        status.success() && dom.contains("</html>"),
        "Chromium failed ({status}); its stderr:\n{}",
        read_tail(&work.join("stderr"))
    );
    let _ = std::fs::remove_dir_all(&work);
    dom
}

/// A Chromium process group, killed when dropped (also when a test panics).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // The group id is the leader's pid; helpers that outlived the browser die with it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory under Cargo's scratch space for one Chromium run.
fn scratch_dir() -> PathBuf {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
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

/// The start tag (`<...>`) holding `name="value"`.
fn tag_with<'a>(dom: &'a str, name: &str, value: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" {name}=\"{value}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// The value of attribute `name` in start tag `tag`, with HTML's escapes undone.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
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
