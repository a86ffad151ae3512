//! Round-robin selection over the current endpoint set.
//!
//! The set and its cursor are swapped in whole with [`ArcSwap`]: a request only `load()`s the
//! current [`Rotation`] and takes the next position with one atomic `fetch_add`, so every worker
//! shares one position and the sequence is exact under concurrency (300 requests over three
//! endpoints give each exactly 100).
//!
//! When discovery changes the set, the new rotation starts right after the endpoint served last,
//! found by the set's order rather than by index, so a change makes no endpoint skip its turn and
//! repeats at most one pick (a request that loaded the old rotation just before the swap).
//!
//! Endpoints that health checks have out of rotation are passed over, and so are the ones a
//! request already tried and, while another can take the request, the ones that have stalled
//! ([`crate::stall`]). When no endpoint is healthy, every endpoint is tried in turn anyway
//! (as nginx and Envoy do): a health check can be wrong, a 503 is sure to be.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use log::{info, warn};

use crate::endpoint::{Endpoint, EndpointSet};
use crate::health::{Admission, PassivePolicy};
use crate::stall;

/// One endpoint set with the round-robin position into it.
#[derive(Debug, Default)]
pub struct Rotation {
    set: EndpointSet,
    /// Count of picks made from this set, plus the start offset given at the swap.
    next: AtomicUsize,
}

impl Rotation {
    /// A rotation over `set` whose first pick is `set.endpoints()[start]`.
    pub fn new(set: EndpointSet, start: usize) -> Self {
        Rotation {
            set,
            next: AtomicUsize::new(start),
        }
    }

    /// The endpoint set this rotation runs over.
    pub fn set(&self) -> &EndpointSet {
        &self.set
    }

    /// The next endpoint in turn, health ignored, or `None` when the set is empty.
    pub fn select(&self) -> Option<&Arc<Endpoint>> {
        let endpoints = self.set.endpoints();
        if endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let endpoint = &endpoints[n % endpoints.len()];
        endpoint.count_request();
        Some(endpoint)
    }

    /// The next endpoint in turn that health checks admit, `tried` does not hold and, under
    /// `stall`, has not stalled ([`crate::stall`]); failing that, the next one admitted though
    /// stalled; failing that, the next one not tried whatever its health (`healthy` is then
    /// false); `None` when every endpoint was tried or the set is empty. Endpoints drained by
    /// hand are never picked.
    pub fn select_healthy(
        &self,
        tried: &[Arc<Endpoint>],
        policy: &PassivePolicy,
        stall: Option<stall::Check>,
    ) -> Option<Pick> {
        let endpoints = self.set.endpoints();
        let len = endpoints.len();
        let untried = |e: &Arc<Endpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
        let mut passed_stalled = false;
        for _ in 0..len {
            let endpoint = &endpoints[self.next.fetch_add(1, Ordering::Relaxed) % len];
            if !untried(endpoint) {
                continue;
            }
            // Before `admit`, which may grant the single passive trial.
            if stall.is_some_and(|check| endpoint.stalled(check)) {
                passed_stalled = true;
                continue;
            }
            if endpoint.admit(policy) != Admission::No {
                return Some(self.picked(endpoint, true));
            }
        }
        if passed_stalled {
            // Every admitted endpoint has stalled: round robin over them as if none had.
            for _ in 0..len {
                let endpoint = &endpoints[self.next.fetch_add(1, Ordering::Relaxed) % len];
                if untried(endpoint) && endpoint.admit(policy) != Admission::No {
                    return Some(self.picked(endpoint, true));
                }
            }
        }
        for _ in 0..len {
            let endpoint = &endpoints[self.next.fetch_add(1, Ordering::Relaxed) % len];
            // An endpoint drained by hand stays out even here.
            if untried(endpoint) && endpoint.is_enabled() {
                return Some(self.picked(endpoint, false));
            }
        }
        None
    }

    fn picked(&self, endpoint: &Arc<Endpoint>, healthy: bool) -> Pick {
        endpoint.count_request();
        Pick {
            endpoint: endpoint.clone(),
            healthy,
        }
    }

    /// The endpoint picked last, or `None` before the first pick.
    fn last_selected(&self) -> Option<&Arc<Endpoint>> {
        let endpoints = self.set.endpoints();
        let n = self.next.load(Ordering::Relaxed);
        if endpoints.is_empty() || n == 0 {
            return None;
        }
        Some(&endpoints[(n - 1) % endpoints.len()])
    }
}

/// The endpoint chosen for one try of a request.
#[derive(Debug, Clone)]
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// False when no untried endpoint was healthy and this one was taken anyway.
    pub healthy: bool,
}

/// Round robin over an endpoint set that discovery replaces while requests run.
#[derive(Debug)]
pub struct RoundRobin {
    current: ArcSwap<Rotation>,
    passive: PassivePolicy,
    /// Set while requests find no healthy endpoint, so entering and leaving that mode is
    /// logged once each.
    none_healthy: AtomicBool,
    /// Times the endpoint set was replaced (for `/metrics`).
    changes: AtomicU64,
    /// Addresses drained by hand: an endpoint that leaves discovery and comes back at one of
    /// them stays drained (as HAProxy keeps a server in maintenance).
    drained: std::sync::Mutex<std::collections::HashSet<SocketAddr>>,
}

impl Default for RoundRobin {
    fn default() -> Self {
        Self::new(PassivePolicy::default())
    }
}

impl RoundRobin {
    /// A selector with no endpoints (every selection returns `None` until the first
    /// `replace`), taking endpoints out after failures as `passive` says.
    pub fn new(passive: PassivePolicy) -> Self {
        RoundRobin {
            current: ArcSwap::default(),
            passive,
            none_healthy: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            drained: Default::default(),
        }
    }

    /// The passive health policy requests report failures against.
    pub fn passive_policy(&self) -> &PassivePolicy {
        &self.passive
    }

    /// Chooses the endpoint for one try: see [`Rotation::select_healthy`]. Logs once when
    /// requests start finding no healthy endpoint, and once when they find one again.
    pub fn select(&self, tried: &[Arc<Endpoint>]) -> Option<Pick> {
        self.select_at(tried, Instant::now())
    }

    /// [`Self::select`] with the time already read (`now`), for a caller that needs it too:
    /// the forwarding path times the try from the same moment.
    pub fn select_at(&self, tried: &[Arc<Endpoint>], now: Instant) -> Option<Pick> {
        let stall = stall::Check::at(now, self.passive.stall_after);
        let pick = self
            .current
            .load()
            .select_healthy(tried, &self.passive, stall)?;
        if tried.is_empty() {
            let was = self.none_healthy.load(Ordering::Relaxed);
            if was == pick.healthy {
                self.none_healthy.store(!pick.healthy, Ordering::Relaxed);
                if pick.healthy {
                    info!("health: healthy endpoints again; back to normal rotation");
                } else {
                    warn!("health: no endpoint is healthy; trying every endpoint in turn anyway");
                }
            }
        }
        Some(pick)
    }

    /// The rotation in force now; cheap, lock-free, and stable for as long as it is held.
    pub fn load(&self) -> Arc<Rotation> {
        self.current.load_full()
    }

    /// Replaces the endpoint set; the next pick follows the endpoint picked last.
    ///
    /// Called by discovery only (one writer). Requests that loaded the old rotation finish on
    /// it; their endpoints keep their state because [`EndpointSet::build`] reuses them.
    pub fn replace(&self, set: EndpointSet) {
        {
            let drained = self.drained.lock().unwrap_or_else(|e| e.into_inner());
            for endpoint in set.endpoints() {
                if drained.contains(&endpoint.addr()) {
                    endpoint.set_enabled(false);
                }
            }
        }
        let old = self.current.load();
        let start = match old.last_selected() {
            Some(last) => set.position_after(last),
            None => 0,
        };
        self.current.store(Arc::new(Rotation::new(set, start)));
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Drains (`enable` false) or enables every endpoint at `addr`, now and whenever discovery
    /// finds it again; returns the endpoints at that address, each with whether this changed
    /// it (empty: no such endpoint, and nothing is remembered).
    pub fn set_enabled(&self, addr: SocketAddr, enable: bool) -> Vec<(Arc<Endpoint>, bool)> {
        let rotation = self.current.load();
        let matching: Vec<Arc<Endpoint>> = rotation
            .set()
            .endpoints()
            .iter()
            .filter(|e| e.addr() == addr)
            .cloned()
            .collect();
        if !matching.is_empty() {
            let mut drained = self.drained.lock().unwrap_or_else(|e| e.into_inner());
            if enable {
                drained.remove(&addr);
            } else {
                drained.insert(addr);
            }
        }
        matching
            .into_iter()
            .map(|e| {
                let changed = e.set_enabled(enable);
                (e, changed)
            })
            .collect()
    }

    /// Times the endpoint set was replaced since the start (the first discovery included).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::UpstreamEndpoints;
    use std::collections::HashMap;
    use std::time::Duration;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 8080))
    }

    fn set_of(upstreams: &[(&str, &[u8])], previous: &EndpointSet) -> EndpointSet {
        let found: Vec<UpstreamEndpoints> = upstreams
            .iter()
            .map(|(name, hosts)| UpstreamEndpoints {
                upstream: Arc::from(*name),
                addrs: hosts.iter().map(|h| addr(*h)).collect(),
            })
            .collect();
        EndpointSet::build(&found, previous, false)
    }

    fn healthy_picks(rr: &RoundRobin, n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|_| rr.select(&[]).expect("an endpoint").endpoint.addr())
            .collect()
    }

    fn picks(rr: &RoundRobin, n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|_| rr.load().select().expect("an endpoint").addr())
            .collect()
    }

    /// An empty set selects nothing, so the caller can answer 503 (and nothing divides by zero).
    #[test]
    fn empty_set_selects_none() {
        let rr = RoundRobin::default();
        assert!(rr.load().select().is_none());
        rr.replace(set_of(&[("a:80", &[])], &EndpointSet::default()));
        assert!(rr.load().select().is_none());
        assert_eq!(rr.load().set().without_endpoints(), &[Arc::from("a:80")]);
    }

    /// Upstreams keep their configured order and addresses are sorted within each.
    #[test]
    fn order_is_upstreams_as_configured_then_sorted_addresses() {
        let rr = RoundRobin::default();
        rr.replace(set_of(
            &[("b:80", &[9, 3]), ("a:80", &[2, 1])],
            &EndpointSet::default(),
        ));
        assert_eq!(
            picks(&rr, 5),
            vec![addr(3), addr(9), addr(1), addr(2), addr(3)]
        );
    }

    /// Picks from many threads at once still give every endpoint the same share.
    #[test]
    fn concurrent_picks_are_exactly_even() {
        let rr = Arc::new(RoundRobin::default());
        rr.replace(set_of(&[("a:80", &[1, 2, 3])], &EndpointSet::default()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let rr = rr.clone();
                std::thread::spawn(move || picks(&rr, 3000))
            })
            .collect();
        let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
        for t in threads {
            for a in t.join().unwrap() {
                *counts.entry(a).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| c == 8000), "{counts:?}");
    }

    /// Adding endpoints mid-cycle continues after the last pick: the new ones join this cycle.
    #[test]
    fn growing_the_set_neither_skips_nor_repeats() {
        let rr = RoundRobin::default();
        rr.replace(set_of(&[("a:80", &[1, 2, 3])], &EndpointSet::default()));
        assert_eq!(picks(&rr, 2), vec![addr(1), addr(2)]);
        let old = rr.load();
        rr.replace(set_of(&[("a:80", &[1, 2, 3, 4, 5])], old.set()));
        assert_eq!(
            picks(&rr, 6),
            vec![addr(3), addr(4), addr(5), addr(1), addr(2), addr(3)]
        );
    }

    /// Removing the endpoint that was picked last (and its successor) resumes at the next one left.
    #[test]
    fn shrinking_the_set_resumes_after_the_last_pick() {
        let rr = RoundRobin::default();
        rr.replace(set_of(
            &[("a:80", &[1, 2, 3, 4, 5])],
            &EndpointSet::default(),
        ));
        assert_eq!(picks(&rr, 3), vec![addr(1), addr(2), addr(3)]);
        let old = rr.load();
        rr.replace(set_of(&[("a:80", &[1, 2, 5])], old.set()));
        assert_eq!(picks(&rr, 4), vec![addr(5), addr(1), addr(2), addr(5)]);
    }

    /// After the last endpoint in order was served, a swap wraps to the start.
    #[test]
    fn swap_after_the_end_of_a_cycle_wraps() {
        let rr = RoundRobin::default();
        rr.replace(set_of(&[("a:80", &[1, 2])], &EndpointSet::default()));
        assert_eq!(picks(&rr, 2), vec![addr(1), addr(2)]);
        let old = rr.load();
        rr.replace(set_of(&[("a:80", &[1, 2])], old.set()));
        assert_eq!(picks(&rr, 2), vec![addr(1), addr(2)]);
    }

    /// An endpoint kept across a swap is the same object, so its counters carry over.
    #[test]
    fn swap_keeps_state_of_endpoints_present_in_both() {
        let rr = RoundRobin::default();
        rr.replace(set_of(&[("a:80", &[1, 2])], &EndpointSet::default()));
        picks(&rr, 4);
        let old = rr.load();
        rr.replace(set_of(&[("a:80", &[2, 3])], old.set()));
        let new = rr.load();
        let kept = &new.set().endpoints()[0];
        assert_eq!(kept.addr(), addr(2));
        assert!(Arc::ptr_eq(kept, &old.set().endpoints()[1]));
        assert_eq!(kept.requests(), 2);
        assert_eq!(new.set().endpoints()[1].requests(), 0);
    }

    /// Endpoints out of rotation are passed over without disturbing the others' order.
    #[test]
    fn unhealthy_endpoints_are_passed_over() {
        let rr = RoundRobin::new(PassivePolicy::default());
        rr.replace(set_of(&[("a:80", &[1, 2, 3])], &EndpointSet::default()));
        let second = rr.load().set().endpoints()[1].clone();
        assert!(second
            .report_failure(rr.passive_policy(), "refused")
            .is_some());
        assert_eq!(
            healthy_picks(&rr, 4),
            vec![addr(1), addr(3), addr(1), addr(3)]
        );
    }

    fn stall_check(at: Instant) -> stall::Check {
        stall::Check {
            now: stall::nanos(at),
            after: 50_000_000,
        }
    }

    fn picks_under(rr: &RoundRobin, check: stall::Check, n: usize) -> Vec<(SocketAddr, bool)> {
        (0..n)
            .map(|_| {
                let pick = rr
                    .load()
                    .select_healthy(&[], rr.passive_policy(), Some(check))
                    .expect("an endpoint");
                (pick.endpoint.addr(), pick.healthy)
            })
            .collect()
    }

    /// An endpoint that answers nothing while a try waits on it is passed over once the
    /// threshold has passed, and is back in turn with its next answer.
    #[test]
    fn stalled_endpoints_are_passed_over_until_they_answer() {
        let rr = RoundRobin::new(PassivePolicy::default());
        rr.replace(set_of(&[("a:80", &[1, 2, 3])], &EndpointSet::default()));
        let t0 = Instant::now();
        let second = rr.load().set().endpoints()[1].clone();
        let waiting = second.watch().wait(t0);
        let early = picks_under(&rr, stall_check(t0 + Duration::from_millis(40)), 3);
        assert_eq!(
            early,
            vec![(addr(1), true), (addr(2), true), (addr(3), true)]
        );
        let late = stall_check(t0 + Duration::from_millis(60));
        assert_eq!(
            picks_under(&rr, late, 4),
            vec![
                (addr(1), true),
                (addr(3), true),
                (addr(1), true),
                (addr(3), true)
            ]
        );
        assert_eq!(second.watch().stalls(), 1);
        second.answered(
            waiting,
            t0 + Duration::from_millis(70),
            Duration::from_millis(70),
        );
        assert_eq!(
            picks_under(&rr, late, 3),
            vec![(addr(1), true), (addr(2), true), (addr(3), true)]
        );
    }

    /// When every endpoint health checks admit has stalled, round robin goes on over them (no
    /// "nothing healthy" mode), and an endpoint out of rotation stays out.
    #[test]
    fn when_all_admitted_endpoints_stalled_they_still_take_turns() {
        let rr = RoundRobin::new(PassivePolicy::default());
        rr.replace(set_of(&[("a:80", &[1, 2, 3])], &EndpointSet::default()));
        let t0 = Instant::now();
        let endpoints = rr.load().set().endpoints().to_vec();
        endpoints[2].report_failure(rr.passive_policy(), "refused");
        let _waiting: Vec<_> = endpoints[..2].iter().map(|e| e.watch().wait(t0)).collect();
        let check = stall_check(t0 + Duration::from_millis(60));
        assert_eq!(
            picks_under(&rr, check, 4),
            vec![
                (addr(1), true),
                (addr(2), true),
                (addr(1), true),
                (addr(2), true)
            ]
        );
    }

    /// Passing over a stalled endpoint does not use up its single passive trial.
    #[test]
    fn a_stalled_endpoint_keeps_its_passive_trial() {
        let policy = PassivePolicy {
            fail_timeout: Duration::from_millis(1),
            ..PassivePolicy::default()
        };
        let rr = RoundRobin::new(policy);
        rr.replace(set_of(&[("a:80", &[1, 2])], &EndpointSet::default()));
        let second = rr.load().set().endpoints()[1].clone();
        second.report_failure(&policy, "refused");
        std::thread::sleep(Duration::from_millis(5));
        let t0 = Instant::now();
        let waiting = second.watch().wait(t0);
        let check = stall_check(t0 + Duration::from_millis(60));
        assert_eq!(
            picks_under(&rr, check, 3),
            vec![(addr(1), true), (addr(1), true), (addr(1), true)]
        );
        drop(waiting);
        let picks = picks_under(&rr, check, 2);
        assert!(picks.contains(&(addr(2), true)), "{picks:?}");
    }

    /// A retry never gets an endpoint the request already tried; when all were, it gets none.
    #[test]
    fn retries_get_untried_endpoints_then_none() {
        let rr = RoundRobin::new(PassivePolicy::default());
        rr.replace(set_of(&[("a:80", &[1, 2])], &EndpointSet::default()));
        let first = rr.select(&[]).unwrap().endpoint;
        let second = rr.select(std::slice::from_ref(&first)).unwrap().endpoint;
        assert_ne!(first.addr(), second.addr());
        assert!(rr.select(&[first, second]).is_none());
    }

    /// With no endpoint healthy, every endpoint is still tried in turn (marked unhealthy).
    #[test]
    fn with_none_healthy_every_endpoint_is_tried_in_turn() {
        let rr = RoundRobin::new(PassivePolicy::default());
        rr.replace(set_of(&[("a:80", &[1, 2])], &EndpointSet::default()));
        for e in rr.load().set().endpoints() {
            e.report_failure(rr.passive_policy(), "refused");
        }
        let a = rr.select(&[]).unwrap();
        assert!(!a.healthy);
        let b = rr.select(std::slice::from_ref(&a.endpoint)).unwrap();
        assert!(!b.healthy);
        assert_ne!(a.endpoint.addr(), b.endpoint.addr());
    }

    /// A request in flight keeps its endpoint counted after the endpoint leaves the set, and
    /// the count returns to zero when the request ends.
    #[test]
    fn in_flight_survives_removal_and_drops_back() {
        let rr = RoundRobin::new(PassivePolicy::default());
        rr.replace(set_of(&[("a:80", &[1, 2])], &EndpointSet::default()));
        let pick = rr.select(&[]).unwrap().endpoint;
        let guard = pick.start_request();
        let old = rr.load();
        rr.replace(set_of(&[("a:80", &[2])], old.set()));
        assert_eq!(pick.in_flight(), 1);
        assert!(rr
            .load()
            .set()
            .endpoints()
            .iter()
            .all(|e| e.addr() != pick.addr()));
        assert_eq!(healthy_picks(&rr, 2), vec![addr(2), addr(2)]);
        drop(guard);
        assert_eq!(pick.in_flight(), 0);
    }

    /// The same address under two upstreams is two endpoints, each in its upstream's place.
    #[test]
    fn same_address_under_two_upstreams_is_two_endpoints() {
        let set = set_of(&[("a:80", &[1]), ("b:80", &[1])], &EndpointSet::default());
        assert_eq!(set.len(), 2);
        assert_eq!(set.endpoints()[0].upstream(), "a:80");
        assert_eq!(set.endpoints()[1].upstream(), "b:80");
    }

    /// A drained address stays drained when its endpoint leaves discovery and comes back new;
    /// enabling it lets the next one in.
    #[test]
    fn drains_outlive_discovery() {
        let rr = RoundRobin::default();
        rr.replace(set_of(&[("a", &[1, 2])], &EndpointSet::default()));
        assert_eq!(rr.set_enabled(addr(2), false).len(), 1);
        assert!(rr.set_enabled(addr(9), false).is_empty());
        rr.replace(set_of(&[("a", &[1])], rr.load().set()));
        rr.replace(set_of(&[("a", &[1, 2])], rr.load().set()));
        let back = rr.load().set().endpoints()[1].clone();
        assert_eq!(back.addr(), addr(2));
        assert!(!back.is_enabled());
        assert!(rr.set_enabled(addr(2), true)[0].1);
        assert!(back.is_enabled());
        rr.replace(set_of(&[("a", &[1])], rr.load().set()));
        rr.replace(set_of(&[("a", &[1, 2])], rr.load().set()));
        assert!(rr.load().set().endpoints()[1].is_enabled());
    }
}
