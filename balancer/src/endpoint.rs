//! Endpoints and the immutable set that request handlers read.
//!
//! An [`Endpoint`] is one `address:port` that serves, found by discovery under a configured
//! [`Upstream`](crate::config::Upstream). Its counters live behind an `Arc` so that they survive
//! when discovery swaps in a new [`EndpointSet`]: an endpoint present before and after a swap is
//! the same `Arc`.

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

/// One address that serves an upstream, with the state that outlives discovery swaps.
#[derive(Debug)]
pub struct Endpoint {
    /// Position of the upstream in the configuration; the first part of the set's order.
    upstream_index: usize,
    /// The upstream as configured (`server2:8080`), for logs and error messages.
    upstream: Arc<str>,
    addr: SocketAddr,
    /// `http://ip:port`, built once so the request path only appends the path and query.
    base_url: String,
    /// Requests this balancer has sent to the endpoint since it was first discovered.
    requests: AtomicU64,
}

impl Endpoint {
    /// Makes an endpoint of `upstream` (configured at `upstream_index`) at `addr`.
    pub fn new(upstream_index: usize, upstream: Arc<str>, addr: SocketAddr) -> Self {
        Endpoint {
            upstream_index,
            upstream,
            addr,
            base_url: format!("http://{addr}"),
            requests: AtomicU64::new(0),
        }
    }

    /// The socket address requests go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream this endpoint was discovered under, as configured.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// `http://ip:port` (IPv6 in brackets), with no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Requests sent to this endpoint so far (counted when it is selected).
    pub fn requests(&self) -> u64 {
        self.requests.load(AtomicOrdering::Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// The set's order: upstreams as configured, then addresses sorted within each.
    pub fn order(&self, other: &Endpoint) -> Ordering {
        (self.upstream_index, self.addr).cmp(&(other.upstream_index, other.addr))
    }

    /// Whether `self` and `other` are the same endpoint of the same upstream.
    pub fn same_as(&self, other: &Endpoint) -> bool {
        self.order(other) == Ordering::Equal
    }
}

/// What discovery found for one upstream on its last successful resolution.
#[derive(Debug, Clone)]
pub struct UpstreamEndpoints {
    /// The upstream as configured (`host:port`).
    pub upstream: Arc<str>,
    /// Its addresses, in any order; duplicates are ignored.
    pub addrs: Vec<SocketAddr>,
}

/// An immutable snapshot of every endpoint of every upstream, in the set's stable order.
#[derive(Debug, Default)]
pub struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    /// Upstreams (as configured) that currently have no endpoint: named in 503 responses.
    without_endpoints: Vec<Arc<str>>,
}

impl EndpointSet {
    /// Builds the set from discovery's findings, one entry per upstream in configured order.
    ///
    /// An endpoint also present in `previous` (same upstream, same address) is reused, so its
    /// state carries over; every other endpoint starts fresh.
    pub fn build(upstreams: &[UpstreamEndpoints], previous: &EndpointSet) -> EndpointSet {
        let mut endpoints = Vec::new();
        let mut without_endpoints = Vec::new();
        for (index, found) in upstreams.iter().enumerate() {
            let mut addrs = found.addrs.clone();
            addrs.sort_unstable();
            addrs.dedup();
            if addrs.is_empty() {
                without_endpoints.push(found.upstream.clone());
            }
            for addr in addrs {
                let fresh = Endpoint::new(index, found.upstream.clone(), addr);
                let endpoint = previous.find(&fresh).unwrap_or_else(|| Arc::new(fresh));
                endpoints.push(endpoint);
            }
        }
        EndpointSet {
            endpoints,
            without_endpoints,
        }
    }

    /// Every endpoint, in the set's order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Upstreams that have no endpoint in this set (not resolved yet, or resolved to nothing).
    pub fn without_endpoints(&self) -> &[Arc<str>] {
        &self.without_endpoints
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when no upstream has any endpoint.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Whether both sets hold the same endpoints in the same order (state is not compared).
    pub fn same_endpoints(&self, other: &EndpointSet) -> bool {
        self.endpoints.len() == other.endpoints.len()
            && self
                .endpoints
                .iter()
                .zip(&other.endpoints)
                .all(|(a, b)| a.same_as(b))
            && self.without_endpoints == other.without_endpoints
    }

    /// The existing endpoint equal to `probe`, if this set has it (binary search on the order).
    fn find(&self, probe: &Endpoint) -> Option<Arc<Endpoint>> {
        self.endpoints
            .binary_search_by(|e| e.order(probe))
            .ok()
            .map(|i| self.endpoints[i].clone())
    }

    /// Index of the first endpoint that comes after `last` in the set's order, wrapping to 0.
    ///
    /// This is where round robin continues after a swap: `last` may or may not still be in the
    /// set, and new endpoints that sort after it are served in the current cycle.
    pub fn position_after(&self, last: &Endpoint) -> usize {
        let after = self
            .endpoints
            .partition_point(|e| e.order(last) != Ordering::Greater);
        if after == self.endpoints.len() {
            0
        } else {
            after
        }
    }
}
