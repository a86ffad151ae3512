//! Configuration: command-line flags, each also read from a `RONDO_*` environment variable.
//!
//! A flag given on the command line wins over its environment variable. Every value is checked
//! before anything starts; [`explain`] turns a bad one into a message that names the setting,
//! the value and what is expected, and the binary exits with code 2.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use ipnet::IpNet;

/// `rondo healthcheck`: exit 0 when the balancer's listener accepts a connection on
/// 127.0.0.1, 1 otherwise (for Docker's HEALTHCHECK in images without a shell).
#[derive(Debug, Parser)]
#[command(name = "rondo healthcheck")]
pub struct Healthcheck {
    /// Port to check; defaults to the port of RONDO_LISTEN.
    #[arg(long, env = "RONDO_HEALTHCHECK_PORT")]
    pub port: Option<u16>,
    /// The balancer's listen address, whose port is checked when --port is not given.
    #[arg(long, env = "RONDO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

/// rondo: a round-robin HTTP load balancer that follows Docker Compose replicas.
///
/// Every flag can also be set by the environment variable named beside it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rondo",
    version,
    after_help = "Run `rondo healthcheck` to check a running balancer (exit 0 or 1)."
)]
pub struct Config {
    /// Address and port to accept client connections on.
    #[arg(
        long,
        env = "RONDO_LISTEN",
        default_value = "0.0.0.0:8080",
        value_parser = parse_listen,
        value_name = "ADDR:PORT"
    )]
    pub listen: SocketAddr,

    /// Comma-separated `host:port` list of upstreams; every address each host resolves to is an
    /// endpoint (e.g. server1:8080,server2:8080).
    #[arg(long, env = "RONDO_UPSTREAMS", value_name = "HOST:PORT,...")]
    pub upstreams: UpstreamList,

    /// How often every upstream name is resolved again (the DNS TTL is not trusted).
    #[arg(long, env = "RONDO_DISCOVERY_INTERVAL", default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    pub discovery_interval: Duration,

    /// Worker threads serving clients; 0 means one per CPU core.
    #[arg(long, env = "RONDO_WORKERS", default_value_t = 0, value_parser = parse_workers, value_name = "N")]
    pub workers: usize,

    /// Time allowed to open a connection to an endpoint (then another endpoint is tried, or
    /// 504). Keep it below RONDO_RESPONSE_TIMEOUT.
    #[arg(long, env = "RONDO_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_timeout, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Time allowed from sending a request to an endpoint until its response headers arrive
    /// (then 504). The response body is not limited.
    #[arg(long, env = "RONDO_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_timeout, value_name = "DURATION")]
    pub response_timeout: Duration,

    /// How long an idle keep-alive connection to an endpoint is kept for reuse. Keep it below
    /// the endpoints' own keep-alive timeout.
    #[arg(long, env = "RONDO_UPSTREAM_IDLE_TIMEOUT", default_value = "4s", value_parser = parse_timeout, value_name = "DURATION")]
    pub upstream_idle_timeout: Duration,

    /// Time allowed to receive a client's request head (then 408).
    #[arg(long, env = "RONDO_CLIENT_TIMEOUT", default_value = "5s", value_parser = parse_timeout, value_name = "DURATION")]
    pub client_timeout: Duration,

    /// How long an idle keep-alive client connection is kept open for its next request (as
    /// nginx's keepalive_timeout); 0 closes every connection after its response.
    #[arg(long, env = "RONDO_KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = parse_duration, value_name = "DURATION")]
    pub keepalive_timeout: Duration,

    /// Tries per request, the first included: a failed try is repeated on another endpoint
    /// when that is safe (see the README); 1 turns retries off.
    #[arg(long, env = "RONDO_TRIES", default_value = "3", value_parser = parse_tries, value_name = "N")]
    pub tries: u32,

    /// No new try starts later than this after the request arrived; 0 means no limit beyond
    /// RONDO_TRIES (like nginx's proxy_next_upstream_timeout).
    #[arg(long, env = "RONDO_RETRY_TIMEOUT", default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub retry_timeout: Duration,

    /// Request bodies up to this size are held in memory so that a retry can send them again;
    /// longer bodies are streamed and never retried.
    #[arg(long, env = "RONDO_RETRY_BODY_LIMIT", default_value = "64KiB", value_parser = parse_size, value_name = "BYTES")]
    pub retry_body_limit: u64,

    /// Failed requests within RONDO_FAIL_TIMEOUT that take an endpoint out of rotation (passive
    /// health, like nginx's max_fails); 0 turns passive checks off.
    #[arg(long, env = "RONDO_MAX_FAILS", default_value_t = 1, value_name = "N")]
    pub max_fails: u32,

    /// The window failures are counted in, and how long an endpoint then stays out before one
    /// trial request decides whether it returns.
    #[arg(long, env = "RONDO_FAIL_TIMEOUT", default_value = "10s", value_parser = parse_timeout, value_name = "DURATION")]
    pub fail_timeout: Duration,

    /// An endpoint that answers nothing for this long while requests wait on it (a hung
    /// container) gets no new requests until it answers; longer when its usual answers take
    /// longer (see the README); 0s or off turns this off.
    #[arg(long, env = "RONDO_STALL_TIMEOUT", default_value = "50ms", value_parser = parse_duration_or_off, value_name = "DURATION|off")]
    pub stall_timeout: Duration,

    /// Active health checks: `on` probes every endpoint with GET RONDO_HEALTH_PATH; `off` when
    /// the service has no health endpoint.
    #[arg(long, env = "RONDO_HEALTH_CHECKS",
        action = clap::ArgAction::Set, default_value = "on", value_parser = parse_switch, value_name = "on|off")]
    pub health_checks: bool,

    /// Path the active check requests; a 2xx or 3xx answer passes.
    #[arg(long, env = "RONDO_HEALTH_PATH", default_value = "/health", value_parser = parse_path, value_name = "PATH")]
    pub health_path: String,

    /// Time between two probes of one endpoint.
    #[arg(long, env = "RONDO_HEALTH_INTERVAL", default_value = "2s", value_parser = parse_interval, value_name = "DURATION")]
    pub health_interval: Duration,

    /// Time a probe may take before it counts as failed.
    #[arg(long, env = "RONDO_HEALTH_TIMEOUT", default_value = "1s", value_parser = parse_timeout, value_name = "DURATION")]
    pub health_timeout: Duration,

    /// Good probes in a row that bring a down endpoint back.
    #[arg(long, env = "RONDO_HEALTH_RISE", default_value = "2", value_parser = parse_count, value_name = "N")]
    pub health_rise: u32,

    /// Failed probes in a row that take an endpoint out.
    #[arg(long, env = "RONDO_HEALTH_FALL", default_value = "3", value_parser = parse_count, value_name = "N")]
    pub health_fall: u32,

    /// Largest request body accepted; a longer one gets 413. 0 means no limit.
    #[arg(long, env = "RONDO_MAX_BODY_SIZE", default_value = "100MiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_body_size: u64,

    /// Largest request head accepted (request line and headers together); a larger one gets
    /// 431. At most 128KiB, actix-http's own bound.
    #[arg(long, env = "RONDO_MAX_HEADER_SIZE", default_value = "32KiB", value_parser = parse_header_size, value_name = "BYTES")]
    pub max_header_size: u64,

    /// Longest request target (path and query) accepted; a longer one gets 414.
    #[arg(long, env = "RONDO_MAX_URI_LENGTH", default_value = "8KiB", value_parser = parse_header_size, value_name = "BYTES")]
    pub max_uri_length: u64,

    /// Time allowed between two reads of a request body; a client that stalls longer gets 408
    /// (like nginx's client_body_timeout).
    #[arg(long, env = "RONDO_CLIENT_BODY_TIMEOUT", default_value = "60s", value_parser = parse_timeout, value_name = "DURATION")]
    pub client_body_timeout: Duration,

    /// Client connections served at once, all workers together; further connections wait in
    /// the listen backlog until one closes.
    #[arg(long, env = "RONDO_MAX_CONNECTIONS", default_value = "25000", value_parser = parse_max_connections, value_name = "N")]
    pub max_connections: usize,

    /// Comma-separated networks (CIDR such as 10.0.0.0/8, or single addresses) of proxies in
    /// front of rondo: their X-Forwarded-* and Forwarded headers are kept and appended to.
    /// From every other client those headers are replaced. Empty trusts no one.
    #[arg(long, env = "RONDO_TRUSTED_PROXIES", default_value = "", value_parser = parse_networks, value_name = "CIDR,...")]
    pub trusted_proxies: Networks,

    /// Also send endpoints an RFC 7239 `Forwarded` header (for, host, proto).
    #[arg(long, env = "RONDO_FORWARDED",
        action = clap::ArgAction::Set, default_value = "off", value_parser = parse_switch, value_name = "on|off")]
    pub forwarded: bool,

    /// Address of the admin listener (`/metrics`, `/status`, the status page, drain and
    /// enable); `off` turns it off. Loopback by default: see RONDO_ADMIN_TOKEN.
    #[arg(long, env = "RONDO_ADMIN_LISTEN", default_value = "127.0.0.1:9901", value_parser = parse_admin_listen, value_name = "ADDR:PORT|off")]
    pub admin_listen: MaybeAddr,

    /// When set (and not empty), the admin listener's changes (drain, enable) need
    /// `Authorization: Bearer <token>`; reading stays open.
    #[arg(
        long,
        env = "RONDO_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// One line per request: `common` (text), `json`, or `off`.
    #[arg(long, env = "RONDO_ACCESS_LOG", default_value = "common", value_parser = parse_access_log, value_name = "common|json|off")]
    pub access_log: AccessLog,

    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish before exit.
    #[arg(long, env = "RONDO_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,
}

impl Config {
    /// The passive health policy these settings give.
    pub fn passive_policy(&self) -> crate::health::PassivePolicy {
        crate::health::PassivePolicy {
            max_fails: self.max_fails,
            fail_timeout: self.fail_timeout,
            stall_after: self.stall_timeout,
        }
    }

    /// The admin token, unless unset or empty (compose passes an unset variable as empty).
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref().filter(|t| !t.is_empty())
    }

    /// The settings in force, for the start-up log: the admin token masked.
    pub fn effective(&self) -> String {
        let mut shown = self.clone();
        if self.admin_token().is_some() {
            shown.admin_token = Some("********".into());
        }
        format!("{shown:?}")
    }

    /// The client limits these settings give.
    pub fn limits(&self) -> crate::limits::Limits {
        crate::limits::Limits {
            max_body_size: self.max_body_size,
            max_header_size: self.max_header_size,
            max_uri_length: self.max_uri_length,
            body_timeout: self.client_body_timeout,
        }
    }

    /// The active health policy these settings give.
    pub fn active_policy(&self) -> crate::health::ActivePolicy {
        crate::health::ActivePolicy {
            enabled: self.health_checks,
            path: self.health_path.clone(),
            interval: self.health_interval,
            timeout: self.health_timeout,
            rise: self.health_rise,
            fall: self.health_fall,
        }
    }

    /// The configuration for `upstreams` with every other setting at its default.
    pub fn with_upstreams(upstreams: Vec<Upstream>) -> Config {
        let mut config = Config::parse_from(["rondo", "--upstreams", "placeholder:1"]);
        config.upstreams = UpstreamList(upstreams);
        config
    }

    /// Client connections each worker serves at once: the total shared out, rounded up.
    pub fn connections_per_worker(&self) -> usize {
        self.max_connections.div_ceil(self.worker_count())
    }

    /// Worker threads to start: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

/// The access log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Common,
    Json,
    Off,
}

fn parse_access_log(s: &str) -> Result<AccessLog, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "common" => Ok(AccessLog::Common),
        "json" => Ok(AccessLog::Json),
        "off" | "none" => Ok(AccessLog::Off),
        _ => Err("expected common, json or off".to_string()),
    }
}

/// An address or none (`off`). An alias, so that clap parses the value with
/// [`parse_admin_listen`] instead of treating the setting as optional.
pub type MaybeAddr = Option<SocketAddr>;

fn parse_admin_listen(s: &str) -> Result<MaybeAddr, String> {
    match s.trim() {
        "off" | "" => Ok(None),
        other => other.parse().map(Some).map_err(|_| {
            "expected an IP address and port such as 127.0.0.1:9901, or off".to_string()
        }),
    }
}

/// Networks whose clients are trusted proxies; empty trusts no one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

impl Networks {
    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A comma-separated list of networks: CIDR blocks, or single addresses (a /32 or /128).
fn parse_networks(s: &str) -> Result<Networks, String> {
    let mut nets = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let net = match item.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                format!(
                    "'{item}' is not a network: write CIDR blocks or addresses separated by \
                     commas, e.g. 10.0.0.0/8,192.168.1.7"
                )
            })?,
        };
        nets.push(net.trunc());
    }
    Ok(Networks(nets))
}

fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 1000000".to_string()),
    }
}

/// Head and URI limits: actix-http refuses heads over 128 KiB before rondo sees them.
fn parse_header_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        n if (256..=128 << 10).contains(&n) => Ok(n),
        _ => Err("expected a size from 256 to 128KiB".to_string()),
    }
}

/// One configured upstream: a host name or IP literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Upstream {
    type Err = String;

    /// Parses `host:port`, `ipv4:port` or `[ipv6]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            format!("'{s}' has no port: write it as host:port, e.g. server1:8080")
        })?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(|| {
                format!("'{s}': an IPv6 address goes in brackets, e.g. [::1]:8080")
            })?,
            None if host.contains(':') => {
                return Err(format!(
                    "'{s}': an IPv6 address goes in brackets, e.g. [::1]:8080"
                ))
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!(
                "'{s}' has no host: write it as host:port, e.g. server1:8080"
            ));
        }
        if let Some(bad) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
        {
            return Err(format!(
                "'{s}': the host contains '{bad}', which no host name or IP address has"
            ));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("'{s}': the port must be a number from 1 to 65535")),
        };
        Ok(Upstream {
            host: host.to_string(),
            port,
        })
    }
}

/// The comma-separated list of upstreams; never empty, no upstream twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamList(pub Vec<Upstream>);

impl FromStr for UpstreamList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list: Vec<Upstream> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let upstream: Upstream = item.parse()?;
            if list.contains(&upstream) {
                return Err(format!("'{upstream}' is listed twice"));
            }
            list.push(upstream);
        }
        if list.is_empty() {
            return Err("expected at least one host:port, e.g. server1:8080,server2:8080".into());
        }
        Ok(UpstreamList(list))
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        "expected an IP address and port such as 0.0.0.0:8080 or [::]:8080".to_string()
    })
}

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= 1024 => Ok(n),
        _ => Err("expected a whole number from 0 (one per CPU core) to 1024".to_string()),
    }
}

fn parse_tries(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=16).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 (no retries) to 16".to_string()),
    }
}

fn parse_count(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 100".to_string()),
    }
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err("expected on or off".to_string()),
    }
}

fn parse_path(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with('/')
        && s.parse::<actix_web::http::Uri>().is_ok()
        && !s.contains(char::is_whitespace)
    {
        Ok(s.to_string())
    } else {
        Err("expected a path that starts with /, e.g. /health".to_string())
    }
}

/// Sizes: a number of bytes, optionally with KiB, MiB or GiB (or K, M, G: also powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err("expected a size such as 65536, 64KiB or 1MiB".to_string()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_shl(shift).filter(|v| v >> shift == n))
        .ok_or_else(|| "expected a size such as 65536, 64KiB or 1MiB".to_string())
}

/// Durations: humantime's forms, at most a day (longer ones would overflow deadlines).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| "expected a duration such as 500ms, 1s, 1m30s".to_string())?;
    if d > Duration::from_secs(24 * 3600) {
        return Err("expected at most 24h".to_string());
    }
    Ok(d)
}

/// A duration, or `off` (the same as zero: the feature is off).
fn parse_duration_or_off(s: &str) -> Result<Duration, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).map_err(|e| format!("{e}, or off"))
}

fn parse_at_least(s: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min {
        return Err(format!(
            "expected at least {}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

/// Discovery intervals below 10ms would keep a resolver thread spinning.
fn parse_interval(s: &str) -> Result<Duration, String> {
    parse_at_least(s, Duration::from_millis(10))
}

/// A zero timeout would fail every request.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_at_least(s, Duration::from_millis(1))
}

/// Turns a clap error into the message rondo prints, naming the environment variable too.
///
/// Help and version requests come back unchanged.
pub fn explain(err: &clap::Error) -> String {
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    let setting = arg.as_deref().map(setting_name);
    match (err.kind(), setting) {
        (ErrorKind::InvalidValue | ErrorKind::ValueValidation, Some(setting)) => {
            let value = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => String::new(),
            };
            let reason = std::error::Error::source(err)
                .map(|e| e.to_string())
                .unwrap_or_else(|| "the value is not valid".into());
            format!("rondo: bad value '{value}' for {setting}: {reason}\n")
        }
        (ErrorKind::MissingRequiredArgument, Some(setting)) => format!(
            "rondo: {setting} is not set: give the upstreams to balance as a comma-separated \
             host:port list, e.g. RONDO_UPSTREAMS=server1:8080,server2:8080\n"
        ),
        _ => err.render().to_string(),
    }
}

/// `--discovery-interval <DURATION>` → `RONDO_DISCOVERY_INTERVAL (--discovery-interval)`.
fn setting_name(arg: &str) -> String {
    let long = arg.split_whitespace().next().unwrap_or(arg);
    let cmd = Config::command();
    let env = cmd
        .get_arguments()
        .find(|a| {
            a.get_long()
                .is_some_and(|l| long.trim_start_matches('-') == l)
        })
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("{env} ({long})"),
        None => long.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["rondo"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).map_err(|e| explain(&e))
    }

    /// Every setting but the upstreams has a default.
    #[test]
    fn defaults_apply() {
        let c = parse(&["--upstreams", "server1:8080, server2:8080"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.discovery_interval, Duration::from_secs(1));
        assert_eq!(c.upstreams.0.len(), 2);
        assert_eq!(c.upstreams.0[1].to_string(), "server2:8080");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(c.admin_listen, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(c.access_log, AccessLog::Common);
        assert_eq!(c.stall_timeout, Duration::from_millis(50));
    }

    /// The stall threshold takes a duration or `off` (zero), and says so when given neither.
    #[test]
    fn stall_timeout_takes_off() {
        for (value, expect) in [
            ("off", Duration::ZERO),
            ("OFF", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("200ms", Duration::from_millis(200)),
        ] {
            let c = parse(&["--upstreams", "a:1", "--stall-timeout", value]).unwrap();
            assert_eq!(c.stall_timeout, expect, "{value}");
        }
        let msg = parse(&["--upstreams", "a:1", "--stall-timeout", "soon"]).unwrap_err();
        assert!(
            msg.contains("RONDO_STALL_TIMEOUT") && msg.contains("500ms") && msg.contains("or off"),
            "{msg}"
        );
    }

    /// The admin listener can be turned off; the token never shows in the effective config.
    #[test]
    fn admin_settings() {
        let c = parse(&[
            "--upstreams",
            "a:1",
            "--admin-listen",
            "off",
            "--admin-token",
            "s3cret",
            "--access-log",
            "json",
        ])
        .unwrap();
        assert_eq!(c.admin_listen, None);
        assert_eq!(c.access_log, AccessLog::Json);
        assert!(!c.effective().contains("s3cret"), "{}", c.effective());
        let msg = parse(&["--upstreams", "a:1", "--access-log", "loud"]).unwrap_err();
        assert!(msg.contains("RONDO_ACCESS_LOG"), "{msg}");
        let msg = parse(&["--upstreams", "a:1", "--admin-listen", "9901"]).unwrap_err();
        assert!(msg.contains("RONDO_ADMIN_LISTEN"), "{msg}");
    }

    /// Host names, IPv4 and bracketed IPv6 parse; the display form is what was written.
    #[test]
    fn upstream_forms() {
        for ok in [
            "server1:8080",
            "10.0.0.1:80",
            "[::1]:8080",
            "my_app-1.local:1",
        ] {
            assert_eq!(ok.parse::<Upstream>().unwrap().to_string(), ok);
        }
        assert_eq!("[::1]:8080".parse::<Upstream>().unwrap().host, "::1");
    }

    /// Each malformed upstream is refused with a reason that says how to write it.
    #[test]
    fn bad_upstreams_are_explained() {
        for (bad, expect) in [
            ("server1", "has no port"),
            (":8080", "has no host"),
            ("server1:0", "from 1 to 65535"),
            ("server1:http", "from 1 to 65535"),
            ("::1:8080", "in brackets"),
            ("ser ver:80", "contains ' '"),
            ("a:1,a:1", "listed twice"),
            (" , ", "at least one host:port"),
        ] {
            let msg = parse(&["--upstreams", bad]).unwrap_err();
            assert!(msg.contains("RONDO_UPSTREAMS (--upstreams)"), "{msg}");
            assert!(msg.contains(expect), "{bad}: {msg}");
        }
    }

    /// A bad duration names the setting, the value and the expected form.
    #[test]
    fn bad_duration_is_explained() {
        let msg = parse(&["--upstreams", "a:1", "--discovery-interval", "soon"]).unwrap_err();
        assert_eq!(
            msg,
            "rondo: bad value 'soon' for RONDO_DISCOVERY_INTERVAL (--discovery-interval): \
             expected a duration such as 500ms, 1s, 1m30s\n"
        );
        let msg = parse(&["--upstreams", "a:1", "--discovery-interval", "1ms"]).unwrap_err();
        assert!(msg.contains("expected at least 10ms"), "{msg}");
        let msg = parse(&["--upstreams", "a:1", "--connect-timeout", "0s"]).unwrap_err();
        assert!(msg.contains("RONDO_CONNECT_TIMEOUT"), "{msg}");
    }

    /// A missing upstream list says which variable to set and shows an example.
    #[test]
    fn missing_upstreams_is_explained() {
        let msg = parse(&[]).unwrap_err();
        assert!(
            msg.contains("RONDO_UPSTREAMS (--upstreams) is not set"),
            "{msg}"
        );
        assert!(msg.contains("server1:8080"), "{msg}");
    }

    /// Health and retry settings parse their forms and refuse others with the expected form.
    #[test]
    fn health_and_retry_settings() {
        let c = parse(&[
            "--upstreams",
            "a:1",
            "--retry-body-limit",
            "1MiB",
            "--health-checks",
            "off",
        ])
        .unwrap();
        assert_eq!(c.retry_body_limit, 1 << 20);
        assert!(!c.health_checks);
        assert_eq!(c.tries, 3);
        assert_eq!(c.health_path, "/health");
        for (flag, value, expect) in [
            ("--tries", "0", "from 1 (no retries) to 16"),
            ("--health-path", "health", "starts with /"),
            ("--health-checks", "maybe", "on or off"),
            ("--retry-body-limit", "lots", "64KiB"),
            ("--health-rise", "0", "from 1 to 100"),
            ("--fail-timeout", "300000years", "at most 24h"),
        ] {
            let msg = parse(&["--upstreams", "a:1", flag, value]).unwrap_err();
            assert!(msg.contains(expect), "{flag} {value}: {msg}");
            assert!(msg.contains("RONDO_"), "{msg}");
        }
    }

    /// A bad listen address names RONDO_LISTEN.
    #[test]
    fn bad_listen_is_explained() {
        let msg = parse(&["--upstreams", "a:1", "--listen", "8080"]).unwrap_err();
        assert!(msg.contains("RONDO_LISTEN (--listen)"), "{msg}");
        assert!(msg.contains("'8080'"), "{msg}");
        assert!(msg.contains("such as 0.0.0.0:8080"), "{msg}");
    }
}
