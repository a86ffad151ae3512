//! Discovery: turns configured upstream names into endpoints, again and again.
//!
//! Every interval each upstream is resolved anew (Docker's DNS answers with a TTL of 600 s, so
//! the TTL is not trusted; a compose `--scale` shows up on the next tick). The endpoints of all
//! upstreams form one [`EndpointSet`] in a stable order, and the set replaces the old one in one
//! atomic swap, only when it changed. An upstream that fails to resolve keeps its last known
//! endpoints; failures and recoveries are logged once per change, not once per tick.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use log::{info, warn};
use tokio::sync::oneshot;

use crate::config::Upstream;
use crate::endpoint::{EndpointSet, UpstreamEndpoints};
use crate::selection::RoundRobin;

/// How long one resolution may take before it counts as failed; the lookup thread is left to
/// finish on its own.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Turns an upstream into socket addresses.
pub trait Resolve: Send + Sync + 'static {
    /// Every address `upstream` has now. An empty answer means the name exists with no
    /// address; an error means it could not be resolved (the last answer is kept).
    fn resolve(
        &self,
        upstream: &Upstream,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
}

/// The system resolver (`getaddrinfo`, in a blocking thread): every A and AAAA record, and
/// `/etc/hosts`. IP literals are returned as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct DnsResolver;

impl Resolve for DnsResolver {
    async fn resolve(&self, upstream: &Upstream) -> io::Result<Vec<SocketAddr>> {
        let addrs = tokio::net::lookup_host((upstream.host.as_str(), upstream.port)).await?;
        Ok(addrs.collect())
    }
}

/// A resolver whose answers the caller sets: for tests and fixed address lists.
///
/// A host it has no answer for fails to resolve.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    answers: Arc<Mutex<Answers>>,
}

/// Host name to the addresses it resolves to, or the reason it fails.
type Answers = HashMap<String, Result<Vec<SocketAddr>, String>>;

impl StaticResolver {
    /// A resolver that knows no host yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `host` resolves to `addrs` (with the upstream's port ignored).
    pub fn set(&self, host: &str, addrs: Vec<SocketAddr>) {
        self.lock().insert(host.to_string(), Ok(addrs));
    }

    /// From now on `host` fails to resolve with `reason`.
    pub fn fail(&self, host: &str, reason: &str) {
        self.lock()
            .insert(host.to_string(), Err(reason.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        // A panic while holding this lock cannot leave the map half-written.
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Resolve for StaticResolver {
    async fn resolve(&self, upstream: &Upstream) -> io::Result<Vec<SocketAddr>> {
        match self.lock().get(&upstream.host) {
            Some(Ok(addrs)) => Ok(addrs.clone()),
            Some(Err(reason)) => Err(io::Error::other(reason.clone())),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no answer set for {}", upstream.host),
            )),
        }
    }
}

/// What is known of one upstream between ticks.
#[derive(Debug, Default)]
struct Known {
    /// Sorted addresses from the last successful resolution.
    addrs: Vec<SocketAddr>,
    /// The current failure, if the last resolution failed; compared to log only changes.
    error: Option<String>,
}

/// The discovery loop's state: the upstreams, what each resolved to, and where to publish.
pub struct Discovery<R> {
    upstreams: Vec<Upstream>,
    names: Vec<Arc<str>>,
    known: Vec<Known>,
    resolver: R,
    selector: Arc<RoundRobin>,
    /// Whether new endpoints wait for a good active probe before they take requests.
    probed: bool,
}

impl<R: Resolve> Discovery<R> {
    /// Discovery of `upstreams` through `resolver`, publishing into `selector`. New endpoints
    /// take requests at once; see [`Discovery::probed`].
    pub fn new(upstreams: Vec<Upstream>, resolver: R, selector: Arc<RoundRobin>) -> Self {
        Discovery {
            probed: false,
            names: upstreams.iter().map(|u| Arc::from(u.to_string())).collect(),
            known: upstreams.iter().map(|_| Known::default()).collect(),
            upstreams,
            resolver,
            selector,
        }
    }

    /// New endpoints wait for their first good active probe before they take requests.
    pub fn probed(mut self, probed: bool) -> Self {
        self.probed = probed;
        self
    }

    /// Resolves every upstream once (all at once) and swaps in the new set if it changed.
    /// Returns whether the set changed.
    pub async fn tick(&mut self) -> bool {
        let answers = join_all(self.upstreams.iter().map(|u| async {
            match tokio::time::timeout(RESOLVE_TIMEOUT, self.resolver.resolve(u)).await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
            }
        }))
        .await;

        for ((name, known), answer) in self.names.iter().zip(&mut self.known).zip(answers) {
            observe(name, known, answer);
        }

        let found: Vec<UpstreamEndpoints> = self
            .names
            .iter()
            .zip(&self.known)
            .map(|(name, known)| UpstreamEndpoints {
                upstream: name.clone(),
                addrs: known.addrs.clone(),
            })
            .collect();
        let current = self.selector.load();
        let set = EndpointSet::build(&found, current.set(), self.probed);
        if set.same_endpoints(current.set()) {
            return false;
        }
        self.selector.replace(set);
        true
    }

    /// Ticks every `interval` until `shutdown` fires (or its sender is dropped).
    ///
    /// The first tick runs at once. A slow resolution delays the next tick rather than
    /// stacking ticks up.
    pub async fn run(mut self, interval: Duration, mut shutdown: oneshot::Receiver<()>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {
                    self.tick().await;
                }
            }
        }
    }
}

/// Applies one resolution answer to what is known of an upstream, logging only changes.
fn observe(name: &str, known: &mut Known, answer: Result<Vec<SocketAddr>, String>) {
    match answer {
        Ok(mut addrs) => {
            addrs.sort_unstable();
            addrs.dedup();
            if known.error.take().is_some() {
                info!("discovery: {name} resolves again");
            }
            if addrs != known.addrs {
                let added: Vec<_> = addrs.iter().filter(|a| !known.addrs.contains(a)).collect();
                let removed: Vec<_> = known.addrs.iter().filter(|a| !addrs.contains(a)).collect();
                info!(
                    "discovery: {name} has {} endpoint(s) {addrs:?} (added {added:?}, removed {removed:?})",
                    addrs.len()
                );
                known.addrs = addrs;
            }
        }
        Err(reason) => {
            if known.error.as_deref() != Some(reason.as_str()) {
                warn!(
                    "discovery: cannot resolve {name}: {reason}; keeping its {} last known endpoint(s) {:?}",
                    known.addrs.len(),
                    known.addrs
                );
                known.error = Some(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(host: &str) -> Upstream {
        Upstream {
            host: host.into(),
            port: 80,
        }
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 80))
    }

    fn addrs_of(selector: &RoundRobin) -> Vec<SocketAddr> {
        selector
            .load()
            .set()
            .endpoints()
            .iter()
            .map(|e| e.addr())
            .collect()
    }

    /// A tick publishes every upstream's addresses in one set, upstreams in configured order.
    #[tokio::test]
    async fn tick_publishes_all_upstreams_in_order() {
        let resolver = StaticResolver::new();
        resolver.set("b", vec![addr(4), addr(3)]);
        resolver.set("a", vec![addr(1)]);
        let selector = Arc::new(RoundRobin::default());
        let mut d = Discovery::new(
            vec![upstream("b"), upstream("a")],
            resolver,
            selector.clone(),
        );
        assert!(d.tick().await);
        assert_eq!(addrs_of(&selector), vec![addr(3), addr(4), addr(1)]);
        assert!(!d.tick().await, "an unchanged answer must not swap the set");
    }

    /// A failing name keeps its last known endpoints; a name never resolved has none.
    #[tokio::test]
    async fn failure_keeps_last_known_endpoints() {
        let resolver = StaticResolver::new();
        resolver.set("a", vec![addr(1), addr(2)]);
        let selector = Arc::new(RoundRobin::default());
        let mut d = Discovery::new(
            vec![upstream("a"), upstream("never")],
            resolver.clone(),
            selector.clone(),
        );
        d.tick().await;
        resolver.fail("a", "SERVFAIL");
        assert!(!d.tick().await);
        assert_eq!(addrs_of(&selector), vec![addr(1), addr(2)]);
        assert_eq!(
            selector.load().set().without_endpoints(),
            &[Arc::<str>::from("never:80")]
        );
        assert_eq!(d.known[0].error.as_deref(), Some("SERVFAIL"));
        resolver.set("a", vec![addr(2)]);
        assert!(d.tick().await);
        assert_eq!(addrs_of(&selector), vec![addr(2)]);
        assert!(d.known[0].error.is_none());
    }

    /// An endpoint that stays across a change keeps its state (the same object).
    #[tokio::test]
    async fn change_keeps_state_of_endpoints_in_both() {
        let resolver = StaticResolver::new();
        resolver.set("a", vec![addr(1), addr(2)]);
        let selector = Arc::new(RoundRobin::default());
        let mut d = Discovery::new(vec![upstream("a")], resolver.clone(), selector.clone());
        d.tick().await;
        let before = selector.load();
        before.select();
        before.select();
        resolver.set("a", vec![addr(2), addr(3)]);
        assert!(d.tick().await);
        let after = selector.load();
        assert!(Arc::ptr_eq(
            &before.set().endpoints()[1],
            &after.set().endpoints()[0]
        ));
        assert_eq!(after.set().endpoints()[0].requests(), 1);
    }

    /// The run loop stops when told to.
    #[tokio::test]
    async fn run_stops_on_shutdown() {
        let resolver = StaticResolver::new();
        resolver.set("a", vec![addr(1)]);
        let selector = Arc::new(RoundRobin::default());
        let d = Discovery::new(vec![upstream("a")], resolver, selector.clone());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(d.run(Duration::from_millis(10), rx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(addrs_of(&selector), vec![addr(1)]);
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("discovery stops within 2s")
            .unwrap();
    }

    /// The system resolver finds localhost (at least 127.0.0.1) and passes IP literals through.
    #[tokio::test]
    async fn dns_resolver_resolves_localhost_and_literals() {
        let found = DnsResolver.resolve(&upstream("localhost")).await.unwrap();
        assert!(
            found.contains(&"127.0.0.1:80".parse().unwrap()),
            "{found:?}"
        );
        let literal = DnsResolver.resolve(&upstream("::1")).await.unwrap();
        assert_eq!(literal, vec!["[::1]:80".parse().unwrap()]);
    }
}
