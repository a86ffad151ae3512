//! What the balancer does to headers on the way through: forwarding headers and whom to trust,
//! `Via`, the request id, repeated response headers, and the text of its own answers.

use balancer::discovery::DnsResolver;
use rondo_tests::faulty::{refusing_addr, start_faulty, Fault};
use rondo_tests::*;

fn echo_headers(body: &str) -> Vec<(String, String)> {
    let echo: serde_json::Value = serde_json::from_str(body).expect("the echo JSON");
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect()
}

fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").expect("a response").1
}

/// The client's response to a `GET /` through rondo from an endpoint that answers `answer`.
async fn relayed(answer: &'static str) -> String {
    let upstream = start_faulty(Fault::Answer(answer));
    let mut config = config_for(&[upstream.addr.to_string()]);
    config.health_checks = false;
    let lb = start_balancer(&config, DnsResolver).await;
    raw_exchange(
        lb.addrs()[0],
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// From a trusted proxy network the forwarding chain is appended to, its scheme kept, and an
/// RFC 7239 `Forwarded` element added; the client's request id reaches the endpoint and comes
/// back on the response, with `Via` on both.
#[actix_web::test]
async fn trusted_proxy_headers_are_appended_and_request_id_kept() {
    let b = start_backend("echo", "b");
    let mut config = config_for(&[b.addr.to_string()]);
    config.trusted_proxies = balancer::config::Networks(vec!["127.0.0.0/8".parse().unwrap()]);
    config.forwarded = true;
    let lb = start_balancer(&config, DnsResolver).await;
    let response = raw_exchange(
        lb.addrs()[0],
        "GET /echo HTTP/1.1\r\nHost: shop.example:8443\r\n\
         X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
         Forwarded: for=203.0.113.9;proto=https\r\nX-Request-Id: trace-42\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(raw_header(&response, "x-request-id"), Some("trace-42"));
    assert_eq!(raw_header(&response, "via"), Some("1.1 rondo"));
    let seen = echo_headers(body_of(&response));
    assert_eq!(values(&seen, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&seen, "x-forwarded-port"), ["8443"]);
    assert_eq!(
        values(&seen, "forwarded"),
        ["for=203.0.113.9;proto=https, for=127.0.0.1;host=\"shop.example:8443\";proto=http"]
    );
    assert_eq!(values(&seen, "x-request-id"), ["trace-42"]);
    assert_eq!(values(&seen, "via"), ["1.1 rondo"]);
}

/// A request without content reaches the endpoint without `Content-Length` unless its method
/// anticipates content (POST, PUT, PATCH: `Content-Length: 0`), as RFC 9110 §8.6 asks of a user
/// agent, and without a `Date` of the balancer's making; the health probe's `GET` too.
#[actix_web::test]
async fn requests_without_content_get_no_content_length_or_date() {
    let b = start_backend("echo", "b");
    let lb = start_balancer(&config_for(&[b.addr.to_string()]), DnsResolver).await;
    let addr = lb.addrs()[0];
    for (method, framing, length) in [
        ("GET", "", None),
        ("DELETE", "", None),
        ("OPTIONS", "", None),
        ("GET", "Content-Length: 0\r\n", Some("0")),
        ("POST", "", Some("0")),
        ("PUT", "", Some("0")),
        ("POST", "Content-Length: 0\r\n", Some("0")),
    ] {
        let response = raw_exchange(
            addr,
            &format!("{method} /echo HTTP/1.1\r\nHost: x\r\n{framing}Connection: close\r\n\r\n"),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{method}: {response}");
        let seen = echo_headers(body_of(&response));
        let want: Vec<String> = length.into_iter().map(String::from).collect();
        assert_eq!(
            values(&seen, "content-length"),
            want,
            "{method} with {framing:?}: {seen:?}"
        );
        assert!(values(&seen, "date").is_empty(), "{method}: {seen:?}");
    }

    let upstream = rondo_tests::raw::RecordingUpstream::start();
    let mut config = config_for(&[upstream.addr.to_string()]);
    config.health_interval = std::time::Duration::from_millis(100);
    let _probed = start_balancer(&config, DnsResolver).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let probe = loop {
        let received = upstream.received();
        if let Some(first) = received
            .iter()
            .find(|r| r.bytes.windows(4).any(|w| w == b"\r\n\r\n"))
        {
            break String::from_utf8_lossy(&first.bytes).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no health probe within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(probe.starts_with("GET /health HTTP/1.1\r\n"), "{probe}");
    let head = probe.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(!head.contains("\r\ncontent-length:"), "{probe}");
    assert!(!head.contains("\r\ndate:"), "{probe}");
}

/// Without a client id the balancer makes one; the endpoint and the client see the same one,
/// and an untrusted client's `Forwarded` header does not reach the endpoint.
#[actix_web::test]
async fn request_id_is_made_and_untrusted_forwarded_dropped() {
    let b = start_backend("echo", "b");
    let lb = start_balancer(&config_for(&[b.addr.to_string()]), DnsResolver).await;
    let response = raw_exchange(
        lb.addrs()[0],
        "GET /echo HTTP/1.1\r\nHost: x\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n",
    )
    .await;
    let id = raw_header(&response, "x-request-id").expect("an id on the response");
    assert_eq!(id.len(), 32, "{id}");
    let seen = echo_headers(body_of(&response));
    assert_eq!(values(&seen, "x-request-id"), [id]);
    assert!(values(&seen, "forwarded").is_empty(), "{seen:?}");
}

/// The balancer's own 503 and 502 answers are short texts with the reason and the request id,
/// which is also in their `X-Request-Id` header.
#[actix_web::test]
async fn own_answers_name_the_reason_and_request_id() {
    let resolver = balancer::discovery::StaticResolver::new();
    resolver.fail("ghost", "NXDOMAIN");
    let none = start_balancer(&config_for(&["ghost:8080".to_string()]), resolver).await;
    let refused = refusing_addr();
    let mut config = config_for(&[refused.to_string()]);
    config.health_checks = false;
    let refusing = start_balancer(&config, DnsResolver).await;
    for (lb, status, reason) in [
        (none.addrs()[0], "503", "no endpoint available"),
        (refusing.addrs()[0], "502", "cannot connect to"),
    ] {
        let response = raw_exchange(
            lb,
            "GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-7\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{response}"
        );
        assert_eq!(raw_header(&response, "x-request-id"), Some("req-7"));
        let body = body_of(&response);
        assert!(body.starts_with("rondo: "), "{body}");
        assert!(body.contains(reason), "{body}");
        assert!(body.contains("request id: req-7"), "{body}");
    }
}

/// Several `Set-Cookie` headers come back apart and in order, and a chunked response stays
/// chunked and whole.
#[actix_web::test]
async fn repeated_response_headers_keep_their_order() {
    let response = relayed(
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2; Path=/\r\nSet-Cookie: c=3\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let cookies: Vec<&str> = head
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .collect();
    assert_eq!(cookies, ["a=1", "b=2; Path=/", "c=3"], "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let unchunked: String = body
        .split("\r\n")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, part)| part)
        .collect();
    assert_eq!(unchunked, "hello world", "{body:?}");
}

/// The endpoint's hop-by-hop headers, and those its `Connection` names, stay behind; its
/// end-to-end headers reach the client with their values in order, and the length is the
/// body's own (one `Content-Length`).
#[actix_web::test]
async fn response_hop_by_hop_headers_stay_behind() {
    let response = relayed(
        "HTTP/1.1 200 OK\r\nConnection: close, X-Secret-Hop\r\nX-Secret-Hop: 1\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: a\r\n\
         Content-Type: text/plain\r\nX-Kept: b\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let lower = head.to_ascii_lowercase();
    for gone in ["x-secret-hop", "keep-alive:", "proxy-connection"] {
        assert!(!lower.contains(gone), "{gone} reached the client: {head}");
    }
    let kept: Vec<&str> = head
        .lines()
        .filter_map(|l| l.strip_prefix("x-kept: "))
        .collect();
    assert_eq!(kept, ["a", "b"], "{head}");
    assert_eq!(raw_header(&response, "content-type"), Some("text/plain"));
    assert_eq!(lower.matches("content-length: ").count(), 1, "{head}");
    assert_eq!(raw_header(&response, "content-length"), Some("2"));
    assert_eq!(body, "ok");
}

/// An endpoint's response head larger than awc's 1 KiB first read buffer, with more headers
/// than the decoder indexes without an allocation (16), and a body that starts in the head's
/// last read and ends in later ones (vendor/README.md): every header arrives with its value
/// (the order of different names is not kept, nor meant to be: RFC 9110 §5.3), and the body
/// whole.
#[actix_web::test]
async fn large_response_heads_arrive_whole() {
    let headers: String = (0..40)
        .map(|i| format!("X-Big-{i:02}: {}\r\n", format!("{i:02}").repeat(30)))
        .collect();
    let body: String = (0..2_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let answer = format!(
        "HTTP/1.1 200 OK\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert!(
        answer.len() > 4 * 1024,
        "the head and body span several reads"
    );
    let response = relayed(Box::leak(answer.into_boxed_str())).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut big: Vec<(usize, String)> = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            Some((
                name.strip_prefix("x-big-")?.parse().ok()?,
                value.to_string(),
            ))
        })
        .collect();
    big.sort();
    let expected: Vec<(usize, String)> =
        (0..40).map(|i| (i, format!("{i:02}").repeat(30))).collect();
    assert_eq!(big, expected);
    assert_eq!(body_of(&response), body);
}

/// A request with more headers than the request decoder indexes without an allocation (16)
/// reaches the endpoint with every one of them.
#[actix_web::test]
async fn requests_with_many_headers_arrive_whole() {
    let b = start_backend("echo", "b");
    let lb = start_balancer(&config_for(&[b.addr.to_string()]), DnsResolver).await;
    let sent: String = (0..30)
        .map(|i| format!("X-Many-{i:02}: value {i}\r\n"))
        .collect();
    let response = raw_exchange(
        lb.addrs()[0],
        &format!("GET /echo HTTP/1.1\r\nHost: x\r\n{sent}Connection: close\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut seen: Vec<(String, String)> = echo_headers(body_of(&response))
        .into_iter()
        .filter(|(k, _)| k.starts_with("x-many-"))
        .collect();
    seen.sort();
    let expected: Vec<(String, String)> = (0..30)
        .map(|i| (format!("x-many-{i:02}"), format!("value {i}")))
        .collect();
    assert_eq!(seen, expected);
}
