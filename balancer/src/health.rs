//! Health: which endpoints may take requests, from what requests and probes saw.
//!
//! Two independent verdicts decide, and an endpoint is in rotation only when both agree:
//! - **Passive** (nginx's `max_fails`/`fail_timeout`): a failed connect, a reset before the
//!   response or a timeout counts a failure; `max_fails` failures within `fail_timeout` take the
//!   endpoint out for `fail_timeout`, after which one trial request decides whether it returns.
//! - **Active** (HAProxy's `check` with `rise`/`fall`): `GET <path>` every interval; `fall`
//!   failed probes in a row take the endpoint out, `rise` good ones bring it back. A new endpoint
//!   enters once its first probe passes, also after failed ones have reported it down: a replica
//!   that Docker's DNS names before its server listens fails a few probes while it starts. For
//!   its first 10 s, until that first pass, it is probed every 200 ms.
//!
//! Both are pure state machines ([`PassiveState`], [`ActiveState`]) that are told an outcome
//! and the time, and report a [`Flip`] only when the verdict changed; the caller logs flips.
//! [`run_probes`] drives the active checks for whatever endpoints discovery currently has.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use tokio::sync::oneshot;

use crate::endpoint::Endpoint;
use crate::selection::RoundRobin;

/// A change of an endpoint's verdict, with the reason, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flip {
    /// The endpoint enters (or returns to) the rotation.
    Up(String),
    /// The endpoint leaves the rotation.
    Down(String),
}

/// Settings of the passive check.
#[derive(Debug, Clone, Copy)]
pub struct PassivePolicy {
    /// Failures within `fail_timeout` that take an endpoint out; 0 turns passive checks off.
    pub max_fails: u32,
    /// The window failures are counted in, and how long an endpoint stays out.
    pub fail_timeout: Duration,
    /// The least time an endpoint may answer nothing while tries wait on it before selection
    /// passes over it ([`crate::stall`]); zero turns that off.
    pub stall_after: Duration,
}

impl Default for PassivePolicy {
    /// nginx's defaults: one failure takes an endpoint out for 10 s.
    fn default() -> Self {
        PassivePolicy {
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            stall_after: Duration::from_millis(50),
        }
    }
}

/// What passive checking lets a request do with an endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In rotation.
    Yes,
    /// Out, but its time out is over: this request is the single trial that decides.
    Trial,
    /// Out.
    No,
}

/// nginx-style failure counting for one endpoint.
#[derive(Debug, Default, Clone)]
pub struct PassiveState {
    failures: u32,
    window_start: Option<Instant>,
    /// Out of rotation until then.
    out_until: Option<Instant>,
    /// When the trial request after a time out was let through; a trial whose outcome never
    /// came back (the client went away) is replaced by another after `fail_timeout`.
    trial_since: Option<Instant>,
}

impl PassiveState {
    /// Whether the endpoint is out of rotation (possibly awaiting its trial).
    pub fn is_out(&self) -> bool {
        self.out_until.is_some()
    }

    /// Whether a success has anything to reset (failures counted, or out of rotation).
    pub fn is_dirty(&self) -> bool {
        self.failures > 0 || self.out_until.is_some()
    }

    /// Decides whether a request may go to the endpoint at `now`; grants at most one trial at
    /// a time once the time out is over.
    pub fn admit(&mut self, now: Instant, policy: &PassivePolicy) -> Admission {
        match self.out_until {
            None => Admission::Yes,
            Some(until) if now < until => Admission::No,
            Some(_) => match self.trial_since {
                Some(since) if now.duration_since(since) < policy.fail_timeout => Admission::No,
                _ => {
                    self.trial_since = Some(now);
                    Admission::Trial
                }
            },
        }
    }

    /// Records a failed request at `now`. Returns `Down` when this failure takes the
    /// endpoint out. A failed trial keeps it out for another `fail_timeout` (no flip).
    pub fn on_failure(
        &mut self,
        now: Instant,
        policy: &PassivePolicy,
        reason: &str,
    ) -> Option<Flip> {
        if policy.max_fails == 0 {
            return None;
        }
        if self.out_until.is_some() {
            if self.trial_since.take().is_some() {
                self.out_until = Some(now + policy.fail_timeout);
            }
            return None;
        }
        match self.window_start {
            Some(start) if now.duration_since(start) <= policy.fail_timeout => {}
            _ => {
                self.window_start = Some(now);
                self.failures = 0;
            }
        }
        self.failures += 1;
        if self.failures < policy.max_fails {
            return None;
        }
        self.failures = 0;
        self.window_start = None;
        self.out_until = Some(now + policy.fail_timeout);
        Some(Flip::Down(format!(
            "{} failed request(s) within {:?}, last: {reason}; out for {:?}",
            policy.max_fails, policy.fail_timeout, policy.fail_timeout
        )))
    }

    /// Records a successful request. Returns `Up` when it was the trial that brings the
    /// endpoint back. A success of a request sent before the endpoint went out changes nothing.
    pub fn on_success(&mut self) -> Option<Flip> {
        if self.out_until.is_none() {
            self.failures = 0;
            self.window_start = None;
            return None;
        }
        self.trial_since.take()?;
        self.out_until = None;
        Some(Flip::Up("trial request succeeded".into()))
    }
}

/// Settings of the active check.
#[derive(Debug, Clone)]
pub struct ActivePolicy {
    /// Whether probes run at all; when off every endpoint counts as up for the active check.
    pub enabled: bool,
    /// Path probed with `GET`; a 2xx or 3xx answer passes.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Good probes in a row that bring a down endpoint back.
    pub rise: u32,
    /// Failed probes in a row that take an up endpoint out.
    pub fall: u32,
}

/// The active check's verdict on an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Not probed successfully yet: a new endpoint waits here for its first good probe.
    #[default]
    Unknown,
    Up,
    Down,
}

/// HAProxy-style rise/fall counting for one endpoint.
#[derive(Debug, Default, Clone)]
pub struct ActiveState {
    verdict: Verdict,
    /// Probes in a row whose result goes against the verdict (failures of an `Up` or `Unknown`
    /// endpoint, passes of a `Down` one).
    streak: u32,
    /// Whether the endpoint is past its start: a probe has passed, or its time to start ran out
    /// ([`settle`](Self::settle)). Until then its first pass brings it in, whatever failures
    /// came before (a replica probed before its server listens).
    settled: bool,
}

impl ActiveState {
    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Whether the endpoint is still starting: no probe has passed and it has not been settled.
    pub fn is_starting(&self) -> bool {
        !self.settled
    }

    /// Ends the endpoint's start without a pass (its time to start ran out): from now on it
    /// comes in after `rise` passes like any other. Reports `Down` if it was still `Unknown`.
    pub fn settle(&mut self, reason: &str) -> Option<Flip> {
        if self.settled {
            return None;
        }
        self.settled = true;
        if self.verdict != Verdict::Unknown {
            return None;
        }
        self.verdict = Verdict::Down;
        self.streak = 0;
        Some(Flip::Down(reason.to_string()))
    }

    /// Records one probe result (`Err` carries the reason) and reports a flip, if any.
    ///
    /// While the endpoint is starting, its first pass brings it `Up`, from `Unknown` or from a
    /// `Down` that failed probes of a replica still starting caused. Otherwise `Unknown` goes
    /// `Down` after `fall` failures; `Up` goes `Down` after `fall` failures in a row; `Down`
    /// goes `Up` after `rise` passes in a row.
    pub fn observe(&mut self, result: Result<(), String>, policy: &ActivePolicy) -> Option<Flip> {
        let (passed, reason) = match result {
            Ok(()) => (true, String::new()),
            Err(reason) => (false, reason),
        };
        if passed && !self.settled {
            self.settled = true;
            self.streak = 0;
            self.verdict = Verdict::Up;
            return Some(Flip::Up("first probe passed".into()));
        }
        let against = match self.verdict {
            Verdict::Unknown | Verdict::Up => !passed,
            Verdict::Down => passed,
        };
        if !against {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let flip = match self.verdict {
            Verdict::Unknown | Verdict::Up if self.streak >= policy.fall.max(1) => {
                Some(Flip::Down(format!(
                    "{} probe(s) in a row failed, last: {reason}",
                    self.streak
                )))
            }
            Verdict::Down if self.streak >= policy.rise.max(1) => Some(Flip::Up(format!(
                "{} probe(s) in a row passed",
                self.streak
            ))),
            _ => None,
        };
        if let Some(flip) = &flip {
            self.streak = 0;
            self.verdict = match flip {
                Flip::Up(_) => Verdict::Up,
                Flip::Down(_) => Verdict::Down,
            };
        }
        flip
    }
}

impl fmt::Display for Flip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flip::Up(reason) => write!(f, "up ({reason})"),
            Flip::Down(reason) => write!(f, "down ({reason})"),
        }
    }
}

/// Logs and counts a flip of `endpoint` seen by `check` ("passive" or "active").
pub fn log_flip(endpoint: &Endpoint, check: &str, flip: &Flip) {
    endpoint
        .stats()
        .record_flip(check, matches!(flip, Flip::Up(_)));
    match flip {
        Flip::Up(_) => info!(
            "health: {} ({}) is {flip} [{check}]",
            endpoint.addr(),
            endpoint.upstream()
        ),
        Flip::Down(_) => warn!(
            "health: {} ({}) is {flip} [{check}]",
            endpoint.addr(),
            endpoint.upstream()
        ),
    }
}

/// Probes one endpoint once: `GET <path>` on a fresh connection, within the timeout.
pub async fn probe(
    client: &awc::Client,
    endpoint: &Endpoint,
    policy: &ActivePolicy,
) -> Result<(), String> {
    let url = format!("{}{}", endpoint.base_url(), policy.path);
    let sent = client
        .get(url)
        .timeout(policy.timeout)
        .force_close()
        .send()
        .await;
    match sent {
        Ok(res) if res.status().is_success() || res.status().is_redirection() => Ok(()),
        Ok(res) => Err(format!("GET {} answered {}", policy.path, res.status())),
        Err(err) => Err(format!("GET {}: {err}", policy.path)),
    }
}

/// How often an endpoint that has never passed a probe is probed, during its first
/// [`NEW_ENDPOINT_WINDOW`].
const NEW_ENDPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// How long a new endpoint is starting while no probe passes: probed every
/// [`NEW_ENDPOINT_INTERVAL`], and in on its first pass. Then, not to flood a backend that fails
/// its checks from the start, it is probed at the interval and needs `rise` passes.
const NEW_ENDPOINT_WINDOW: Duration = Duration::from_secs(10);

/// How often the prober looks for endpoints that discovery added or removed.
const RESYNC: Duration = Duration::from_millis(100);

/// Runs active checks for every endpoint discovery currently has, until `shutdown` fires.
///
/// Each endpoint gets its own probe loop, started within 100 ms of its discovery (so a new
/// replica is probed at once) and stopped when it leaves the set. Must run on an actix
/// runtime: the probe client is not `Send`.
pub async fn run_probes(
    selector: Arc<RoundRobin>,
    policy: ActivePolicy,
    mut shutdown: oneshot::Receiver<()>,
) {
    let client = awc::Client::builder()
        .disable_redirects()
        .no_default_headers()
        .add_default_header(("user-agent", "rondo-health-check"))
        .finish();
    let client = std::rc::Rc::new(client);
    let policy = Arc::new(policy);
    let mut probers: HashMap<(String, SocketAddr), (Arc<Endpoint>, oneshot::Sender<()>)> =
        HashMap::new();
    loop {
        let rotation = selector.load();
        let endpoints = rotation.set().endpoints();
        probers.retain(|_, (endpoint, _)| endpoints.iter().any(|e| Arc::ptr_eq(e, endpoint)));
        for endpoint in endpoints {
            let key = (endpoint.upstream().to_string(), endpoint.addr());
            if probers.contains_key(&key) {
                continue;
            }
            let (stop, stopped) = oneshot::channel();
            probers.insert(key, (endpoint.clone(), stop));
            actix_web::rt::spawn(probe_loop(
                client.clone(),
                endpoint.clone(),
                policy.clone(),
                stopped,
            ));
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

async fn probe_loop(
    client: std::rc::Rc<awc::Client>,
    endpoint: Arc<Endpoint>,
    policy: Arc<ActivePolicy>,
    mut stopped: oneshot::Receiver<()>,
) {
    let discovered = Instant::now();
    loop {
        // Until its first good probe, for at most 10 s, a new endpoint is starting: it is probed
        // every 200 ms (or at the interval, if shorter), and its first pass brings it in, so a
        // replica probed before its server listens joins soon after it does. Then (a probe
        // started in those 10 s still counts) it needs `rise` passes like any other, probed at
        // the interval, not to flood a backend that fails its checks from the start.
        if endpoint.is_starting() && discovered.elapsed() >= NEW_ENDPOINT_WINDOW {
            let reason = format!(
                "no probe passed within {}s of discovery",
                NEW_ENDPOINT_WINDOW.as_secs()
            );
            if let Some(flip) = endpoint.settle_probes(&reason) {
                log_flip(&endpoint, "active", &flip);
            }
        }
        let result = probe(&client, &endpoint, &policy).await;
        if let Some(flip) = endpoint.observe_probe(result, &policy) {
            log_flip(&endpoint, "active", &flip);
        }
        let wait = if endpoint.is_starting() && discovered.elapsed() < NEW_ENDPOINT_WINDOW {
            policy.interval.min(NEW_ENDPOINT_INTERVAL)
        } else {
            policy.interval
        };
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive(max_fails: u32) -> PassivePolicy {
        PassivePolicy {
            max_fails,
            fail_timeout: Duration::from_secs(10),
            ..PassivePolicy::default()
        }
    }

    fn active(rise: u32, fall: u32) -> ActivePolicy {
        ActivePolicy {
            enabled: true,
            path: "/health".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise,
            fall,
        }
    }

    /// With max_fails 1, one failure takes the endpoint out for fail_timeout.
    #[test]
    fn one_failure_takes_out_with_default_max_fails() {
        let p = passive(1);
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        assert_eq!(s.admit(t0, &p), Admission::Yes);
        assert!(matches!(
            s.on_failure(t0, &p, "refused"),
            Some(Flip::Down(_))
        ));
        assert_eq!(s.admit(t0 + Duration::from_secs(9), &p), Admission::No);
    }

    /// Failures spread wider than fail_timeout never add up to max_fails.
    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let p = passive(2);
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        assert_eq!(s.on_failure(t0, &p, "x"), None);
        assert_eq!(s.on_failure(t0 + Duration::from_secs(11), &p, "x"), None);
        assert!(s
            .on_failure(t0 + Duration::from_secs(12), &p, "x")
            .is_some());
    }

    /// After the time out exactly one trial is let through; its success brings the endpoint back.
    #[test]
    fn one_trial_after_the_time_out_decides() {
        let p = passive(1);
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        s.on_failure(t0, &p, "x");
        let later = t0 + Duration::from_secs(10);
        assert_eq!(s.admit(later, &p), Admission::Trial);
        assert_eq!(
            s.admit(later, &p),
            Admission::No,
            "only one trial at a time"
        );
        assert!(matches!(s.on_success(), Some(Flip::Up(_))));
        assert_eq!(s.admit(later, &p), Admission::Yes);
    }

    /// A failed trial keeps the endpoint out for another fail_timeout, with no new flip.
    #[test]
    fn failed_trial_keeps_it_out() {
        let p = passive(1);
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        s.on_failure(t0, &p, "x");
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.admit(t1, &p), Admission::Trial);
        assert_eq!(s.on_failure(t1, &p, "x"), None);
        assert_eq!(s.admit(t1 + Duration::from_secs(9), &p), Admission::No);
        assert_eq!(s.admit(t1 + Duration::from_secs(10), &p), Admission::Trial);
    }

    /// A trial whose outcome never comes back is replaced after fail_timeout, so the endpoint
    /// cannot stay out forever.
    #[test]
    fn lost_trial_is_replaced() {
        let p = passive(1);
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        s.on_failure(t0, &p, "x");
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.admit(t1, &p), Admission::Trial);
        assert_eq!(s.admit(t1 + Duration::from_secs(10), &p), Admission::Trial);
    }

    /// Successes of requests sent before the endpoint went out do not bring it back.
    #[test]
    fn late_success_does_not_bring_back() {
        let p = passive(1);
        let t0 = Instant::now();
        let mut s = PassiveState::default();
        s.on_failure(t0, &p, "x");
        assert_eq!(s.on_success(), None);
        assert_eq!(s.admit(t0, &p), Admission::No);
    }

    /// max_fails 0 turns passive checking off.
    #[test]
    fn max_fails_zero_never_takes_out() {
        let p = passive(0);
        let mut s = PassiveState::default();
        for _ in 0..10 {
            assert_eq!(s.on_failure(Instant::now(), &p, "x"), None);
        }
        assert_eq!(s.admit(Instant::now(), &p), Admission::Yes);
    }

    /// A new endpoint enters on its first good probe.
    #[test]
    fn unknown_enters_on_first_pass() {
        let p = active(2, 3);
        let mut s = ActiveState::default();
        assert_eq!(s.verdict(), Verdict::Unknown);
        assert!(matches!(s.observe(Ok(()), &p), Some(Flip::Up(_))));
        assert_eq!(s.verdict(), Verdict::Up);
    }

    /// An up endpoint goes down only after `fall` failures in a row; a pass in between resets.
    #[test]
    fn up_goes_down_after_fall_failures_in_a_row() {
        let p = active(2, 3);
        let mut s = ActiveState::default();
        s.observe(Ok(()), &p);
        assert_eq!(s.observe(Err("a".into()), &p), None);
        assert_eq!(s.observe(Err("b".into()), &p), None);
        assert_eq!(s.observe(Ok(()), &p), None);
        assert_eq!(s.observe(Err("c".into()), &p), None);
        assert_eq!(s.observe(Err("d".into()), &p), None);
        let flip = s.observe(Err("refused".into()), &p).unwrap();
        assert!(
            matches!(&flip, Flip::Down(r) if r.contains("refused")),
            "{flip:?}"
        );
        assert_eq!(s.verdict(), Verdict::Down);
    }

    /// A down endpoint comes back after `rise` good probes in a row.
    #[test]
    fn down_comes_back_after_rise_passes() {
        let p = active(2, 1);
        let mut s = ActiveState::default();
        s.observe(Ok(()), &p);
        s.observe(Err("x".into()), &p);
        assert_eq!(s.verdict(), Verdict::Down);
        assert_eq!(s.observe(Ok(()), &p), None);
        assert_eq!(s.observe(Err("x".into()), &p), None);
        assert_eq!(s.observe(Ok(()), &p), None);
        assert!(matches!(s.observe(Ok(()), &p), Some(Flip::Up(_))));
    }

    /// A new endpoint whose first probes fail (a replica still starting) is reported down after
    /// `fall` of them, and still enters on its first pass; after that, `rise` passes are needed.
    #[test]
    fn a_new_endpoint_down_from_its_first_probes_enters_on_its_first_pass() {
        let p = active(2, 2);
        let mut s = ActiveState::default();
        s.observe(Err("refused".into()), &p);
        assert!(matches!(
            s.observe(Err("refused".into()), &p),
            Some(Flip::Down(_))
        ));
        assert!(s.is_starting());
        let flip = s.observe(Ok(()), &p);
        assert!(
            matches!(&flip, Some(Flip::Up(r)) if r == "first probe passed"),
            "{flip:?}"
        );
        assert!(!s.is_starting());
        assert_eq!(s.settle("late"), None, "a started endpoint stays as it is");
        assert_eq!(s.verdict(), Verdict::Up);
        s.observe(Err("x".into()), &p);
        s.observe(Err("x".into()), &p);
        assert_eq!(s.verdict(), Verdict::Down);
        assert_eq!(s.observe(Ok(()), &p), None, "one pass is no longer enough");
        assert!(matches!(s.observe(Ok(()), &p), Some(Flip::Up(_))));
    }

    /// An endpoint whose start ran out without a pass needs `rise` passes, as any other.
    #[test]
    fn a_settled_endpoint_that_never_passed_needs_rise_passes() {
        let p = active(3, 2);
        let mut s = ActiveState::default();
        s.observe(Err("refused".into()), &p);
        s.observe(Err("refused".into()), &p);
        assert_eq!(s.verdict(), Verdict::Down);
        assert_eq!(s.settle("ran out"), None, "down was reported already");
        assert!(!s.is_starting());
        assert_eq!(s.observe(Ok(()), &p), None);
        assert_eq!(s.observe(Ok(()), &p), None);
        assert!(matches!(s.observe(Ok(()), &p), Some(Flip::Up(r)) if r.contains("3 probe")));
    }

    /// An endpoint still `Unknown` when its start runs out (a `fall` larger than the probes
    /// of the start) is reported down then, with the reason, and needs `rise` passes.
    #[test]
    fn an_unknown_endpoint_settled_goes_down_with_the_reason() {
        let p = active(2, 100);
        let mut s = ActiveState::default();
        assert_eq!(s.observe(Err("refused".into()), &p), None);
        assert!(matches!(s.settle("ran out"), Some(Flip::Down(r)) if r == "ran out"));
        assert_eq!(s.verdict(), Verdict::Down);
        assert_eq!(s.observe(Ok(()), &p), None);
        assert!(matches!(s.observe(Ok(()), &p), Some(Flip::Up(_))));
    }

    /// A new endpoint that never passes is reported down after `fall` failures, once.
    #[test]
    fn unknown_goes_down_after_fall_failures() {
        let p = active(2, 3);
        let mut s = ActiveState::default();
        assert_eq!(s.observe(Err("x".into()), &p), None);
        assert_eq!(s.observe(Err("x".into()), &p), None);
        assert!(matches!(
            s.observe(Err("x".into()), &p),
            Some(Flip::Down(_))
        ));
        assert_eq!(
            s.observe(Err("x".into()), &p),
            None,
            "a flip is reported once"
        );
    }
}
