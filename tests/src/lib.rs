//! Helpers for rondo's cross-crate tests: real backends and a real balancer on `127.0.0.1:0`.
//!
//! Tests run inside `#[actix_web::test]`; every server started here stops when the test's
//! runtime ends.
//!
//! - [`browser`]: headless Chromium for page tests (`tests/status_page.rs`): load a page for a
//!   few seconds of virtual time, read the DOM its script left, take a screenshot.
//! - [`compose`]: compose projects of this repository (unique name, free port, torn down on drop)
//!   and the collection of their containers' logs.
//! - [`faulty`]: endpoints that refuse, reset, hang or die mid-response, and a backend whose
//!   health a test switches.
//! - [`load`]: a keep-alive HTTP/1.1 load generator for the fault suite (`tests/faults.rs`).
//! - [`prometheus`]: a real Prometheus server that scrapes a balancer's admin listener, and
//!   queries to its HTTP API (`tests/prometheus.rs`).
//! - [`raw`]: HTTP/1.1 at the byte level for the hostile-input corpus (`tests/hostile.rs`): an
//!   upstream that records the exact bytes it receives, a strict request parser, a raw client.

pub mod browser;
pub mod compose;
pub mod faulty;
pub mod load;
pub mod prometheus;
pub mod raw;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use balancer::config::Upstream;
use balancer::discovery::Resolve;
use balancer::{Config, Running};

/// A backend serving on an ephemeral port of 127.0.0.1.
pub struct Backend {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
}

/// Starts a backend that answers `message` and names itself `served_by`.
pub fn start_backend(message: &str, served_by: &str) -> Backend {
    start_backend_on("127.0.0.1:0", message, served_by)
}

/// Starts a backend on `bind` (an address of the loopback range, port 0 for any).
pub fn start_backend_on(bind: &str, message: &str, served_by: &str) -> Backend {
    let listener = TcpListener::bind(bind).expect("bind a backend");
    let addr = listener.local_addr().unwrap();
    let server = backend::start(
        listener,
        backend::Settings {
            message: message.into(),
            served_by: served_by.into(),
            workers: 1,
            shutdown_timeout: Duration::from_secs(1),
        },
    )
    .expect("start a backend");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Backend { addr, handle }
}

/// The configuration of a balancer in front of `upstreams`, listening on 127.0.0.1:0, with a
/// fast discovery interval; the caller may change any field before [`start_balancer`].
pub fn config_for(upstreams: &[String]) -> Config {
    let mut config = Config::with_upstreams(
        upstreams
            .iter()
            .map(|u| u.parse::<Upstream>().expect("an upstream"))
            .collect(),
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.workers = 4;
    config.discovery_interval = Duration::from_millis(50);
    config.shutdown_timeout = Duration::from_secs(1);
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// Starts a balancer with `config` (its `listen` port is ignored: it binds 127.0.0.1:0).
pub async fn start_balancer<R: Resolve>(config: &Config, resolver: R) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the balancer");
    balancer::start(config, listener, resolver)
        .await
        .expect("start the balancer")
}

/// `http://127.0.0.1:port` of a running balancer.
pub fn url_of(running: &Running, path: &str) -> String {
    format!("http://{}{path}", running.addrs()[0])
}

/// An awc client for tests: no response timeout beyond 30 s, no decompression surprises.
pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish()
}

/// Sends `GET url` and returns the status, the `X-Served-By` header and the body.
pub async fn get(client: &awc::Client, url: &str) -> (u16, String, String) {
    let mut res = client
        .get(url)
        .send()
        .await
        .expect("GET through the balancer");
    let served_by = res
        .headers()
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = res.body().limit(1 << 20).await.expect("a body");
    (
        res.status().as_u16(),
        served_by,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Writes `request` to `addr`, reads until the server closes (at most 10 s), and returns what
/// came back. A reset after a response (a server that closes on unread input) ends the read
/// like a close: the bytes read so far are returned.
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request.as_bytes()).await;
    read_until_closed(&mut stream, Duration::from_secs(10)).await
}

/// Everything the server sends on `stream` until it closes (or resets); panics when it has
/// not closed within `limit`.
pub async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server did not close within {limit:?}"));
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of header `name` (any case) in the head of a raw HTTP response, if present.
pub fn raw_header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
