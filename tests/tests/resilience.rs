//! Failures of endpoints must not reach clients: retries, passive and active health, drain.
//! Every test runs real servers on 127.0.0.1 and is bounded in requests and time.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use balancer::discovery::{DnsResolver, StaticResolver};
use balancer::Config;
use bytes::Bytes;
use futures_util::future::join_all;
use rondo_tests::faulty::*;
use rondo_tests::*;

/// (status, X-Served-By, X-Rondo-Tries, body) of one request.
struct Answer {
    status: u16,
    served_by: String,
    tries: Option<String>,
    body: String,
}

async fn request(client: &awc::Client, method: &str, url: &str, body: Bytes) -> Answer {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut res = client
        .request(method, url)
        .send_body(body)
        .await
        .expect("an answer from the balancer");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let served_by = header("x-served-by").unwrap_or_default();
    let tries = header("x-rondo-tries");
    let body = res.body().limit(1 << 20).await.unwrap_or_default();
    Answer {
        status: res.status().as_u16(),
        served_by,
        tries,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A balancer over `upstreams` with active checks off, so only the passive check and retries
/// act (the misbehaving endpoints here have no health path).
fn passive_only(upstreams: &[SocketAddr]) -> Config {
    let mut config = config_for(&upstreams.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    config.health_checks = false;
    config
}

/// A GET that meets a refusing endpoint is retried elsewhere; the endpoint then leaves the
/// rotation, so 30 requests all succeed and only the first needed a second try.
#[actix_web::test]
async fn get_is_retried_after_a_refused_connection() {
    let a = start_backend("A", "a");
    let b = start_backend("B", "b");
    let lb = start_balancer(
        &passive_only(&[refusing_addr(), a.addr, b.addr]),
        DnsResolver,
    )
    .await;
    let client = client();
    let mut retried = 0;
    for _ in 0..30 {
        let answer = request(&client, "GET", &url_of(&lb, "/"), Bytes::new()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        retried += usize::from(answer.tries.as_deref() == Some("2"));
    }
    assert_eq!(
        retried, 1,
        "the refusing endpoint should be out after one failure"
    );
}

/// A POST is retried when the connection was refused: the endpoint never saw it.
#[actix_web::test]
async fn post_is_retried_after_a_refused_connection() {
    let a = start_backend("A", "a");
    let lb = start_balancer(&passive_only(&[refusing_addr(), a.addr]), DnsResolver).await;
    let answer = request(
        &client(),
        "POST",
        &url_of(&lb, "/echo"),
        Bytes::from("order 1"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.tries.as_deref(), Some("2"));
    assert!(answer.body.contains("\"body_length\":7"), "{}", answer.body);
}

/// A reset before the response is retried for GET, but not for POST (it may have been acted on).
#[actix_web::test]
async fn reset_is_retried_for_get_but_not_for_post() {
    let a = start_backend("A", "a");
    let reset = start_faulty(Fault::ResetAfterRequest);
    let lb = start_balancer(&passive_only(&[reset.addr, a.addr]), DnsResolver).await;
    let answer = request(&client(), "GET", &url_of(&lb, "/"), Bytes::new()).await;
    assert_eq!((answer.status, answer.served_by.as_str()), (200, "a"));
    assert_eq!(answer.tries.as_deref(), Some("2"));

    let lb = start_balancer(&passive_only(&[reset.addr, a.addr]), DnsResolver).await;
    let answer = request(&client(), "POST", &url_of(&lb, "/echo"), Bytes::from("x")).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(
        answer.body.starts_with("rondo: request to"),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains(&reset.addr.to_string()),
        "{}",
        answer.body
    );
}

/// An endpoint that accepts and never answers costs one response timeout: a GET then gets its
/// answer from another endpoint; a POST gets 504.
#[actix_web::test]
async fn hung_endpoint_costs_one_response_timeout() {
    let a = start_backend("A", "a");
    let hang = start_faulty(Fault::Hang);
    let timeout = Duration::from_millis(300);
    let mut config = passive_only(&[hang.addr, a.addr]);
    config.response_timeout = timeout;

    let lb = start_balancer(&config, DnsResolver).await;
    let started = Instant::now();
    let answer = request(&client(), "GET", &url_of(&lb, "/"), Bytes::new()).await;
    let took = started.elapsed();
    assert_eq!((answer.status, answer.served_by.as_str()), (200, "a"));
    assert!(took >= timeout && took < timeout * 3, "took {took:?}");

    let lb = start_balancer(&config, DnsResolver).await;
    let answer = request(&client(), "POST", &url_of(&lb, "/echo"), Bytes::from("x")).await;
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(
        answer.body.contains("did not answer in time"),
        "{}",
        answer.body
    );
}

/// What a paced load saw while one of three endpoints stopped answering: answers that waited
/// for the response timeout, every (status, served by) after the hang began, and the hung
/// endpoint's stalls as rondo counted them.
struct HangOutcome {
    waited_for_timeout: usize,
    answers: Vec<(u16, String)>,
    stalls: u64,
}

/// Three endpoints, one of which (`p`) stops answering once every endpoint has answered 30
/// warm-up requests; then 16 connections each send 12 GETs, 100 ms apart (192 requests,
/// 160/s), with a 1 s response timeout.
async fn load_while_an_endpoint_hangs(stall_timeout: Duration) -> HangOutcome {
    let a = start_backend("A", "a");
    let b = start_backend("B", "b");
    let p = start_switchable("p", true);
    let timeout = Duration::from_secs(1);
    let mut config = passive_only(&[a.addr, b.addr, p.addr]);
    // One worker, so the warm-up teaches the one stall estimate there is.
    config.workers = 1;
    config.response_timeout = timeout;
    config.stall_timeout = stall_timeout;
    let lb = start_balancer(&config, DnsResolver).await;
    let url = url_of(&lb, "/");
    let warm_up = client();
    let mut served = HashSet::new();
    for _ in 0..30 {
        let (status, by, body) = get(&warm_up, &url).await;
        assert_eq!(status, 200, "{body}");
        served.insert(by);
    }
    assert_eq!(served.len(), 3, "every endpoint answers before the hang");

    p.hung.store(true, Ordering::SeqCst);
    let connections = (0..16u64).map(|i| {
        let url = url.clone();
        async move {
            let client = client();
            actix_web::rt::time::sleep(Duration::from_millis(i * 6)).await;
            let mut seen = Vec::new();
            for _ in 0..12 {
                let started = Instant::now();
                let (status, by, _) = get(&client, &url).await;
                seen.push((status, by, started.elapsed()));
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
    });
    let seen: Vec<_> = join_all(connections).await.into_iter().flatten().collect();
    // The stalls as the admin listener shows them: /status and /metrics agree.
    let admin = |path: &str| format!("http://{}{path}", lb.admin_addrs()[0]);
    let (_, _, status) = get(&warm_up, &admin("/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("/status is JSON");
    let endpoint = status["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .flat_map(|u| u["endpoints"].as_array().expect("endpoints"))
        .find(|e| e["address"] == p.addr.to_string())
        .expect("the hung endpoint in /status");
    let stalls = endpoint["stalls"].as_u64().expect("stalls");
    let (_, _, metrics) = get(&warm_up, &admin("/metrics")).await;
    let line = format!(
        "rondo_endpoint_stalls_total{{upstream=\"{0}\",endpoint=\"{0}\"}} {stalls}\n",
        p.addr
    );
    assert!(metrics.contains(&line), "{line} in {metrics}");
    HangOutcome {
        waited_for_timeout: seen.iter().filter(|(_, _, took)| *took >= timeout).count(),
        answers: seen.into_iter().map(|(s, by, _)| (s, by)).collect(),
        stalls,
    }
}

/// An endpoint that stops answering (a paused container) gets no new requests once it has
/// answered nothing for the stall threshold (50 ms here), long before the response timeout:
/// only the few requests sent to it in that moment wait for the timeout, then succeed on
/// another endpoint. With stall detection off (`RONDO_STALL_TIMEOUT=off`, nginx's behaviour)
/// every connection soon has a request waiting on it.
#[actix_web::test]
async fn a_hung_endpoint_is_passed_over_long_before_the_response_timeout() {
    let on = load_while_an_endpoint_hangs(Duration::from_millis(50)).await;
    let off = load_while_an_endpoint_hangs(Duration::ZERO).await;
    for outcome in [&on, &off] {
        assert_eq!(outcome.answers.len(), 192);
        assert!(
            outcome
                .answers
                .iter()
                .all(|(status, by)| *status == 200 && by != "p"),
            "every request succeeds elsewhere: {:?}",
            outcome.answers
        );
    }
    eprintln!(
        "waited for the response timeout: {} of 192 with stall detection, {} without",
        on.waited_for_timeout, off.waited_for_timeout
    );
    assert!(
        on.waited_for_timeout <= 8,
        "{} requests waited for the response timeout with stall detection on",
        on.waited_for_timeout
    );
    assert_eq!(on.stalls, 1, "the hang is one stall");
    assert!(
        off.waited_for_timeout >= 12,
        "without stall detection nearly every connection should have waited on the hung \
         endpoint, but {} requests did",
        off.waited_for_timeout
    );
    assert_eq!(off.stalls, 0);
}

/// An upload too long to hold for a retry streams to the endpoint, which owes no answer until
/// it has it all: a slow one (300 ms here) is no stall, though the endpoint answers other
/// requests only every 120 ms meanwhile (a GET every 60 ms, round robin over two endpoints).
#[actix_web::test]
async fn a_slow_streamed_upload_is_no_stall() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = start_backend("A", "a");
    let b = start_backend("B", "b");
    let mut config = passive_only(&[a.addr, b.addr]);
    config.workers = 1;
    config.retry_body_limit = 1024;
    let lb = start_balancer(&config, DnsResolver).await;
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, &url_of(&lb, "/")).await.0, 200);
    }
    let upload = async {
        let mut stream = tokio::net::TcpStream::connect(lb.addrs()[0]).await.unwrap();
        let head =
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6144\r\nConnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..6 {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            stream.write_all(&[b'x'; 1024]).await.unwrap();
        }
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let gets = async {
        for _ in 0..6 {
            actix_web::rt::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(get(&client, &url_of(&lb, "/")).await.0, 200);
        }
    };
    let (answer, ()) = futures_util::future::join(upload, gets).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"body_length\":6144"),
        "{answer}"
    );
    for endpoint in lb.selector().load().set().endpoints() {
        assert_eq!(endpoint.watch().stalls(), 0, "{}", endpoint.addr());
    }
}

/// A body longer than the retry limit is streamed, so it is never sent twice: a refused first
/// try ends in 502. A body within the limit is held and retried.
#[actix_web::test]
async fn only_bodies_within_the_limit_are_replayed() {
    let a = start_backend("A", "a");
    let mut config = passive_only(&[refusing_addr(), a.addr]);
    config.retry_body_limit = 1024;

    let lb = start_balancer(&config, DnsResolver).await;
    let big = Bytes::from(vec![b'x'; 10 * 1024]);
    let answer = request(&client(), "PUT", &url_of(&lb, "/echo"), big).await;
    assert_eq!(answer.status, 502, "{}", answer.body);

    let lb = start_balancer(&config, DnsResolver).await;
    let small = Bytes::from(vec![b'x'; 512]);
    let answer = request(&client(), "PUT", &url_of(&lb, "/echo"), small).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("\"body_length\":512"),
        "{}",
        answer.body
    );
}

/// An endpoint that dies halfway through a response cannot be retried (bytes were sent): the
/// client sees the response cut short, not a hang, and others are served as before.
#[actix_web::test]
async fn death_mid_response_cuts_that_response_only() {
    let a = start_backend("A", "a");
    let dying = start_faulty(Fault::DieMidResponse);
    let lb = start_balancer(&passive_only(&[dying.addr, a.addr]), DnsResolver).await;
    let client = client();
    let mut res = client.get(url_of(&lb, "/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), res.body())
        .await
        .expect("the cut response ends within 5 s");
    assert!(body.is_err() || body.unwrap().len() < 1000);
    let answer = request(&client, "GET", &url_of(&lb, "/"), Bytes::new()).await;
    assert_eq!((answer.status, answer.served_by.as_str()), (200, "a"));
}

/// An endpoint taken out by a failure gets one trial after fail_timeout, and is back when it
/// succeeds.
#[actix_web::test]
async fn endpoint_out_after_a_failure_returns_after_a_good_trial() {
    let a = start_backend("A", "a");
    let held = HeldPort::new();
    let gone = held.addr;
    let mut config = passive_only(&[gone, a.addr]);
    config.fail_timeout = Duration::from_millis(300);
    let lb = start_balancer(&config, DnsResolver).await;
    let client = client();
    assert_eq!(
        request(&client, "GET", &url_of(&lb, "/"), Bytes::new())
            .await
            .status,
        200
    );

    drop(held);
    let _back = start_backend_on(&gone.to_string(), "B", "b");
    let started = Instant::now();
    loop {
        let answer = request(&client, "GET", &url_of(&lb, "/"), Bytes::new()).await;
        assert_eq!(answer.status, 200);
        if answer.served_by == "b" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the endpoint did not come back"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(200));
}

fn with_fast_probes(mut config: Config) -> Config {
    config.health_checks = true;
    config.health_interval = Duration::from_millis(50);
    config.health_timeout = Duration::from_millis(200);
    config.health_rise = 2;
    config.health_fall = 2;
    config
}

async fn served_by_during(client: &awc::Client, url: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let answer = request(client, "GET", url, Bytes::new()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        seen.push(answer.served_by);
    }
    seen
}

/// Polls until the last 6 answers come from exactly `expected`, for at most 2 s.
async fn until_served_by(client: &awc::Client, url: &str, expected: &[&str]) {
    let want: HashSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        seen.extend(served_by_during(client, url, 1).await);
        let last: HashSet<String> = seen.iter().rev().take(6).cloned().collect();
        if seen.len() >= 6 && last == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "want {want:?}, saw {seen:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An endpoint whose probes fail `fall` times leaves the rotation; `rise` good probes bring it
/// back.
#[actix_web::test]
async fn active_check_takes_a_sick_endpoint_out_and_back() {
    let a = start_switchable("a", true);
    let b = start_switchable("b", true);
    let config = with_fast_probes(config_for(&[a.addr.to_string(), b.addr.to_string()]));
    let lb = start_balancer(&config, DnsResolver).await;
    let client = client();
    let url = url_of(&lb, "/");
    until_served_by(&client, &url, &["a", "b"]).await;
    b.healthy.store(false, Ordering::SeqCst);
    until_served_by(&client, &url, &["a"]).await;
    b.healthy.store(true, Ordering::SeqCst);
    until_served_by(&client, &url, &["a", "b"]).await;
}

/// A new endpoint gets no request before its first good probe, and joins right after it.
#[actix_web::test]
async fn new_endpoint_enters_only_after_its_first_good_probe() {
    let a = start_switchable("a", true);
    let b = start_switchable("b", false);
    let resolver = StaticResolver::new();
    resolver.set("service", vec![a.addr]);
    let config = with_fast_probes(config_for(&["service:8080".into()]));
    let lb = start_balancer(&config, resolver.clone()).await;
    let client = client();
    let url = url_of(&lb, "/");
    resolver.set("service", vec![a.addr, b.addr]);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(400) {
        let seen = served_by_during(&client, &url, 4).await;
        assert!(
            seen.iter().all(|s| s == "a"),
            "a sick new endpoint got requests: {seen:?}"
        );
    }
    b.healthy.store(true, Ordering::SeqCst);
    until_served_by(&client, &url, &["a", "b"]).await;
}

/// A new endpoint that fails its first probes for a second (a replica whose server is still
/// starting when discovery names it) joins within a probe or two of passing, although the
/// failures reported it down, the interval is 2 s and `rise` is 10: only its first pass counts.
#[actix_web::test]
async fn a_replica_still_starting_when_discovered_joins_soon_after_it_passes() {
    let a = start_switchable("a", true);
    let b = start_switchable("b", false);
    let resolver = StaticResolver::new();
    resolver.set("service", vec![a.addr]);
    let mut config = with_fast_probes(config_for(&["service:8080".into()]));
    config.health_interval = Duration::from_secs(2);
    config.health_rise = 10;
    let lb = start_balancer(&config, resolver.clone()).await;
    let client = client();
    let url = url_of(&lb, "/");
    resolver.set("service", vec![a.addr, b.addr]);
    // Discovery ticks every 50 ms in tests; a second of failed probes (fall is 2) reports b down.
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let seen = served_by_during(&client, &url, 4).await;
    assert!(seen.iter().all(|s| s == "a"), "{seen:?}");
    b.healthy.store(true, Ordering::SeqCst);
    let passing = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|s| s == "b") {
        assert!(
            passing.elapsed() < Duration::from_millis(1500),
            "b not served 1.5 s after its probes pass (interval 2 s, rise 10): {seen:?}"
        );
        seen.extend(served_by_during(&client, &url, 2).await);
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("b served {:?} after its probes pass", passing.elapsed());
}

/// With every endpoint failing its checks, requests still go to every endpoint in turn.
#[actix_web::test]
async fn with_no_healthy_endpoint_every_endpoint_is_still_tried() {
    let a = start_switchable("a", false);
    let b = start_switchable("b", false);
    let config = with_fast_probes(config_for(&[a.addr.to_string(), b.addr.to_string()]));
    let lb = start_balancer(&config, DnsResolver).await;
    let seen = served_by_during(&client(), &url_of(&lb, "/"), 6).await;
    assert_eq!(seen, vec!["a", "b", "a", "b", "a", "b"]);
}

/// An endpoint that leaves discovery gets no new requests, but its request in flight finishes.
#[actix_web::test]
async fn endpoint_leaving_discovery_finishes_its_requests_in_flight() {
    let a = start_backend("A", "a");
    let b = start_backend("B", "b");
    let resolver = StaticResolver::new();
    resolver.set("service", vec![a.addr, b.addr]);
    let lb = start_balancer(&config_for(&["service:8080".into()]), resolver.clone()).await;
    let client = client();
    // The first request goes to a (the lower address sorts first) and takes 500 ms.
    let slow_url = url_of(&lb, "/delay/500");
    let slow = request(&client, "GET", &slow_url, Bytes::new());
    let remove = async {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        let (low, high) = if a.addr < b.addr {
            (a.addr, b.addr)
        } else {
            (b.addr, a.addr)
        };
        let _ = low;
        resolver.set("service", vec![high]);
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    };
    let (slow, ()) = tokio::join!(slow, remove);
    assert_eq!(slow.status, 200);
    let first = slow.served_by;
    let after = served_by_during(&client, &url_of(&lb, "/"), 4).await;
    assert!(
        after.iter().all(|s| *s != first),
        "{first} still gets requests: {after:?}"
    );
}

/// A backend that shuts down gracefully while requests run (its keep-alive connections close
/// under the balancer) causes no client errors: 400 requests from 8 clients all succeed.
#[actix_web::test]
async fn graceful_backend_shutdown_causes_no_client_errors() {
    let a = start_backend("A", "a");
    let b = start_backend("B", "b");
    let lb = start_balancer(
        &config_for(&[a.addr.to_string(), b.addr.to_string()]),
        DnsResolver,
    )
    .await;
    let url = url_of(&lb, "/");
    let clients = (0..8).map(|c| {
        let url = url.clone();
        async move {
            let client = client();
            let mut failed = Vec::new();
            for i in 0..50 {
                let answer = request(&client, "GET", &url, Bytes::new()).await;
                if answer.status != 200 {
                    failed.push(format!(
                        "client {c} request {i}: {} {}",
                        answer.status, answer.body
                    ));
                }
                actix_web::rt::time::sleep(Duration::from_millis(2)).await;
            }
            failed
        }
    });
    let stop = async {
        actix_web::rt::time::sleep(Duration::from_millis(60)).await;
        b.handle.stop(true).await;
    };
    let (results, ()) = tokio::join!(join_all(clients), stop);
    let failed: Vec<String> = results.into_iter().flatten().collect();
    assert!(
        failed.is_empty(),
        "{} of 400 failed: {failed:?}",
        failed.len()
    );
}
