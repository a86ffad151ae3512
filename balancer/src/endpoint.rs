//! Endpoints and the immutable set that request handlers read.
//!
//! An [`Endpoint`] is one `address:port` that serves, found by discovery under a configured
//! [`Upstream`](crate::config::Upstream). Its counters live behind an `Arc` so that they survive
//! when discovery swaps in a new [`EndpointSet`]: an endpoint present before and after a swap is
//! the same `Arc`.

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::http::uri::{self, Authority, PathAndQuery, Scheme};
use actix_web::http::Uri;
use log::{log, Level};

use crate::health::{ActivePolicy, ActiveState, Admission, Flip, PassivePolicy, PassiveState};
use crate::stall::{self, Began, Watch};
use crate::stats::EndpointStats;

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
    /// `ip:port`, parsed once: a request's URI is put together from it and the request's
    /// path without formatting or parsing a string.
    authority: Authority,
    /// Requests this balancer has sent to the endpoint since it was first discovered.
    requests: AtomicU64,
    /// Requests sent and not yet finished (response body included); counted by [`InFlight`].
    in_flight: AtomicUsize,
    /// Tries waiting for a response head, and the last answer: whether it has stalled.
    watch: Watch,
    /// The active check's verdict is `Up` (always true when active checks are off): read on
    /// every selection, so kept apart from `active`.
    active_up: AtomicBool,
    active: Mutex<ActiveState>,
    /// False while passive checking has the endpoint out: the request path reads only this
    /// unless it is false.
    passive_in: AtomicBool,
    /// True when `passive` holds anything a success must reset (failures, a time out).
    passive_dirty: AtomicBool,
    passive: Mutex<PassiveState>,
    /// False once an operator drained the endpoint by hand (admin API): it gets no new
    /// requests, not even when nothing else is healthy, until enabled again.
    enabled: AtomicBool,
    /// Counters for `/metrics` and `/status`.
    stats: EndpointStats,
}

impl Endpoint {
    /// Makes an endpoint of `upstream` (configured at `upstream_index`) at `addr`. With
    /// `probed` true (active checks on) it waits out of rotation for its first good probe;
    /// otherwise it starts in rotation.
    pub fn new(upstream_index: usize, upstream: Arc<str>, addr: SocketAddr, probed: bool) -> Self {
        Endpoint {
            upstream_index,
            upstream,
            addr,
            base_url: format!("http://{addr}"),
            authority: Authority::try_from(addr.to_string())
                .expect("a socket address is a valid URI authority"),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            watch: Watch::default(),
            active_up: AtomicBool::new(!probed),
            active: Mutex::new(ActiveState::default()),
            passive_in: AtomicBool::new(true),
            passive_dirty: AtomicBool::new(false),
            passive: Mutex::new(PassiveState::default()),
            enabled: AtomicBool::new(true),
            stats: EndpointStats::default(),
        }
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// False while drained by hand.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(AtomicOrdering::Relaxed)
    }

    /// Drains (`false`) or enables (`true`) the endpoint; returns whether that changed it.
    pub fn set_enabled(&self, enabled: bool) -> bool {
        self.enabled.swap(enabled, AtomicOrdering::Relaxed) != enabled
    }

    /// Whether passive checking has the endpoint in rotation.
    pub fn passive_in(&self) -> bool {
        self.passive_in.load(AtomicOrdering::Relaxed)
    }

    /// Requests sent to this endpoint that have not finished yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(AtomicOrdering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, AtomicOrdering::Relaxed);
        InFlight(self.clone())
    }

    /// Tries waiting on the endpoint for a response head, and its stalls ([`crate::stall`]).
    pub fn watch(&self) -> &Watch {
        &self.watch
    }

    /// Whether the endpoint has stalled under `check`: tries wait on it and it has answered
    /// none for longer than the threshold. Logged the first time it is seen.
    pub fn stalled(&self, check: stall::Check) -> bool {
        let (stalled, began) = self.watch.stalled(check);
        if let Some(Began(at)) = began {
            log!(
                stall_log_level(self.watch.log_loudly(check.now)),
                "stall: endpoint {} ({}) has answered nothing for {} ms while {} request(s) wait \
                 on it; new requests go to other endpoints until it answers",
                self.addr,
                self.upstream,
                check.now.saturating_sub(at) / 1_000_000,
                self.watch.waiting(),
            );
        }
        stalled
    }

    /// Records that a try waiting on the endpoint got its response head at `now`, `took` after
    /// it was sent; logs the end of a stall that this answer ends (at the level its start was
    /// logged at).
    pub fn answered(&self, waiting: stall::Waiting<'_>, now: Instant, took: Duration) {
        if let Some(silent) = waiting.answered(now, took) {
            let began = stall::nanos(now).saturating_sub(silent.as_nanos() as u64);
            log!(
                stall_log_level(self.watch.logged_since(began)),
                "stall: endpoint {} ({}) answers again after {} ms without answering",
                self.addr,
                self.upstream,
                silent.as_millis()
            );
        }
    }

    /// Whether both checks have it in rotation (a passive time out may be over but untried).
    pub fn is_healthy(&self) -> bool {
        self.active_up.load(AtomicOrdering::Relaxed)
            && self.passive_in.load(AtomicOrdering::Relaxed)
    }

    /// Whether a request may go to this endpoint now; may grant the single passive trial.
    pub fn admit(&self, policy: &PassivePolicy) -> Admission {
        if !self.active_up.load(AtomicOrdering::Relaxed) || !self.is_enabled() {
            return Admission::No;
        }
        if self.passive_in.load(AtomicOrdering::Relaxed) {
            return Admission::Yes;
        }
        lock(&self.passive).admit(Instant::now(), policy)
    }

    /// Records that a request to this endpoint got a response.
    pub fn report_success(&self) -> Option<Flip> {
        if !self.passive_dirty.load(AtomicOrdering::Relaxed) {
            return None;
        }
        let mut passive = lock(&self.passive);
        let flip = passive.on_success();
        self.sync_passive(&passive);
        flip
    }

    /// Records that a request to this endpoint failed (connect, reset or timeout).
    pub fn report_failure(&self, policy: &PassivePolicy, reason: &str) -> Option<Flip> {
        let mut passive = lock(&self.passive);
        let flip = passive.on_failure(Instant::now(), policy, reason);
        self.sync_passive(&passive);
        flip
    }

    fn sync_passive(&self, passive: &PassiveState) {
        self.passive_in
            .store(!passive.is_out(), AtomicOrdering::Relaxed);
        self.passive_dirty
            .store(passive.is_dirty(), AtomicOrdering::Relaxed);
    }

    /// The active check's verdict (`Unknown` until the first good probe).
    pub fn active_verdict(&self) -> crate::health::Verdict {
        lock(&self.active).verdict()
    }

    /// Whether the endpoint is still starting for the active check: no probe has passed and
    /// its time to start has not run out (it enters on its first pass).
    pub fn is_starting(&self) -> bool {
        lock(&self.active).is_starting()
    }

    /// Ends the endpoint's start without a pass; see [`ActiveState::settle`].
    pub fn settle_probes(&self, reason: &str) -> Option<Flip> {
        let mut active = lock(&self.active);
        let flip = active.settle(reason);
        self.sync_active(&active);
        flip
    }

    /// Records one active probe result.
    pub fn observe_probe(&self, result: Result<(), String>, policy: &ActivePolicy) -> Option<Flip> {
        let mut active = lock(&self.active);
        let flip = active.observe(result, policy);
        self.sync_active(&active);
        flip
    }

    /// Mirrors the active check's verdict into the flag the hot path reads.
    fn sync_active(&self, active: &ActiveState) {
        self.active_up.store(
            active.verdict() == crate::health::Verdict::Up,
            AtomicOrdering::Relaxed,
        );
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

    /// The URI of `path` (origin form, `/` when `None`) on this endpoint.
    pub fn uri(&self, path: Option<&PathAndQuery>) -> Uri {
        let mut parts = uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path.cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path make a URI")
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

/// `info` for a stall logged loudly, `debug` for the ones in between.
fn stall_log_level(loud: bool) -> Level {
    if loud {
        Level::Info
    } else {
        Level::Debug
    }
}

/// Takes a lock that a panic elsewhere cannot leave half-written (health state is plain data).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request in flight to an endpoint; dropping it (on any path) gives the count back.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, AtomicOrdering::Relaxed);
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
    /// state carries over; every other endpoint starts fresh: waiting for its first good probe
    /// when `probed`, in rotation at once otherwise.
    pub fn build(
        upstreams: &[UpstreamEndpoints],
        previous: &EndpointSet,
        probed: bool,
    ) -> EndpointSet {
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
                let fresh = Endpoint::new(index, found.upstream.clone(), addr, probed);
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

#[cfg(test)]
mod uri_tests {
    use super::*;

    /// A request's URI on an endpoint: its path and query as they came, `/` without a path,
    /// IPv6 endpoints in brackets.
    #[test]
    fn uris_put_the_request_path_on_the_endpoint() {
        let v4 = Endpoint::new(
            0,
            Arc::from("app:8080"),
            "10.0.0.2:8080".parse().unwrap(),
            false,
        );
        let path = PathAndQuery::from_static("/cart/a%20b?id=7&x=%2F");
        assert_eq!(
            v4.uri(Some(&path)).to_string(),
            "http://10.0.0.2:8080/cart/a%20b?id=7&x=%2F"
        );
        assert_eq!(v4.uri(None).to_string(), "http://10.0.0.2:8080/");
        let v6 = Endpoint::new(
            0,
            Arc::from("app:8080"),
            "[::1]:9000".parse().unwrap(),
            false,
        );
        assert_eq!(
            v6.uri(Some(&PathAndQuery::from_static("/?q"))).to_string(),
            "http://[::1]:9000/?q"
        );
    }
}
