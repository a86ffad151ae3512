//! rondo's metrics as a real Prometheus server sees them: Prometheus scrapes the balancer's
//! admin listener every second while a known mix of requests goes through the balancer, and
//! the figures it stores must add up to what the client sent and saw.
//!
//! Bounded: 96 requests to 127.0.0.1, one Prometheus (killed on drop, storage in a temp dir),
//! at most 20 s of polling its API. Needs Debian's `prometheus` (`scripts/ensure-test-tools`):
//! without it the test is skipped with a message, except in CI, where it fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use balancer::discovery::DnsResolver;
use rondo_tests::faulty::refusing_addr;
use rondo_tests::prometheus::figures::{Check, Expected, Figures};
use rondo_tests::prometheus::{self, Prometheus};
use rondo_tests::*;

/// Requests sent through the balancer, one at a time.
const REQUESTS: usize = 96;
/// Every 16th request asks the backend for `/status/404`: 6 of the 96.
const NOT_FOUND_EVERY: usize = 16;
/// Failed tries that take the refusing endpoint out of rotation (`max_fails`).
const MAX_FAILS: u32 = 3;
/// How long the scraped figures may take to match once the last request was answered
/// (Prometheus adds a new target to its scrape loop within 5 s, then scrapes every second).
const SCRAPED_WITHIN: Duration = Duration::from_secs(20);

/// Every metric family the admin listener exposes, with the type its `# TYPE` line must say.
const FAMILIES: [(&str, &str); 12] = [
    ("rondo_requests_total", "counter"),
    ("rondo_responses_total", "counter"),
    ("rondo_request_duration_seconds", "histogram"),
    ("rondo_upstream_duration_seconds", "histogram"),
    ("rondo_in_flight_requests", "gauge"),
    ("rondo_retries_total", "counter"),
    ("rondo_endpoint_up", "gauge"),
    ("rondo_endpoint_enabled", "gauge"),
    ("rondo_health_flips_total", "counter"),
    ("rondo_discovery_changes_total", "counter"),
    ("rondo_endpoints", "gauge"),
    ("rondo_client_connections", "gauge"),
];

/// What the client sent and saw, counted from the answers (`X-Served-By`, `X-Rondo-Tries`).
#[derive(Debug, Default)]
struct Tally {
    /// Responses by class (`2xx`).
    responses: BTreeMap<String, f64>,
    /// Tries that got a response, by endpoint name and class.
    tries: BTreeMap<(String, String), f64>,
    /// Tries beyond the first, summed over all requests.
    retries: f64,
}

impl Tally {
    /// Counts one answer: its status, the backend that sent it, and the tries it took (1 when
    /// the balancer sent no `X-Rondo-Tries`).
    fn record(&mut self, status: u16, served_by: &str, tries: u32) {
        let class = format!("{}xx", status / 100);
        *self.responses.entry(class.clone()).or_default() += 1.0;
        *self
            .tries
            .entry((served_by.to_string(), class))
            .or_default() += 1.0;
        self.retries += f64::from(tries.saturating_sub(1));
    }

    /// Tries that got a response of `class` (`None`: any), by endpoint name.
    fn tries_by_endpoint(&self, class: Option<&str>) -> BTreeMap<String, f64> {
        let mut by_endpoint = BTreeMap::new();
        for ((name, c), n) in &self.tries {
            if class.is_none_or(|class| class == c) {
                *by_endpoint.entry(name.clone()).or_default() += n;
            }
        }
        by_endpoint
    }
}

/// Sends the mix, one request at a time: `REQUESTS` GETs, every `NOT_FOUND_EVERY`th to
/// `/status/404`.
async fn send_the_mix(lb: &balancer::Running) -> Tally {
    let client = client();
    let mut tally = Tally::default();
    for i in 0..REQUESTS {
        let path = if i % NOT_FOUND_EVERY == NOT_FOUND_EVERY - 1 {
            "/status/404"
        } else {
            "/"
        };
        let mut res = client
            .get(url_of(lb, path))
            .send()
            .await
            .expect("an answer from the balancer");
        res.body().await.expect("a whole body");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let tries = header("x-rondo-tries").parse().unwrap_or(1);
        tally.record(res.status().as_u16(), &header("x-served-by"), tries);
    }
    tally
}

/// The figures Prometheus scrapes from the admin listener (responses by class, tries by endpoint
/// and class, retries, endpoints in rotation, durations, metric types) match the traffic sent,
/// and Prometheus parses the exposition (the target is up, with no scrape error).
#[actix_web::test]
async fn prometheus_scrapes_figures_that_match_the_traffic() {
    let Some(binary) = prometheus::binary() else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(
            !ci,
            "prometheus is not on PATH; scripts/ensure-test-tools installs it (Debian's package)"
        );
        eprintln!("skipped: prometheus is not on PATH (scripts/ensure-test-tools installs it)");
        return;
    };

    let backends = [
        start_backend("A", "a"),
        start_backend("B", "b"),
        start_backend("C", "c"),
    ];
    let refusing = refusing_addr();
    let mut names: BTreeMap<String, String> = backends
        .iter()
        .zip(["a", "b", "c"])
        .map(|(b, name)| (b.addr.to_string(), name.to_string()))
        .collect();
    names.insert(refusing.to_string(), "refusing".into());
    let upstreams: Vec<String> = std::iter::once(refusing)
        .chain(backends.iter().map(|b| b.addr))
        .map(|a: SocketAddr| a.to_string())
        .collect();
    let mut config = config_for(&upstreams);
    // Only passive health: the refusing endpoint is tried, fails MAX_FAILS times (each try
    // retried on the next endpoint), then stays out for longer than the test runs.
    config.health_checks = false;
    config.max_fails = MAX_FAILS;
    config.fail_timeout = Duration::from_secs(600);
    let lb = start_balancer(&config, DnsResolver).await;
    let admin = *lb
        .admin_addrs()
        .first()
        .expect("config_for gives the balancer an admin listener");
    let prom = Prometheus::start(&binary, admin).await;

    let tally = send_the_mix(&lb).await;
    let sent = Instant::now();

    // What the client saw: round robin gave each backend its third, and the refusing endpoint
    // cost exactly MAX_FAILS retries before it left the rotation.
    let shares = tally.tries_by_endpoint(None);
    let third = (REQUESTS / 3) as f64;
    assert!(
        shares.len() == 3 && shares.values().all(|n| *n == third),
        "{tally:?}"
    );
    assert_eq!(tally.retries, f64::from(MAX_FAILS), "{tally:?}");

    let refusing_only = |n: f64| Expected::Values(BTreeMap::from([("refusing".into(), n)]));
    let every_endpoint = |up: fn(&str) -> f64| {
        Expected::Values(names.values().map(|n| (n.clone(), up(n))).collect())
    };
    let checks = vec![
        Check::new(
            "responses",
            "sum(rondo_responses_total)",
            "",
            Expected::one(REQUESTS as f64),
        ),
        Check::new(
            "responses by class",
            "sum by (class) (rondo_responses_total) > 0",
            "class",
            Expected::Values(tally.responses.clone()),
        ),
        Check::new(
            "2xx tries by endpoint",
            "sum by (endpoint) (rondo_requests_total{class=\"2xx\"}) > 0",
            "endpoint",
            Expected::Values(tally.tries_by_endpoint(Some("2xx"))),
        ),
        Check::new(
            "4xx tries by endpoint",
            "sum by (endpoint) (rondo_requests_total{class=\"4xx\"}) > 0",
            "endpoint",
            Expected::Values(tally.tries_by_endpoint(Some("4xx"))),
        ),
        Check::new(
            "error tries by endpoint",
            "sum by (endpoint) (rondo_requests_total{class=\"error\"}) > 0",
            "endpoint",
            refusing_only(tally.retries),
        ),
        Check::new(
            "retries by endpoint",
            "sum by (endpoint) (rondo_retries_total) > 0",
            "endpoint",
            refusing_only(tally.retries),
        ),
        Check::new(
            "passive flips to down",
            "sum by (endpoint) (rondo_health_flips_total{check=\"passive\",to=\"down\"}) > 0",
            "endpoint",
            refusing_only(1.0),
        ),
        Check::new(
            "endpoint up",
            "rondo_endpoint_up",
            "endpoint",
            every_endpoint(|name| f64::from(name != "refusing")),
        ),
        Check::new(
            "endpoint enabled",
            "rondo_endpoint_enabled",
            "endpoint",
            every_endpoint(|_| 1.0),
        ),
        Check::new(
            "endpoints",
            "sum(rondo_endpoints)",
            "",
            Expected::one(names.len() as f64),
        ),
        Check::new(
            "requests in flight",
            "sum(rondo_in_flight_requests)",
            "",
            Expected::one(0.0),
        ),
        Check::new(
            "upstream durations observed",
            "sum by (endpoint) (rondo_upstream_duration_seconds_count) > 0",
            "endpoint",
            Expected::Values(shares),
        ),
        Check::new(
            "request durations observed",
            "sum(rondo_request_duration_seconds_count)",
            "",
            Expected::one(REQUESTS as f64),
        ),
        Check::new(
            "request durations, +Inf bucket",
            "sum(rondo_request_duration_seconds_bucket{le=\"+Inf\"})",
            "",
            Expected::one(REQUESTS as f64),
        ),
        Check::new(
            "client connections",
            "rondo_client_connections",
            "",
            Expected::Present,
        ),
    ];
    let figures = Figures {
        target_url: format!("http://{admin}/metrics"),
        families: FAMILIES.to_vec(),
        checks,
        names,
    };
    let table = figures.poll(&prom, sent, SCRAPED_WITHIN).await;
    let waited = sent.elapsed().as_secs_f64();
    assert!(
        table.all_match(),
        "the figures Prometheus scraped still differ from the traffic {waited:.1} s after \
         the last request:\n{table}"
    );
    eprintln!(
        "{REQUESTS} requests; the figures Prometheus scraped matched after {waited:.1} s:\n{table}"
    );
}
