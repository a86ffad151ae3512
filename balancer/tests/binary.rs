//! The `rondo` binary as users start it: bad configuration stops it with exit code 2 and a
//! message naming the setting; the healthcheck subcommand tells a listener from none.

use std::net::TcpListener;
use std::process::{Command, Output};

fn rondo(envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rondo"));
    for var in [
        "RONDO_LISTEN",
        "RONDO_UPSTREAMS",
        "RONDO_DISCOVERY_INTERVAL",
        "RONDO_WORKERS",
        "RONDO_CONNECT_TIMEOUT",
        "RONDO_RESPONSE_TIMEOUT",
        "RONDO_UPSTREAM_IDLE_TIMEOUT",
        "RONDO_SHUTDOWN_TIMEOUT",
        "RONDO_HEALTHCHECK_PORT",
        "RONDO_HEALTH_CHECKS",
        "RONDO_ADMIN_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    // Tests run side by side: never on the fixed default admin port.
    cmd.env("RONDO_ADMIN_LISTEN", "127.0.0.1:0");
    cmd.envs(envs.iter().copied()).args(args).output().unwrap()
}

/// Each bad setting exits 2 with the variable, the value and what is expected on stderr.
#[test]
fn bad_configuration_exits_2_naming_the_setting() {
    for (envs, expect) in [
        (vec![], "RONDO_UPSTREAMS (--upstreams) is not set"),
        (
            vec![("RONDO_UPSTREAMS", "server1")],
            "bad value 'server1' for RONDO_UPSTREAMS (--upstreams): 'server1' has no port",
        ),
        (
            vec![("RONDO_UPSTREAMS", "a:1"), ("RONDO_DISCOVERY_INTERVAL", "fast")],
            "bad value 'fast' for RONDO_DISCOVERY_INTERVAL (--discovery-interval): expected a duration",
        ),
        (
            vec![("RONDO_UPSTREAMS", "a:1"), ("RONDO_WORKERS", "-1")],
            "RONDO_WORKERS (--workers)",
        ),
    ] {
        let out = rondo(&envs, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{envs:?}: {stderr}");
        assert!(stderr.contains(expect), "{envs:?}: {stderr}");
    }
}

/// A listen address that is taken exits 2 and says which setting to change.
#[test]
fn taken_listen_address_exits_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = rondo(&[("RONDO_UPSTREAMS", "a:1"), ("RONDO_LISTEN", &addr)], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (RONDO_LISTEN)")),
        "{stderr}"
    );
}

/// A taken admin address exits 2 and names RONDO_ADMIN_LISTEN and how to turn it off.
#[test]
fn taken_admin_address_exits_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = rondo(
        &[
            ("RONDO_UPSTREAMS", "127.0.0.1:1"),
            ("RONDO_LISTEN", "127.0.0.1:0"),
            ("RONDO_HEALTH_CHECKS", "off"),
            ("RONDO_ADMIN_LISTEN", &addr),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (RONDO_ADMIN_LISTEN)")),
        "{stderr}"
    );
    assert!(stderr.contains("RONDO_ADMIN_LISTEN=off"), "{stderr}");
}

/// `rondo healthcheck` exits 0 when something listens on the port and 1 when nothing does.
#[test]
fn healthcheck_tells_a_listener_from_none() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let up = rondo(&[], &["healthcheck", "--port", &port]);
    assert_eq!(up.status.code(), Some(0));
    drop(listener);
    let down = rondo(&[], &["healthcheck", "--port", &port]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("nothing accepts connections"));
}

/// An endpoint on 127.0.0.1 that answers `done` to every request (after 700 ms for paths
/// starting with /slow), one connection per request; its address.
fn fixed_endpoint() -> String {
    use std::io::{Read, Write};
    use std::time::Duration;

    let endpoint = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in endpoint.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                if head.starts_with(b"GET /slow") {
                    std::thread::sleep(Duration::from_millis(700));
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone",
                );
            });
        }
    });
    addr
}

/// Starts `rondo` on a free port of 127.0.0.1 with `envs`, and waits until it accepts a
/// connection: the child, its address and the first connection.
fn spawn_rondo(
    envs: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (std::process::Child, String, std::net::TcpStream) {
    use std::time::{Duration, Instant};

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rondo"));
    cmd.env("RONDO_LISTEN", &listen)
        .env("RONDO_WORKERS", "1")
        .env("RONDO_ADMIN_LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    let child = cmd.spawn().unwrap();
    let started = Instant::now();
    let client = loop {
        if let Ok(s) = std::net::TcpStream::connect(&listen) {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rondo did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, listen, client)
}

/// Everything rondo sends on `client` until it closes the connection (10 s at most).
fn read_to_close(client: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut response = String::new();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    client.read_to_string(&mut response).unwrap();
    response
}

fn sigterm(child: &std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// A request in flight when the balancer gets SIGTERM is answered in full, new connections are
/// refused, and the process exits 0 within the shutdown timeout.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;

    let endpoint_addr = fixed_endpoint();
    let (mut child, listen, mut client) = spawn_rondo(
        &[
            ("RONDO_UPSTREAMS", &endpoint_addr),
            ("RONDO_SHUTDOWN_TIMEOUT", "5s"),
        ],
        std::process::Stdio::null(),
    );
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect(&listen).is_err(),
        "new connections are still accepted"
    );

    let response = read_to_close(&mut client);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("done"), "{response}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// With RONDO_ACCESS_LOG=json every request gets one JSON line with its fields; the start-up
/// log shows the effective configuration with the admin token masked.
#[test]
fn access_log_has_one_json_line_per_request() {
    use std::io::Write;
    use std::time::Duration;

    let endpoint_addr = fixed_endpoint();
    let (child, _, mut client) = spawn_rondo(
        &[
            ("RONDO_UPSTREAMS", &endpoint_addr),
            ("RONDO_ACCESS_LOG", "json"),
            ("RONDO_ADMIN_TOKEN", "s3cret-token"),
            ("RONDO_HEALTH_CHECKS", "off"),
            ("RUST_LOG", "info"),
        ],
        std::process::Stdio::piped(),
    );
    client
        .write_all(b"GET /cart?id=7 HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-42\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_to_close(&mut client);
    assert!(response.ends_with("done"), "{response}");
    std::thread::sleep(Duration::from_millis(100));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("s3cret-token"),
        "the token was logged: {stderr}"
    );
    assert!(stderr.contains("configuration: "), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rondo::access"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let json = &lines[0][lines[0].find('{').unwrap()..];
    let entry: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["target"], "/cart?id=7");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes"], 4);
    assert_eq!(entry["endpoint"], endpoint_addr.as_str());
    assert_eq!(entry["tries"], 1);
    assert_eq!(entry["client"], "127.0.0.1");
    assert_eq!(entry["request_id"], "req-42");
    assert!(entry["upstream_time"].as_f64().is_some());
    assert!(entry["total_time"].as_f64().is_some());
}

/// A request that cannot be parsed and a client that resets its connection mid-head are the
/// client's doing: the 400 is logged once at info level with the client's address, and
/// nothing is logged at error level (actix-http logged both as errors, so garbage from one
/// client could fill the error log).
#[test]
fn client_garbage_and_resets_are_not_logged_as_errors() {
    use std::io::Write;
    use std::time::Duration;

    let endpoint_addr = fixed_endpoint();
    let (child, listen, mut client) = spawn_rondo(
        &[
            ("RONDO_UPSTREAMS", &endpoint_addr),
            ("RONDO_HEALTH_CHECKS", "off"),
            ("RUST_LOG", "info"),
        ],
        std::process::Stdio::piped(),
    );
    client.write_all(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").unwrap();
    let response = read_to_close(&mut client);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");

    let mut reset = std::net::TcpStream::connect(&listen).unwrap();
    reset
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Half: ")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    socket2::SockRef::from(&reset)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);
    std::thread::sleep(Duration::from_millis(200));

    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "logged as errors: {errors:?}\n{stderr}");
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" 400 ") || l.contains("malformed request"))
        .collect();
    assert_eq!(refusals.len(), 1, "{stderr}");
    assert!(refusals[0].contains("127.0.0.1"), "{stderr}");
}

/// Out of file descriptors (`EMFILE`), the workers, which accept connections themselves
/// (vendor/README.md), log the error and try again every 500 ms instead of spinning on it,
/// and serve the waiting connection once descriptors are free again. Bounded: 60 connections,
/// about 5 s.
#[test]
fn out_of_descriptors_the_workers_back_off_and_recover() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    const HELD: usize = 60;
    let endpoint_addr = fixed_endpoint();
    let listen = format!(
        "127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    // rondo itself needs about 30 descriptors; 48 leaves room for a few connections only.
    let child = Command::new("sh")
        .args(["-c", "ulimit -n 48 && exec \"$0\""])
        .arg(env!("CARGO_BIN_EXE_rondo"))
        .env("RONDO_LISTEN", &listen)
        .env("RONDO_UPSTREAMS", &endpoint_addr)
        .env("RONDO_WORKERS", "2")
        .env("RONDO_HEALTH_CHECKS", "off")
        .env("RONDO_ADMIN_LISTEN", "off")
        .env("RONDO_ACCESS_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(&listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rondo did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Idle connections until rondo has no descriptor left to accept them with; the kernel
    // completes them all, the ones past the limit wait in the backlog.
    let held: Vec<TcpStream> = (0..HELD)
        .map(|_| TcpStream::connect(&listen).unwrap())
        .collect();
    let mut waiting = TcpStream::connect(&listen).unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    let response = read_to_close(&mut waiting);

    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.contains("Error accepting connection") && l.contains("os error 24"))
        .count();
    println!(
        "{HELD} idle connections and 1 request sent; {errors} accept errors logged; \
         the request got {:?}",
        response.lines().next()
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}\n{stderr}");
    assert!(response.ends_with("done"), "{response}");
    // About 2 s at the limit: a few errors per worker (one per 500 ms), not thousands.
    assert!(
        (1..=20).contains(&errors),
        "{errors} accept errors logged:\n{stderr}"
    );
}
