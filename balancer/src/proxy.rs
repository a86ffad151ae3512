//! The forwarding path: one request in, one endpoint chosen, the response streamed back.
//!
//! Request and response bodies stream through without being buffered whole. Method, path,
//! query, headers and body reach the endpoint unchanged, except that hop-by-hop headers are
//! removed in both directions, `X-Forwarded-For` is appended to, and `X-Forwarded-Proto` and
//! `X-Forwarded-Host` are set. The client's `Host` is kept, redirects are not followed and
//! content encodings are passed through untouched (the awc client is built that way in
//! [`crate::server`]).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::error::{ConnectError, SendRequestError};
use log::warn;

use crate::endpoint::Endpoint;
use crate::selection::RoundRobin;

/// Headers that describe one connection, never the message: RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Why the balancer answered a request itself instead of relaying an endpoint's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Discovery has no endpoint for any upstream.
    #[error("no endpoint available: {} {} no endpoint (the name does not resolve yet, or to no address)", .upstreams.join(", "), if .upstreams.len() == 1 { "has" } else { "have" })]
    NoEndpoints { upstreams: Vec<Arc<str>> },
    /// The endpoint refused the connection, or it failed before the request was sent.
    #[error("cannot connect to {endpoint} ({upstream}): {source}")]
    Connect {
        endpoint: SocketAddr,
        upstream: String,
        source: ConnectError,
    },
    /// The endpoint did not accept the connection, or did not answer, in time.
    #[error("{endpoint} ({upstream}) did not answer in time: {source}")]
    Timeout {
        endpoint: SocketAddr,
        upstream: String,
        source: SendRequestError,
    },
    /// The exchange with the endpoint failed after the connection was made.
    #[error("request to {endpoint} ({upstream}) failed: {source}")]
    Upstream {
        endpoint: SocketAddr,
        upstream: String,
        source: SendRequestError,
    },
}

impl ProxyError {
    /// Classifies an awc failure on `endpoint`.
    pub fn from_send(endpoint: &Endpoint, err: SendRequestError) -> ProxyError {
        let endpoint_addr = endpoint.addr();
        let upstream = endpoint.upstream().to_string();
        match err {
            SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
                ProxyError::Timeout {
                    endpoint: endpoint_addr,
                    upstream,
                    source: err,
                }
            }
            SendRequestError::Connect(source) => ProxyError::Connect {
                endpoint: endpoint_addr,
                upstream,
                source,
            },
            source => ProxyError::Upstream {
                endpoint: endpoint_addr,
                upstream,
                source,
            },
        }
    }
}

impl ResponseError for ProxyError {
    fn status_code(&self) -> StatusCode {
        match self {
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(format!("rondo: {self}\n"))
    }
}

/// Forwards one request to the next endpoint in turn and streams its response back.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    selector: web::Data<Arc<RoundRobin>>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, ProxyError> {
    let rotation = selector.load();
    let Some(endpoint) = rotation.select() else {
        let err = ProxyError::NoEndpoints {
            upstreams: rotation.set().without_endpoints().to_vec(),
        };
        warn!("{} {}: 503 {err}", req.method(), req.uri());
        return Err(err);
    };

    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut upstream_req = client.request(
        req.method().clone(),
        format!("{}{path}", endpoint.base_url()),
    );
    // Without this awc would add `Accept-Encoding: identity` to requests that had none.
    upstream_req = upstream_req.no_decompress();
    let headers = upstream_req.headers_mut();
    copy_end_to_end(req.headers(), headers);
    add_forwarded(&req, headers);

    let sent = match request_body_length(req.headers()) {
        Some(len) => upstream_req.send_body(SizedStream::new(len, payload)),
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => {
            upstream_req.send_body(BodyStream::new(payload))
        }
        None => upstream_req.send(),
    };
    let res = sent.await.map_err(|e| {
        let err = ProxyError::from_send(endpoint, e);
        warn!(
            "{} {}: {} {err}",
            req.method(),
            req.uri(),
            err.status_code().as_u16()
        );
        err
    })?;

    let mut response = HttpResponse::build(res.status());
    for (name, value) in res.headers().iter() {
        if !is_hop_by_hop(name, res.headers()) && *name != header::CONTENT_LENGTH {
            response.append_header((name.clone(), value.clone()));
        }
    }
    Ok(match response_body_length(res.headers()) {
        Some(len) => {
            response.no_chunking(len);
            response.body(SizedStream::new(len, res))
        }
        None => response.body(BodyStream::new(res)),
    })
}

/// The request's `Content-Length`, when it has exactly one valid one.
fn request_body_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// The response's `Content-Length`, unless it is also chunked (then the length is ignored).
fn response_body_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    request_body_length(headers)
}

/// Whether `name` describes the connection rather than the message, including every header
/// that this message's `Connection` header names.
pub fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    HOP_BY_HOP.contains(name)
        || headers
            .get_all(header::CONNECTION)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| name.as_str().eq_ignore_ascii_case(token.trim()))
}

/// Copies every end-to-end header of `from` into `to`: hop-by-hop headers and the framing
/// (`Content-Length`, set again from the body) stay behind.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from.iter() {
        if !is_hop_by_hop(name, from) && *name != header::CONTENT_LENGTH {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Appends the client's address to `X-Forwarded-For` (one comma-separated header, as nginx's
/// `$proxy_add_x_forwarded_for`), and sets `X-Forwarded-Proto` and `X-Forwarded-Host`.
fn add_forwarded(req: &HttpRequest, headers: &mut HeaderMap) {
    let peer = req.peer_addr().map(|a| a.ip().to_string());
    let mut chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Some(peer) = peer.as_deref() {
        chain.push(peer);
    }
    if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = req.headers().get(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    /// Hop-by-hop headers, and the ones `Connection` names, are dropped; others are kept in order.
    #[test]
    fn copy_drops_hop_by_hop_and_connection_named_headers() {
        let from = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("host", "example"),
        ]);
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        let names: Vec<_> = to
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            vec!["set-cookie=a=1", "set-cookie=b=2", "host=example"]
        );
    }

    /// A request with two Content-Length headers has no length we trust.
    #[test]
    fn two_content_lengths_give_no_length() {
        assert_eq!(
            request_body_length(&map(&[("content-length", "3")])),
            Some(3)
        );
        assert_eq!(
            request_body_length(&map(&[("content-length", "3"), ("content-length", "4")])),
            None
        );
        assert_eq!(
            response_body_length(&map(&[
                ("content-length", "3"),
                ("transfer-encoding", "chunked")
            ])),
            None
        );
    }
}
