//! A steady load against a port of 127.0.0.1, with the fault suite's load generator, printing
//! latency percentiles and when the slow requests were sent (to find periodic stalls).
//!
//! `cargo run --release -p rondo-tests --example steady -- PORT [RATE] [TOTAL] [CONNECTIONS]`
//! (defaults: 2000 requests/s, 20,000 requests, 64 connections).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rondo_tests::load::{self, fmt_duration, Method, Spec, Summary};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| -> f64 {
        args.get(i).map_or(default, |s| {
            s.parse()
                .unwrap_or_else(|_| panic!("argument {i}: not a number: {s}"))
        })
    };
    let Some(port) = args.first().and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: steady PORT [RATE] [TOTAL] [CONNECTIONS]");
        std::process::exit(2);
    };
    let rate = arg(1, 2000.0);
    let total = arg(2, 20_000.0) as usize;
    let spec = Spec {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        path: "/".into(),
        method: Method::Get,
        connections: arg(3, 64.0) as usize,
        total,
        rate: Some(rate),
        timeout: Duration::from_secs(30),
        give_up_after: Duration::from_secs_f64(total as f64 / rate * 3.0 + 30.0),
    };
    let outcomes = load::run(&spec, Instant::now());
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
    // Requests slower than the p99, counted by the 100 ms slice in which they were sent.
    let mut slices = std::collections::BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.latency >= s.p99) {
        *slices.entry(o.sent_at.as_millis() / 100).or_insert(0usize) += 1;
    }
    let line: Vec<String> = slices
        .iter()
        .map(|(slice, n)| format!("{:.1}s:{n}", *slice as f64 / 10.0))
        .collect();
    println!("slow (>= p99) by send time: {}", line.join(" "));
}
