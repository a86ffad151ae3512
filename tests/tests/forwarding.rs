//! The balancer in front of real backends on 127.0.0.1: distribution, discovery changes,
//! errors and bodies.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use balancer::discovery::{DnsResolver, StaticResolver};
use bytes::Bytes;
use futures_util::future::join_all;
use rondo_tests::*;
use sha2::{Digest, Sha256};

fn upstream(addr: SocketAddr) -> String {
    addr.to_string()
}

/// 300 requests from 16 concurrent clients give each of three endpoints exactly 100.
#[actix_web::test]
async fn three_endpoints_share_300_concurrent_requests_exactly() {
    let backends: Vec<_> = (1..=3)
        .map(|i| start_backend(&format!("Server {i}"), &format!("b{i}")))
        .collect();
    let upstreams: Vec<_> = backends.iter().map(|b| upstream(b.addr)).collect();
    let lb = start_balancer(&config_for(&upstreams), DnsResolver).await;
    let url = url_of(&lb, "/");

    let clients = (0..16).map(|c| {
        let url = url.clone();
        async move {
            let client = client();
            let mut seen = Vec::new();
            // 16 clients × 18 or 19 requests = 300.
            for _ in 0..(300 / 16 + usize::from(c < 300 % 16)) {
                let (status, _, body) = get(&client, &url).await;
                assert_eq!(status, 200);
                seen.push(body);
            }
            seen
        }
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for body in join_all(clients).await.into_iter().flatten() {
        *counts.entry(body).or_default() += 1;
    }
    let expected: HashMap<String, usize> = (1..=3).map(|i| (format!("Server {i}"), 100)).collect();
    assert_eq!(counts, expected);
}

/// One client sees Server 1, 2, 3, 1, 2, 3, … exactly, with several balancer workers.
#[actix_web::test]
async fn one_client_sees_the_exact_round_robin_order() {
    let backends: Vec<_> = (1..=3)
        .map(|i| start_backend(&format!("Server {i}"), &format!("b{i}")))
        .collect();
    let upstreams: Vec<_> = backends.iter().map(|b| upstream(b.addr)).collect();
    let lb = start_balancer(&config_for(&upstreams), DnsResolver).await;
    let client = client();
    let mut bodies = Vec::new();
    for _ in 0..30 {
        bodies.push(get(&client, &url_of(&lb, "/")).await.2);
    }
    let expected: Vec<String> = (0..30).map(|i| format!("Server {}", i % 3 + 1)).collect();
    assert_eq!(bodies, expected);
}

/// One upstream name that resolves to three addresses gives three endpoints, each served in turn.
#[actix_web::test]
async fn a_name_with_several_addresses_is_balanced_over_all() {
    let backends: Vec<_> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .enumerate()
        .map(|(i, ip)| start_backend_on(&format!("{ip}:0"), "same service", &format!("r{i}")))
        .collect();
    let resolver = StaticResolver::new();
    // The resolver gives full socket addresses; the ports differ per replica here.
    resolver.set("service", backends.iter().map(|b| b.addr).collect());
    let lb = start_balancer(&config_for(&["service:8080".into()]), resolver).await;
    assert_eq!(lb.selector().load().set().len(), 3);
    let client = client();
    let mut served_by = Vec::new();
    for _ in 0..9 {
        served_by.push(get(&client, &url_of(&lb, "/")).await.1);
    }
    let cycle = &served_by[0..3];
    let mut distinct = cycle.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{served_by:?}");
    assert_eq!(&served_by[3..6], cycle);
    assert_eq!(&served_by[6..9], cycle);
}

/// Replicas added to and removed from a name mid-run join and leave the rotation within 2 s,
/// and every cycle then reaches each current replica exactly once.
#[actix_web::test]
async fn replicas_join_and_leave_while_requests_run() {
    let backends: Vec<_> = (0..4)
        .map(|i| start_backend("replica", &format!("r{i}")))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let resolver = StaticResolver::new();
    resolver.set("service", addrs[..2].to_vec());
    let lb = start_balancer(&config_for(&["service:8080".into()]), resolver.clone()).await;
    let client = client();
    let url = url_of(&lb, "/");

    // Scale up to four: within 2 s (discovery, then a first good health probe) every cycle
    // of 4 covers all four replicas.
    resolver.set("service", addrs.clone());
    let joined = Instant::now();
    let mut recent: Vec<String> = Vec::new();
    loop {
        recent.push(get(&client, &url).await.1);
        let last: std::collections::HashSet<_> = recent.iter().rev().take(4).collect();
        if last.len() == 4 {
            break;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(2),
            "scale-up not seen within 2 s: {recent:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let mut served = Vec::new();
    for _ in 0..12 {
        served.push(get(&client, &url).await.1);
    }
    for cycle in served.chunks(4) {
        let mut c = cycle.to_vec();
        c.sort();
        assert_eq!(c, vec!["r0", "r1", "r2", "r3"], "{served:?}");
    }

    // Scale down to one: within 2 s only r0 answers.
    resolver.set("service", addrs[..1].to_vec());
    let left = Instant::now();
    loop {
        let recent: Vec<String> = join_all((0..4).map(|_| get(&client, &url)))
            .await
            .into_iter()
            .map(|r| r.1)
            .collect();
        if recent.iter().all(|s| s == "r0") {
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "scale-down not seen within 2 s: {recent:?}"
        );
    }
}

/// With no endpoint at all, the answer is 503 and names the upstream that has none.
#[actix_web::test]
async fn no_endpoint_gives_503_naming_the_upstream() {
    let resolver = StaticResolver::new();
    resolver.fail("ghost", "NXDOMAIN");
    let lb = start_balancer(&config_for(&["ghost:8080".into()]), resolver).await;
    let (status, _, body) = get(&client(), &url_of(&lb, "/")).await;
    assert_eq!(status, 503);
    assert!(body.contains("ghost:8080"), "{body}");
}

/// An endpoint that refuses the connection gives 502 with the endpoint in the body.
#[actix_web::test]
async fn refused_connection_gives_502() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let lb = start_balancer(&config_for(&[upstream(closed)]), DnsResolver).await;
    let (status, _, body) = get(&client(), &url_of(&lb, "/")).await;
    assert_eq!(status, 502);
    assert!(body.contains(&closed.to_string()), "{body}");
}

/// An endpoint that accepts but never answers gives 504 once the response timeout passes.
#[actix_web::test]
async fn silent_endpoint_gives_504_after_the_response_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut config = config_for(&[upstream(addr)]);
    config.response_timeout = Duration::from_millis(300);
    let lb = start_balancer(&config, DnsResolver).await;
    let started = Instant::now();
    let (status, _, body) = get(&client(), &url_of(&lb, "/")).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("did not answer in time"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(silent);
}

fn pattern(n: u64) -> Vec<u8> {
    (0..n).map(backend::pattern_byte).collect()
}

/// A 10 MB body up and a 10 MB body down arrive intact (SHA-256 compared).
#[actix_web::test]
async fn ten_megabyte_bodies_arrive_intact_both_ways() {
    const SIZE: u64 = 10 * 1024 * 1024;
    let b = start_backend("big", "b");
    let lb = start_balancer(&config_for(&[upstream(b.addr)]), DnsResolver).await;
    let client = client();
    let expected = hex::encode(Sha256::digest(pattern(SIZE)));

    let upload = Bytes::from(pattern(SIZE));
    let mut res = client
        .post(url_of(&lb, "/echo"))
        .send_body(upload)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value = res.json().await.unwrap();
    assert_eq!(echo["body_length"], SIZE);
    assert_eq!(echo["body_sha256"], expected);

    // The same upload, streamed in chunks with no length (chunked transfer encoding).
    let chunks = pattern(SIZE)
        .chunks(100_000)
        .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
        .collect::<Vec<_>>();
    let mut res = client
        .post(url_of(&lb, "/echo"))
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .unwrap();
    let echo: serde_json::Value = res.json().await.unwrap();
    assert_eq!(echo["body_length"], SIZE);
    assert_eq!(echo["body_sha256"], expected);

    let mut res = client
        .get(url_of(&lb, &format!("/bytes/{SIZE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-length").unwrap(),
        &SIZE.to_string()
    );
    let body = res.body().limit(SIZE as usize + 1).await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), expected);
}

/// Method, path, query, Host and end-to-end headers arrive unchanged; hop-by-hop headers are
/// removed; an untrusted client's X-Forwarded-For is replaced; X-Forwarded-Proto, -Host, -Port
/// and Via are set.
#[actix_web::test]
async fn request_arrives_unchanged_but_for_forwarding_headers() {
    let b = start_backend("echo", "b");
    let lb = start_balancer(&config_for(&[upstream(b.addr)]), DnsResolver).await;
    // A raw request: awc's own encoder would drop the Connection header before it left.
    let response = raw_exchange(
        lb.addrs()[0],
        "PUT /echo?a=1&b=%20x HTTP/1.1\r\n\
         Host: shop.example\r\n\
         X-Forwarded-For: 203.0.113.9\r\n\
         Connection: close, x-hop\r\n\
         X-Hop: drop me\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         X-Custom: kept\r\n\
         Accept-Encoding: gzip\r\n\
         Content-Length: 7\r\n\
         \r\n\
         payload",
    )
    .await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echo: serde_json::Value = serde_json::from_str(body).expect("the echo JSON");
    let header = |name: &str| -> Vec<String> {
        echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "a=1&b=%20x");
    assert_eq!(echo["body_length"], 7);
    assert_eq!(header("host"), vec!["shop.example"]);
    assert_eq!(header("x-custom"), vec!["kept"]);
    assert_eq!(header("accept-encoding"), vec!["gzip"]);
    assert_eq!(header("content-length"), vec!["7"]);
    assert_eq!(header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(header("x-forwarded-host"), vec!["shop.example"]);
    assert_eq!(header("x-forwarded-port"), vec!["80"]);
    assert_eq!(header("via"), vec!["1.1 rondo"]);
    assert_eq!(header("x-request-id").len(), 1);
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "connection",
    ] {
        assert!(header(hop).is_empty(), "{hop} was forwarded: {echo}");
    }
    assert!(
        header("user-agent").is_empty(),
        "the balancer added a User-Agent"
    );
}

/// `Expect: 100-continue` is answered by the balancer (100, then the response) and not passed
/// on to the endpoint.
#[actix_web::test]
async fn expect_continue_is_answered_by_the_balancer() {
    let b = start_backend("echo", "b");
    let lb = start_balancer(&config_for(&[upstream(b.addr)]), DnsResolver).await;
    let response = raw_exchange(
        lb.addrs()[0],
        "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\
         Connection: close\r\n\r\nhello",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
        "{response}"
    );
    assert!(response.contains("\"body_length\":5"), "{response}");
    assert!(
        !response.contains("\"expect\""),
        "Expect reached the endpoint: {response}"
    );
}

/// 204 and 304 answers carry no body and leave the client's kept-alive connection usable, and
/// `OPTIONS *` (a target that cannot be forwarded) gets 400 without taking the endpoint out.
#[actix_web::test]
async fn bodiless_statuses_and_unforwardable_targets() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&config_for(&[upstream(b.addr)]), DnsResolver).await;
    let response = raw_exchange(
        lb.addrs()[0],
        "DELETE /status/204 HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n\
         OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n\
         GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = response
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &response[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, vec!["204", "304", "400", "200"], "{response}");
    assert!(response.ends_with("Server 1"), "{response}");
    assert!(
        !response.contains("\r\n0\r\n"),
        "a chunk after a bodiless status: {response}"
    );
    assert!(lb.selector().load().set().endpoints()[0].is_healthy());
}

/// HEAD gets the headers of GET and no body; the backend's headers come back.
#[actix_web::test]
async fn head_requests_get_headers_and_no_body() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&config_for(&[upstream(b.addr)]), DnsResolver).await;
    let mut res = client().head(url_of(&lb, "/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("x-served-by").unwrap(), "b1");
    assert_eq!(res.headers().get("content-length").unwrap(), "8");
    assert!(res.body().await.unwrap().is_empty());
}
