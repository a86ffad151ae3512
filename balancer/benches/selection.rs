//! What choosing an endpoint and taking in a discovery result cost, among 3, 100 and 10,000
//! endpoints (issue 6): `cargo bench -p balancer --bench selection`.
//!
//! - `select/healthy/N`: one pick by a request's first try, every endpoint in rotation: one
//!   atomic `fetch_add` on the shared position and one health read, whatever N.
//! - `select/retry/N`: the second try of a request, its first endpoint passed over.
//! - `select/half_down/N`: every other endpoint out of rotation (passive health), so a pick
//!   passes over one endpoint in two on average.
//! - `discovery/N`: a discovery round that finds the same N addresses again (the common case
//!   every interval): builds the new set, reusing every endpoint, and swaps it in. This grows
//!   with N (the set is sorted and matched), but runs once per interval, not per request.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use balancer::endpoint::{EndpointSet, UpstreamEndpoints};
use balancer::health::PassivePolicy;
use balancer::selection::RoundRobin;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 3] = [3, 100, 10_000];

fn found(n: usize) -> Vec<UpstreamEndpoints> {
    let addrs = (0..n)
        .map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8080)))
        .collect();
    vec![UpstreamEndpoints {
        upstream: Arc::from("app:8080"),
        addrs,
    }]
}

fn selector(n: usize) -> RoundRobin {
    selector_with(n, PassivePolicy::default())
}

fn selector_with(n: usize, policy: PassivePolicy) -> RoundRobin {
    let rr = RoundRobin::new(policy);
    rr.replace(EndpointSet::build(
        &found(n),
        &EndpointSet::default(),
        false,
    ));
    rr
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for n in SIZES {
        let rr = selector(n);
        group.bench_with_input(BenchmarkId::new("healthy", n), &rr, |b, rr| {
            b.iter(|| black_box(rr.select(&[])))
        });
        let first = rr.select(&[]).expect("endpoints").endpoint;
        let tried = [first];
        group.bench_with_input(BenchmarkId::new("retry", n), &rr, |b, rr| {
            b.iter(|| black_box(rr.select(black_box(&tried))))
        });
        // Out for an hour: no passive trial pick happens while the benchmark runs.
        let policy = PassivePolicy {
            max_fails: 1,
            fail_timeout: Duration::from_secs(3600),
            ..PassivePolicy::default()
        };
        let half = selector_with(n, policy);
        for (i, endpoint) in half.load().set().endpoints().iter().enumerate() {
            if n > 1 && i % 2 == 1 {
                endpoint.report_failure(&policy, "benchmark: taken out");
            }
        }
        group.bench_with_input(BenchmarkId::new("half_down", n), &half, |b, rr| {
            b.iter(|| black_box(rr.select(&[])))
        });
    }
    group.finish();
}

fn discovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("discovery");
    group.measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let rr = selector(n);
        let again = found(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &again, |b, again| {
            b.iter(|| {
                let current = rr.load();
                rr.replace(EndpointSet::build(again, current.set(), false));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, select, discovery);
criterion_main!(benches);
