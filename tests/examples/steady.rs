//! A steady load against a port of 127.0.0.1, with the fault suite's load generator, printing
//! latency percentiles and when the slow requests were sent (to find periodic stalls).
//!
//! `cargo run --release -p rondo-tests --example steady -- PORT [RATE] [TOTAL] [CONNECTIONS]
//! [GET|POST]` (defaults: 2000 requests/s, 20,000 requests, 64 connections, `GET /`; `POST`
//! sends the fault suite's POSTs to `/echo`, each with its own `X-Test-Id`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rondo_tests::load::{self, fmt_duration, Method, Spec, Summary};

const USAGE: &str = "usage: steady PORT [RATE] [TOTAL] [CONNECTIONS] [GET|POST]";

/// Says what was wrong with the arguments, and how to call it, then exits 2.
fn usage_error(what: &str) -> ! {
    eprintln!("steady: {what}\n{USAGE}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Argument `i` as a positive number, `default` when absent.
    let arg = |i: usize, name: &str, default: f64| -> f64 {
        let Some(s) = args.get(i) else {
            return default;
        };
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 1.0 => v,
            _ => usage_error(&format!("{name} must be a number, at least 1 (got {s:?})")),
        }
    };
    let Some(port) = args.first() else {
        usage_error("no PORT given");
    };
    let Ok(port) = port.parse::<u16>() else {
        usage_error(&format!("PORT must be a port number (got {port:?})"));
    };
    let rate = arg(1, "RATE", 2000.0);
    let total = arg(2, "TOTAL", 20_000.0) as usize;
    let connections = arg(3, "CONNECTIONS", 64.0) as usize;
    let (path, method) = match args.get(4).map(String::as_str) {
        None | Some("GET") => ("/", Method::Get),
        Some("POST") => (
            "/echo",
            Method::Post {
                body: br#"{"steady":"load"}"#.to_vec(),
                id_prefix: format!("steady-{}-", std::process::id()),
            },
        ),
        Some(other) => usage_error(&format!("the method must be GET or POST (got {other:?})")),
    };
    let spec = Spec {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        path: path.into(),
        method,
        connections,
        total,
        rate: Some(rate),
        timeout: Duration::from_secs(30),
        give_up_after: Duration::from_secs_f64(total as f64 / rate * 3.0 + 30.0),
    };
    // 200 ms to open the connections before the clock starts.
    let outcomes = load::run(&spec, Instant::now() + Duration::from_millis(200));
    let s = Summary::of(&outcomes);
    println!(
        "sent {} failed {} p50 {} p90 {} p99 {} max {}",
        s.sent,
        s.failed,
        fmt_duration(s.p50),
        fmt_duration(s.p90),
        fmt_duration(s.p99),
        fmt_duration(s.max)
    );
    if !s.failures.is_empty() {
        println!("failures by kind: {:?}", s.failures);
    }
    // The same in microseconds, with the p99.9: the fault suite's p99s are a millisecond or two,
    // where one decimal of a millisecond hides the difference between two balancers.
    let mut micros: Vec<u128> = outcomes.iter().map(|o| o.latency.as_micros()).collect();
    micros.sort_unstable();
    let pct = |p: f64| {
        micros[((p / 100.0 * micros.len() as f64).ceil() as usize).clamp(1, micros.len()) - 1]
    };
    if !micros.is_empty() {
        println!(
            "µs: p50 {} p90 {} p99 {} p99.9 {}",
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(99.9)
        );
    }
    // Requests slower than the p99, counted by the 100 ms slice in which they were sent.
    println!(
        "slow (>= p99) by send time: {}",
        load::slow_by_send_time(&outcomes, s.p99)
    );
}
