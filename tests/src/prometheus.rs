//! A real Prometheus server on 127.0.0.1 that scrapes one target every second, and the two
//! questions the metrics test asks it over its HTTP API: an instant query, the state of the
//! scrape target, and the type of each metric family it read.
//!
//! Its configuration, storage and log live in a fresh temp dir; dropping the [`Prometheus`]
//! kills the process and removes the dir, also when an assertion failed (the log's tail is then
//! printed). The binary is Debian's `prometheus` (`scripts/ensure-test-tools` installs it).
//!
//! [`figures`] holds the test's table of expected figures and the polling that fills it.

pub mod figures;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long Prometheus may take to answer `/-/ready` after its start.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Attempts at a start: the free port is found by binding and releasing it, so another process
/// can take it before Prometheus binds it; Prometheus then exits and the next attempt runs.
const STARTS: usize = 3;

/// The `prometheus` binary on `PATH`, or `None` when it is not installed.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
}

/// One series of an instant query's answer: its labels (without `__name__`) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What Prometheus says about one of its scrape targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Why the last scrape failed; empty when it succeeded.
    pub last_error: String,
}

/// A running Prometheus server; killed, and its temp dir removed, on drop.
pub struct Prometheus {
    /// Where its HTTP API listens (127.0.0.1).
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `binary` scraping `http://{target}/metrics` every second, and returns once it
    /// answers `/-/ready`. Panics, with its log, when it exits or is not ready in time.
    pub async fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        let mut last_log = String::new();
        for _ in 0..STARTS {
            let mut prometheus = Prometheus::spawn(binary, target);
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(log) => last_log = log,
            }
        }
        panic!("prometheus did not start in {STARTS} attempts; its last log:\n{last_log}");
    }

    fn spawn(binary: &Path, target: SocketAddr) -> Prometheus {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rondo-prometheus-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).expect("create the Prometheus temp dir");
        let config = dir.join("prometheus.yml");
        fs::write(&config, scrape_config(target)).expect("write prometheus.yml");
        let log = fs::File::create(dir.join("prometheus.log")).expect("create prometheus.log");
        let addr = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Prometheus { addr, child, dir }
    }

    /// Polls `/-/ready` until it answers 200; `Err(log)` when the process exits first or the
    /// time runs out.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = api_client();
        let url = format!("http://{}/-/ready", self.addr);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(exited: {status})\n{}", self.log_tail(40)));
            }
            if let Ok(res) = client.get(&url).send().await {
                if res.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "(not ready within {READY_WITHIN:?})\n{}",
                    self.log_tail(40)
                ));
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The answer to the instant query `expr`, one [`Sample`] per series (none when nothing
    /// matches). Panics when Prometheus refuses the query or answers something else than a
    /// vector.
    pub async fn query(&self, expr: &str) -> Vec<Sample> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let data = api_get(
            api_client()
                .get(&url)
                .query(&[("query", expr)])
                .expect("encode the query"),
        )
        .await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"]
            .as_array()
            .expect("a result array")
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .expect("a metric object")
                    .iter()
                    .filter(|(name, _)| *name != "__name__")
                    .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_string()))
                    .collect();
                let value = series["value"][1].as_str().expect("a value string");
                Sample {
                    labels,
                    value: value.parse().expect("a float value"),
                }
            })
            .collect()
    }

    /// The active scrape targets and their state.
    pub async fn targets(&self) -> Vec<Target> {
        let url = format!("http://{}/api/v1/targets?state=active", self.addr);
        let data = api_get(api_client().get(&url)).await;
        data["activeTargets"]
            .as_array()
            .expect("an activeTargets array")
            .iter()
            .map(|t| Target {
                scrape_url: t["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                health: t["health"].as_str().unwrap_or_default().to_string(),
                last_error: t["lastError"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// The type (`counter`, `gauge`, `histogram`, ...) of every metric family Prometheus has
    /// read a `# TYPE` line for, by family name.
    pub async fn metric_types(&self) -> BTreeMap<String, String> {
        let url = format!("http://{}/api/v1/metadata", self.addr);
        let data = api_get(api_client().get(&url)).await;
        data.as_object()
            .expect("a metadata object")
            .iter()
            .filter_map(|(family, entries)| {
                let kind = entries[0]["type"].as_str()?;
                Some((family.clone(), kind.to_string()))
            })
            .collect()
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log (tail) ---\n{}", self.log_tail(30));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// prometheus.yml: one job that scrapes `target`'s `/metrics` every second.
fn scrape_config(target: SocketAddr) -> String {
    let mut yml = String::new();
    writeln!(yml, "global:").unwrap();
    writeln!(yml, "  scrape_interval: 1s").unwrap();
    writeln!(yml, "  scrape_timeout: 1s").unwrap();
    writeln!(yml, "scrape_configs:").unwrap();
    writeln!(yml, "  - job_name: rondo").unwrap();
    writeln!(yml, "    metrics_path: /metrics").unwrap();
    writeln!(yml, "    static_configs:").unwrap();
    writeln!(yml, "      - targets: ['{target}']").unwrap();
    yml
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
}

fn api_client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish()
}

/// Sends an API request and returns its `data`; panics unless the status is `success`.
async fn api_get(request: awc::ClientRequest) -> Value {
    let what = request.get_uri().to_string();
    let mut res = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let body = res
        .body()
        .limit(4 << 20)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let answer: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    assert_eq!(answer["status"], "success", "{what}: {answer}");
    answer["data"].clone()
}
