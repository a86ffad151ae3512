//! The admin listener through real requests: draining and enabling endpoints by hand, the
//! token that guards it, and the counts `/status` and `/metrics` report after traffic.

use std::time::Duration;

use balancer::discovery::DnsResolver;
use balancer::Running;
use rondo_tests::*;
use serde_json::Value;

fn admin_url(lb: &Running, path: &str) -> String {
    format!("http://{}{path}", lb.admin_addrs()[0])
}

async fn status(lb: &Running) -> Value {
    let mut res = client().get(admin_url(lb, "/status")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().limit(1 << 20).await.unwrap()
}

async fn post(lb: &Running, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().post(admin_url(lb, path));
    if let Some(token) = token {
        req = req.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut res = req.send().await.unwrap();
    let body = res.body().await.unwrap();
    (
        res.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn served_by(lb: &Running, n: usize) -> Vec<String> {
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..n {
        let (status, by, _) = get(&client, &url_of(lb, "/")).await;
        assert_eq!(status, 200);
        seen.push(by);
    }
    seen
}

/// A drained endpoint gets no new requests and shows as disabled; enabled, it is back in turn;
/// a web page cannot drain, and with all drained clients get a 503 that says so.
#[actix_web::test]
async fn drain_and_enable_by_hand() {
    let backends: Vec<_> = (1..=3)
        .map(|i| start_backend(&format!("Server {i}"), &format!("b{i}")))
        .collect();
    let upstreams: Vec<_> = backends.iter().map(|b| b.addr.to_string()).collect();
    let lb = start_balancer(&config_for(&upstreams), DnsResolver).await;
    let b2 = backends[1].addr.to_string();

    let (code, body) = post(&lb, &format!("/endpoints/{b2}/drain"), None).await;
    assert_eq!(code, 200, "{body}");
    let seen = served_by(&lb, 30).await;
    assert!(!seen.contains(&"b2".to_string()), "{seen:?}");
    assert_eq!(seen.len(), 30);
    let s = status(&lb).await;
    let drained = &s["upstreams"][1]["endpoints"][0];
    assert_eq!(drained["address"], b2.as_str());
    assert_eq!(drained["enabled"], false);

    let (code, _) = post(&lb, &format!("/endpoints/{b2}/enable"), None).await;
    assert_eq!(code, 200);
    let seen = served_by(&lb, 30).await;
    assert_eq!(seen.iter().filter(|b| *b == "b2").count(), 10, "{seen:?}");
    assert_eq!(
        status(&lb).await["upstreams"][1]["endpoints"][0]["enabled"],
        true
    );

    // A web page cannot drain: a browser's POST carries Origin or Sec-Fetch-Site.
    let mut res = client()
        .post(admin_url(&lb, &format!("/endpoints/{b2}/drain")))
        .insert_header(("origin", "http://evil.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(String::from_utf8_lossy(&res.body().await.unwrap()).contains("web page"));
    assert_eq!(
        status(&lb).await["upstreams"][1]["endpoints"][0]["enabled"],
        true
    );

    // With every endpoint drained, requests get 503 saying so.
    for b in &backends {
        assert_eq!(
            post(&lb, &format!("/endpoints/{}/drain", b.addr), None)
                .await
                .0,
            200
        );
    }
    let (code, _, body) = get(&client(), &url_of(&lb, "/")).await;
    assert_eq!(code, 503);
    assert!(body.contains("every endpoint is drained"), "{body}");

    let (code, body) = post(&lb, "/endpoints/10.9.9.9:1/drain", None).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = post(&lb, "/endpoints/server2/drain", None).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("ip:port"), "{body}");
}

/// With a token set, changes need it as a bearer token; reading does not.
#[actix_web::test]
async fn the_token_guards_changes_only() {
    let b = start_backend("Server 1", "b1");
    let mut config = config_for(&[b.addr.to_string()]);
    config.admin_token = Some("s3cret".into());
    let lb = start_balancer(&config, DnsResolver).await;
    let path = format!("/endpoints/{}/drain", b.addr);
    assert_eq!(post(&lb, &path, None).await.0, 401);
    assert_eq!(post(&lb, &path, Some("wrong")).await.0, 401);
    assert_eq!(
        status(&lb).await["upstreams"][0]["endpoints"][0]["enabled"],
        true
    );
    assert_eq!(post(&lb, &path, Some("s3cret")).await.0, 200);
    assert_eq!(
        status(&lb).await["upstreams"][0]["endpoints"][0]["enabled"],
        false
    );
}

/// After 30 good requests and 3 that get 404, `/status` and `/metrics` count exactly those,
/// and open client connections are counted while they stay open.
#[actix_web::test]
async fn status_and_metrics_count_the_traffic() {
    let backends: Vec<_> = (1..=3)
        .map(|i| start_backend(&format!("Server {i}"), &format!("b{i}")))
        .collect();
    let upstreams: Vec<_> = backends.iter().map(|b| b.addr.to_string()).collect();
    let lb = start_balancer(&config_for(&upstreams), DnsResolver).await;
    served_by(&lb, 30).await;
    let c = client();
    for _ in 0..3 {
        let (status, _, _) = get(&c, &url_of(&lb, "/status/404")).await;
        assert_eq!(status, 404);
    }
    // The last response's exchange is counted when its body ends: give it a moment.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;

    let s = status(&lb).await;
    assert_eq!(s["totals"]["requests"], 33, "{s}");
    assert_eq!(s["totals"]["by_class"]["2xx"], 30);
    assert_eq!(s["totals"]["by_class"]["4xx"], 3);
    for upstream in s["upstreams"].as_array().unwrap() {
        let e = &upstream["endpoints"][0];
        assert_eq!(e["requests"], 11, "{e}");
        assert_eq!(e["by_class"]["2xx"], 10, "{e}");
        assert_eq!(e["health"], "up");
    }

    let mut res = client()
        .get(admin_url(&lb, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("rondo_responses_total{class=\"2xx\"} 30\n"),
        "{text}"
    );
    assert!(
        text.contains("rondo_responses_total{class=\"4xx\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("rondo_request_duration_seconds_count 33\n"),
        "{text}"
    );
    let b1 = backends[0].addr;
    assert!(
        text.contains(&format!(
            "rondo_requests_total{{upstream=\"{b1}\",endpoint=\"{b1}\",class=\"2xx\"}} 10\n"
        )),
        "{text}"
    );

    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(tokio::net::TcpStream::connect(lb.addrs()[0]).await.unwrap());
    }
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let connections = status(&lb).await["totals"]["client_connections"]
        .as_i64()
        .unwrap();
    assert!(connections >= 5, "{connections}");
    drop(open);
}

/// The status page is served by the balancer itself as HTML.
#[actix_web::test]
async fn the_status_page_is_served() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&config_for(&[b.addr.to_string()]), DnsResolver).await;
    let mut res = client().get(admin_url(&lb, "/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let body = res.body().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("/status"));
}

/// A retry is counted when another try starts, not when no endpoint is left to try.
#[actix_web::test]
async fn retries_count_only_tries_that_happen() {
    let refusing = rondo_tests::faulty::refusing_addr();
    let mut config = config_for(&[refusing.to_string()]);
    config.health_checks = false;
    let alone = start_balancer(&config, DnsResolver).await;
    let (status, _, _) = get(&client(), &url_of(&alone, "/")).await;
    assert_eq!(status, 502);
    assert_eq!(status_json_retries(&alone).await, 0);

    let b = start_backend("Server 1", "b1");
    let mut config = config_for(&[refusing.to_string(), b.addr.to_string()]);
    config.health_checks = false;
    let with_another = start_balancer(&config, DnsResolver).await;
    let (status, _, _) = get(&client(), &url_of(&with_another, "/")).await;
    assert_eq!(status, 200);
    assert_eq!(status_json_retries(&with_another).await, 1);
}

async fn status_json_retries(lb: &Running) -> u64 {
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    status(lb).await["totals"]["retries"].as_u64().unwrap()
}
