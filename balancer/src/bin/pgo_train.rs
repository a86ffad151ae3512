//! `rondo-pgo-train ADDR [SECONDS]`: the workload that `scripts/pgo-build` runs against an
//! instrumented rondo to record the profile that the release build is then optimised with.
//!
//! It sends what rondo's users send, in proportion to what matters for speed: mostly keep-alive
//! `GET /`, then a new connection per request, 64 KiB streamed responses, `POST` bodies, `HEAD`,
//! and a few bad requests that rondo answers with 400 itself. It uses only the standard library, so that none of
//! the code it runs is code whose profile it records (awc or tokio, say). It prints what it sent
//! and exits non-zero when a phase got no good response at all: a profile recorded against a
//! balancer that did not answer would steer the optimiser wrong.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One phase of the workload: `connections` threads, each sending `request` for its share of
/// the time, on one keep-alive connection or on a new connection per request.
struct Phase {
    name: &'static str,
    connections: usize,
    share: f64,
    keep_alive: bool,
    request: Vec<u8>,
}

fn post_echo() -> Vec<u8> {
    let body = [b'x'; 512];
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: rondo\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

fn phases() -> Vec<Phase> {
    vec![
        Phase {
            name: "keep-alive GET /",
            connections: 32,
            share: 0.45,
            keep_alive: true,
            request: b"GET / HTTP/1.1\r\nHost: rondo\r\nUser-Agent: rondo-pgo-train\r\nAccept: */*\r\n\r\n".to_vec(),
        },
        Phase {
            name: "new connection per GET /",
            connections: 8,
            share: 0.15,
            keep_alive: false,
            request: b"GET / HTTP/1.1\r\nHost: rondo\r\nConnection: close\r\n\r\n".to_vec(),
        },
        Phase {
            name: "keep-alive GET /bytes/65536",
            connections: 8,
            share: 0.15,
            keep_alive: true,
            request: b"GET /bytes/65536 HTTP/1.1\r\nHost: rondo\r\n\r\n".to_vec(),
        },
        Phase {
            name: "keep-alive POST /echo (512 bytes)",
            connections: 8,
            share: 0.15,
            keep_alive: true,
            request: post_echo(),
        },
        Phase {
            name: "keep-alive HEAD /",
            connections: 4,
            share: 0.05,
            keep_alive: true,
            request: b"HEAD / HTTP/1.1\r\nHost: rondo\r\n\r\n".to_vec(),
        },
        Phase {
            name: "requests rondo answers 400 (a bad Content-Length)",
            connections: 2,
            share: 0.05,
            keep_alive: false,
            request: b"GET / HTTP/1.1\r\nHost: rondo\r\nContent-Length: x\r\n\r\n".to_vec(),
        },
    ]
}

/// Counts of one phase.
#[derive(Default)]
struct Tally {
    good: u64,
    errors: u64,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), seconds) = (args.next(), args.next()) else {
        eprintln!("usage: rondo-pgo-train ADDR [SECONDS]   (ADDR like 127.0.0.1:8080; SECONDS 8)");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rondo-pgo-train: ADDR {addr:?} is not an IP:port ({e})");
            return ExitCode::from(2);
        }
    };
    let seconds: f64 = match seconds.as_deref().unwrap_or("8").parse() {
        Ok(s) if s > 0.0 => s,
        _ => {
            eprintln!("rondo-pgo-train: SECONDS must be a positive number");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for phase in phases() {
        let time = Duration::from_secs_f64(seconds * phase.share);
        let tally = run(addr, &phase, time);
        println!(
            "rondo-pgo-train: {:<56} {:>7} responses, {} errors",
            phase.name, tally.good, tally.errors
        );
        failed |= tally.good == 0;
    }
    if failed {
        eprintln!("rondo-pgo-train: a phase got no response; the profile would be wrong");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run(addr: SocketAddr, phase: &Phase, time: Duration) -> Tally {
    let deadline = Instant::now() + time;
    let request: Arc<[u8]> = phase.request.as_slice().into();
    let workers: Vec<_> = (0..phase.connections)
        .map(|_| {
            let (request, keep_alive) = (Arc::clone(&request), phase.keep_alive);
            thread::spawn(move || worker(addr, &request, keep_alive, deadline))
        })
        .collect();
    let mut total = Tally::default();
    for w in workers {
        let t = w.join().unwrap_or_default();
        total.good += t.good;
        total.errors += t.errors;
    }
    total
}

fn worker(addr: SocketAddr, request: &[u8], keep_alive: bool, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let head = request.starts_with(b"HEAD ");
    let mut conn: Option<BufReader<TcpStream>> = None;
    while Instant::now() < deadline {
        let result = (|| -> io::Result<()> {
            let stream = match conn.take() {
                Some(c) => c,
                None => {
                    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.set_nodelay(true)?;
                    BufReader::with_capacity(16 * 1024, s)
                }
            };
            let mut stream = stream;
            stream.get_mut().write_all(request)?;
            let reusable = read_response(&mut stream, head)?;
            if keep_alive && reusable {
                conn = Some(stream);
            }
            Ok(())
        })();
        match result {
            Ok(()) => tally.good += 1,
            Err(_) => {
                tally.errors += 1;
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    tally
}

/// Reads one response; says whether the connection can carry another request.
fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<bool> {
    let mut line = String::new();
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    r.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 ") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP/1.1 response",
        ));
    }
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap_or((l, ""));
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if head_request {
        return Ok(!close);
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            discard(r, size + 2)?;
            if size == 0 {
                return Ok(!close);
            }
        }
    }
    match length {
        Some(n) => discard(r, n).map(|()| !close),
        None => {
            io::copy(r, &mut io::sink())?;
            Ok(false)
        }
    }
}

fn discard(r: &mut impl BufRead, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if copied == n {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every response in `bytes` in turn: whether each left the connection reusable.
    fn responses(bytes: &[u8], head_request: bool) -> io::Result<Vec<bool>> {
        let mut r = io::Cursor::new(bytes);
        let mut out = Vec::new();
        while (r.position() as usize) < bytes.len() {
            out.push(read_response(&mut r, head_request)?);
        }
        Ok(out)
    }

    #[test]
    fn keep_alive_responses_are_read_to_their_end() {
        let two = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nServer 1\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
        assert_eq!(responses(two, false).unwrap(), vec![true, true]);
    }

    #[test]
    fn close_and_end_of_stream_end_the_connection() {
        let close =
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\ncontent-length: 3\r\n\r\nbad";
        assert_eq!(responses(close, false).unwrap(), vec![false]);
        let unframed = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
        assert_eq!(responses(unframed, false).unwrap(), vec![false]);
    }

    #[test]
    fn a_head_response_has_no_body_whatever_its_length_says() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(responses(head, true).unwrap(), vec![true, true]);
    }

    #[test]
    fn short_or_foreign_responses_are_errors() {
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nServ";
        assert_eq!(
            responses(short, false).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let cut_head = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n";
        assert!(responses(cut_head, false).is_err());
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(
            responses(bad_chunk, false).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let http10 = b"HTTP/1.0 200 OK\r\n\r\n";
        assert!(responses(http10, false).is_err());
    }
}
