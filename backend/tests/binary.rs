//! The `backend` binary as Docker runs it: graceful stop on SIGTERM, and its healthcheck.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_backend(port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_backend"))
        .env("PORT", port.to_string())
        .env("MESSAGE", "Server 9")
        .env("WORKERS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the backend binary");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "backend did not listen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn healthcheck(port: u16) -> bool {
    Command::new(env!("CARGO_BIN_EXE_backend"))
        .arg("healthcheck")
        .env("PORT", port.to_string())
        .status()
        .unwrap()
        .success()
}

/// A request in flight when SIGTERM arrives is answered in full, then the process exits 0.
#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let port = free_port();
    let mut child = spawn_backend(port);
    assert!(healthcheck(port), "healthcheck fails on a running backend");

    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /delay/700 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut response = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("Server 9"), "{response}");

    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        !healthcheck(port),
        "healthcheck passes with no backend running"
    );
}
