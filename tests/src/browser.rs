//! Headless Chromium for page tests: load a page, let its script run, read the DOM it left.
//!
//! Each run is one process group, bounded by [`CHROMIUM_TIMEOUT`] and killed at the end whatever
//! happens (also when the test panics). `--virtual-time-budget` lets a page's timers run for that
//! much time without waiting for the wall clock (a fetch in progress pauses virtual time, so each
//! poll gets its answer); `--dump-dom` then prints the page as its script left it.
//!
//! Chromium must be installed (`scripts/ensure-test-tools` installs Debian's `chromium`); `CHROMIUM`
//! names another binary. Without it a page test fails, in CI and outside: it never skips.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest one Chromium run may take; a run of 2.5 s of virtual time takes 2 to 5 s here.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(25);

/// Loads `url` in headless Chromium for `budget_ms` of virtual time and returns the DOM as the
/// page's script left it; with `screenshot`, also saves a 1280×900 PNG there.
pub async fn load_page(url: &str, budget_ms: u32, screenshot: Option<&Path>) -> String {
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
        let _ = std::fs::remove_dir_all(&work);
        panic!(
            "cannot start {binary} ({e}): install Chromium with scripts/ensure-test-tools \
             (Debian: apt-get install chromium) or point CHROMIUM at its binary"
        )
    });
    let mut run = Run { child, work };
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < CHROMIUM_TIMEOUT,
            "Chromium did not finish within {CHROMIUM_TIMEOUT:?}; its stderr:\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("chromium loaded {url} in {:?}", started.elapsed());
    let dom = std::fs::read_to_string(run.work.join("stdout")).unwrap();
    assert!(
        status.success() && dom.contains("</html>"),
        "Chromium failed ({status}); its stderr:\n{}",
        run.stderr()
    );
    dom
}

/// One Chromium run: its process group is killed and its directory removed when dropped, also
/// when a test panics.
struct Run {
    child: Child,
    work: PathBuf,
}

impl Run {
    /// The end of Chromium's stderr, without the D-Bus complaints of a machine without D-Bus.
    fn stderr(&self) -> String {
        let text = std::fs::read_to_string(self.work.join("stderr")).unwrap_or_default();
        let lines: Vec<_> = text
            .lines()
            .filter(|l| !l.contains(":ERROR:dbus/"))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // The group id is the leader's pid; helpers that outlived the browser die with it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A fresh directory under the system's temporary directory for one Chromium run.
fn scratch_dir() -> PathBuf {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rondo-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- Reading a dumped DOM (Chromium serialises attributes in double quotes) ----

/// The start tag (`<...>`) holding `name="value"`.
pub fn tag_with<'a>(dom: &'a str, name: &str, value: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" {name}=\"{value}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// The value of attribute `name` in start tag `tag`, with HTML's escapes undone.
pub fn attr(tag: &str, name: &str) -> Option<String> {
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
