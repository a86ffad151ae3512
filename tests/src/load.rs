//! A small HTTP/1.1 load generator for fault tests: many keep-alive connections to one port of
//! 127.0.0.1, a fixed number of requests, an optional steady rate, and one [`Outcome`] per request.
//!
//! Each connection is a thread with its own `TcpStream` and sends one request at a time (no
//! pipelining). Requests are numbered by one shared counter, so exactly `total` are sent however
//! the connections are scheduled; with a `rate`, request `i` is not sent before `start + i/rate`.
//! Connections are opened before `start` when there is time (as wrk opens its connections before
//! it times requests); one the server closes (`Connection: close`, or after an error) is opened
//! again for the next request, and that request's latency includes the connect. A request counts
//! as failed when it gets no complete response: connect error, reset, early close or timeout
//! (status 0 and an [`Failure`]); statuses are recorded as they come.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What each request is.
#[derive(Debug, Clone)]
pub enum Method {
    /// `GET path`.
    Get,
    /// `POST path` with this body and a unique `X-Test-Id: <prefix><i>` for request `i`.
    Post { body: Vec<u8>, id_prefix: String },
}

/// A load to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where to send: a loopback address (fault tests send nowhere else).
    pub addr: SocketAddr,
    /// The request path, e.g. `/` or `/echo`.
    pub path: String,
    pub method: Method,
    /// Concurrent keep-alive connections (one thread each).
    pub connections: usize,
    /// Requests in all; exactly this many are sent.
    pub total: usize,
    /// Requests per second over all connections; `None` sends as fast as answers come.
    pub rate: Option<f64>,
    /// Longest wait for one complete response (connect included), then the request fails.
    pub timeout: Duration,
    /// No request is sent later than this after the start, so a load against a server that
    /// stopped answering ends by itself; the requests not sent are missing from the outcomes.
    pub give_up_after: Duration,
}

/// Why a request got no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// The TCP connection could not be opened.
    Connect,
    /// Writing the request failed (reset, broken pipe).
    Write,
    /// Reading the response failed (reset).
    Read,
    /// The server closed the connection before the response was complete.
    Closed,
    /// No complete response within [`Spec::timeout`].
    Timeout,
    /// The response was not HTTP/1.x as expected.
    Malformed,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Connect => "connect",
            Failure::Write => "write",
            Failure::Read => "reset",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
            Failure::Malformed => "malformed",
        })
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The request's number, `0..total`.
    pub index: usize,
    /// When it was sent, since the load started.
    pub sent_at: Duration,
    /// From sending to the complete response (or to the failure).
    pub latency: Duration,
    /// The response status; 0 when there was no complete response.
    pub status: u16,
    /// `Some` when there was no complete response.
    pub failure: Option<Failure>,
    /// The `X-Served-By` header, empty when absent.
    pub served_by: String,
    /// The response body's length in bytes.
    pub body_len: usize,
    /// The start of the body (up to 200 bytes), kept for responses other than 2xx.
    pub body_start: String,
}

impl Outcome {
    /// When the answer (or the failure) came, since the load started.
    pub fn done_at(&self) -> Duration {
        self.sent_at + self.latency
    }

    /// A complete 2xx response.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The `X-Test-Id` of request `index` of a POST load with `id_prefix`.
pub fn test_id(id_prefix: &str, index: usize) -> String {
    format!("{id_prefix}{index}")
}

/// Runs the load to the end and returns every request's outcome, ordered by `index`. `start` is
/// the moment the load begins (requests go out from then on), so a caller can time other actions
/// against the same clock.
pub fn run(spec: &Spec, start: Instant) -> Vec<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(spec.total)));
    let threads: Vec<_> = (0..spec.connections.max(1))
        .map(|n| {
            let spec = spec.clone();
            let next = Arc::clone(&next);
            let results = Arc::clone(&results);
            std::thread::Builder::new()
                .name(format!("load-{n}"))
                .spawn(move || {
                    let mut conn = Connection::new(spec.addr);
                    // Connected before the clock starts, as wrk does: the latencies are of
                    // requests, not of the load's own connection set-up (a reconnection during
                    // the load still counts in its request's latency).
                    conn.open_before(start);
                    let mut mine = Vec::new();
                    let give_up = start + spec.give_up_after;
                    loop {
                        let now = Instant::now();
                        if now < start {
                            std::thread::sleep(start - now);
                        }
                        if Instant::now() > give_up {
                            break;
                        }
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= spec.total {
                            break;
                        }
                        if let Some(rate) = spec.rate {
                            let due = start + Duration::from_secs_f64(index as f64 / rate);
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                        }
                        mine.push(conn.request(&spec, index, start));
                    }
                    results.lock().unwrap().extend(mine);
                })
                .expect("spawn a load thread")
        })
        .collect();
    for t in threads {
        t.join().expect("a load thread panicked");
    }
    let mut all = std::mem::take(&mut *results.lock().unwrap());
    all.sort_by_key(|o| o.index);
    all
}

/// One keep-alive client connection, opened on demand.
struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Bytes read past the end of the last response (none without pipelining, kept to be sure).
    buf: Vec<u8>,
}

/// A complete response.
struct Response {
    status: u16,
    served_by: String,
    body: Vec<u8>,
    close: bool,
}

impl Connection {
    fn new(addr: SocketAddr) -> Connection {
        Connection {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    fn request(&mut self, spec: &Spec, index: usize, start: Instant) -> Outcome {
        let sent = Instant::now();
        let deadline = sent + spec.timeout;
        let result = self.exchange(spec, index, deadline);
        let mut outcome = Outcome {
            index,
            sent_at: sent - start,
            latency: sent.elapsed(),
            status: 0,
            failure: None,
            served_by: String::new(),
            body_len: 0,
            body_start: String::new(),
        };
        match result {
            Ok(res) => {
                if res.close {
                    self.close();
                }
                outcome.status = res.status;
                outcome.served_by = res.served_by;
                outcome.body_len = res.body.len();
                if !(200..300).contains(&res.status) {
                    let n = res.body.len().min(200);
                    outcome.body_start = String::from_utf8_lossy(&res.body[..n]).into_owned();
                }
            }
            Err(failure) => {
                self.close();
                outcome.failure = Some(failure);
            }
        }
        outcome
    }

    /// Opens the connection if `start` is still ahead; a failure is left for the first
    /// request to meet (and count).
    fn open_before(&mut self, start: Instant) {
        let left = start.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let _ = self.connect(left);
    }

    fn connect(&mut self, timeout: Duration) -> std::io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, timeout)?;
        let _ = stream.set_nodelay(true);
        self.stream = Some(stream);
        self.buf.clear();
        Ok(())
    }

    fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.buf.clear();
    }

    fn exchange(
        &mut self,
        spec: &Spec,
        index: usize,
        deadline: Instant,
    ) -> Result<Response, Failure> {
        if self.stream.is_none() {
            let left = remaining(deadline).ok_or(Failure::Timeout)?;
            self.connect(left).map_err(|e| {
                if is_timeout(&e) {
                    Failure::Timeout
                } else {
                    Failure::Connect
                }
            })?;
        }
        let stream = self.stream.as_mut().unwrap();

        let mut req = Vec::with_capacity(256);
        match &spec.method {
            Method::Get => {
                write!(req, "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", spec.path).unwrap();
            }
            Method::Post { body, id_prefix } => {
                write!(
                    req,
                    "POST {} HTTP/1.1\r\nHost: localhost\r\nX-Test-Id: {}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    spec.path,
                    test_id(id_prefix, index),
                    body.len()
                )
                .unwrap();
                req.extend_from_slice(body);
            }
        }
        let left = remaining(deadline).ok_or(Failure::Timeout)?;
        stream.set_write_timeout(Some(left)).ok();
        stream.write_all(&req).map_err(|e| {
            if is_timeout(&e) {
                Failure::Timeout
            } else {
                Failure::Write
            }
        })?;

        // Head.
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(Failure::Malformed);
            }
            fill(stream, &mut self.buf, deadline)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        if !status_line.starts_with("HTTP/1.") {
            return Err(Failure::Malformed);
        }
        let status: u16 = status_line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or(Failure::Malformed)?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = status_line.starts_with("HTTP/1.0");
        let mut served_by = String::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = Some(value.parse::<usize>().map_err(|_| Failure::Malformed)?)
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "x-served-by" => served_by = value.to_string(),
                _ => {}
            }
        }

        // Body.
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else if chunked {
            read_chunked(stream, &mut self.buf, deadline)?
        } else if let Some(n) = content_length {
            while self.buf.len() < n {
                fill(stream, &mut self.buf, deadline)?;
            }
            self.buf.drain(..n).collect()
        } else {
            // Delimited by the end of the connection.
            loop {
                match fill(stream, &mut self.buf, deadline) {
                    Ok(()) => {}
                    Err(Failure::Closed) => break,
                    Err(e) => return Err(e),
                }
            }
            close = true;
            std::mem::take(&mut self.buf)
        };
        Ok(Response {
            status,
            served_by,
            body,
            close,
        })
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (left > Duration::from_millis(1)).then_some(left)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Reads more bytes into `buf`, waiting until `deadline` at most.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), Failure> {
    let left = remaining(deadline).ok_or(Failure::Timeout)?;
    stream.set_read_timeout(Some(left)).ok();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(Failure::Timeout),
            Err(_) => return Err(Failure::Read),
        }
    }
}

fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = find(buf, b"\r\n") {
                break pos;
            }
            fill(stream, buf, deadline)?;
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| Failure::Malformed)?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (none expected), then the empty line.
            loop {
                let end = loop {
                    if let Some(pos) = find(buf, b"\r\n") {
                        break pos;
                    }
                    fill(stream, buf, deadline)?;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(body);
                }
            }
        }
        while buf.len() < size + 2 {
            fill(stream, buf, deadline)?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Latency percentiles and counts of a set of outcomes.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub sent: usize,
    /// Requests without a 2xx response (no response, or another status).
    pub failed: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Failures by kind: `"502"`, `"reset"`, `"timeout"`, …, with counts, most frequent first.
    pub failures: Vec<(String, usize)>,
}

impl Summary {
    /// Summarises `outcomes`: latencies of every request, failed ones included (up to when
    /// they failed); percentiles by the nearest-rank method.
    pub fn of(outcomes: &[Outcome]) -> Summary {
        let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        latencies.sort();
        let pct = |p: f64| -> Duration {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for o in outcomes.iter().filter(|o| !o.ok()) {
            let kind = match o.failure {
                Some(f) => f.to_string(),
                None => o.status.to_string(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
        let mut failures: Vec<(String, usize)> = kinds.into_iter().collect();
        failures.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Summary {
            sent: outcomes.len(),
            failed: outcomes.iter().filter(|o| !o.ok()).count(),
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            max: latencies.last().copied().unwrap_or_default(),
            failures,
        }
    }
}

/// When the requests at least as slow as `threshold` were sent: their count per 100 ms slice of
/// the load, as `2.3s:12 2.4s:3` (empty when there were none). Bursts of them at the times of a
/// Docker command, or at a steady period, tell what made a p99.
pub fn slow_by_send_time(outcomes: &[Outcome], threshold: Duration) -> String {
    let mut slices = std::collections::BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.latency >= threshold) {
        *slices.entry(o.sent_at.as_millis() / 100).or_insert(0usize) += 1;
    }
    slices
        .iter()
        .map(|(slice, n)| format!("{:.1}s:{n}", *slice as f64 / 10.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Who served the requests at or above `threshold` (their `X-Served-By`; `-` for none), each
/// with how many of all its requests that was: `b: 3 of 40, a: 1 of 50`, most first. Tells a
/// fault's own slow requests (one endpoint's) from a stall of the whole machine (all alike).
pub fn slow_by_server(outcomes: &[Outcome], threshold: Duration) -> String {
    let mut by = std::collections::BTreeMap::<&str, (usize, usize)>::new();
    for o in outcomes {
        let name = if o.served_by.is_empty() {
            "-"
        } else {
            &o.served_by
        };
        let entry = by.entry(name).or_default();
        entry.1 += 1;
        if o.latency >= threshold {
            entry.0 += 1;
        }
    }
    let mut rows: Vec<_> = by.into_iter().filter(|(_, (slow, _))| *slow > 0).collect();
    rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    rows.iter()
        .map(|(name, (slow, all))| format!("{name}: {slow} of {all}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `12.3ms`, `1.52s`: a latency for a table.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ms: u64, status: u16) -> Outcome {
        Outcome {
            index: 0,
            sent_at: Duration::ZERO,
            latency: Duration::from_millis(ms),
            status,
            failure: (status == 0).then_some(Failure::Closed),
            served_by: String::new(),
            body_len: 0,
            body_start: String::new(),
        }
    }

    /// The slow requests are counted by the 100 ms slice they were sent in, in time order.
    #[test]
    fn slow_requests_by_send_time() {
        let at = |sent_ms: u64, ms: u64| Outcome {
            sent_at: Duration::from_millis(sent_ms),
            ..outcome(ms, 200)
        };
        let all = [at(2350, 9), at(50, 1), at(2310, 8), at(120, 7), at(2399, 2)];
        assert_eq!(
            slow_by_send_time(&all, Duration::from_millis(7)),
            "0.1s:1 2.3s:2"
        );
        assert_eq!(slow_by_send_time(&all, Duration::from_millis(10)), "");
    }

    /// The slow requests are counted per server, most first, with each server's total.
    #[test]
    fn slow_requests_by_server() {
        let by = |who: &str, ms: u64| Outcome {
            served_by: who.into(),
            ..outcome(ms, 200)
        };
        let all = [
            by("a", 9),
            by("b", 9),
            by("b", 8),
            by("a", 1),
            by("c", 1),
            by("", 9),
        ];
        assert_eq!(
            slow_by_server(&all, Duration::from_millis(8)),
            "b: 2 of 2, -: 1 of 1, a: 1 of 2"
        );
        assert_eq!(slow_by_server(&all, Duration::from_millis(10)), "");
    }

    /// Nearest-rank percentiles over 100 latencies 1..=100 ms; failures counted by kind.
    #[test]
    fn summary_percentiles_and_failures() {
        let mut all: Vec<Outcome> = (1..=100).map(|ms| outcome(ms, 200)).collect();
        all[3].status = 502;
        all[4] = outcome(5, 0);
        let s = Summary::of(&all);
        assert_eq!(s.sent, 100);
        assert_eq!(s.failed, 2);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(
            s.failures,
            vec![("502".to_string(), 1), ("closed".to_string(), 1)]
        );
    }
}
