//! The client limits through a real balancer: each limit's status, the connection closed where
//! the body was left unread, and slow clients that cannot starve the others.

use std::net::SocketAddr;
use std::time::Duration;

use balancer::discovery::DnsResolver;
use balancer::Config;
use futures_util::future::join_all;
use rondo_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status_of(response: &str) -> &str {
    response.get(9..12).unwrap_or("")
}

/// A connection to `lb` on which `bytes` have been sent.
async fn connect_and_send(lb: &balancer::Running, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(lb.addrs()[0]).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

async fn balancer_with(change: impl FnOnce(&mut Config)) -> (Backend, balancer::Running) {
    let b = start_backend("Server 1", "b1");
    let mut config = config_for(&[b.addr.to_string()]);
    change(&mut config);
    let lb = start_balancer(&config, DnsResolver).await;
    (b, lb)
}

/// A target over the URI limit gets 414 and a head over the header limit 431, each with the
/// reason and a closed connection (the body behind such a head is never read, so the next
/// bytes are not a request); a head over actix-http's own 128 KiB bound gets 431 too.
#[actix_web::test]
async fn long_targets_and_large_heads_are_refused() {
    let (_b, lb) = balancer_with(|c| {
        c.max_uri_length = 1024;
        c.max_header_size = 4096;
    })
    .await;
    let addr = lb.addrs()[0];
    let long_uri = format!("/{}", "a".repeat(1100));
    // Keep-alive requests with a body: answered once, then the connection closes, so the
    // body is never taken for a second request.
    let body = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let response = raw_exchange(
        addr,
        &format!(
            "POST {long_uri} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status_of(&response), "414", "{response}");
    assert!(response.contains("RONDO_MAX_URI_LENGTH"), "{response}");
    assert_eq!(raw_header(&response, "connection"), Some("close"));
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");

    let big = "v".repeat(5000);
    let response = raw_exchange(
        addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status_of(&response), "431", "{response}");
    assert!(response.contains("RONDO_MAX_HEADER_SIZE"), "{response}");
    assert_eq!(raw_header(&response, "connection"), Some("close"));
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");

    let huge = "v".repeat(140 << 10);
    let response = raw_exchange(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n"),
    )
    .await;
    assert_eq!(status_of(&response), "431", "{response}");
    assert_eq!(raw_header(&response, "connection"), Some("close"));

    let response = raw_exchange(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), "200", "{response}");
}

/// A declared length over the body limit gets 413 at once (the endpoint sees nothing), and the
/// connection closes since the body was not read.
#[actix_web::test]
async fn declared_body_over_the_limit_gets_413() {
    let (_b, lb) = balancer_with(|c| c.max_body_size = 1000).await;
    let response = raw_exchange(
        lb.addrs()[0],
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\nnot all of it",
    )
    .await;
    assert_eq!(status_of(&response), "413", "{response}");
    assert!(response.contains("RONDO_MAX_BODY_SIZE"), "{response}");
    assert!(response.contains("request id: "), "{response}");
    assert_eq!(raw_header(&response, "connection"), Some("close"));
}

/// A chunked body that streams past the limit gets 413 and never reaches the endpoint whole;
/// one within the limit passes.
#[actix_web::test]
async fn chunked_body_over_the_limit_gets_413() {
    let (_b, lb) = balancer_with(|c| {
        c.max_body_size = 200 << 10;
        c.retry_body_limit = 16 << 10;
    })
    .await;
    let chunk = format!("{:x}\r\n{}\r\n", 50 << 10, "z".repeat(50 << 10));
    let over = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(5)
    );
    let response = raw_exchange(lb.addrs()[0], &over).await;
    assert_eq!(status_of(&response), "413", "{response}");
    assert!(!response.contains("body_sha256"), "{response}");

    let within = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(3)
    );
    let response = raw_exchange(lb.addrs()[0], &within).await;
    assert_eq!(status_of(&response), "200", "{response}");
    assert!(response.contains("\"body_length\":153600"), "{response}");
}

/// A client that stops sending its body gets 408 after the body timeout; one that never
/// finishes its head gets 408 from the head timeout.
#[actix_web::test]
async fn stalled_clients_get_408() {
    let (_b, lb) = balancer_with(|c| {
        c.client_body_timeout = Duration::from_millis(300);
        c.client_timeout = Duration::from_millis(300);
    })
    .await;
    let response = raw_exchange(
        lb.addrs()[0],
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    assert_eq!(status_of(&response), "408", "{response}");
    assert!(response.contains("RONDO_CLIENT_BODY_TIMEOUT"), "{response}");

    let sent = std::time::Instant::now();
    let response = raw_exchange(lb.addrs()[0], "GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(status_of(&response), "408", "{response}");
    assert!(response.contains("RONDO_CLIENT_TIMEOUT"), "{response}");
    assert_eq!(raw_header(&response, "connection"), Some("close"));
    assert!(response.contains("request id: "), "{response}");
    // Not before the timeout: actix-http counted it from a clock that lags by up to 500 ms.
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "408 after {:?}, before the 300 ms timeout",
        sent.elapsed()
    );
}

/// 1,000 slowloris connections (a head sent a byte at a time) do not stop 100 ordinary
/// requests from being served, and each slow connection is ended by the head timeout.
#[actix_web::test]
async fn slowloris_does_not_starve_other_clients() {
    const SLOW: usize = 1000;
    let (_b, lb) = balancer_with(|c| {
        c.client_timeout = Duration::from_secs(3);
        c.workers = 2;
    })
    .await;
    let addr = lb.addrs()[0];
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr).await.expect("a slow connection");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // Every slow client adds a byte, as slowloris does, while others are served.
    for s in &mut slow {
        let _ = s.write_all(b"a").await;
    }
    let client = client();
    let url = url_of(&lb, "/");
    let answers = join_all((0..100).map(|_| get(&client, &url))).await;
    let ok = answers.iter().filter(|(status, ..)| *status == 200).count();
    println!("with {SLOW} slow connections open: {ok}/100 ordinary requests answered 200");
    assert_eq!(ok, 100);

    let ended = join_all(slow.into_iter().map(|mut s| async move {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
        read.is_ok() && String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408")
    }))
    .await;
    let timed_out = ended.iter().filter(|e| **e).count();
    println!("{timed_out}/{SLOW} slow connections ended with 408");
    assert_eq!(timed_out, SLOW);
}

/// Past RONDO_MAX_CONNECTIONS a new connection waits until one closes, then is served.
#[actix_web::test]
async fn connections_past_the_limit_wait_for_a_free_one() {
    let (_b, lb) = balancer_with(|c| {
        c.max_connections = 4;
        c.workers = 1;
        c.client_timeout = Duration::from_secs(30);
    })
    .await;
    let addr: SocketAddr = lb.addrs()[0];
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Give the worker time to accept the four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut buf)).await;
    // Nothing arrives while the four are held (a timeout, not a read).
    assert!(
        early.is_err(),
        "the fifth connection was served while four were held"
    );
    held.pop();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut out))
        .await
        .expect("served once a connection closed")
        .unwrap();
    let response = String::from_utf8_lossy(&out);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// Reads one response with a Content-Length body from `conn` (bounded: 5 s).
async fn read_response(conn: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = raw_header(&text, "content-length").map_or(0, |v| v.parse().unwrap());
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before the whole response: {text:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the balancer closed `conn` within `within` (EOF or reset), sending nothing more.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, conn.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes on an idle connection"),
        Err(_) => false,
    }
}

/// An idle keep-alive connection stays open for RONDO_KEEPALIVE_TIMEOUT and serves the next
/// request on it (with its buffers given back while idle, made again), then is closed; with
/// `0s` each connection closes after its response. The checks leave a second either side of
/// the 2 s timeout.
#[actix_web::test]
async fn idle_connections_close_after_the_keepalive_timeout() {
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (_b, lb) = balancer_with(|c| c.keepalive_timeout = Duration::from_secs(2)).await;
    let mut conn = TcpStream::connect(lb.addrs()[0]).await.unwrap();
    for round in 0..3 {
        if round == 1 {
            // A body that arrives in two pieces, after the connection was idle.
            conn.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfive ")
                .await
                .unwrap();
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            conn.write_all(b"bytes").await.unwrap();
            let response = read_response(&mut conn).await;
            assert_eq!(status_of(&response), "200", "{response}");
            assert!(response.contains("\"body_length\":10"), "{response}");
        } else {
            conn.write_all(REQUEST).await.unwrap();
            let response = read_response(&mut conn).await;
            assert_eq!(status_of(&response), "200", "round {round}: {response}");
            assert!(response.ends_with("Server 1"), "round {round}: {response}");
        }
        assert!(
            !closed_within(&mut conn, Duration::from_millis(1000)).await,
            "round {round}: closed before the keep-alive timeout"
        );
    }
    assert!(
        closed_within(&mut conn, Duration::from_secs(4)).await,
        "an idle connection outlived the 2 s keep-alive timeout by 3 s"
    );

    let (_b, lb) = balancer_with(|c| c.keepalive_timeout = Duration::ZERO).await;
    let mut conn = TcpStream::connect(lb.addrs()[0]).await.unwrap();
    conn.write_all(REQUEST).await.unwrap();
    let response = read_response(&mut conn).await;
    assert_eq!(status_of(&response), "200", "{response}");
    assert_eq!(
        raw_header(&response, "connection"),
        Some("close"),
        "{response}"
    );
    assert!(closed_within(&mut conn, Duration::from_secs(2)).await);
}

/// A busy connection's keep-alive deadline moves on with every response: requests 250 ms apart
/// for 3.5 s against a 2 s timeout are all answered on one connection, though the keep-alive
/// timer (set again lazily, vendor/README.md) fires at deadlines long past; once idle, the
/// connection is closed after the timeout, not before (at least 2 s after the last request was
/// sent: the server set its deadline after that). A stall of the test of more than 1.75 s
/// between two requests would fail it.
#[actix_web::test]
async fn a_busy_connections_keepalive_deadline_moves_with_each_response() {
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (_b, lb) = balancer_with(|c| c.keepalive_timeout = Duration::from_secs(2)).await;
    let mut conn = TcpStream::connect(lb.addrs()[0]).await.unwrap();
    let mut last_sent = std::time::Instant::now();
    for i in 0..14 {
        last_sent = std::time::Instant::now();
        conn.write_all(REQUEST).await.unwrap();
        let response = read_response(&mut conn).await;
        assert_eq!(status_of(&response), "200", "request {i}: {response}");
        assert!(
            !closed_within(&mut conn, Duration::from_millis(250)).await,
            "closed within 250 ms of the response to request {i}: before the 2 s keep-alive \
             timeout"
        );
    }
    assert!(
        closed_within(&mut conn, Duration::from_secs(4)).await,
        "the connection outlived the 2 s keep-alive timeout by more than 2 s"
    );
    let closed_after = last_sent.elapsed();
    assert!(
        closed_after >= Duration::from_secs(2),
        "closed {closed_after:?} after the last request was sent: before the 2 s keep-alive \
         timeout"
    );
}

/// Reads from `stream` until what arrived so far satisfies `done`, for at most 5 s; `what` names
/// it in the failure.
async fn read_until(stream: &mut TcpStream, what: &str, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = vec![0u8; 16 << 10];
    let mut got = Vec::new();
    while !done(&got) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what} within 5 s"))
            .expect("read");
        assert!(n > 0, "closed before {what}");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A head that never ends on a kept-alive connection gets 408 from the head timeout too, like
/// a first request's, whether it follows an answered request or came pipelined behind one.
#[actix_web::test]
async fn unfinished_head_on_a_kept_alive_connection_gets_408() {
    let (_b, lb) = balancer_with(|c| c.client_timeout = Duration::from_millis(300)).await;
    let addr = lb.addrs()[0];
    let first = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let partial = "GET /second HTTP/1.1\r\nHost: x\r\n";

    // After an answered request: the first response, then the partial head.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(first.as_bytes()).await.expect("write");
    read_until(&mut stream, "the first response", |got| {
        String::from_utf8_lossy(got).contains("Server 1")
    })
    .await;
    stream.write_all(partial.as_bytes()).await.expect("write");
    let rest = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status_of(&rest), "408", "{rest}");
    assert!(rest.contains("RONDO_CLIENT_TIMEOUT"), "{rest}");
    assert_eq!(raw_header(&rest, "connection"), Some("close"), "{rest}");

    // Pipelined: both in one write; the first is answered, then 408 for the second.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("{first}{partial}").as_bytes())
        .await
        .expect("write");
    let all = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status_of(&all), "200", "{all}");
    let second = &all[all
        .find("HTTP/1.1 408")
        .unwrap_or_else(|| panic!("no 408: {all}"))..];
    assert!(second.contains("RONDO_CLIENT_TIMEOUT"), "{all}");
    assert_eq!(raw_header(second, "connection"), Some("close"), "{all}");
}

/// After a `HEAD` on a connection, the answer to the next request when that one cannot be read
/// (400) or never ends (408) carries its body and a length that fits it: it answers that
/// request, not the `HEAD`.
#[actix_web::test]
async fn refusals_after_a_head_request_carry_their_body() {
    let (_b, lb) = balancer_with(|c| c.client_timeout = Duration::from_millis(300)).await;
    let addr = lb.addrs()[0];
    for (next, status, reason) in [
        (
            "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
            "400",
            "malformed request",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\n",
            "408",
            "RONDO_CLIENT_TIMEOUT",
        ),
    ] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // The HEAD's answer is a head alone.
        let got = read_until(&mut stream, "the HEAD's answer", |got| {
            got.windows(4).any(|w| w == b"\r\n\r\n")
        })
        .await;
        let text = String::from_utf8_lossy(&got).into_owned();
        assert_eq!(status_of(&text), "200", "{text}");
        let after_head = text.split_once("\r\n\r\n").unwrap().1.to_owned();
        stream.write_all(next.as_bytes()).await.expect("write");
        let refusal = after_head + &read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(status_of(&refusal), status, "{refusal}");
        let body = refusal.split_once("\r\n\r\n").expect("a whole head").1;
        assert!(body.contains(reason), "{status} after a HEAD: {refusal:?}");
        let length = raw_header(&refusal, "content-length").expect("a length");
        assert_eq!(length, body.len().to_string(), "{refusal:?}");
    }
}

/// A `HEAD` and an unreadable request sent in one write: the `HEAD`, still waiting for its
/// endpoint when the second head fails, is answered without a body, then the 400 with its.
#[actix_web::test]
async fn a_pipelined_head_keeps_its_bodiless_answer_before_a_refusal() {
    let (_b, lb) = balancer_with(|_| {}).await;
    let mut stream = connect_and_send(
        &lb,
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    )
    .await;
    let all = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let (head, rest) = all.split_once("\r\n\r\n").expect("the HEAD's answer");
    assert_eq!(status_of(head), "200", "{all:?}");
    assert!(raw_header(head, "content-length").is_some(), "{all:?}");
    // Nothing between the HEAD's head and the next response: no body for the HEAD.
    assert_eq!(status_of(rest), "400", "{all:?}");
    let body = rest.split_once("\r\n\r\n").expect("a whole 400").1;
    assert!(body.contains("malformed request"), "{all:?}");
    let length = raw_header(rest, "content-length").expect("a length");
    assert_eq!(length, body.len().to_string(), "{all:?}");
}

/// Splits `all` into responses whose bodies have a `Content-Length`; `bodiless[i]` says the
/// i-th answers a `HEAD` (a length, no body). Returns each response's head and body.
fn split_responses<'a>(all: &'a str, bodiless: &[bool]) -> Vec<(&'a str, &'a str)> {
    let mut rest = all;
    let mut out = Vec::new();
    for &no_body in bodiless {
        let (head, after) = rest.split_once("\r\n\r\n").unwrap_or_else(|| {
            panic!(
                "{} whole responses of {}: {all:?}",
                out.len(),
                bodiless.len()
            )
        });
        let length: usize = match no_body {
            true => 0,
            false => raw_header(head, "content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or_else(|| panic!("a Content-Length: {all:?}")),
        };
        let (body, next) = after.split_at(length.min(after.len()));
        out.push((head, body));
        rest = next;
    }
    assert_eq!(rest, "", "nothing after the last response: {all:?}");
    out
}

/// A `GET`, a `HEAD`, a `GET` with `Connection: close` and an HTTP/1.0 `GET`, sent in one write:
/// the later heads are read while the first waits for its endpoint, yet each answer is made for
/// its own request: the `GET`s carry their bodies and only the `HEAD`'s has none, only the
/// third says `Connection: close`, and only the fourth (never sent: the connection closes after
/// the third) would be HTTP/1.0.
#[actix_web::test]
async fn pipelined_requests_are_each_answered_as_their_own() {
    let (_b, lb) = balancer_with(|_| {}).await;
    let mut stream = connect_and_send(
        &lb,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
              HEAD / HTTP/1.1\r\nHost: x\r\n\r\n\
              GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
              GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    )
    .await;
    let all = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let answers = split_responses(&all, &[false, true, false]);
    for (i, (head, body)) in answers.iter().enumerate() {
        assert!(head.starts_with("HTTP/1.1 200"), "answer {i}: {all:?}");
        let close = raw_header(head, "connection").is_some_and(|c| c == "close");
        assert_eq!(close, i == 2, "answer {i} and Connection: close: {all:?}");
        let expected = if i == 1 { "" } else { "Server 1" };
        assert_eq!(*body, expected, "answer {i}: {all:?}");
    }
    assert_eq!(
        raw_header(answers[1].0, "content-length"),
        Some("8"),
        "{all:?}"
    );
}

/// An HTTP/1.0 request pipelined behind an HTTP/1.1 one: the first answer is HTTP/1.1 and
/// keeps the connection, the second is HTTP/1.0 and closes it.
#[actix_web::test]
async fn a_pipelined_http_1_0_request_does_not_change_the_answer_before_it() {
    let (_b, lb) = balancer_with(|_| {}).await;
    let mut stream = connect_and_send(
        &lb,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.0\r\nHost: x\r\n\r\n",
    )
    .await;
    let all = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let answers = split_responses(&all, &[false, false]);
    assert!(answers[0].0.starts_with("HTTP/1.1 200"), "{all:?}");
    assert_eq!(raw_header(answers[0].0, "connection"), None, "{all:?}");
    assert!(answers[1].0.starts_with("HTTP/1.0 200"), "{all:?}");
    assert!(
        answers.iter().all(|(_, body)| *body == "Server 1"),
        "{all:?}"
    );
}

/// A `Connection: close` `POST` whose body comes in several writes, the last one carrying a
/// pipelined request after the body: the body is read whole and answered, and the request
/// behind it is not.
#[actix_web::test]
async fn a_closing_post_gets_its_whole_body_and_nothing_behind_it_is_answered() {
    let (_b, lb) = balancer_with(|_| {}).await;
    let mut stream = connect_and_send(
        &lb,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n01",
    )
    .await;
    for part in [&b"234"[..], b"56789GET / HTTP/1.1\r\nHost: x\r\n\r\n"] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(part).await.expect("write");
    }
    let all = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let answers = split_responses(&all, &[false]);
    assert!(answers[0].0.starts_with("HTTP/1.1 200"), "{all:?}");
    let echo: serde_json::Value = serde_json::from_str(answers[0].1).expect("the echo's JSON");
    assert_eq!(echo["body_length"], 10, "{all:?}");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"0123456789"));
    assert_eq!(echo["body_sha256"], sha.as_str(), "{all:?}");
}
