//! Compose projects of this repository for tests: a unique project name, a free host port, and a
//! guard that always tears the project down (`down -v --remove-orphans`), also when a test panics.
//!
//! Needs a Docker engine with Compose v2 and the images' base images (see `scripts/`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A compose project of this repository's `docker-compose.yml` (plus any override files), torn
/// down on drop.
pub struct Project {
    /// The project name (`-p`): unique per process and moment, so tests never share containers.
    pub name: String,
    /// The host port the balancer is published on (`RONDO_PORT`), free when the project was made.
    pub port: u16,
    /// The port of 127.0.0.1 the admin listener is published on (`RONDO_ADMIN_PORT`), free
    /// when the project was made.
    pub admin_port: u16,
    /// The repository root, where the compose files live.
    pub root: PathBuf,
    /// Compose files (`-f`), relative to `root`; empty means Compose's default file.
    files: Vec<String>,
    /// Extra environment for every `docker compose` command (the compose file's `${…}`s).
    env: Vec<(String, String)>,
}

impl Project {
    /// A project named `rondo-test-<pid>-<nanos>` of `docker-compose.yml` on a free port.
    pub fn new() -> Project {
        Project::named("rondo-test")
    }

    /// A project named `<prefix>-<pid>-<nanos>` of `docker-compose.yml` on a free port.
    pub fn named(prefix: &str) -> Project {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let free_port = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, admin_port) = (free_port(), free_port());
        Project {
            name: format!("{prefix}-{}-{nanos}", std::process::id()),
            port,
            admin_port,
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
            files: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Uses these compose files (`-f`, in order, relative to the repository root) instead of the
    /// default one, e.g. `["docker-compose.yml", "docker-compose.nginx.yml"]`.
    pub fn with_files(mut self, files: &[&str]) -> Project {
        self.files = files.iter().map(|f| f.to_string()).collect();
        self
    }

    /// Sets `key=value` in the environment of every `docker compose` command of this project.
    pub fn with_env(mut self, key: &str, value: &str) -> Project {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// `docker compose [-f …] -p NAME` in the repository root with the project's environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        for f in &self.files {
            cmd.args(["-f", f]);
        }
        cmd.args(["-p", &self.name])
            .current_dir(&self.root)
            .env("RONDO_PORT", self.port.to_string())
            .env("RONDO_ADMIN_PORT", self.admin_port.to_string());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `docker compose … ARGS…`; returns its stdout and stderr together, or the same as the
    /// error when it exits non-zero.
    pub fn try_compose(&self, args: &[&str]) -> Result<String, String> {
        let out: Output = self
            .command()
            .args(args)
            .output()
            .expect("run docker: this test needs Docker with Compose v2 (see README)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// [`Project::try_compose`], but gives up after `limit`: the command is killed and an error
    /// returned, so a hung Docker cannot hang a test.
    pub fn try_compose_within(
        &self,
        args: &[&str],
        limit: std::time::Duration,
    ) -> Result<String, String> {
        use std::io::Read;
        let mut child = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run docker: this test needs Docker with Compose v2 (see README)");
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let text = format!(
            "{}{}",
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default()
        );
        match status {
            Some(s) if s.success() => Ok(text),
            Some(_) => Err(text),
            None => Err(format!("gave up after {limit:?}:\n{text}")),
        }
    }

    /// Runs `docker compose … ARGS…`; panics with its output if it fails.
    pub fn compose(&self, args: &[&str]) -> String {
        match self.try_compose(args) {
            Ok(text) => text,
            Err(text) => panic!("docker compose {args:?} failed:\n{text}"),
        }
    }

    /// IDs of the project's containers of `service` (running or not), in Compose's order.
    pub fn container_ids(&self, service: &str) -> Vec<String> {
        self.compose(&["ps", "-a", "-q", service])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Default for Project {
    fn default() -> Project {
        Project::new()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(logs) = self
                .command()
                .args(["logs", "--no-color", "--timestamps"])
                .output()
            {
                eprintln!(
                    "--- logs of {} without access-log lines, last {LOG_LINES_ON_FAILURE} ---\n{}",
                    self.name,
                    without_access_lines(&String::from_utf8_lossy(&logs.stdout))
                );
            }
        }
        let _ = self
            .command()
            .args(["down", "-v", "--remove-orphans", "-t", "5"])
            .status();
    }
}

/// How many log lines a failed compose test prints.
const LOG_LINES_ON_FAILURE: usize = 80;

/// The last [`LOG_LINES_ON_FAILURE`] lines of `logs` that are not access-log lines (rondo's
/// `rondo::access`, the backend's actix `Logger`): what the balancer decided (discovery, health
/// flips) and what the backends said on starting and stopping, in time order.
fn without_access_lines(logs: &str) -> String {
    let mut lines: Vec<&str> = logs
        .lines()
        .filter(|l| !l.contains("rondo::access") && !l.contains("middleware::logger"))
        .collect();
    // `--timestamps` puts Docker's time after the `service-1  | ` prefix.
    lines.sort_by_key(|l| l.split_once("| ").map_or("", |(_, rest)| rest));
    let skip = lines.len().saturating_sub(LOG_LINES_ON_FAILURE);
    lines[skip..].join("\n")
}

/// The hostname of container `id` (what the backend puts in `X-Served-By`), if it exists.
pub fn hostname_of(id: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Config.Hostname}}", id])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

/// Collects the logs of every container of a compose project, also of containers that are
/// removed before the end (a scale-down removes them, and their logs with them).
///
/// From [`LogCollector::start`] on it keeps a copy of each container of the project within
/// reach from when it is first seen (already there, or a `start` event): an open handle on its
/// log file (Docker's `json-file` driver, readable when the engine runs on this machine and the
/// test as root), which outlives the container's removal and costs the engine nothing; where
/// that file cannot be opened, a `docker logs -f` into a file. [`LogCollector::finish`] then
/// reads the log of each container that still exists from Docker (which also reads rotated
/// files), and the kept copy of each that is gone. Only lines from about when the collector
/// started on are returned. Every process it starts is ended on `finish` or drop.
pub struct LogCollector {
    events: Option<std::process::Child>,
    reader: Option<std::thread::JoinHandle<()>>,
    copies: std::sync::Arc<std::sync::Mutex<Copies>>,
}

/// How the log of one container is kept within reach.
enum Copy {
    /// Its `json-file` log, open, and where this collector's part of it starts.
    File { file: std::fs::File, from: u64 },
    /// A `docker logs -f --since` writing into `path`.
    Follower {
        child: std::process::Child,
        path: PathBuf,
    },
}

struct Copies {
    dir: PathBuf,
    /// `docker logs --since`: a few seconds before the collector started (Unix seconds).
    since: String,
    /// Container id (full) → its copy.
    by_id: std::collections::BTreeMap<String, Copy>,
}

impl Copies {
    /// Keeps container `id`'s log within reach, from its start when `from_start` (a container
    /// that just started), else from now. A container already kept is left alone, except that
    /// a follower that ended (its container stopped) is started again after a restart.
    fn keep(&mut self, id: &str, from_start: bool) {
        if let Some(copy) = self.by_id.get_mut(id) {
            let ended = match copy {
                Copy::Follower { child, .. } => !matches!(child.try_wait(), Ok(None)),
                Copy::File { .. } => false,
            };
            if !ended {
                return;
            }
        }
        if let Some(copy) = open_log_file(id, from_start) {
            self.by_id.insert(id.to_string(), copy);
            return;
        }
        let path = self.dir.join(format!("{id}.follow.log"));
        let Ok(file) = std::fs::File::create(&path) else {
            return;
        };
        let Ok(err) = file.try_clone() else { return };
        if let Ok(child) = Command::new("docker")
            .args(["logs", "-f", "--since", &self.since, id])
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
        {
            self.by_id
                .insert(id.to_string(), Copy::Follower { child, path });
        }
    }

    /// The kept copy of container `id`'s log, as lines.
    fn read_copy(&mut self, id: &str) -> String {
        use std::io::{Read, Seek};
        match self.by_id.get_mut(id) {
            Some(Copy::File { file, from }) => {
                let mut raw = String::new();
                if file.seek(std::io::SeekFrom::Start(*from)).is_err()
                    || file.read_to_string(&mut raw).is_err()
                {
                    return String::new();
                }
                // json-file: one JSON object per line, the text in "log".
                raw.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v.get("log")?.as_str().map(str::to_string))
                    .collect()
            }
            Some(Copy::Follower { child, path }) => {
                // Gone: let the follower write what it has, then read its file.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                std::fs::read_to_string(path).unwrap_or_default()
            }
            None => String::new(),
        }
    }

    fn stop_all(&mut self) {
        for copy in self.by_id.values_mut() {
            if let Copy::Follower { child, .. } = copy {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Opens container `id`'s `json-file` log, positioned at its start or its current end.
fn open_log_file(id: &str, from_start: bool) -> Option<Copy> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.LogPath}}", id])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let from = if from_start {
        0
    } else {
        file.metadata().ok()?.len()
    };
    Some(Copy::File { file, from })
}

impl LogCollector {
    /// Starts keeping the logs of every container of compose project `project`; `dir` holds
    /// working files and, after [`LogCollector::finish`], each container's collected lines.
    pub fn start(project: &str, dir: &std::path::Path) -> LogCollector {
        use std::io::BufRead;
        std::fs::create_dir_all(dir).expect("create the log directory");
        let label = format!("label=com.docker.compose.project={project}");
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .saturating_sub(5)
            .to_string();
        let copies = std::sync::Arc::new(std::sync::Mutex::new(Copies {
            dir: dir.to_path_buf(),
            since,
            by_id: Default::default(),
        }));
        let mut events = Command::new("docker")
            .args(["events", "--filter", "type=container", "--filter"])
            .args([
                "event=start",
                "--filter",
                &label,
                "--format",
                "{{.Actor.ID}}",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run docker events");
        let stdout = events.stdout.take().unwrap();
        let reader = {
            let copies = std::sync::Arc::clone(&copies);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let id = line.trim();
                    if !id.is_empty() {
                        copies.lock().unwrap().keep(id, true);
                    }
                }
            })
        };
        // Give `docker events` a moment to subscribe, then take the containers already there.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let existing = Command::new("docker")
            .args(["ps", "-a", "-q", "--no-trunc", "--filter", &label])
            .output()
            .expect("run docker ps");
        for id in String::from_utf8_lossy(&existing.stdout).lines() {
            let id = id.trim();
            if !id.is_empty() {
                copies.lock().unwrap().keep(id, false);
            }
        }
        LogCollector {
            events: Some(events),
            reader: Some(reader),
            copies,
        }
    }

    /// Stops collecting and returns `(container id, log line)` for every container seen: from
    /// Docker for each that still exists, from the kept copy for each that is gone.
    pub fn finish(mut self) -> Vec<(String, String)> {
        self.stop_events();
        let mut copies = self.copies.lock().unwrap();
        let ids: Vec<String> = copies.by_id.keys().cloned().collect();
        let mut lines = Vec::new();
        for id in ids {
            let now = Command::new("docker")
                .args(["logs", "--since", &copies.since, &id])
                .output();
            let text = match now {
                Ok(out) if out.status.success() => format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                _ => copies.read_copy(&id),
            };
            let _ = std::fs::write(copies.dir.join(format!("{id}.log")), &text);
            lines.extend(text.lines().map(|l| (id.clone(), l.to_string())));
        }
        copies.stop_all();
        lines
    }

    fn stop_events(&mut self) {
        if let Some(mut events) = self.events.take() {
            let _ = events.kill();
            let _ = events.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for LogCollector {
    fn drop(&mut self) {
        self.stop_events();
        if let Ok(mut copies) = self.copies.lock() {
            copies.stop_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Access-log lines are left out and the rest merged across containers in time order.
    #[test]
    fn failure_logs_leave_out_access_lines_and_merge_by_time() {
        let logs = "\
server1-1  | 2026-12-01T10:22:06.1Z [INFO  backend] serving \"Server 1\"
server1-1  | 2026-12-01T10:22:09.0Z [INFO  actix_web::middleware::logger] GET /health 200
balancer-1  | 2026-12-01T10:22:05.0Z [INFO  rondo] listening
balancer-1  | 2026-12-01T10:22:07.0Z [INFO  rondo::access] 127.0.0.1 GET / 200
balancer-1  | 2026-12-01T10:22:08.0Z [INFO  rondo::discovery] discovery: server2 has 3";
        assert_eq!(
            without_access_lines(logs),
            "\
balancer-1  | 2026-12-01T10:22:05.0Z [INFO  rondo] listening
server1-1  | 2026-12-01T10:22:06.1Z [INFO  backend] serving \"Server 1\"
balancer-1  | 2026-12-01T10:22:08.0Z [INFO  rondo::discovery] discovery: server2 has 3"
        );
    }
}
