//! The access log and the per-request totals: one [`Exchange`] follows each request from its
//! arrival to the end of its response body, then counts it and (unless the log is off) writes
//! one line through `log` under the target `rondo::access`.
//!
//! `common` lines read like nginx's combined format with rondo's fields after it:
//!
//! ```text
//! 172.18.0.1 - - [2026-11-25T20:15:46Z] "GET /cart?id=7 HTTP/1.1" 200 512 endpoint=172.18.0.3:8080 tries=1 upstream_time=0.002 total_time=0.003 request_id=6f1c…
//! ```
//!
//! `json` lines hold the same fields as one object. A request the balancer answered itself has
//! `endpoint=-` when no endpoint was tried.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::header::HeaderValue;
use actix_web::http::{Method, StatusCode, Version};
use actix_web::HttpRequest;
use log::info;

use crate::config::AccessLog;
use crate::stats::{class_of, Totals};

/// One request on its way through; counted and logged when dropped.
#[derive(Debug)]
pub struct Exchange {
    arrived: Instant,
    totals: Arc<Totals>,
    status: Option<StatusCode>,
    bytes: u64,
    /// The log line's fields; `None` when the access log is off (nothing is copied then).
    entry: Option<Box<Entry>>,
}

#[derive(Debug)]
struct Entry {
    format: AccessLog,
    at: SystemTime,
    client: Option<SocketAddr>,
    method: Method,
    target: String,
    version: Version,
    id: String,
    endpoint: Option<SocketAddr>,
    tries: usize,
    upstream_time: Option<Duration>,
}

impl Exchange {
    /// Starts following `req` (whose id is `id`; read as text only for the access log), which
    /// arrived at `arrived`.
    pub fn new(
        req: &HttpRequest,
        id: &HeaderValue,
        totals: &Arc<Totals>,
        format: AccessLog,
        arrived: Instant,
    ) -> Self {
        let entry = (format != AccessLog::Off).then(|| {
            Box::new(Entry {
                format,
                at: SystemTime::now(),
                client: req.peer_addr(),
                method: req.method().clone(),
                target: req.uri().to_string(),
                version: req.version(),
                id: id.to_str().unwrap_or("-").to_string(),
                endpoint: None,
                tries: 0,
                upstream_time: None,
            })
        });
        Exchange {
            arrived,
            totals: totals.clone(),
            status: None,
            bytes: 0,
            entry,
        }
    }

    /// Records a try on `endpoint` that got a response head after `upstream_time` (or none).
    pub fn tried(&mut self, endpoint: SocketAddr, upstream_time: Option<Duration>) {
        if let Some(entry) = &mut self.entry {
            entry.endpoint = Some(endpoint);
            entry.tries += 1;
            entry.upstream_time = upstream_time;
        }
    }

    /// Records the status the client gets.
    pub fn respond(&mut self, status: StatusCode) {
        self.status = Some(status);
    }

    /// Adds body bytes sent to the client.
    pub fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let total = self.arrived.elapsed();
        let status = self.status.map_or(0, |s| s.as_u16());
        self.totals.responses.add(class_of(status));
        self.totals.latency.observe(total);
        if let Some(entry) = &self.entry {
            info!(target: "rondo::access", "{}", entry.line(status, self.bytes, total));
        }
    }
}

impl Entry {
    fn line(&self, status: u16, bytes: u64, total: Duration) -> String {
        let client = self
            .client
            .map_or_else(|| "-".to_string(), |c| c.ip().to_string());
        let endpoint = self
            .endpoint
            .map_or_else(|| "-".to_string(), |e| e.to_string());
        let upstream_time = self
            .upstream_time
            .map_or_else(|| "-".to_string(), |t| format!("{:.3}", t.as_secs_f64()));
        let at = humantime::format_rfc3339_seconds(self.at);
        let total_time = format!("{:.3}", total.as_secs_f64());
        match self.format {
            AccessLog::Json => serde_json::json!({
                "time": at.to_string(),
                "client": client,
                "method": self.method.as_str(),
                "target": self.target,
                "version": format!("{:?}", self.version),
                "status": status,
                "bytes": bytes,
                "endpoint": self.endpoint.map(|e| e.to_string()),
                "tries": self.tries,
                "upstream_time": self.upstream_time.map(|t| t.as_secs_f64()),
                "total_time": total.as_secs_f64(),
                "request_id": self.id,
            })
            .to_string(),
            _ => format!(
                "{client} - - [{at}] \"{} {} {:?}\" {status} {bytes} endpoint={endpoint} \
                 tries={} upstream_time={upstream_time} total_time={total_time} request_id={}",
                escape(self.method.as_str()),
                escape(&self.target),
                self.version,
                self.tries,
                escape(&self.id)
            ),
        }
    }
}

/// Client-chosen text as nginx writes it in a log line: `"`, `\\` and every byte outside
/// printable ASCII as `\\xHH`, so a request cannot forge a field or a line.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\x{b:02X}"));
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(format: AccessLog) -> Entry {
        Entry {
            format,
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            client: Some("172.18.0.1:40000".parse().unwrap()),
            method: Method::GET,
            target: "/cart?id=7".into(),
            version: Version::HTTP_11,
            id: "abc".into(),
            endpoint: Some("172.18.0.3:8080".parse().unwrap()),
            tries: 2,
            upstream_time: Some(Duration::from_millis(2)),
        }
    }

    /// A common line holds every field in a fixed order.
    #[test]
    fn common_line_has_every_field() {
        let line = entry(AccessLog::Common).line(200, 512, Duration::from_millis(3));
        assert_eq!(
            line,
            "172.18.0.1 - - [2026-11-18T11:06:40Z] \"GET /cart?id=7 HTTP/1.1\" 200 512 \
             endpoint=172.18.0.3:8080 tries=2 upstream_time=0.002 total_time=0.003 request_id=abc"
        );
    }

    /// Quotes, backslashes and bytes outside printable ASCII in the target are escaped.
    #[test]
    fn common_line_escapes_what_the_client_chose() {
        let mut e = entry(AccessLog::Common);
        e.target = "/x\" 200 0 \u{2028}".into();
        let line = e.line(200, 0, Duration::ZERO);
        assert!(
            line.contains("\"GET /x\\x22 200 0 \\xE2\\x80\\xA8 HTTP/1.1\""),
            "{line}"
        );
    }

    /// A JSON line is one object with the same fields.
    #[test]
    fn json_line_is_one_object() {
        let line = entry(AccessLog::Json).line(502, 0, Duration::from_millis(3));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 502);
        assert_eq!(v["endpoint"], "172.18.0.3:8080");
        assert_eq!(v["tries"], 2);
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["client"], "172.18.0.1");
    }
}
