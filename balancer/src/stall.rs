//! Routing around an endpoint that has stopped answering.
//!
//! A container that hangs (`docker compose pause`, a deadlock, a long collector pause) keeps
//! its connections open: its kernel accepts and acknowledges, and nothing answers. The health
//! checks see it only when their timeouts run out (`RONDO_RESPONSE_TIMEOUT` for a request,
//! `RONDO_HEALTH_TIMEOUT` times `RONDO_HEALTH_FALL` for the probes). Until then round robin
//! would keep giving it every N-th request, and every keep-alive client would soon have a
//! request waiting on it: nginx and HAProxy behave so.
//!
//! rondo watches for the hang itself. An endpoint is *stalled* while tries wait on it for
//! their response head and it has answered none for longer than the stall threshold (a try
//! whose request body streams, too long to hold for a retry, is not watched: the endpoint owes
//! no answer before the upload ends). Selection
//! passes over a stalled endpoint while another endpoint that health checks admit is not
//! stalled; the tries already waiting on it keep waiting until they are answered or time out
//! (and are then retried as usual). The endpoint is back in turn with its next answer, or once
//! nothing waits on it any more.
//!
//! The threshold follows how fast endpoints usually answer, as TCP's retransmission timeout
//! follows the round trip (RFC 6298): the smoothed time to a response head plus four times its
//! mean deviation, measured by each worker over every try it sees answered; 1 s before the
//! first answer; never below `RONDO_STALL_TIMEOUT` (50 ms by default; `0s` turns this off).
//! Endpoints whose answers take seconds are therefore not called stalled after 50 ms.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The threshold before any try was answered (RFC 6298's initial retransmission timeout).
pub const INITIAL: Duration = Duration::from_secs(1);

/// Smoothed time to a response head and its mean deviation (RFC 6298, in nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimator {
    srtt: u64,
    rttvar: u64,
    seeded: bool,
}

impl Estimator {
    /// Takes one answered try's time to its response head into the estimate.
    pub fn observe(&mut self, took: Duration) {
        let r = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        if self.seeded {
            let deviation = self.srtt.abs_diff(r);
            self.rttvar = self.rttvar - self.rttvar / 4 + deviation / 4;
            self.srtt = self.srtt - self.srtt / 8 + r / 8;
        } else {
            *self = Estimator {
                srtt: r,
                rttvar: r / 2,
                seeded: true,
            };
        }
    }

    /// How long an endpoint may go without answering while tries wait on it before it counts
    /// as stalled: the estimate's `srtt + 4 * rttvar` ([`INITIAL`] before the first
    /// observation), never below `floor`.
    pub fn threshold(&self, floor: Duration) -> Duration {
        let estimate = if self.seeded {
            Duration::from_nanos(self.srtt.saturating_add(self.rttvar.saturating_mul(4)))
        } else {
            INITIAL
        };
        estimate.max(floor)
    }
}

thread_local! {
    /// This worker's estimate: every worker sees a share of the same traffic, and keeping it
    /// per thread keeps the request path free of shared writes.
    static LATENCY: Cell<Estimator> = const { Cell::new(Estimator { srtt: 0, rttvar: 0, seeded: false }) };
}

/// Takes an answered try's time to its response head into this thread's estimate.
pub fn observe(took: Duration) {
    LATENCY.with(|l| {
        let mut e = l.get();
        e.observe(took);
        l.set(e);
    });
}

/// This thread's stall threshold now, or `None` when stall detection is off (`floor` zero).
pub fn threshold(floor: Duration) -> Option<Duration> {
    if floor.is_zero() {
        return None;
    }
    Some(LATENCY.with(|l| l.get().threshold(floor)))
}

/// A moment as nanoseconds since the first call (a shared clock atomics can hold).
pub fn nanos(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// What one selection checks endpoints against: the time now and this thread's threshold.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub now: u64,
    pub after: u64,
}

impl Check {
    /// The check for a selection made at `now`, or `None` when stall detection is off.
    pub fn at(now: Instant, floor: Duration) -> Option<Check> {
        threshold(floor).map(|after| Check {
            now: nanos(now),
            after: u64::try_from(after.as_nanos()).unwrap_or(u64::MAX),
        })
    }
}

/// A stall that began (the endpoint's last answer, in [`nanos`]) and was reported.
#[derive(Debug, PartialEq, Eq)]
pub struct Began(pub u64);

/// One endpoint's watch: tries waiting for a response head, and when it last made progress.
#[derive(Debug, Default)]
pub struct Watch {
    /// Tries sent that have not had their response head, nor failed, yet.
    waiting: AtomicUsize,
    /// When the endpoint last answered a try, or when tries began waiting on it after none
    /// did ([`nanos`]).
    progress: AtomicU64,
    /// While a stall is noticed: the `progress` it began at, plus one (0: no stall noticed).
    stalled_at: AtomicU64,
    /// Stalls noticed so far (for `/metrics`).
    stalls: AtomicU64,
    /// When a stall was last logged at `info` ([`nanos`] plus one; 0: never), so that an
    /// endpoint that keeps stalling and answering logs at most once per [`LOG_EVERY`].
    logged: AtomicU64,
}

/// At most one stall of an endpoint a period is logged at `info`; the others at `debug` (all
/// are counted in `rondo_endpoint_stalls_total`).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

impl Watch {
    /// Counts a try as waiting from `now` until the returned guard is answered or dropped.
    pub fn wait(&self, now: Instant) -> Waiting<'_> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            // Nothing was waiting: the endpoint owed no answer until now.
            self.progress.store(nanos(now), Ordering::Relaxed);
        }
        Waiting { watch: self }
    }

    /// Whether the endpoint is stalled under `check`. The first time a stall is seen it is
    /// counted and `Some(Began)` says since when nothing was answered.
    pub fn stalled(&self, check: Check) -> (bool, Option<Began>) {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return (false, None);
        }
        let progress = self.progress.load(Ordering::Relaxed);
        if check.now.saturating_sub(progress) <= check.after {
            return (false, None);
        }
        if self.stalled_at.load(Ordering::Relaxed) != 0 {
            return (true, None);
        }
        let noticed = self
            .stalled_at
            .compare_exchange(0, progress + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if noticed {
            self.stalls.fetch_add(1, Ordering::Relaxed);
        }
        (true, noticed.then_some(Began(progress)))
    }

    /// Tries waiting on the endpoint for their response head now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Stalls noticed since the endpoint was discovered.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Whether a stall noticed at `now` ([`nanos`]) is to be logged at `info`: the first one,
    /// and then one per [`LOG_EVERY`].
    pub fn log_loudly(&self, now: u64) -> bool {
        let last = self.logged.load(Ordering::Relaxed);
        let every = LOG_EVERY.as_nanos() as u64;
        if last != 0 && now.saturating_sub(last - 1) < every {
            return false;
        }
        self.logged
            .compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether the last stall logged at `info` began at `began` ([`nanos`]) or later: then its
    /// end is logged at `info` too.
    pub fn logged_since(&self, began: u64) -> bool {
        self.logged.load(Ordering::Relaxed) > began
    }

    /// Whether a noticed stall has not ended yet.
    pub fn is_stalled(&self) -> bool {
        self.stalled_at.load(Ordering::Relaxed) != 0
    }
}

/// A try waiting for its response head; dropping it unanswered (a failure, a timeout, a
/// cancelled request) stops the wait without counting progress.
#[derive(Debug)]
pub struct Waiting<'a> {
    watch: &'a Watch,
}

impl Waiting<'_> {
    /// The try's response head arrived at `now`, `took` after it was sent: progress. Returns
    /// how long the endpoint had gone without answering when this ends a noticed stall.
    pub fn answered(self, now: Instant, took: Duration) -> Option<Duration> {
        observe(took);
        let now = nanos(now);
        self.watch.progress.store(now, Ordering::Relaxed);
        // A plain load first: the common case (no stall) writes nothing more.
        if self.watch.stalled_at.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match self.watch.stalled_at.swap(0, Ordering::Relaxed) {
            0 => None,
            began => Some(Duration::from_nanos(now.saturating_sub(began - 1))),
        }
        // `self` drops here and stops the wait.
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.watch.waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            // Nothing waits any more: whatever stall there was is over (the failed tries are
            // passive health's to judge).
            self.watch.stalled_at.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_threshold_is_one_second_before_any_answer_and_never_below_the_floor() {
        let e = Estimator::default();
        assert_eq!(e.threshold(50 * MS), INITIAL);
        assert_eq!(e.threshold(3 * INITIAL), 3 * INITIAL);
    }

    #[test]
    fn fast_answers_bring_the_threshold_down_to_the_floor() {
        let mut e = Estimator::default();
        e.observe(MS);
        // srtt 1 ms, rttvar 0.5 ms: 3 ms, below the floor.
        assert_eq!(e.threshold(Duration::ZERO), 3 * MS);
        assert_eq!(e.threshold(50 * MS), 50 * MS);
        for _ in 0..100 {
            e.observe(MS);
        }
        assert!(e.threshold(Duration::ZERO) < 2 * MS);
    }

    #[test]
    fn slow_answers_raise_the_threshold_above_them() {
        let mut e = Estimator::default();
        for _ in 0..50 {
            e.observe(MS);
        }
        for _ in 0..20 {
            e.observe(2000 * MS);
        }
        // Endpoints that take 2 s are not stalled after 2 s.
        assert!(
            e.threshold(50 * MS) > 2000 * MS,
            "{:?}",
            e.threshold(50 * MS)
        );
        // One slow answer among fast ones lifts it well above the floor for a while.
        let mut e = Estimator::default();
        for _ in 0..50 {
            e.observe(MS);
        }
        e.observe(1000 * MS);
        assert!(e.threshold(50 * MS) > 500 * MS);
    }

    fn check(now: Instant, after: Duration) -> Check {
        Check {
            now: nanos(now),
            after: after.as_nanos() as u64,
        }
    }

    #[test]
    fn an_endpoint_with_nothing_waiting_is_never_stalled() {
        let w = Watch::default();
        let t0 = Instant::now();
        assert_eq!(w.stalled(check(t0 + 10 * INITIAL, MS)), (false, None));
        drop(w.wait(t0));
        assert_eq!(w.stalled(check(t0 + 10 * INITIAL, MS)), (false, None));
    }

    #[test]
    fn waiting_unanswered_past_the_threshold_is_a_stall_noticed_once() {
        let w = Watch::default();
        let t0 = Instant::now();
        let first = w.wait(t0);
        let _second = w.wait(t0 + 30 * MS);
        // Counted from when waiting began (t0), not from the latest try.
        assert_eq!(w.stalled(check(t0 + 50 * MS, 50 * MS)), (false, None));
        assert_eq!(
            w.stalled(check(t0 + 51 * MS, 50 * MS)),
            (true, Some(Began(nanos(t0))))
        );
        assert_eq!(w.stalled(check(t0 + 60 * MS, 50 * MS)), (true, None));
        assert_eq!(w.stalls(), 1);
        assert!(w.is_stalled());
        // An answer ends it, and says how long nothing was answered.
        assert_eq!(first.answered(t0 + 70 * MS, 70 * MS), Some(70 * MS));
        assert!(!w.is_stalled());
        assert_eq!(w.stalled(check(t0 + 100 * MS, 50 * MS)), (false, None));
        assert!(w.stalled(check(t0 + 121 * MS, 50 * MS)).0);
        assert_eq!(w.stalls(), 2);
    }

    #[test]
    fn answers_keep_an_endpoint_with_a_long_request_out_of_stall() {
        // One try hangs (a long poll); others keep being answered.
        let w = Watch::default();
        let t0 = Instant::now();
        let _long = w.wait(t0);
        for i in 1..10u32 {
            let at = t0 + i * 40 * MS;
            assert_eq!(w.stalled(check(at, 50 * MS)), (false, None), "at {i}");
            assert_eq!(w.wait(at).answered(at + MS, MS), None);
        }
        assert_eq!(w.stalls(), 0);
    }

    #[test]
    fn stalls_are_logged_loudly_once_per_period() {
        let w = Watch::default();
        let t0 = nanos(Instant::now());
        let every = LOG_EVERY.as_nanos() as u64;
        assert!(w.log_loudly(t0));
        assert!(w.logged_since(t0.saturating_sub(1)));
        assert!(!w.log_loudly(t0 + 1_000_000));
        assert!(!w.log_loudly(t0 + every - 1));
        assert!(w.log_loudly(t0 + every));
        assert!(!w.logged_since(t0 + every + 1));
    }

    #[test]
    fn a_stall_ends_when_nothing_waits_any_more() {
        let w = Watch::default();
        let t0 = Instant::now();
        let stuck = w.wait(t0);
        assert!(w.stalled(check(t0 + 100 * MS, 50 * MS)).0);
        assert!(w.is_stalled());
        drop(stuck); // timed out: passive health counts it, the stall is over
        assert!(!w.is_stalled());
        assert_eq!(w.waiting(), 0);
        assert_eq!(w.stalled(check(t0 + 200 * MS, 50 * MS)), (false, None));
    }
}
