//! The Compose deployment as users run it: `docker compose up`, then requests to the published
//! port on 127.0.0.1 (plain requests and a WebSocket), then `--scale server2=3` and back to 1.
//!
//! Needs a Docker engine with Compose v2 and the images' base images (see `scripts/`); fails,
//! never skips, when Docker is missing. The project gets its own name and a free port, and is
//! torn down (`down -v --remove-orphans`) when the test ends, also when an assertion fails.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rondo_tests::compose::Project;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// One `GET /` on 127.0.0.1:port over a fresh connection: (status, X-Served-By, body).
fn get(port: u16) -> (u16, String, String) {
    get_within(port, "/", Duration::from_secs(10))
}

/// `GET path`, giving up on the answer after `timeout` (status 0).
fn get_within(port: u16, path: &str, timeout: Duration) -> (u16, String, String) {
    let attempt = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(timeout))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let raw = match attempt() {
        Ok(raw) => raw,
        Err(e) => return (0, String::new(), format!("connection failed: {e}")),
    };
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let served_by = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-served-by:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, served_by, body.to_string())
}

/// Requests until the last `window` answers are `window` distinct replicas, all 200; returns
/// how long that took, or panics after `limit` with what was seen.
fn until_cycle_of(port: u16, window: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut seen: Vec<(u16, String)> = Vec::new();
    loop {
        let (status, served_by, _) = get(port);
        seen.push((status, served_by));
        if seen.len() >= window {
            let last = &seen[seen.len() - window..];
            let distinct: HashSet<_> = last.iter().map(|(_, s)| s).collect();
            if last.iter().all(|(st, _)| *st == 200) && distinct.len() == window {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < limit,
            "no cycle of {window} distinct replicas within {limit:?}; last answers: {:?}",
            &seen[seen.len().saturating_sub(12)..]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` requests; asserts that every consecutive `window` of them reaches `window` distinct
/// replicas (each once per cycle) and returns the replicas seen.
fn assert_cycles(port: u16, window: usize, n: usize) -> HashSet<String> {
    let answers: Vec<(u16, String, String)> = (0..n).map(|_| get(port)).collect();
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    for cycle in answers.windows(window) {
        let distinct: HashSet<_> = cycle.iter().map(|a| &a.1).collect();
        assert_eq!(
            distinct.len(),
            window,
            "a cycle repeated a replica: {answers:?}"
        );
    }
    answers.into_iter().map(|a| a.1).collect()
}

/// A WebSocket to `ws://127.0.0.1:port/ws`: a text message echoed, then a Close answered with
/// the same code and reason. Returns the `X-Served-By` of the 101 response.
fn websocket_exchange(port: u16) -> String {
    let step = Duration::from_secs(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("ws://127.0.0.1:{port}/ws");
        let (mut ws, res) = tokio::time::timeout(step, tokio_tungstenite::connect_async(url))
            .await
            .expect("a WebSocket handshake in time")
            .expect("a WebSocket through the published port");
        ws.send(Message::text("hello through compose"))
            .await
            .unwrap();
        let echo = tokio::time::timeout(step, ws.next()).await.unwrap();
        assert_eq!(
            echo.unwrap().unwrap(),
            Message::text("hello through compose")
        );
        let bye = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }));
        ws.send(bye.clone()).await.unwrap();
        let answer = tokio::time::timeout(step, ws.next()).await.unwrap();
        assert_eq!(answer.unwrap().unwrap(), bye);
        res.headers()
            .get("x-served-by")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    })
}

/// `docker compose up -d --scale server2=N`, leaving the other services as they are.
fn scale_server2(project: &Project, replicas: u32) {
    project.compose(&[
        "up",
        "-d",
        "--no-build",
        "--no-recreate",
        "--scale",
        &format!("server2={replicas}"),
    ]);
}

/// `docker compose up`: 30 requests show Server 1, 2, 3 in order; a WebSocket echoes and closes;
/// `--scale server2=3` brings 5 replicas into each cycle within 2 s; scaling back to 1 leaves 3.
#[test]
fn compose_deployment_round_robins_and_follows_scaling() {
    let project = Project::new();
    let port = project.port;
    eprintln!("compose project {} on 127.0.0.1:{port}", project.name);
    project.compose(&["up", "-d", "--build", "--wait", "--wait-timeout", "180"]);

    let bodies: Vec<String> = (0..30).map(|_| get(port).2).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("Server {}", i % 3 + 1)).collect();
    assert_eq!(bodies, expected, "30 requests to the published port");

    let served_by = websocket_exchange(port);
    assert!(
        !served_by.is_empty(),
        "the WebSocket's 101 names its replica"
    );
    eprintln!("WebSocket echo and close through the published port, served by {served_by}");

    // The admin listener, published on 127.0.0.1: every upstream with its one healthy endpoint,
    // and the 30 requests (and the WebSocket) counted.
    let (status, _, body) = get_within(project.admin_port, "/status", Duration::from_secs(10));
    assert_eq!(status, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).expect("the /status JSON");
    let upstreams = s["upstreams"].as_array().expect("upstreams");
    assert_eq!(upstreams.len(), 3, "{s}");
    for u in upstreams {
        assert_eq!(u["endpoints"].as_array().unwrap().len(), 1, "{u}");
        assert_eq!(u["endpoints"][0]["health"], "up", "{u}");
    }
    assert!(s["totals"]["requests"].as_u64().unwrap() >= 30, "{s}");
    eprintln!(
        "admin /status on 127.0.0.1:{} lists the 3 upstreams",
        project.admin_port
    );

    scale_server2(&project, 3);
    let took = until_cycle_of(port, 5, Duration::from_secs(2));
    eprintln!("scale-up to 5 replicas seen after {took:?}");
    let replicas = assert_cycles(port, 5, 25);
    assert_eq!(replicas.len(), 5, "{replicas:?}");

    scale_server2(&project, 1);
    // The removed replicas are gone from Docker's DNS once `up` returns; rondo sees that on its
    // next discovery tick. A request sent to one of them meanwhile is retried on another
    // endpoint, so every answer is a 200.
    let started = Instant::now();
    let mut recent: Vec<String> = Vec::new();
    let took = loop {
        let (status, served_by, body) = get(port);
        assert_eq!(status, 200, "a request failed while scaling down: {body}");
        recent.push(served_by);
        let last: HashSet<&String> = recent.iter().rev().take(6).collect();
        if recent.len() >= 6 && last.len() == 3 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "removed replicas still in rotation 2 s after scaling down: {recent:?}"
        );
    };
    eprintln!("scale-down to 3 replicas seen after {took:?}");

    let replicas = assert_cycles(port, 3, 15);
    assert_eq!(replicas.len(), 3, "{replicas:?}");
}
