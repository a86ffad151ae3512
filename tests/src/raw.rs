//! HTTP/1.1 at the byte level, for the hostile-input corpus (`tests/hostile.rs`).
//!
//! - [`RecordingUpstream`]: an endpoint on plain sockets that keeps the exact bytes each
//!   connection brought and answers every request it can frame with a fixed 200.
//! - [`parse_request`]: the strict request parser the upstream frames with, and tests use to
//!   check what the balancer forwarded: CRLF only, one `Content-Length` of digits or exactly
//!   `Transfer-Encoding: chunked` (never both), chunks without extensions.
//! - [`exchange`]: a raw client: sends bytes, half-closes, reads every response until the
//!   balancer closes or a read timeout passes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a raw socket waits for the next bytes before giving up (upstream and client).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer the recording upstream gives to every request it can frame.
pub const UPSTREAM_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Type: text/plain\r\n\r\nupstream";

/// One request as the strict parser framed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub version: Vec<u8>,
    /// Names as received (case kept), values without surrounding blanks.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// Every value of the header `name` (compared without case), in order.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

/// What [`parse_request`] made of the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request, and how many bytes of the buffer it took.
    Complete(RawRequest, usize),
    /// Not enough bytes yet to end the request.
    Partial,
    /// The bytes cannot be one unambiguous request: why.
    Invalid(String),
}

/// Frames the request at the start of `buf`, strictly: a head of CRLF-terminated lines with
/// no other control bytes, `METHOD SP target SP HTTP/1.x`, token header names followed at
/// once by `:`, no folded lines, no header name that reads as `Content-Length` or
/// `Transfer-Encoding` once `_` is taken for `-`, at most one `Content-Length` (digits) or one
/// `Transfer-Encoding` that is exactly `chunked` and never both, and chunk-size lines of hex
/// digits only. Anything else is [`Parsed::Invalid`], never a guess.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let Some(head_len) = find(buf, b"\r\n\r\n") else {
        return match check_head_bytes(buf) {
            Err(why) => Parsed::Invalid(why),
            Ok(()) => Parsed::Partial,
        };
    };
    let head = &buf[..head_len];
    if let Err(why) = check_head_bytes(head) {
        return Parsed::Invalid(why);
    }
    // Every line but the last ends in "\r\n" (checked above); the last lost its CRLF to `find`.
    let lines: Vec<&[u8]> = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let request_line = lines[0];
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return invalid(format!(
            "request line is not METHOD SP target SP version: {:?}",
            String::from_utf8_lossy(request_line)
        ));
    }
    if !parts[0].iter().all(|&b| is_tchar(b)) {
        return invalid("method is not a token");
    }
    if parts[2] != b"HTTP/1.1" && parts[2] != b"HTTP/1.0" {
        return invalid("version is not HTTP/1.0 or HTTP/1.1");
    }
    let mut headers = Vec::new();
    for line in &lines[1..] {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return invalid("folded header line (obs-fold)");
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return invalid("header line without ':'");
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return invalid(format!(
                "header name is not a token: {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let value = line[colon + 1..].trim_ascii();
        headers.push((name.to_vec(), value.to_vec()));
    }
    let request = RawRequest {
        method: parts[0].to_vec(),
        target: parts[1].to_vec(),
        version: parts[2].to_vec(),
        headers,
        body: Vec::new(),
    };
    let framing = match framing_of(&request) {
        Ok(f) => f,
        Err(why) => return Parsed::Invalid(why),
    };
    let body_start = head_len + 4;
    let rest = &buf[body_start..];
    let (body, used) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(n) => {
            let Ok(n) = usize::try_from(n) else {
                return invalid("Content-Length too large");
            };
            if rest.len() < n {
                return Parsed::Partial;
            }
            (rest[..n].to_vec(), n)
        }
        Framing::Chunked => match dechunk(rest) {
            Ok(Some(done)) => done,
            Ok(None) => return Parsed::Partial,
            Err(why) => return Parsed::Invalid(why),
        },
    };
    Parsed::Complete(RawRequest { body, ..request }, body_start + used)
}

fn invalid(why: impl Into<String>) -> Parsed {
    Parsed::Invalid(why.into())
}

/// Every CR is followed by LF, every LF preceded by CR, and no other control byte but HTAB.
fn check_head_bytes(head: &[u8]) -> Result<(), String> {
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\r' if head.get(i + 1).is_some_and(|&n| n != b'\n') => {
                return Err(format!("bare CR at byte {i} of the head"));
            }
            b'\n' if i == 0 || head[i - 1] != b'\r' => {
                return Err(format!("bare LF at byte {i} of the head"));
            }
            0 => return Err(format!("NUL at byte {i} of the head")),
            b'\r' | b'\n' | b'\t' => {}
            b if b < 0x20 || b == 0x7f => {
                return Err(format!("control byte {b:#04x} at byte {i} of the head"))
            }
            _ => {}
        }
    }
    Ok(())
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The one way to frame `request`'s body, or why there is no single one.
fn framing_of(request: &RawRequest) -> Result<Framing, String> {
    let mut lengths = Vec::new();
    let mut encodings = Vec::new();
    for (name, value) in &request.headers {
        let aliased = name.contains(&b'_');
        let dashed: Vec<u8> = name
            .iter()
            .map(|b| {
                if *b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect();
        let (list, what) = match dashed.as_slice() {
            b"content-length" => (&mut lengths, "Content-Length"),
            b"transfer-encoding" => (&mut encodings, "Transfer-Encoding"),
            _ => continue,
        };
        if aliased || !list.is_empty() {
            return Err(format!("two {what} headers, or one spelt with '_'"));
        }
        list.push(value.clone());
    }
    match (lengths.first(), encodings.first()) {
        (Some(_), Some(_)) => Err("both Content-Length and Transfer-Encoding".into()),
        (None, Some(te)) if te.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        (None, Some(te)) => Err(format!(
            "Transfer-Encoding is not exactly chunked: {:?}",
            String::from_utf8_lossy(te)
        )),
        (Some(cl), None) => {
            if cl.is_empty() || !cl.iter().all(u8::is_ascii_digit) {
                return Err(format!(
                    "Content-Length is not digits: {:?}",
                    String::from_utf8_lossy(cl)
                ));
            }
            std::str::from_utf8(cl)
                .unwrap()
                .parse()
                .map(Framing::Length)
                .map_err(|_| "Content-Length overflows u64".into())
        }
        (None, None) => Ok(Framing::None),
    }
}

/// Decodes a chunked body strictly (hex sizes only, no extensions, no trailers): the data and
/// the bytes it took, `None` when incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let size_line = &buf[at..at + line_len];
        if size_line.is_empty()
            || size_line.len() > 16
            || !size_line.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(format!(
                "chunk-size line is not hex digits only: {:?}",
                String::from_utf8_lossy(size_line)
            ));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_line).unwrap(), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        at += line_len + 2;
        if size == 0 {
            return match buf.get(at..at + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some((data, at + 2))),
                Some(_) => Err("trailer fields after the last chunk".into()),
            };
        }
        let Some(end) = at.checked_add(size) else {
            return Err("chunk size overflows".into());
        };
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        data.extend_from_slice(&buf[at..end]);
        at = end + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An endpoint on 127.0.0.1 that records every byte each connection sent it and answers each
/// request it can frame with [`UPSTREAM_RESPONSE`]; on bytes it cannot frame it answers 400
/// and closes (they stay recorded, for the test to find).
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<Record>>>,
}

/// What one connection has sent, filled in by its thread as the bytes arrive.
type Record = Arc<Mutex<Received>>;

/// What one upstream connection received.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub bytes: Vec<u8>,
    /// The balancer closed (or reset) the connection.
    pub closed: bool,
}

impl RecordingUpstream {
    /// Starts the upstream on its own threads; they end with the test process.
    pub fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recording upstream");
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Record>>> = Arc::default();
        let all = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let record = Record::default();
                all.lock().unwrap().push(record.clone());
                std::thread::spawn(move || serve(stream, &record));
            }
        });
        RecordingUpstream { addr, connections }
    }

    /// What each connection has sent so far, in the order the connections came.
    pub fn received(&self) -> Vec<Received> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Forgets every connection's bytes so far (the connections stay open).
    pub fn clear(&self) {
        for c in self.connections.lock().unwrap().iter() {
            c.lock().unwrap().bytes.clear();
        }
    }

    /// Waits until the balancer has closed connection `index` (in [`Self::received`]'s order),
    /// for at most [`READ_TIMEOUT`]; whether it did.
    pub fn wait_closed(&self, index: usize) -> bool {
        let record = self.connections.lock().unwrap()[index].clone();
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if record.lock().unwrap().closed {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

fn serve(mut stream: TcpStream, record: &Mutex<Received>) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match parse_request(&pending) {
            Parsed::Complete(_, used) => {
                pending.drain(..used);
                if stream.write_all(UPSTREAM_RESPONSE).is_err() {
                    return;
                }
                continue;
            }
            Parsed::Invalid(_) => {
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            Parsed::Partial => {}
        }
        match stream.read(&mut buf) {
            Ok(0) => return record.lock().unwrap().closed = true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return record.lock().unwrap().closed = true;
            }
            Err(_) => return,
            Ok(n) => {
                record.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
                pending.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// One response as the raw client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a raw client got back for the bytes it sent.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Every whole response, in order.
    pub responses: Vec<RawResponse>,
    /// Bytes after the last whole response (a response cut short, or garbage).
    pub rest: Vec<u8>,
    /// Whether the balancer closed the connection (false: the read timed out first).
    pub closed: bool,
}

impl Exchange {
    /// The status of each whole response, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// Connects to `addr`, sends `bytes`, closes the sending side, and reads until the peer closes
/// or sends nothing for [`READ_TIMEOUT`]; parses every response (`HEAD` is not supported).
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(addr).expect("connect to the balancer");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // The balancer may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            // A reset after the answers counts as a close.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let mut responses = Vec::new();
    let mut at = 0;
    while let Some((response, used)) = parse_response(&received[at..]) {
        responses.push(response);
        at += used;
    }
    Exchange {
        responses,
        rest: received[at..].to_vec(),
        closed,
    }
}

/// Parses one response at the start of `buf` (framed by `Content-Length`, chunked, or no body
/// for 1xx/204/304); `None` when it is not whole.
pub fn parse_response(buf: &[u8]) -> Option<(RawResponse, usize)> {
    let head_len = find(buf, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_len]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let start = head_len + 4;
    let (body, used) = if (100..200).contains(&status) || status == 204 || status == 304 {
        (Vec::new(), 0)
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(&buf[start..]).ok()??
    } else {
        let len: usize = header("content-length").map_or(Some(0), |v| v.parse().ok())?;
        (buf.get(start..start + len)?.to_vec(), len)
    };
    Some((
        RawResponse {
            status,
            headers,
            body,
        },
        start + used,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> RawRequest {
        match parse_request(bytes) {
            Parsed::Complete(r, used) => {
                assert_eq!(used, bytes.len());
                r
            }
            other => panic!("expected a whole request, got {other:?}"),
        }
    }

    /// Length-framed and chunked bodies are framed; a missing byte leaves the request partial.
    #[test]
    fn frames_length_and_chunked_bodies() {
        let r = complete(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(r.body, b"abc");
        let r = complete(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(r.body, b"abc");
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Parsed::Partial
        );
    }

    /// Each ambiguity the corpus looks for is refused, never framed one way or the other.
    #[test]
    fn refuses_every_ambiguous_framing() {
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer_Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
