//! The admin listener: what the balancer is doing, for people and for Prometheus.
//!
//! - `GET /metrics`: the Prometheus text format ([`render_metrics`]).
//! - `GET /status`: every upstream with its endpoints, as JSON ([`status`]).
//! - `GET /`: a live status page (one self-contained HTML file that polls `/status`).
//! - `POST /endpoints/{address}/drain` and `/enable`: take an endpoint out of rotation by
//!   hand and back; requests in flight finish. With `RONDO_ADMIN_TOKEN` set these need
//!   `Authorization: Bearer <token>`; reading never does.
//!
//! It runs on its own single-worker server, so a slow scrape never takes a worker from clients,
//! and it only reads what the request path writes: the endpoint set (one `ArcSwap` load) and
//! atomics.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use log::info;
use serde_json::{json, Value};

use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::health::Verdict;
use crate::selection::RoundRobin;
use crate::stats::{HistogramSnapshot, Totals, CLASSES};

/// The status page, served at `/`.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// What the admin routes read.
#[derive(Debug)]
pub struct Admin {
    pub selector: Arc<RoundRobin>,
    pub totals: Arc<Totals>,
    /// The upstreams as configured, in order (the status groups endpoints under them).
    pub upstreams: Vec<Arc<str>>,
    pub health_checks: bool,
    pub token: Option<String>,
}

/// Starts the admin server on `listener`; it serves until the returned server stops.
pub fn start(admin: Admin, listener: TcpListener) -> io::Result<(Server, Vec<SocketAddr>)> {
    let admin = web::Data::new(admin);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(admin.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/status", web::get().to(status_json))
            .route("/", web::get().to(page))
            .route("/endpoints/{address}/{action}", web::post().to(change))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

/// Says at start-up who can reach the admin listener and what they can do with it.
pub fn announce(config: &Config, addrs: &[SocketAddr]) {
    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
    match (config.admin_token(), loopback) {
        (Some(_), _) => info!(
            "admin: listening on {addrs:?}; drain and enable need the RONDO_ADMIN_TOKEN bearer token"
        ),
        (None, true) => info!(
            "admin: listening on {addrs:?} (loopback only); set RONDO_ADMIN_TOKEN to require a token for drain and enable"
        ),
        (None, false) => log::warn!(
            "admin: listening on {addrs:?} without RONDO_ADMIN_TOKEN: anyone who reaches it can drain endpoints; publish it on 127.0.0.1 only, or set a token"
        ),
    }
}

async fn metrics(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render_metrics(&admin))
}

async fn status_json(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(status(&admin))
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(STATUS_PAGE)
}

/// `POST /endpoints/{address}/drain|enable`.
async fn change(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    admin: web::Data<Admin>,
) -> HttpResponse {
    let (address, action) = path.into_inner();
    if let Some(site) = cross_site(&req) {
        // A web page in an operator's browser could otherwise drain endpoints with a simple
        // POST to 127.0.0.1:9901 (no token is needed by default).
        return HttpResponse::Forbidden().body(format!(
            "rondo: drain and enable are refused from a web page ({site}): use curl or a script\n"
        ));
    }
    if let Some(token) = &admin.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        if !given.is_some_and(|g| same_secret(g.trim(), token)) {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .body("rondo: drain and enable need Authorization: Bearer <RONDO_ADMIN_TOKEN>\n");
        }
    }
    let enable = match action.as_str() {
        "drain" => false,
        "enable" => true,
        _ => {
            return HttpResponse::NotFound().body(format!(
                "rondo: no action '{action}': use drain or enable\n"
            ))
        }
    };
    let Ok(addr) = address.parse::<SocketAddr>() else {
        return HttpResponse::BadRequest().body(format!(
            "rondo: '{address}' is not an endpoint address: write it as ip:port, e.g. 172.18.0.3:8080\n"
        ));
    };
    let matching = admin.selector.set_enabled(addr, enable);
    if matching.is_empty() {
        return HttpResponse::NotFound().body(format!(
            "rondo: no endpoint {addr}: GET /status lists the endpoints discovery found\n"
        ));
    }
    for (endpoint, changed) in &matching {
        if *changed {
            info!(
                "admin: {} ({}) {} by hand",
                endpoint.addr(),
                endpoint.upstream(),
                if enable { "enabled" } else { "drained" }
            );
        }
    }
    HttpResponse::Ok().json(
        matching
            .iter()
            .map(|(e, _)| endpoint_status(e, admin.health_checks))
            .collect::<Vec<_>>(),
    )
}

/// What marks `req` as sent by a browser on behalf of a web page: an `Origin` header, or a
/// `Sec-Fetch-Site` other than `none` (typed in or bookmarked) and `same-origin`.
fn cross_site(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    if let Some(site) = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !matches!(*s, "none" | "same-origin"))
    {
        return Some(format!("Sec-Fetch-Site: {site}"));
    }
    headers
        .get(header::ORIGIN)
        .map(|o| format!("Origin: {}", o.to_str().unwrap_or("?")))
}

/// Compares a secret in time that does not depend on where the first difference is.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn by_class(counts: &[u64]) -> Value {
    let mut map = serde_json::Map::new();
    for (class, n) in CLASSES.iter().zip(counts).take(5) {
        map.insert((*class).to_string(), json!(n));
    }
    Value::Object(map)
}

/// One endpoint as `/status` shows it.
fn endpoint_status(e: &Endpoint, health_checks: bool) -> Value {
    let stats = e.stats();
    let verdict = e.active_verdict();
    let active = match (health_checks, verdict) {
        (false, _) => "off",
        (true, Verdict::Up) => "up",
        (true, Verdict::Down) => "down",
        (true, Verdict::Unknown) => "unknown",
    };
    let health = if e.is_healthy() {
        "up"
    } else if health_checks && verdict == Verdict::Unknown {
        "unknown"
    } else {
        "down"
    };
    let tries = stats.tries.counts();
    let in_flight = e.in_flight();
    json!({
        "address": e.addr().to_string(),
        "health": health,
        "active": active,
        "passive": if e.passive_in() { "in" } else { "out" },
        "enabled": e.is_enabled(),
        "draining": !e.is_enabled() && in_flight > 0,
        "in_flight": in_flight,
        "stalled": e.watch().is_stalled(),
        "stalls": e.watch().stalls(),
        "requests": e.requests(),
        "errors": tries[crate::stats::ERROR],
        "by_class": by_class(&tries),
        "last_error": stats.last_error().map(|(reason, at)| json!({"reason": reason, "at": rfc3339(at)})),
        "health_since": rfc3339(stats.health_since()),
    })
}

/// The whole `/status` document.
pub fn status(admin: &Admin) -> Value {
    let rotation = admin.selector.load();
    let endpoints = rotation.set().endpoints();
    let totals = &admin.totals;
    let upstreams: Vec<Value> = admin
        .upstreams
        .iter()
        .map(|name| {
            json!({
                "name": name.as_ref(),
                "endpoints": endpoints
                    .iter()
                    .filter(|e| e.upstream() == name.as_ref())
                    .map(|e| endpoint_status(e, admin.health_checks))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let responses = totals.responses.counts();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(totals.started),
        "uptime_seconds": totals.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
        "totals": {
            "requests": responses.iter().sum::<u64>(),
            "by_class": by_class(&responses),
            "in_flight": endpoints.iter().map(|e| e.in_flight()).sum::<usize>(),
            "retries": totals.retries.load(Ordering::Relaxed),
            "client_connections": totals.client_connections.load(Ordering::Relaxed),
        },
        "upstreams": upstreams,
    })
}

/// Writes one metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, count) in &h.cumulative {
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else {
            le.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

/// Every metric in the Prometheus text format (0.0.4).
pub fn render_metrics(admin: &Admin) -> String {
    let rotation = admin.selector.load();
    let endpoints = rotation.set().endpoints();
    let totals = &admin.totals;
    let labels: Vec<String> = endpoints
        .iter()
        .map(|e| {
            format!(
                "upstream=\"{}\",endpoint=\"{}\"",
                escape(e.upstream()),
                e.addr()
            )
        })
        .collect();
    let mut out = String::with_capacity(4096 + endpoints.len() * 2048);

    family(
        &mut out,
        "rondo_responses_total",
        "counter",
        "Responses given to clients (relayed or the balancer's own), by status class.",
    );
    for (class, n) in CLASSES.iter().zip(totals.responses.counts()).take(5) {
        let _ = writeln!(out, "rondo_responses_total{{class=\"{class}\"}} {n}");
    }
    family(
        &mut out,
        "rondo_requests_total",
        "counter",
        "Tries sent to each endpoint, by the status class that came back, or error when none did.",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        for (class, n) in CLASSES.iter().zip(e.stats().tries.counts()) {
            let _ = writeln!(out, "rondo_requests_total{{{l},class=\"{class}\"}} {n}");
        }
    }
    family(
        &mut out,
        "rondo_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response.",
    );
    histogram(
        &mut out,
        "rondo_request_duration_seconds",
        "",
        &totals.latency.snapshot(),
    );
    family(
        &mut out,
        "rondo_upstream_duration_seconds",
        "histogram",
        "Time from sending a try to an endpoint until its response head arrived.",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        let h = e.stats().upstream_latency.snapshot();
        histogram(&mut out, "rondo_upstream_duration_seconds", l, &h);
    }
    family(
        &mut out,
        "rondo_in_flight_requests",
        "gauge",
        "Requests sent to each endpoint and not finished yet.",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        let _ = writeln!(out, "rondo_in_flight_requests{{{l}}} {}", e.in_flight());
    }
    family(
        &mut out,
        "rondo_retries_total",
        "counter",
        "Failed tries on each endpoint that were tried again on another.",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        let n = e.stats().retries.load(Ordering::Relaxed);
        let _ = writeln!(out, "rondo_retries_total{{{l}}} {n}");
    }
    family(
        &mut out,
        "rondo_endpoint_stalls_total",
        "counter",
        "Times each endpoint answered nothing while requests waited on it for longer than the \
         stall threshold, and was passed over until it answered.",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        let n = e.watch().stalls();
        let _ = writeln!(out, "rondo_endpoint_stalls_total{{{l}}} {n}");
    }
    family(
        &mut out,
        "rondo_endpoint_up",
        "gauge",
        "1 when health checks have the endpoint in rotation, 0 when not.",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        let _ = writeln!(out, "rondo_endpoint_up{{{l}}} {}", u8::from(e.is_healthy()));
    }
    family(
        &mut out,
        "rondo_endpoint_enabled",
        "gauge",
        "0 while an endpoint is drained by hand (admin API), 1 otherwise.",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        let _ = writeln!(
            out,
            "rondo_endpoint_enabled{{{l}}} {}",
            u8::from(e.is_enabled())
        );
    }
    family(
        &mut out,
        "rondo_health_flips_total",
        "counter",
        "Times a health check took an endpoint out (to=down) or brought it back (to=up).",
    );
    for (e, l) in endpoints.iter().zip(&labels) {
        let flips = &e.stats().flips;
        for (i, (check, to)) in [
            ("active", "up"),
            ("active", "down"),
            ("passive", "up"),
            ("passive", "down"),
        ]
        .iter()
        .enumerate()
        {
            let n = flips[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "rondo_health_flips_total{{{l},check=\"{check}\",to=\"{to}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "rondo_endpoints",
        "gauge",
        "Endpoints discovery found for each upstream.",
    );
    for name in &admin.upstreams {
        let n = endpoints
            .iter()
            .filter(|e| e.upstream() == name.as_ref())
            .count();
        let _ = writeln!(out, "rondo_endpoints{{upstream=\"{}\"}} {n}", escape(name));
    }
    family(
        &mut out,
        "rondo_discovery_changes_total",
        "counter",
        "Times discovery replaced the endpoint set (the first result included).",
    );
    let _ = writeln!(
        out,
        "rondo_discovery_changes_total {}",
        admin.selector.changes()
    );
    family(
        &mut out,
        "rondo_client_connections",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(
        out,
        "rondo_client_connections {}",
        totals.client_connections.load(Ordering::Relaxed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{EndpointSet, UpstreamEndpoints};

    fn admin() -> Admin {
        let selector = Arc::new(RoundRobin::default());
        let found = vec![UpstreamEndpoints {
            upstream: Arc::from("server1:8080"),
            addrs: vec!["10.0.0.1:8080".parse().unwrap()],
        }];
        selector.replace(EndpointSet::build(&found, &EndpointSet::default(), false));
        Admin {
            selector,
            totals: Arc::new(Totals::default()),
            upstreams: vec![Arc::from("server1:8080")],
            health_checks: false,
            token: None,
        }
    }

    /// Every family has HELP and TYPE lines, and every sample line is `name{labels} value`.
    #[test]
    fn metrics_are_well_formed() {
        let a = admin();
        a.totals.responses.add(1);
        let text = render_metrics(&a);
        assert!(
            text.contains("rondo_responses_total{class=\"2xx\"} 1\n"),
            "{text}"
        );
        assert!(text.contains(
            "rondo_requests_total{upstream=\"server1:8080\",endpoint=\"10.0.0.1:8080\",class=\"error\"} 0\n"
        ));
        assert!(text.contains("rondo_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("rondo_endpoints{upstream=\"server1:8080\"} 1\n"));
        assert!(text.contains(
            "rondo_endpoint_stalls_total{upstream=\"server1:8080\",endpoint=\"10.0.0.1:8080\"} 0\n"
        ));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(types, 13);
        assert_eq!(helps, types);
    }

    /// The status groups endpoints under their upstream with health and counts.
    #[test]
    fn status_lists_endpoints_under_upstreams() {
        let a = admin();
        let s = status(&a);
        let e = &s["upstreams"][0]["endpoints"][0];
        assert_eq!(s["upstreams"][0]["name"], "server1:8080");
        assert_eq!(e["address"], "10.0.0.1:8080");
        assert_eq!(e["health"], "up");
        assert_eq!(e["active"], "off");
        assert_eq!(e["enabled"], true);
        assert_eq!(e["last_error"], Value::Null);
    }

    /// Secrets compare equal only when identical.
    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
    }
}
