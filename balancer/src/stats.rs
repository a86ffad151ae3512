//! What the balancer counts, for `/metrics` and `/status`: plain atomics the request path
//! bumps without a lock, read whole only when someone asks.
//!
//! Per endpoint ([`EndpointStats`], inside every [`Endpoint`](crate::endpoint::Endpoint), so
//! it survives discovery swaps): tries by the class of what came back, retries, upstream
//! latency, health flips, the last error. For the whole balancer ([`Totals`]): responses to
//! clients by class, total latency, retries, open client connections, discovery changes.
//!
//! Histograms have fixed buckets (Prometheus' defaults from 1 ms to 10 s) and count each
//! observation in one bucket; cumulative counts are made when rendered.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Upper bounds of the histogram buckets, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes as labels; index 5 is a try that got no response at all.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// The index in [`CLASSES`] of an HTTP status.
pub fn class_of(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The index in [`CLASSES`] of a try that failed without a response.
pub const ERROR: usize = 5;

/// A latency histogram that many threads observe into without a lock.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of all observations, in microseconds.
    sum_micros: AtomicU64,
}

/// A histogram read at one moment: cumulative bucket counts, the count and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, `+Inf` last.
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, bucket) in self.buckets.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            cumulative.push((BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        HistogramSnapshot {
            cumulative,
            count: total,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Counters by class; `counts()` reads them all.
#[derive(Debug, Default)]
pub struct ByClass([AtomicU64; CLASSES.len()]);

impl ByClass {
    pub fn add(&self, class: usize) {
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> [u64; CLASSES.len()] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// One endpoint's counters.
#[derive(Debug)]
pub struct EndpointStats {
    /// Tries sent to the endpoint, by the class of what came back (or [`ERROR`]).
    pub tries: ByClass,
    /// Failed tries that were tried again on another endpoint.
    pub retries: AtomicU64,
    /// From sending a try until its response head arrived.
    pub upstream_latency: Histogram,
    /// Health flips: `[active up, active down, passive up, passive down]`.
    pub flips: [AtomicU64; 4],
    /// Why the last try failed, and when.
    last_error: Mutex<Option<(String, SystemTime)>>,
    /// When the endpoint last went up or down (its discovery, before any flip).
    health_since: Mutex<SystemTime>,
}

impl Default for EndpointStats {
    fn default() -> Self {
        EndpointStats {
            tries: ByClass::default(),
            retries: AtomicU64::new(0),
            upstream_latency: Histogram::default(),
            flips: Default::default(),
            last_error: Mutex::new(None),
            health_since: Mutex::new(SystemTime::now()),
        }
    }
}

impl EndpointStats {
    /// Records a failed try and its reason.
    pub fn record_error(&self, reason: String) {
        self.tries.add(ERROR);
        *lock(&self.last_error) = Some((reason, SystemTime::now()));
    }

    /// Records a flip seen by `check` (`"active"` or `"passive"`) to up or down.
    pub fn record_flip(&self, check: &str, up: bool) {
        let i = usize::from(check == "passive") * 2 + usize::from(!up);
        self.flips[i].fetch_add(1, Ordering::Relaxed);
        *lock(&self.health_since) = SystemTime::now();
    }

    pub fn last_error(&self) -> Option<(String, SystemTime)> {
        lock(&self.last_error).clone()
    }

    pub fn health_since(&self) -> SystemTime {
        *lock(&self.health_since)
    }
}

/// The balancer's own counters, shared by every worker.
#[derive(Debug)]
pub struct Totals {
    /// Responses given to clients (relayed or the balancer's own), by class.
    pub responses: ByClass,
    /// From a request's arrival to the end of its response.
    pub latency: Histogram,
    /// Failed tries that were tried again elsewhere.
    pub retries: AtomicU64,
    /// Client connections open now.
    pub client_connections: AtomicI64,
    /// Times discovery replaced the endpoint set.
    pub discovery_changes: AtomicU64,
    /// When the balancer started.
    pub started: SystemTime,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            responses: ByClass::default(),
            latency: Histogram::default(),
            retries: AtomicU64::new(0),
            client_connections: AtomicI64::new(0),
            discovery_changes: AtomicU64::new(0),
            started: SystemTime::now(),
        }
    }
}

/// Counts one open client connection until dropped (kept in the connection's data).
#[derive(Debug)]
pub struct Connection(pub std::sync::Arc<Totals>);

impl Connection {
    pub fn open(totals: std::sync::Arc<Totals>) -> Connection {
        totals.client_connections.fetch_add(1, Ordering::Relaxed);
        Connection(totals)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.client_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each observation lands in the first bucket that holds it; snapshots are cumulative.
    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], (0.001, 1));
        assert_eq!(s.cumulative[4], (0.025, 2));
        assert_eq!(s.cumulative[12], (10.0, 2));
        assert_eq!(s.cumulative[13], (f64::INFINITY, 3));
        assert!((s.sum_seconds - 60.0205).abs() < 1e-9);
    }

    /// Statuses map to their class; flips count by check and direction.
    #[test]
    fn classes_and_flips() {
        assert_eq!(CLASSES[class_of(204)], "2xx");
        assert_eq!(CLASSES[class_of(503)], "5xx");
        assert_eq!(CLASSES[class_of(101)], "1xx");
        let s = EndpointStats::default();
        s.record_flip("passive", false);
        s.record_flip("active", true);
        let flips: Vec<u64> = s.flips.iter().map(|f| f.load(Ordering::Relaxed)).collect();
        assert_eq!(flips, [1, 0, 0, 1]);
        s.record_error("refused".into());
        assert_eq!(s.tries.counts()[ERROR], 1);
        assert_eq!(s.last_error().unwrap().0, "refused");
    }
}
